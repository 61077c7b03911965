"""Run the study over segment lengths by executing the notebooks with papermill.

A run is a folder::

    runs/NAME/sweep.json            the parameters (a later call must match them to resume)
    runs/NAME/recordings.parquet    the recordings table, built once (+ recordings.json report)
    runs/NAME/L04/                  one folder per length: segments, embeddings, zeroshot, probe,
                                    the executed 02/03/04 notebooks, and ``done`` written last
    runs/NAME/01_dataset.ipynb      the executed dataset notebook (inventory of the whole run)
    runs/NAME/results.json|.csv     one row per completed length (see clapnb.report.RESULT_COLUMNS)
    runs/NAME/bandwidth.json        the bandwidth harmonisation of the run (band_edges.parquet: measured)
    runs/NAME/variants/harmonise-X/ the same configuration with --harmonise-bandwidth X (a full run)

The notebooks do the work through :func:`prepare_length` and the classifier modules, so what
the sweep runs is exactly what a user sees when opening a notebook. A length that fails keeps its
partially executed notebook (with the traceback) and a ``failed.json``; the other lengths still run.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import pandas as pd

from clapnb import __version__, io
from clapnb.errors import ClapnbError, InputError
from clapnb.shortcuts import canonical_harmonise, parse_harmonise_list

SPLIT_NAMES = ("train", "validation", "early_stop", "test")
#: The line every final summary of a random-weights run carries.
RANDOM_WEIGHTS_SUMMARY = ("RANDOM WEIGHTS: this run used the random-weights stand-in; its numbers are a "
                          "plumbing check, NOT CLAP results")
PER_LENGTH_NOTEBOOKS = ("02_zero_shot.ipynb", "03_linear_probe.ipynb", "04_confusion.ipynb")
DATASET_NOTEBOOK = "01_dataset.ipynb"
KERNEL = "python3"
DONE = "done"
FAILED = "failed.json"
#: Keys of :class:`SweepConfig` that may change between calls on one run folder.
RESUMABLE_KEYS = ("lengths", "device")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_data() -> tuple[str, str]:
    """``(data, label_column)`` for ``data='auto'``: the shared clips when present, else ESC-50."""
    shared = Path(os.environ.get("CLAPNB_SHARED", repo_root().parent / "shared"))
    meta = shared / "data" / "envsounds" / "meta.csv"
    if meta.is_file():
        return str(meta), "original_label"
    return "esc50", "label"


def parse_lengths(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"1-10"``, ``"1,4,7"``, ``"1-3,7"`` or ints -> sorted unique whole seconds >= 1."""
    if isinstance(text, int):
        items = [text]
    elif isinstance(text, str):
        items = []
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if lo > hi:
                    raise InputError(f"--lengths {text!r}: range {part} runs backwards; write {hi}-{lo}")
                items.extend(range(lo, hi + 1))
            elif part.isdigit():
                items.append(int(part))
            else:
                raise InputError(f"--lengths {text!r}: {part!r} is not a whole number of seconds or a "
                                 "range; use e.g. 1-10, 4 or 1,4,7")
    else:
        items = [int(x) for x in text]
    if not items or min(items) < 1:
        raise InputError(f"--lengths {text!r}: give at least one length of 1 s or more, e.g. 1-10")
    return tuple(sorted(set(items)))


def parse_counts(text: str | Sequence[int]) -> tuple[int, int, int, int]:
    """``"500,100,100,100"`` -> segments per class for train, validation, early_stop, test."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise InputError(f"--counts {text!r}: give four positive whole numbers, segments per class "
                         "for train,validation,early_stop,test (the paper: 500,100,100,100)")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class SweepConfig:
    """Every parameter of a run; the notebooks receive these as papermill parameters."""

    data: str = "auto"
    label_column: str = "label"
    mapping: str = "default"
    drop_unmapped: bool = False
    drop_empty_classes: bool = False
    backbone: str = "msclap-2023"
    weights: str | None = None
    policy: str = "msclap"
    counts: str = "500,100,100,100"
    seed: int = 0
    snr_db: float = 20.0
    device: str = "auto"
    probe_grid: str = ""
    lengths: str = "1-10"
    source_column: str | None = None
    path_column: str = "path"            # manifest column of the file paths (--path-column)
    harmonise_bandwidth: str = "off"
    precision: str = "fp32"              # CLAP embedding mode (clapnb.fast): fp32 | bf16 | auto
    torch_compile: bool = False          # torch.compile the audio encoder (--compile)
    agreement_threshold: float = 0.999   # a mode other than fp32 must agree this well with fp32
    warn_low_agreement: bool = False     # below it: warn loudly instead of refusing

    def resolved(self) -> "SweepConfig":
        """Fill ``data='auto'``, make paths absolute and normalise lengths/counts (fail early)."""
        data, label_column = self.data, self.label_column
        if data == "auto":
            data, label_column = default_data()
        elif not re.match(r"^(esc50|urbansound8k)(:|$)", data, re.IGNORECASE):
            data = os.path.abspath(os.path.expanduser(data))
        weights = os.path.abspath(os.path.expanduser(self.weights)) if self.weights else None
        lengths = ",".join(str(n) for n in parse_lengths(self.lengths))
        counts = ",".join(str(n) for n in parse_counts(self.counts))
        harmonise = canonical_harmonise(self.harmonise_bandwidth)
        _check_mode(self)
        return SweepConfig(**{**asdict(self), "data": data, "label_column": label_column,
                              "weights": weights, "lengths": lengths, "counts": counts,
                              "source_column": self.source_column or None, "harmonise_bandwidth": harmonise})

    @property
    def length_list(self) -> tuple[int, ...]:
        return parse_lengths(self.lengths)

    def parameters(self) -> dict:
        return asdict(self)


def _check_mode(config: SweepConfig) -> None:
    from clapnb.backbones import CLAP_NAMES
    from clapnb.fast import PRECISIONS

    if config.precision not in PRECISIONS:
        raise InputError(f"--precision {config.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if config.backbone not in CLAP_NAMES and (config.precision == "bf16" or config.torch_compile):
        raise InputError(f"--precision bf16 / --compile apply to CLAP backbones only, not {config.backbone}")
    if not 0 < float(config.agreement_threshold) <= 1:
        raise InputError(f"--agreement-threshold {config.agreement_threshold}: give a cosine in (0, 1]")


def config_from_parameters(params: dict) -> SweepConfig:
    """A :class:`SweepConfig` from a notebook's parameter variables (extra names are ignored)."""
    names = {f.name for f in fields(SweepConfig)}
    return SweepConfig(**{k: v for k, v in params.items() if k in names}).resolved()


def length_dir(run_dir: str | os.PathLike, length_s: int) -> Path:
    return Path(run_dir) / f"L{int(length_s):02d}"


# --- the stages the notebooks call -------------------------------------------------------------

def check_compatible(run_dir: Path, config: SweepConfig) -> None:
    """Refuse to resume a run folder made with other parameters (results would mix silently)."""
    path = run_dir / "sweep.json"
    if not path.is_file():
        return
    defaults = SweepConfig().parameters()  # keys added since the run was made had these values
    old = {**defaults, **io.read_json(path).get("config", {})}
    new = config.parameters()
    diff = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new
            if k not in RESUMABLE_KEYS and old.get(k) != new[k]]
    if diff:
        raise InputError(f"{run_dir} was made with other parameters ({'; '.join(diff)}). Use a new "
                         "--out folder, or delete this one to start over")


def write_sweep_config(run_dir: Path, config: SweepConfig) -> None:
    """Record the parameters; the lengths accumulate over resumed calls."""
    path = run_dir / "sweep.json"
    lengths = set(config.length_list)
    if path.is_file():
        lengths |= set(parse_lengths(io.read_json(path)["config"]["lengths"]))
    stored = SweepConfig(**{**config.parameters(), "lengths": ",".join(map(str, sorted(lengths)))})
    io.atomic_write_json(path, {"config": stored.parameters(), "clapnb_version": __version__})


def prepare_recordings(run_dir: str | os.PathLike, config: SweepConfig) -> pd.DataFrame:
    """The run's recordings table, read once from ``config.data`` and kept in the run folder."""
    from clapnb import datasets

    run_dir = Path(run_dir)
    path = run_dir / "recordings.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    table, report = datasets.load_recordings(
        config.data, label_column=config.label_column, mapping=config.mapping,
        drop_unmapped=config.drop_unmapped, source_column=config.source_column,
        path_column=config.path_column)
    io.atomic_write_json(run_dir / "recordings.json", report)
    io.atomic_write_parquet(path, table)
    return table


def prepare_band_edges(run_dir: str | os.PathLike, config: SweepConfig) -> pd.DataFrame:
    """Measured band edge of every recording (:func:`clapnb.shortcuts.measure_band_edges`), once per run."""
    from clapnb import shortcuts

    path = Path(run_dir) / "band_edges.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    edges = shortcuts.measure_band_edges(prepare_recordings(run_dir, config), progress=False)
    io.atomic_write_parquet(path, edges)
    return edges


def prepare_bandwidth(run_dir: str | os.PathLike, config: SweepConfig) -> dict:
    """The run's bandwidth harmonisation (``bandwidth.json``): one cutoff for every length."""
    from clapnb import shortcuts

    path = Path(run_dir) / "bandwidth.json"
    if path.is_file():
        return io.read_json(path)
    recordings = prepare_recordings(run_dir, config)
    edges = prepare_band_edges(run_dir, config) if config.harmonise_bandwidth == "auto" else None
    record = shortcuts.harmonisation(recordings, config.harmonise_bandwidth, edges)
    io.atomic_write_json(path, record)
    return record


def prepare_segments(run_dir: str | os.PathLike, config: SweepConfig, length_s: int) -> Path:
    """``L??/segments.parquet`` for one length (built from the run's recordings if missing)."""
    from clapnb import segments

    out = length_dir(run_dir, length_s)
    if not (out / "dataset.json").is_file():  # written last by write_segments
        recordings = prepare_recordings(run_dir, config)
        bandwidth = prepare_bandwidth(run_dir, config)
        table = segments.build_segments(recordings, float(length_s), counts=parse_counts(config.counts),
                                        seed=config.seed, snr_db=config.snr_db,
                                        drop_empty_classes=config.drop_empty_classes,
                                        lowpass_hz=bandwidth["cutoff_hz"])
        segments.write_segments(table, out, {
            "inputs": {"data": config.data, "label_column": config.label_column, "mapping": config.mapping,
                       "source_column": config.source_column},
            "parameters": {**config.parameters(), "length_s": int(length_s)},
            "harmonisation": bandwidth,
            "dropped_classes": sorted(set(recordings["class"].dropna()) - set(table["class"])),
            # of the recordings, not of this length's picks: every length of a run shares it
            "data_fingerprint": segments.data_fingerprint(recordings)})
    return out


def load_segments(run_dir: str | os.PathLike, config: SweepConfig) -> pd.DataFrame:
    """Segments of every length of the run, built where missing; failed lengths are left out."""
    parts = []
    for n in config.length_list:
        if (length_dir(run_dir, n) / FAILED).is_file():
            continue
        parts.append(pd.read_parquet(prepare_segments(run_dir, config, n) / "segments.parquet"))
    if not parts:
        raise InputError(f"{run_dir}: no length has segments (every length failed); see the "
                         f"{FAILED} files in its L?? folders")
    return pd.concat(parts, ignore_index=True)


def embeddings_current(ldir: Path, config: SweepConfig) -> bool:
    """True when ``embeddings.json`` matches the segments file and the configured backbone and mode."""
    from clapnb.backbones import CLAP_NAMES

    path = ldir / "embeddings.json"
    if not path.is_file():
        return False
    meta = io.read_json(path)
    backbone = meta.get("backbone", {})
    same_mode = config.backbone not in CLAP_NAMES or (
        backbone.get("precision_requested", "fp32") == config.precision
        and str(backbone.get("precision", "fp32")).endswith("+compile") == bool(config.torch_compile))
    return (meta.get("segments_sha256") == io.file_sha256(ldir / "segments.parquet")
            and backbone.get("name") == config.backbone and backbone.get("policy") == config.policy
            and same_mode)


def prepare_length(run_dir: str | os.PathLike, config: SweepConfig, length_s: int):
    """Segments and embeddings of one length, each built only if missing.

    Returns the backbone when it had to be loaded (the zero-shot step reuses it), else None:
    loading CLAP takes seconds, reading finished embeddings does not need it.
    """
    from clapnb import agreement, backbones, embeddings

    out = prepare_segments(run_dir, config, length_s)
    io.atomic_write_json(out / "config.json", {**config.parameters(), "length_s": int(length_s),
                                               "clapnb_version": __version__})
    if embeddings_current(out, config):
        return None
    backbone = backbones.load_backbone(config.backbone, weights=config.weights, device=config.device,
                                       policy=config.policy, batch_size=16, precision=config.precision,
                                       compile=config.torch_compile)
    # a fast mode is measured against fp32 on this length's clips first (recorded in embeddings.json)
    agreement.check_agreement(backbone, pd.read_parquet(out / "segments.parquet"),
                              threshold=config.agreement_threshold, warn_only=config.warn_low_agreement,
                              seed=config.seed)
    embeddings.embed_run(out, backbone, batch_size=16, progress=False)
    return backbone


# --- results rows ------------------------------------------------------------------------------

def _ci(metrics: dict | None) -> tuple[float | None, float | None]:
    ci = (metrics or {}).get("accuracy_ci") or {}
    return ci.get("low"), ci.get("high")


def length_row(ldir: str | os.PathLike) -> dict:
    """One results row (:data:`clapnb.report.RESULT_COLUMNS`) from a completed length folder."""
    ldir = Path(ldir)
    zs = io.read_json(ldir / "zeroshot.json")
    pr = io.read_json(ldir / "probe.json")
    ds = io.read_json(ldir / "dataset.json")
    backbone = dict(pr.get("backbone") or {})
    row: dict = {
        "length_s": int(round(float(pr["length_s"]))),
        "backbone": backbone.get("name"),
        "weights": backbone.get("weights_path"),
        "weights_fingerprint": backbone.get("fingerprint"),
        "random_weights": bool(pr.get("random_weights") or zs.get("random_weights")),
        "data_fingerprint": ds.get("data_fingerprint"),
        "input_policy": backbone.get("policy"),
        "n_classes": len(pr.get("classes", [])),
        "zeroshot_applicable": bool(zs.get("applicable", False)),
    }
    zval = (zs.get("metrics") or {}).get("validation") if zs.get("applicable") else None
    lo, hi = _ci(zval)
    row.update({
        "zeroshot_split": "validation" if zval else None,
        "zeroshot_n": (zval or {}).get("n"),
        "zeroshot_accuracy": (zval or {}).get("accuracy"),
        "zeroshot_ci_low": lo, "zeroshot_ci_high": hi,
        "zeroshot_loss_paper": (zval or {}).get("loss_paper_style"),
        "zeroshot_loss_calibrated": (zval or {}).get("loss_calibrated"),
        "probe_best_epoch": pr.get("best_epoch"),
        "probe_epochs": pr.get("epochs_run"),
    })
    for split in ("validation", "test"):
        m = pr["metrics"][split]
        lo, hi = _ci(m)
        row.update({f"probe_{split}_n": m.get("n"), f"probe_{split}_accuracy": m.get("accuracy"),
                    f"probe_{split}_ci_low": lo, f"probe_{split}_ci_high": hi,
                    f"probe_{split}_loss": m.get("loss")})
    row["lowpass_hz"] = ds.get("lowpass_hz")
    agree = backbone.get("agreement") or {}
    row.update({"precision": backbone.get("precision", "fp32"), "agreement_min_cosine": agree.get("min_cosine"),
                "agreement_mean_cosine": agree.get("mean_cosine"), "agreement_passed": agree.get("passed")})
    sc = io.read_json(ldir / "shortcuts.json") if (ldir / "shortcuts.json").is_file() else {}
    test = (sc.get("source_id") or {}).get("test") or {}
    row.update({"source_id_applicable": sc.get("applicable"), "source_id_test_accuracy": test.get("accuracy"),
                "source_id_test_balanced_accuracy": test.get("balanced_accuracy"),
                "source_id_test_chance": test.get("chance"), "source_id_test_majority": test.get("majority"),
                "source_id_test_class_prior": test.get("class_prior")})
    within = (sc.get("source_id_within_classes") or {}).get("test") or {}
    row.update({"source_id_within_test_accuracy": within.get("accuracy"),
                "source_id_within_test_chance": within.get("chance")})
    return row


def collect_results(run_dir: str | os.PathLike, lengths: Sequence[int] | None = None
                    ) -> tuple[pd.DataFrame, list[dict]]:
    """Rows of completed lengths (from their ``done`` markers) and the failures among ``lengths``."""
    from clapnb.report import RESULT_COLUMNS

    run_dir = Path(run_dir)
    rows, failed = [], []
    candidates = sorted(run_dir.glob("L[0-9][0-9]"))
    wanted = set(lengths) if lengths is not None else None
    for ldir in candidates:
        n = int(ldir.name[1:])
        if wanted is not None and n not in wanted:
            continue
        if (ldir / DONE).is_file():
            rows.append(io.read_json(ldir / DONE)["row"])
        elif (ldir / FAILED).is_file():
            failed.append(io.read_json(ldir / FAILED))
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return frame.sort_values("length_s").reset_index(drop=True), failed


def write_results(run_dir: str | os.PathLike, lengths: Sequence[int] | None = None
                  ) -> tuple[pd.DataFrame, list[dict]]:
    """``results.json`` (rows + failures + run config) and ``results.csv`` (rows)."""
    run_dir = Path(run_dir)
    frame, failed = collect_results(run_dir, lengths)
    config = io.read_json(run_dir / "sweep.json")["config"] if (run_dir / "sweep.json").is_file() else {}
    io.atomic_write_json(run_dir / "results.json", {
        "rows": frame.to_dict(orient="records"), "failed": failed, "config": config,
        "random_weights": bool(frame["random_weights"].fillna(False).astype(bool).any()),
        "clapnb_version": __version__})
    io.atomic_write_text(run_dir / "results.csv", frame.to_csv(index=False))
    return frame, failed


def read_results(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, list[dict], dict]:
    """``(rows, failed, config)`` from a run's ``results.json``."""
    from clapnb.report import RESULT_COLUMNS

    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; run 'clapnb sweep --out {run_dir}' first "
                         "(it writes results.json when the lengths are done)")
    doc = io.read_json(path)
    return pd.DataFrame(doc["rows"], columns=list(RESULT_COLUMNS)), doc.get("failed", []), doc.get("config", {})


# --- executing notebooks -------------------------------------------------------------------------

def notebooks_dir() -> Path:
    path = Path(os.environ.get("CLAPNB_NOTEBOOKS", repo_root() / "notebooks"))
    missing = [n for n in (DATASET_NOTEBOOK, *PER_LENGTH_NOTEBOOKS) if not (path / n).is_file()]
    if missing:
        raise ClapnbError(f"the study notebooks {', '.join(missing)} are not in {path}; run clapnb "
                          "from its source checkout (pip install -e .) or set CLAPNB_NOTEBOOKS to "
                          "the folder that holds them")
    return path


def _error_summary(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def execute(notebook: str, out: Path, parameters: dict, cwd: Path) -> None:
    """Execute one notebook with papermill into ``out`` (kept, with any error, if it fails)."""
    import papermill

    # Kernels inherit the environment. tqdm.auto warns in every kernel without ipywidgets, once
    # per import; our progress bars are off in notebooks, so the warning is noise on every page.
    os.environ.setdefault("PYTHONWARNINGS", "ignore:IProgress not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebooks_dir() / notebook), str(out), parameters=parameters, kernel_name=KERNEL,
        cwd=str(cwd), progress_bar=False, log_output=False)


@dataclass
class LengthOutcome:
    length_s: int
    status: str  # 'done', 'skipped' or 'failed'
    seconds: float = 0.0
    error: str = ""
    notebook: str = ""


def run_length(run_dir: str | os.PathLike, config: SweepConfig, length_s: int,
               threads: int | None = None) -> LengthOutcome:
    """Execute 02 -> 03 -> 04 for one length; ``done`` (holding the results row) comes last."""
    run_dir = Path(run_dir)
    ldir = length_dir(run_dir, length_s)
    if (ldir / DONE).is_file():
        return LengthOutcome(length_s, "skipped")
    if threads:
        # Kernels inherit the environment: split the cores between parallel lengths.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    ldir.mkdir(parents=True, exist_ok=True)
    (ldir / FAILED).unlink(missing_ok=True)
    params = {**config.parameters(), "run_dir": str(run_dir.resolve()), "length_s": int(length_s)}
    del params["lengths"]  # the run's lengths are no parameter of a one-length notebook
    start = time.monotonic()
    for nb in PER_LENGTH_NOTEBOOKS:
        try:
            execute(nb, ldir / nb, params, ldir)
        except Exception as exc:  # papermill's execution error, a dead kernel, ...
            outcome = LengthOutcome(length_s, "failed", time.monotonic() - start, _error_summary(exc),
                                    str(ldir / nb))
            io.atomic_write_json(ldir / FAILED, asdict(outcome))
            return outcome
    seconds = time.monotonic() - start
    io.atomic_write_json(ldir / DONE, {"row": length_row(ldir), "seconds": round(seconds, 1)})
    return LengthOutcome(length_s, "done", seconds)


def _run_length_job(args: tuple) -> LengthOutcome:
    return run_length(*args)


@dataclass
class SweepOutcome:
    run_dir: Path
    lengths: list[LengthOutcome] = field(default_factory=list)
    dataset_error: str = ""
    results: pd.DataFrame | None = None

    @property
    def failed(self) -> list[LengthOutcome]:
        return [o for o in self.lengths if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.dataset_error

    def summary(self) -> str:
        lines = [f"sweep {self.run_dir}:"]
        for o in sorted(self.lengths, key=lambda o: o.length_s):
            extra = f" ({o.seconds:.0f} s)" if o.status == "done" else ""
            extra += f": {o.error}\n      see {o.notebook}" if o.status == "failed" else ""
            lines.append(f"  {o.length_s:2d} s  {o.status}{extra}")
        if self.dataset_error:
            lines.append(f"  dataset notebook failed: {self.dataset_error}")
        n_failed = len(self.failed)
        if self.results is not None and not self.results.empty and "random_weights" in self.results \
                and self.results["random_weights"].fillna(False).astype(bool).any():
            lines.append(f"  {RANDOM_WEIGHTS_SUMMARY}")
        lines.append(f"  {len(self.lengths) - n_failed} of {len(self.lengths)} lengths complete; "
                     + (f"{n_failed} failed (rerun the same command to retry them; completed "
                        "lengths are skipped)" if n_failed else "results in results.json / results.csv"))
        return "\n".join(lines)


def run_sweep(config: SweepConfig, run_dir: str | os.PathLike, *, jobs: int = 1,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> SweepOutcome:
    """Prepare the run folder, execute every length (``jobs`` at a time), then the dataset notebook."""
    from clapnb import backbones

    config = config.resolved()
    run_dir = Path(run_dir).resolve()
    if jobs < 1:
        raise InputError(f"-j/--jobs must be 1 or more, got {jobs}")
    notebooks_dir()
    check_compatible(run_dir, config)
    backbones.check_backbone_available(config.backbone, config.weights)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_sweep_config(run_dir, config)
    log(f"reading recordings from {config.data}")
    prepare_recordings(run_dir, config)

    outcome = SweepOutcome(run_dir)
    lengths = config.length_list
    if jobs == 1:
        for n in lengths:
            o = run_length(run_dir, config, n)
            log(f"  {n:2d} s: {o.status}" + (f" ({o.error})" if o.error else ""))
            outcome.lengths.append(o)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_length_job, (run_dir, config, n, threads)): n for n in lengths}
            for fut in as_completed(futures):
                o = fut.result()
                log(f"  {o.length_s:2d} s: {o.status}" + (f" ({o.error})" if o.error else ""))
                outcome.lengths.append(o)

    all_lengths = parse_lengths(io.read_json(run_dir / "sweep.json")["config"]["lengths"])
    ran = any(o.status == "done" for o in outcome.lengths)
    nb_out = run_dir / DATASET_NOTEBOOK
    if ran or not nb_out.is_file() or (run_dir / (DATASET_NOTEBOOK + ".failed")).is_file():
        log("dataset notebook")
        params = {**config.parameters(), "run_dir": str(run_dir),
                  "lengths": ",".join(map(str, all_lengths))}
        try:
            execute(DATASET_NOTEBOOK, nb_out, params, run_dir)
            (run_dir / (DATASET_NOTEBOOK + ".failed")).unlink(missing_ok=True)
        except Exception as exc:
            outcome.dataset_error = _error_summary(exc)
            io.atomic_write_text(run_dir / (DATASET_NOTEBOOK + ".failed"), outcome.dataset_error + "\n")
    outcome.results, _ = write_results(run_dir, all_lengths)
    return outcome


# --- the same run with other bandwidth settings -------------------------------------------------

VARIANTS_DIR = "variants"
#: Files of a finished run that a variant can reuse: the data and their measurement do not change.
_SHARED_FILES = ("recordings.parquet", "recordings.json", "band_edges.parquet")


def variant_dir(run_dir: str | os.PathLike, harmonise: str) -> Path:
    return Path(run_dir) / VARIANTS_DIR / f"harmonise-{canonical_harmonise(harmonise)}"


def variant_runs(run_dir: str | os.PathLike) -> list[Path]:
    """The comparison runs of ``run_dir`` (sorted by folder name) that have results."""
    root = Path(run_dir) / VARIANTS_DIR
    return sorted(p for p in root.glob("harmonise-*") if (p / "results.json").is_file()) if root.is_dir() else []


def run_variants(config: SweepConfig, run_dir: str | os.PathLike, harmonise: str | Sequence[str], *,
                 jobs: int = 1, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
                 ) -> list[SweepOutcome]:
    """The sweep once per bandwidth setting: the first in ``run_dir``, each other one in
    ``run_dir/variants/harmonise-<setting>``, everything else equal (the book shows them side by side).
    """
    values = parse_harmonise_list(harmonise)
    main = run_dir
    outcomes = [run_sweep(replace(config, harmonise_bandwidth=values[0]), main, jobs=jobs, log=log)]
    for value in values[1:]:
        out = variant_dir(main, value)
        out.mkdir(parents=True, exist_ok=True)
        for name in _SHARED_FILES:
            if (Path(main) / name).is_file() and not (out / name).exists():
                shutil.copy2(Path(main) / name, out / name)
        log(f"comparison run with --harmonise-bandwidth {value}: {out}")
        outcomes.append(run_sweep(replace(config, harmonise_bandwidth=value), out, jobs=jobs, log=log))
    return outcomes
