"""The study configuration: one frozen, validated dataclass, the single source of every parameter.

:class:`StudyConfig` lists each parameter once, with its default, help text, choices and the
stages it feeds (see :mod:`clapnb.stages`). From that one definition come

* the command-line options of ``sweep``, ``reproduce``, ``segments``, ``embed``, ``probe`` and
  ``zeroshot`` (:func:`add_options`): same names, defaults, help and choices everywhere;
* the study file (``clapnb sweep --config study.toml``, TOML or YAML; :func:`read_study_file`),
  whose values the flags override (:func:`from_args`);
* the parameters each stage records and compares (:func:`stage_parameters`).

Adding a parameter is one ``option(...)`` line in :class:`StudyConfig`: its flag, its place in the
study file and in the stage records follow. Validation (choices, counts, lengths, precision,
compile, agreement threshold) happens once, in ``__post_init__``; :meth:`StudyConfig.resolved`
then fills what depends on the machine (``data='auto'``, absolute paths).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from clapnb.errors import InputError
from clapnb.ranges import parse_seeds, whole_number_ranges  # noqa: F401  (parse_seeds: part of the config API)

SPLIT_NAMES = ("train", "validation", "early_stop", "test")
PRECISIONS = ("fp32", "bf16", "auto")
POLICIES = ("msclap", "native")
DEVICES = ("auto", "cpu", "cuda")
HARMONISE_WORDS = ("off", "auto")

#: The batch size of the sweep's embedding stage (``clapnb.stages``; embedding units hold whole batches).
EMBED_BATCH = 16
#: Where the embedding stage runs: recorded nowhere that results come from (no stage, no dataset.json).
EXECUTION_KEYS = ("scheduler", "workers", "unit_segments")

#: The build-if-missing stages in the order they run (``clapnb.stages``).
STAGES = ("recordings", "bandwidth", "segments", "embeddings", "zeroshot", "probe", "shortcuts")


def option(default: Any, help: str, *, stages: Sequence[str] = (), flag: str | None = None,
           choices: Sequence[str] | None = None, metavar: str | None = None,
           commands: Sequence[str] = ("sweep", "reproduce")) -> Any:
    """A :class:`StudyConfig` field: default, help, the stages it feeds and the commands that take it.

    ``stages``: a stage whose recorded value differs from the request is rebuilt. A parameter
    without a stage (``lengths``, ``device``) may change freely between calls on one run folder.
    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}")
    return field(default=default, metadata={"help": help, "stages": tuple(stages), "flag": flag,
                                            "choices": tuple(choices) if choices else None,
                                            "metavar": metavar, "commands": tuple(commands)})


# --- parsing rules shared by every command ----------------------------------------------------

def check_length(value: Any, what: str = "--length") -> int:
    """A segment length: a whole number of seconds >= 1 (run folders hold L01..L99)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number >= 1 and number == int(number)):
        raise InputError(f"{what} {value!r}: segment lengths are whole seconds of 1 or more (e.g. 4); "
                         "the study uses 1 to 10")
    return int(number)


def parse_lengths(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"1-10"``, ``"1,4,7"``, ``"1-3,7"`` or ints -> sorted unique whole seconds >= 1."""
    if isinstance(text, int):
        items = [text]
    elif isinstance(text, str):
        try:
            items = whole_number_ranges(text, allow_point_zero=True)
        except ValueError as exc:
            raise InputError(f"--lengths {text!r}: {exc} of seconds or a range; use e.g. 1-10, 4 or 1,4,7"
                             if "whole number" in str(exc) else f"--lengths {text!r}: {exc}") from None
    else:
        items = [check_length(x, "--lengths") for x in text]
    if not items or min(items) < 1:
        raise InputError(f"--lengths {text!r}: give at least one length of 1 s or more, e.g. 1-10")
    return tuple(sorted(set(items)))


def parse_counts(text: str | Sequence[int]) -> tuple[int, int, int, int]:
    """``"500,100,100,100"`` -> segments per class for train, validation, early_stop, test."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        values = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise InputError(f"--counts {text!r}: give four positive whole numbers, segments per class "
                         "for train,validation,early_stop,test (the paper: 500,100,100,100)")
    return values  # type: ignore[return-value]


def canonical_harmonise(spec: str | float | int | None) -> str:
    """``off``, ``auto`` or a frequency in Hz (as text, ``%g``); anything else is an InputError."""
    if spec is None:
        return "off"
    text = str(spec).strip().lower()
    if text in HARMONISE_WORDS:
        return text
    try:
        hz = float(text.removesuffix("hz"))
    except ValueError:
        hz = math.nan
    if not (math.isfinite(hz) and hz > 0):
        raise InputError(f"--harmonise-bandwidth {spec!r}: use off, auto or a low-pass frequency in Hz "
                         "(e.g. 11025)")
    return f"{hz:g}"


def parse_harmonise_list(text: str | Sequence[str]) -> list[str]:
    """``"off,auto"`` -> ``["off", "auto"]``: one run per setting, the first is the main run."""
    items = [p for p in (text.split(",") if isinstance(text, str) else text) if str(p).strip()]
    values = [canonical_harmonise(p) for p in items] or ["off"]
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise InputError(f"--harmonise-bandwidth {text!r} names {', '.join(dup)} twice; give each setting once")
    return values


def backbone_names() -> tuple[str, ...]:
    """The registered backbones (the ``--backbone`` choices): a new backbone shows everywhere."""
    from clapnb import backbones

    names = getattr(backbones, "names", None)
    return tuple(names()) if callable(names) else tuple(getattr(backbones, "NAMES", ()))


def clap_names() -> tuple[str, ...]:
    """Backbones that take the fast embedding modes (bf16, compile)."""
    from clapnb import backbones

    modes = getattr(backbones, "precision_mode_names", None)
    return tuple(modes()) if callable(modes) else tuple(getattr(backbones, "CLAP_NAMES", ()))


def policies(backbone: str) -> tuple[str, ...]:
    """The input policies a backbone accepts."""
    from clapnb import backbones

    spec = getattr(backbones, "spec", None)
    return tuple(getattr(spec(backbone), "policies", POLICIES)) if callable(spec) else POLICIES


def default_policy(backbone: str) -> str:
    """The input policy a backbone uses when none is given (the registry's, else msclap's)."""
    from clapnb import backbones

    spec = getattr(backbones, "spec", None)
    return getattr(spec(backbone), "default_policy", "msclap") if callable(spec) else "msclap"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_data() -> tuple[str, str]:
    """``(data, label_column)`` for ``data='auto'``: the shared clips when present, else ESC-50."""
    shared = Path(os.environ.get("CLAPNB_SHARED", repo_root().parent / "shared"))
    meta = shared / "data" / "envsounds" / "meta.csv"
    if meta.is_file():
        return str(meta), "original_label"
    return "esc50", "label"


_DATA = ("sweep", "reproduce", "segments")
_MODEL = ("sweep", "reproduce", "embed")


@dataclass(frozen=True)
class StudyConfig:
    """Every parameter of a study run. Frozen: a run's configuration is recorded once and never edited."""

    data: str = option("auto", "class folder (one sub-folder per label), manifest CSV, 'esc50' (download), "
                       "'esc50:PATH', 'urbansound8k:PATH', or 'auto' (../shared/data/envsounds if present)",
                       stages=("recordings",), commands=_DATA)
    label_column: str = option("label", "label column of a manifest CSV", stages=("recordings",), commands=_DATA)
    path_column: str = option("path", "column of a manifest CSV holding each file's path, absolute or relative to "
                              "the manifest; comma, semicolon, tab or pipe separators are detected",
                              stages=("recordings",), commands=_DATA)
    source_column: str | None = option(None, "manifest column naming each file's source (default: source, "
                                       "else source_dataset, else the manifest's folder)",
                                       stages=("recordings",), commands=_DATA)
    mapping: str = option("default", "label mapping: built-in name (esc50, urbansound8k, default) or YAML "
                          "file(s), comma-separated", stages=("recordings",), commands=_DATA)
    drop_unmapped: bool = option(False, "leave out labels the mapping does not know", stages=("recordings",),
                                 commands=_DATA)
    background: str | None = option(None, "folder or manifest of the site's residual sound (no spurious events): "
                                    "adds a 'background' class, trained like the others, never reported as an "
                                    "event by 'clapnb detect'", stages=("recordings",), metavar="PATH",
                                    commands=_DATA)
    harmonise_bandwidth: str = option(
        "off", "low-pass every recording to one common bandwidth before cutting: off, auto (the lowest "
        "common effective bandwidth of the data) or a frequency in Hz. For sweep a list, e.g. off,auto, "
        "runs the first setting in OUT and each other one in OUT/variants/harmonise-SETTING",
        stages=("bandwidth",), metavar="off|auto|HZ[,...]", commands=_DATA)
    drop_empty_classes: bool = option(False, "leave out classes without audio in some split instead of failing",
                                      stages=("segments",), commands=_DATA)
    counts: str = option("500,100,100,100", "segments per class for train,validation,early_stop,test",
                         stages=("segments",), commands=_DATA)
    snr_db: float = option(20.0, "SNR in dB of the Gaussian noise of augmented copies", stages=("segments",),
                           commands=_DATA)
    protocol: str = option("paper", "how recordings are split: paper (the seeded 500/100/100/100 plan by recording "
                           "group) or folds (the data set's official folds, ESC-50 5 / UrbanSound8K 10: test fold i, "
                           "validation and early stop from fold i+1, as the HEAR kit)", stages=("segments",),
                           choices=("paper", "folds"))
    test_fold: int | None = option(None, "with --protocol folds: the fold the run tests (default 1; with "
                                   "--repeats the first of the folds tested, one per repeat)", stages=("segments",))
    repeats: int = option(1, "repeat the study over N split seeds (--seed, --seed+1, ...; with --protocol folds: "
                          "the first N folds, 0 = all), each in OUT/repeats/seed-K (fold-I); embeddings come "
                          "from the cache, so a repeat costs the probe and zero-shot", commands=("sweep",))
    seeds: str = option("", "the split seeds of the repeats, e.g. 0-4 or 0,3,7 (instead of --repeats)",
                        commands=("sweep",), metavar="SEEDS")
    seed: int = option(0, "seed of every random choice (splits, picks, noise, agreement clips, probe, bootstrap)",
                       stages=("segments", "embeddings", "zeroshot", "probe", "shortcuts"),
                       commands=("sweep", "reproduce", "segments", "probe", "zeroshot"))
    backbone: str = option("msclap-2023", "embedding backbone", stages=("embeddings",),
                           commands=("sweep", "embed"))
    weights: str | None = option(None, "CLAP checkpoint path (default: $CLAPNB_WEIGHTS, else msclap's hub "
                                 "download)", stages=("embeddings",), commands=_MODEL)
    policy: str | None = option(None, "how segments other than the model's input length are fed: msclap = "
                                "repeat/centre-crop to the model's duration, native = as is (default: the "
                                "backbone's own)", stages=("embeddings",), commands=_MODEL)
    precision: str = option("fp32", "CLAP audio-encoder precision: fp32 (the reference), bf16 (autocast; the "
                            "STFT/log-mel front-end and the projection stay fp32), auto (bf16 only where the "
                            "CPU/GPU computes it natively)", stages=("embeddings",), choices=PRECISIONS,
                            commands=_MODEL)
    torch_compile: bool = option(False, "torch.compile the audio encoder (about a minute per process on a "
                                 "CPU, then faster)", stages=("embeddings",), flag="--compile", commands=_MODEL)
    agreement_threshold: float = option(0.999, "a mode other than fp32 is first checked against fp32 on a few "
                                        "clips of the run; below this minimum cosine the run is refused",
                                        stages=("embeddings",), commands=_MODEL)
    warn_low_agreement: bool = option(False, "go on (with a loud warning, recorded in every output) below the "
                                      "agreement threshold", stages=("embeddings",), commands=_MODEL)
    probe_grid: str = option("", "probe hyper-parameter grid selected on validation, e.g. "
                             "'lr=1e-3,1e-2;weight_decay=0,1e-4'", stages=("probe",),
                             commands=("sweep", "reproduce", "probe"))
    probe_patience: int = option(10, "probe: epochs without early-stop accuracy improvement before stopping "
                                 "(the paper: 10)", stages=("probe",), commands=("sweep", "reproduce", "probe"))
    probe_max_epochs: int = option(300, "probe: epoch limit", stages=("probe",),
                                   commands=("sweep", "reproduce", "probe"))
    device: str = option("auto", "where the backbone runs", choices=DEVICES,
                         commands=("sweep", "reproduce", "embed", "zeroshot"))
    lengths: str = option("1-10", "segment lengths in s: 1-10, 4, 1,4,7", commands=("sweep",))
    # where the embedding stage runs (no stage reads these: they never change a result)
    scheduler: str | None = option(None, "embed the segments in work units on Dask: 'local' starts a LocalCluster "
                                   "of --workers processes, tcp://HOST:PORT uses a running Dask scheduler (default: "
                                   "in the length's own process)", metavar="local|tcp://HOST:PORT",
                                   commands=("sweep", "reproduce"))
    workers: int | None = option(None, "worker processes for the embedding units (with --scheduler local, default 2; "
                                 "without --scheduler: N local processes; ignored for tcp://, whose cluster has its "
                                 "own)", metavar="N", commands=("sweep", "reproduce"))
    unit_segments: int = option(512, "segments per embedding work unit (a whole number of batches of 16: the units "
                                "form the batches the in-process stage forms, so the embeddings are the same)",
                                metavar="N", commands=("sweep", "reproduce"))

    def __post_init__(self) -> None:
        """Normalise and validate every field once (fail before any work)."""
        set_ = object.__setattr__
        set_(self, "lengths", ",".join(map(str, parse_lengths(self.lengths))))
        set_(self, "counts", ",".join(map(str, parse_counts(self.counts))))
        harmonise = str(self.harmonise_bandwidth)
        if "," in harmonise:
            raise InputError(f"--harmonise-bandwidth {harmonise!r}: one run holds one setting; a list is "
                             "run as comparison runs by 'clapnb sweep' (see parse_harmonise_list)")
        set_(self, "harmonise_bandwidth", canonical_harmonise(harmonise))
        set_(self, "source_column", self.source_column or None)
        set_(self, "background", self.background or None)
        set_(self, "weights", self.weights or None)
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise InputError(f"{flag_of(f)} {getattr(self, f.name)!r}: choose one of {', '.join(choices)}")
        names = backbone_names()
        set_(self, "policy", self.policy or default_policy(self.backbone) if self.backbone in names else self.policy)
        if names and self.backbone not in names:
            raise InputError(f"--backbone {self.backbone!r}: unknown backbone {self.backbone!r}; choose one of "
                             f"{', '.join(names)}")
        allowed = policies(self.backbone)
        if self.policy not in allowed:
            raise InputError(f"--policy {self.policy!r}: {self.backbone} takes {', '.join(allowed)}")
        if self.backbone not in clap_names() and (self.precision == "bf16" or self.torch_compile):
            raise InputError(f"--precision bf16 / --compile apply to CLAP backbones only, not {self.backbone}")
        if not 0 < float(self.agreement_threshold) <= 1:
            raise InputError(f"--agreement-threshold {self.agreement_threshold}: give a cosine in (0, 1]")
        for name in ("probe_patience", "probe_max_epochs"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: give a whole number >= 1")
        if self.protocol == "folds" and self.test_fold is None:
            set_(self, "test_fold", 1)
        if self.protocol != "folds" and self.test_fold is not None:
            raise InputError(f"test_fold {self.test_fold!r} needs --protocol folds")
        if self.test_fold is not None and int(self.test_fold) < 1:
            raise InputError(f"test_fold {self.test_fold!r}: folds are numbered from 1")
        if int(self.repeats) < 0 or (int(self.repeats) == 0 and self.protocol != "folds"):
            raise InputError(f"--repeats {self.repeats}: give a whole number >= 1 (0 = every fold, with "
                             "--protocol folds)")
        set_(self, "seeds", str(self.seeds or "").strip())
        if self.seeds:
            if self.protocol == "folds":
                raise InputError("--seeds applies to --protocol paper; with --protocol folds the repeats are the "
                                 "folds (--repeats N: the first N, 0 = all)")
            parse_seeds(self.seeds, self.repeats)
        set_(self, "scheduler", str(self.scheduler).strip() if self.scheduler else None)
        if self.scheduler and self.scheduler != "local" and not re.match(r"^(tcp|tls|ucx|inproc)://.", self.scheduler):
            raise InputError(f"--scheduler {self.scheduler!r}: use 'local' or a Dask scheduler address like "
                             "tcp://HOST:8786")
        if self.workers is not None and int(self.workers) < 1:
            raise InputError(f"--workers {self.workers}: give a whole number >= 1")
        if int(self.unit_segments) < 1 or int(self.unit_segments) % EMBED_BATCH:
            raise InputError(f"--unit-segments {self.unit_segments}: give a positive multiple of {EMBED_BATCH} "
                             "(units of whole batches keep the embeddings bit-identical to the in-process stage)")
        if self.probe_grid:
            from clapnb.probe import parse_grid  # torch is imported by probe only when training

            parse_grid(self.probe_grid)

    def resolved(self) -> "StudyConfig":
        """Fill ``data='auto'`` and make paths absolute (what depends on this machine)."""
        data, label_column = self.data, self.label_column
        if data == "auto":
            data, label_column = default_data()
        elif not re.match(r"^(esc50|urbansound8k)(:|$)", data, re.IGNORECASE):
            data = os.path.abspath(os.path.expanduser(data))
        weights = ",".join(os.path.abspath(os.path.expanduser(w.strip())) for w in self.weights.split(",")) \
            if self.weights else None
        return replace(self, data=data, label_column=label_column, weights=weights)

    @property
    def length_list(self) -> tuple[int, ...]:
        return parse_lengths(self.lengths)

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The split seeds of the repeats (``--seeds``, else ``--seed`` .. ``--seed + repeats - 1``)."""
        if self.seeds:
            return parse_seeds(self.seeds)
        return tuple(self.seed + k for k in range(max(1, int(self.repeats))))

    @property
    def embed_workers(self) -> int:
        """Workers for the embedding units: ``--workers``, else 2 with a LocalCluster, else 1."""
        return int(self.workers) if self.workers else (2 if self.scheduler == "local" else 1)

    @property
    def uses_units(self) -> bool:
        """The embedding stage runs in work units on an executor (``--scheduler`` or ``--workers`` > 1)."""
        return bool(self.scheduler) or self.embed_workers > 1

    def results_parameters(self) -> dict:
        """:meth:`parameters` without where the work ran (what a run folder records)."""
        return {k: v for k, v in asdict(self).items() if k not in EXECUTION_KEYS}

    @property
    def count_tuple(self) -> tuple[int, int, int, int]:
        return parse_counts(self.counts)

    def parameters(self) -> dict:
        return asdict(self)

    def probe_config(self):
        """The :class:`clapnb.probe.ProbeConfig` of this study (the class probe and the source probes)."""
        from clapnb.probe import ProbeConfig  # torch-free module top; see probe.py

        return ProbeConfig(seed=self.seed, patience=self.probe_patience, max_epochs=self.probe_max_epochs)

    def stage_parameters(self, stage: str) -> dict:
        """The fields that feed ``stage`` (recorded with its outputs; a difference triggers a rebuild)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if stage in f.metadata["stages"]}

    def differences(self, other: "StudyConfig", *, ignore: Iterable[str] = ()) -> list[str]:
        """``"name: old -> new"`` for each field that differs (``self`` is the old one)."""
        skip = set(ignore)
        return [f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}" for f in fields(self)
                if f.name not in skip and getattr(self, f.name) != getattr(other, f.name)]


#: Deprecated name (kept for scripts written against the first sweep).
SweepConfig = StudyConfig

#: Fields that may change between calls on one run folder (no stage reads them).
RESUMABLE_KEYS = tuple(f.name for f in fields(StudyConfig) if not f.metadata["stages"])


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def field_named(name: str):
    for f in fields(StudyConfig):
        if f.name == name:
            return f
    raise KeyError(name)


def from_mapping(values: Mapping[str, Any], *, what: str = "the configuration",
                 base: StudyConfig | None = None) -> StudyConfig:
    """A config from ``values`` over ``base`` (default: the defaults); unknown names are refused."""
    names = {f.name for f in fields(StudyConfig)}
    given = {str(k).replace("-", "_"): v for k, v in values.items()}
    if "compile" in given:
        given["torch_compile"] = given.pop("compile")
    unknown = sorted(set(given) - names)
    if unknown:
        raise InputError(f"{what}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    for key in ("counts", "lengths"):
        if isinstance(given.get(key), (list, tuple)):
            given[key] = ",".join(str(v) for v in given[key])
    start = base or StudyConfig()
    if "policy" not in given and given.get("backbone", start.backbone) != start.backbone:
        given["policy"] = None  # the old backbone's policy: let the new backbone choose its own
    return replace(start, **given)


def read_run_config(run) -> StudyConfig | None:
    """The configuration recorded in a run folder (:class:`clapnb.store.RunFolder`), None if none."""
    from clapnb import io

    path = Path(getattr(run, "config_file", Path(run) / "sweep.json"))
    if not path.is_file():
        return None
    return from_mapping(io.read_json(path).get("config", {}), what=str(path))


def read_study_file(path: str | os.PathLike) -> dict:
    """The parameters of a study file: TOML (``.toml``) or YAML (``.yaml``/``.yml``), top level or
    under a ``[study]`` table; keys are the parameter names (``snr_db`` or ``snr-db``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--config {path}: no such file; write a TOML or YAML study file (see the README)")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib  # standard library (3.11)

            doc = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # pyyaml: only the study-file path needs it

            doc = yaml.safe_load(text) or {}
        else:
            raise InputError(f"--config {path}: use a .toml, .yaml or .yml file")
    except InputError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise InputError(f"--config {path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"--config {path}: expected parameter = value pairs at the top level")
    return dict(doc.get("study", doc))


# --- command-line options from the one definition ---------------------------------------------

def _type_of(f):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    return {"int": int, "float": float}.get(kind.split(" |")[0], str)


def add_options(parser: argparse.ArgumentParser, command: str, *, required: Sequence[str] = (),
                defaults: Mapping[str, Any] | None = None, config_file: bool = False) -> None:
    """Add the options of ``command`` from :class:`StudyConfig`'s fields.

    Unset options do not appear in the namespace (``argparse.SUPPRESS``) so that :func:`from_args`
    can tell a flag from a default, and a study file's value from both. ``defaults`` changes a
    command's default (``reproduce --data esc50``).
    """
    defaults = dict(defaults or {})
    if config_file:
        parser.add_argument("--config", metavar="STUDY.toml", default=argparse.SUPPRESS,
                            help="study file (TOML or YAML) holding any of these parameters; flags override it")
    for f in fields(StudyConfig):
        if command not in f.metadata["commands"]:
            continue
        default = defaults.get(f.name, f.default)
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        shown = "" if default in (None, "") else f" (default: {default})"
        if f.name == "backbone":  # validated by StudyConfig: one clear line naming the registered ones
            kw["metavar"] = "{" + ",".join(backbone_names()) + "}"
        elif f.metadata["choices"]:
            kw["choices"] = f.metadata["choices"]
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
            shown = " (default: on)" if default else ""
        else:
            kw["type"] = _type_of(f)
            if f.metadata["metavar"]:
                kw.setdefault("metavar", f.metadata["metavar"])
        if f.name in required:
            kw["required"] = True
        text = f.metadata["help"] + shown
        if f.name in ("backbone", "policy"):  # the registry says what each backbone / policy is
            from clapnb import backbones

            helper = getattr(backbones, "choices_help" if f.name == "backbone" else "policy_help", None)
            if callable(helper):
                text = helper(default) if f.name == "backbone" else helper()
        parser.add_argument(flag_of(f), help=text, **kw)


def given_options(args: argparse.Namespace) -> dict:
    """The :class:`StudyConfig` fields set on the command line."""
    names = {f.name for f in fields(StudyConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def from_args(args: argparse.Namespace, *, defaults: Mapping[str, Any] | None = None,
              fixed: Mapping[str, Any] | None = None) -> list[StudyConfig]:
    """The study configuration(s) of a command: defaults < ``defaults`` < study file < flags < ``fixed``.

    One config per ``harmonise_bandwidth`` setting (``off,auto`` gives two; the first is the main
    run, see :func:`clapnb.sweep.run_variants`).
    """
    values: dict[str, Any] = dict(defaults or {})
    path = getattr(args, "config", None)
    if path:
        values.update({k.replace("-", "_"): v for k, v in read_study_file(path).items()})
    values.update(given_options(args))
    values.update(fixed or {})
    harmonise = parse_harmonise_list(str(values.pop("harmonise_bandwidth", "off")))
    what = f"--config {path}" if path else "the options"
    return [from_mapping({**values, "harmonise_bandwidth": h}, what=what) for h in harmonise]


def option_value(args: argparse.Namespace, name: str) -> Any:
    """A single-folder command's value of ``name``: the flag if given, else the field's default."""
    value = getattr(args, name, MISSING)
    return field_named(name).default if value is MISSING else value
