"""The study configuration (one definition: options, study file, validation) and the run-folder store."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

from clapnb import cli, config, store
from clapnb.errors import InputError

PACKAGE = Path(config.__file__).resolve().parent


def parse(argv: list[str]):
    return cli.build_parser().parse_args(argv)


def test_study_file_holds_parameters_and_flags_override_it(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text('data = "esc50"\ncounts = [40, 10, 10, 10]\nseed = 3\nsnr-db = 10.0\n'
                     'probe_patience = 4\nharmonise_bandwidth = "off,auto"\n', encoding="utf-8")
    args = parse(["sweep", "--config", str(study), "--seed", "7", "--out", str(tmp_path / "run")])
    main, variant = config.from_args(args)
    assert (main.data, main.counts, main.seed, main.snr_db, main.probe_patience) == ("esc50", "40,10,10,10", 7,
                                                                                      10.0, 4)
    assert (main.harmonise_bandwidth, variant.harmonise_bandwidth) == ("off", "auto")
    assert main.backbone == config.StudyConfig().backbone  # neither file nor flag: the one default
    yaml_study = tmp_path / "study.yaml"
    yaml_study.write_text("study:\n  data: esc50\n  lengths: 2-4\n  drop_unmapped: true\n", encoding="utf-8")
    (cfg,) = config.from_args(parse(["sweep", "--config", str(yaml_study), "--no-drop-unmapped", "--out", "x"]))
    assert cfg.lengths == "2,3,4" and cfg.drop_unmapped is False
    bad = tmp_path / "bad.toml"
    bad.write_text('data = "esc50"\ncount = "1,1,1,1"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"unknown parameter\(s\) count"):
        config.from_args(parse(["sweep", "--config", str(bad), "--out", "x"]))



def test_a_backbone_given_alone_brings_its_own_policy(tmp_path):
    """`sweep --backbone birdnet` with no --policy: birdnet's policy, not the default backbone's."""
    (cfg,) = config.from_args(parse(["sweep", "--data", "x", "--backbone", "birdnet", "--out", "x"]))
    assert cfg.policy == "birdnet"
    assert config.from_mapping({"backbone": "mfcc"}, base=cfg).policy == config.default_policy("mfcc")
    assert config.from_mapping({"seed": 2}, base=cfg).policy == "birdnet"
    with pytest.raises(InputError, match="birdnet takes birdnet"):
        config.from_mapping({"backbone": "birdnet", "policy": "msclap"})

def test_every_study_field_is_a_flag_with_the_one_default(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    sweep = sub.choices["sweep"]
    flags = {a.dest: a for a in sweep._actions}
    for f in fields(config.StudyConfig):
        assert f.name in flags, f.name
        if f.name not in ("backbone", "policy"):  # those two: the registry's own words
            assert f.metadata["help"].split(" (")[0][:30] in flags[f.name].help
    # the same field in another command has the same help and choices
    for command, name in [("segments", "counts"), ("embed", "precision"), ("probe", "probe_patience"),
                          ("zeroshot", "seed")]:
        other = {a.dest: a for a in sub.choices[command]._actions if a.help != "==SUPPRESS=="}[name]
        assert other.help == flags[name].help and other.choices == flags[name].choices


@pytest.mark.parametrize("values, message", [
    ({"precision": "fp8"}, "--precision 'fp8'"),
    ({"backbone": "mfcc", "torch_compile": True}, "CLAP backbones only"),
    ({"agreement_threshold": 0}, "--agreement-threshold 0"),
    ({"counts": "1,2,3"}, "--counts '1,2,3'"),
    ({"lengths": "2.5"}, "--lengths '2.5'"),
    ({"backbone": "nope"}, "unknown backbone 'nope'"),
    ({"harmonise_bandwidth": "-3"}, "--harmonise-bandwidth '-3'"),
    ({"probe_grid": "lr"}, "grid entry 'lr'"),
    ({"scheduler": "cluster-1"}, "--scheduler 'cluster-1'"),
    ({"workers": 0}, "--workers 0"),
    ({"unit_segments": 40}, "--unit-segments 40: give a positive multiple of 16"),
])
def test_one_validation(values, message):
    with pytest.raises(InputError, match=re.escape(message)):
        config.StudyConfig(**values)


def test_one_length_rule():
    assert config.check_length("4") == 4 and config.parse_lengths("1-3,7") == (1, 2, 3, 7)
    for bad in ("2.5", "0", "x"):
        with pytest.raises(InputError, match="whole seconds"):
            config.check_length(bad)


def test_stage_parameters_cover_every_field_but_the_free_ones():
    cfg = config.StudyConfig()
    used = {name for stage in config.STAGES for name in cfg.stage_parameters(stage)}
    assert used | set(config.RESUMABLE_KEYS) == {f.name for f in fields(cfg)}
    assert set(config.RESUMABLE_KEYS) == {"lengths", "device", "repeats", "seeds", "scheduler", "workers",
                                          "unit_segments"}
    assert set(config.EXECUTION_KEYS) <= set(config.RESUMABLE_KEYS)  # where it runs changes no result
    assert cfg.stage_parameters("segments") == {"drop_empty_classes": False, "counts": "500,100,100,100",
                                                "snr_db": 20.0, "seed": 0, "protocol": "paper", "test_fold": None}


def test_run_folder_owns_the_file_names(tmp_path):
    run = store.RunFolder(tmp_path)
    lf = run.length(4)
    assert lf.root == tmp_path / "L04" and lf.probe.parent == lf.root
    assert run.variant("auto").root == tmp_path / "variants" / "harmonise-auto"
    cfg = config.StudyConfig(data="esc50", counts="4,2,2,2")
    run.write_config(cfg)
    assert config.read_run_config(run) == cfg


def _string_literals(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_run_folder_file_name_outside_the_store():
    names = {p.name for lf in [store.RunFolder("R").length(1)] for p in vars(lf).values() if isinstance(p, Path)}
    names |= {p.name for p in vars(store.RunFolder("R")).values() if isinstance(p, Path)}
    names = {n for n in names if "." in n}  # file names ("done" is also a status word)
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("store.py", "config.py"):
            continue
        for text in _string_literals(path):
            if text in names:
                offenders.append(f"{path.relative_to(PACKAGE)}: {text!r}")
    assert not offenders, offenders


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clapnb"):
            base = node.module
            out |= {f"{base}.{a.name}" if base == "clapnb" else base for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("clapnb")}
    return out


#: Function-level imports that close a circle, left to their owners (each with its reason); keep empty.
KNOWN_EDGES = {
    # review.open() is the ipywidgets widget's entry point; review_widget imports review (issue 14's owner)
    ("clapnb.review", "clapnb.review_widget"),
}


def test_no_import_circle_even_through_function_level_imports():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        modules[name] = path
    graph = {m: {i for i in _imports(p) if i in modules and i != m and (m, i) not in KNOWN_EDGES}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(n):] + [n]))
            if n not in state:
                visit(n, trail + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
