"""Packaging: coherent pins, environment.yml cannot drift from pyproject.toml, the console command."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from clapnb import taxonomy

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
DEPS = {canonicalize_name(r.name): r for r in map(Requirement, PROJECT["dependencies"])}
TEST_DEPS = {canonicalize_name(r.name): r for r in map(Requirement, PROJECT["optional-dependencies"]["test"])}
BIRDNET_DEPS = {canonicalize_name(r.name): r for r in map(Requirement, PROJECT["optional-dependencies"]["birdnet"])}


def test_pins_coherent_for_msclap_1_3_4():
    assert str(DEPS["torch"].specifier) == "==2.11.0"
    assert str(DEPS["torchaudio"].specifier) == "==2.11.0"
    assert str(DEPS["msclap"].specifier) == "==1.3.4"
    for name, forbidden in [("numpy", "2.0"), ("librosa", "0.11.0"), ("transformers", "5.0.0"),
                            ("jupyter-book", "2.0.0"), ("pyarrow", "26.0.0")]:
        assert not DEPS[name].specifier.contains(forbidden), name
    needed = {"papermill", "jupyterlab", "ipykernel", "seaborn", "scikit-learn", "soundfile", "soxr", "pooch",
              "tqdm", "pandas", "pyarrow", "pyyaml", "scipy"}
    assert needed <= set(DEPS)
    assert {"pytest", "hypothesis"} <= set(TEST_DEPS)


@pytest.mark.parametrize("name", sorted(DEPS) + sorted(TEST_DEPS) + sorted(BIRDNET_DEPS))
def test_installed_versions_satisfy_pyproject(name):
    req = DEPS.get(name) or TEST_DEPS.get(name) or BIRDNET_DEPS[name]
    version = md.version(req.name)
    assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} violates {req}"


@pytest.mark.parametrize("module", ["torch", "torchaudio", "pyarrow.parquet", "soxr", "soundfile", "sklearn",
                                    "librosa", "pooch", "scipy.signal"])
def test_fragile_dependencies_import_together(module):
    """Version pins alone do not catch ABI clashes (torchaudio vs torch, pyarrow vs numpy<2)."""
    importlib.import_module(module)


def test_environment_yml_installs_exactly_the_package():
    env = yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))
    deps = env["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict)]
    assert pip_sections == [["-e .[test,birdnet]"]]
    conda = [d for d in deps if isinstance(d, str)]
    python = [d for d in conda if d.split("=")[0] == "python"]
    assert python, "environment.yml must pin python"
    version = python[0].split("=", 1)[1]
    assert PROJECT["requires-python"] and Requirement(f"python{PROJECT['requires-python']}").specifier.contains(
        version + ".0")
    # Any other conda package must not also be a Python dependency, or the two pins could drift.
    names = {canonicalize_name(d.split("=")[0].split("<")[0].split(">")[0]) for d in conda}
    assert not (names - {"python", "pip"}) & (set(DEPS) | set(TEST_DEPS))


def test_setup_script_installs_the_same_extra():
    assert '-e ".[test,birdnet]"' in (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")


def test_console_script_exists_and_help_stays_light():
    assert PROJECT["scripts"]["clapnb"] == "clapnb.cli:main"
    eps = [e for e in md.entry_points(group="console_scripts") if e.name == "clapnb"]
    assert [e.value for e in eps] == ["clapnb.cli:main"]
    exe = Path(sys.executable).parent / "clapnb"
    assert exe.is_file() and os.access(exe, os.X_OK)
    out = subprocess.run([str(exe), "segments", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--length" in out.stdout and "--drop-empty-classes" in out.stdout
    code = ("import sys, clapnb.cli; clapnb.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'msclap', 'transformers') if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert heavy.returncode == 0 and heavy.stdout.strip() == "[]", heavy.stdout + heavy.stderr


def test_mappings_ship_with_the_package():
    for name in taxonomy.BUILTIN_MAPPINGS.values():
        assert (resources.files("clapnb") / "mappings" / name).is_file()


def test_the_study_notebooks_are_found_as_myst_text_with_a_small_parameters_cell(tmp_path, monkeypatch):
    import ast as _ast
    import shutil

    from clapnb import store, views

    folder = views.notebooks_dir()
    assert not list(folder.glob("*.ipynb")), "the notebooks' sources are text (MyST); no .ipynb beside them"
    allowed = {"run_dir", "length_s", "lengths", "split", "n_examples"}  # run, length and view options only
    for name in store.NOTEBOOKS:
        nb = views.read_source(name)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and params[0].cell_type == "code", name
        assigned = {t.id for node in _ast.parse(params[0].source).body for t in node.targets}
        assert "run_dir" in assigned and assigned <= allowed, (name, assigned)
        assert nb.metadata["clapnb"]["title"]
    monkeypatch.setenv("CLAPNB_NOTEBOOKS", str(tmp_path))
    with pytest.raises(Exception, match="CLAPNB_NOTEBOOKS"):
        views.notebooks_dir()
    for name in store.NOTEBOOKS:
        shutil.copy(folder / views.source_name(name), tmp_path)
    assert views.notebooks_dir() == tmp_path
