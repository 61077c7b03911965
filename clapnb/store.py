"""The run-folder store: every artifact path of a study run, its markers, results rows and variants.

No other module spells a run-folder file name; they ask :class:`RunFolder` (a sweep run) or
:class:`LengthFolder` (one segment length, also what ``clapnb segments/embed/zeroshot/probe``
write into)::

    RUN/sweep.json                  the effective StudyConfig, recorded once (written after validation)
    RUN/recordings.parquet|.json    recordings table and the load report        (stage recordings)
    RUN/bandwidth.json              harmonisation record; band_edges.parquet    (stage bandwidth)
    RUN/stages/<stage>.json         what the run-level stages were built with
    RUN/01_dataset.ipynb            the executed dataset view (+ .failed when it failed)
    RUN/results.json|.csv           one row per completed length (RESULT_COLUMNS)
    RUN/variants/harmonise-X/       the same study with another --harmonise-bandwidth (a RunFolder)
    RUN/repeats/seed-K/, fold-I/    the same study with another split seed / test fold (a RunFolder)
    RUN/repeats.json|.csv           every repeat's results rows (column repeat), spread and paired comparisons
    RUN/L04/segments.parquet, dataset.json                         (stage segments)
    RUN/L04/embeddings.json                                        (stage embeddings)
    RUN/L04/zeroshot.json, zeroshot_predictions.parquet            (stage zeroshot)
    RUN/L04/probe.json, probe.pt, probe_predictions.parquet        (stage probe)
    RUN/L04/shortcuts.json                                         (stage shortcuts)
    RUN/L04/stages/<stage>.json     stage records of the length
    RUN/L04/02_zero_shot.ipynb ...  the executed per-length views
    RUN/L04/done | failed.json      the length's marker (done: its results row)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from clapnb import __version__, io
from clapnb.errors import InputError
from clapnb.taxonomy import BACKGROUND

DATASET_NOTEBOOK = "01_dataset.ipynb"
PER_LENGTH_NOTEBOOKS = ("02_zero_shot.ipynb", "03_linear_probe.ipynb", "04_confusion.ipynb")
NOTEBOOKS = (DATASET_NOTEBOOK, *PER_LENGTH_NOTEBOOKS)

#: Columns of one results row (one segment length); :func:`length_row` fills them.
RESULT_COLUMNS = (
    "length_s", "backbone", "weights", "weights_fingerprint", "random_weights", "data_fingerprint",
    "input_policy", "n_classes",
    "zeroshot_applicable", "zeroshot_split", "zeroshot_n", "zeroshot_accuracy",
    "zeroshot_ci_low", "zeroshot_ci_high", "zeroshot_loss_paper", "zeroshot_loss_calibrated",
    "probe_best_epoch", "probe_epochs",
    "probe_validation_n", "probe_validation_accuracy", "probe_validation_ci_low",
    "probe_validation_ci_high", "probe_validation_loss",
    "probe_test_n", "probe_test_accuracy", "probe_test_ci_low", "probe_test_ci_high", "probe_test_loss",
    # bandwidth harmonisation and the source-shortcut check (clapnb.shortcuts), test split
    "lowpass_hz", "source_id_applicable", "source_id_test_accuracy", "source_id_test_balanced_accuracy",
    "source_id_test_chance", "source_id_test_majority", "source_id_test_class_prior",
    "source_id_within_test_accuracy", "source_id_within_test_chance",
    # embedding mode (clapnb.fast) and its measured agreement with fp32 (clapnb.agreement)
    "precision", "agreement_min_cosine", "agreement_mean_cosine", "agreement_passed",
    # the split this row was measured on (clapnb.folds, clapnb.repeats)
    "seed", "protocol", "test_fold",
    # what the zero-shot column is (zero-shot | as-is | none) and what the backbone's numbers must carry
    "zeroshot_method", "zeroshot_label", "backbone_notice",
    # the background class (--background), apart from the event classes: every accuracy above (and
    # n_classes) is over event segments only; zero-shot leaves background segments out
    "background", "zeroshot_background_excluded",
    *(f"background_{split}_{k}" for split in ("validation", "test")
      for k in ("n", "recall", "recall_ci_low", "recall_ci_high", "false_events", "events_called_background")),
)
#: The ``backbone_notice`` of a random-weights run when its embeddings record carries no warning.
RANDOM_WEIGHTS_NOTICE = "RANDOM WEIGHTS: the offline stand-in, not a trained CLAP model; these numbers are NOT CLAP results"


class LengthFolder:
    """The artifacts of one segment length (``RUN/L04``, or any folder a single-step command uses)."""

    def __init__(self, root: str | os.PathLike, length_s: int | None = None) -> None:
        self.root = Path(root)
        self.length_s = length_s
        self.segments = self.root / "segments.parquet"
        self.dataset = self.root / "dataset.json"
        self.embeddings = self.root / "embeddings.json"
        self.zeroshot = self.root / "zeroshot.json"
        self.zeroshot_predictions = self.root / "zeroshot_predictions.parquet"
        self.probe = self.root / "probe.json"
        self.probe_model = self.root / "probe.pt"
        self.probe_predictions = self.root / "probe_predictions.parquet"
        self.shortcuts = self.root / "shortcuts.json"
        self.done = self.root / "done"
        self.failed = self.root / "failed.json"
        self.stages_dir = self.root / "stages"

    def __repr__(self) -> str:
        return f"LengthFolder({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def stage_record(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.json"

    def notebook(self, name: str) -> Path:
        return self.root / name

    def is_done(self) -> bool:
        return self.done.is_file()

    def row(self) -> dict:
        """The results row of this length (from its stage outputs)."""
        return length_row(self)


class RunFolder:
    """A study run: run-level artifacts, one :class:`LengthFolder` per length, variants."""

    VARIANTS = "variants"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.config_file = self.root / "sweep.json"
        self.recordings = self.root / "recordings.parquet"
        self.recordings_report = self.root / "recordings.json"
        self.bandwidth = self.root / "bandwidth.json"
        self.band_edges = self.root / "band_edges.parquet"
        self.results_json = self.root / "results.json"
        self.results_csv = self.root / "results.csv"
        self.dataset_notebook = self.root / DATASET_NOTEBOOK
        self.dataset_failed = self.root / (DATASET_NOTEBOOK + ".failed")
        self.variants_dir = self.root / self.VARIANTS
        self.stages_dir = self.root / "stages"
        self.book_dir = self.root / "book"
        #: files a bandwidth variant can take from its main run (the data and their measurement)
        self.shared_with_variants = (self.recordings, self.recordings_report, self.band_edges)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return self.config_file.is_file()

    def stage_record(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.json"

    def length(self, length_s: int) -> LengthFolder:
        return LengthFolder(self.root / f"L{int(length_s):02d}", int(length_s))

    def length_folders(self) -> list[LengthFolder]:
        """Every ``L??`` folder present, by length."""
        return [LengthFolder(p, int(p.name[1:])) for p in sorted(self.root.glob("L[0-9][0-9]")) if p.is_dir()]

    # --- the recorded configuration ------------------------------------------------------------

    def write_config(self, config) -> None:
        """Record the effective :class:`clapnb.config.StudyConfig` (read it back with
        :func:`clapnb.config.read_run_config`)."""
        io.atomic_write_json(self.config_file, {"config": config.results_parameters(), "clapnb_version": __version__})

    def config_dict(self) -> dict:
        return io.read_json(self.config_file).get("config", {}) if self.config_file.is_file() else {}

    def lock(self, command: str = "clapnb sweep") -> contextlib.AbstractContextManager:
        """An exclusive lock of the run folder for one writer (``clapnb.locks.run_lock``: a second
        writer is refused, naming the first)."""
        try:
            from clapnb import locks  # engineer harden's module (issue 10); absent on older checkouts
        except ImportError:
            return contextlib.nullcontext()
        run_lock = getattr(locks, "run_lock", None)
        return run_lock(self.root, command=command) if callable(run_lock) else contextlib.nullcontext()

    # --- variants ------------------------------------------------------------------------------

    def variant(self, harmonise: str) -> "RunFolder":
        """The comparison run of a (canonical, see :func:`clapnb.config.canonical_harmonise`) setting."""
        return RunFolder(self.variants_dir / f"harmonise-{harmonise}")

    def variants(self) -> list["RunFolder"]:
        """The comparison runs (sorted by folder name) that have results."""
        if not self.variants_dir.is_dir():
            return []
        return [RunFolder(p) for p in sorted(self.variants_dir.glob("harmonise-*")) if (p / "results.json").is_file()]

    # --- repeats (split seeds / folds) ---------------------------------------------------------

    REPEATS = "repeats"

    @property
    def repeats_json(self) -> Path:
        return self.root / "repeats.json"

    @property
    def repeats_csv(self) -> Path:
        return self.root / "repeats.csv"

    def repeat(self, name: str) -> "RunFolder":
        """The run of one repeat (``seed-3``, ``fold-2``); the first repeat is this run itself."""
        return RunFolder(self.root / self.REPEATS / name)

    def repeat_runs(self) -> list[tuple[str, "RunFolder"]]:
        """``(repeat id, run)`` of every other repeat with results, by folder name."""
        folder = self.root / self.REPEATS
        if not folder.is_dir():
            return []
        return [(p.name, RunFolder(p)) for p in sorted(folder.iterdir(), key=_repeat_order)
                if (p / "results.json").is_file()]

    # --- results ------------------------------------------------------------------------------

    def collect_results(self, lengths: Sequence[int] | None = None) -> tuple[pd.DataFrame, list[dict]]:
        """Rows of completed lengths (those with a ``done`` marker) and the failures among ``lengths``."""
        rows, failed = [], []
        wanted = set(lengths) if lengths is not None else None
        for lf in self.length_folders():
            if wanted is not None and lf.length_s not in wanted:
                continue
            if lf.done.is_file():
                # the row from the stage outputs as this code reads them (an older run gains new columns);
                # the marker's own row when an output has gone
                try:
                    rows.append(length_row(lf))
                except (OSError, ValueError, KeyError):
                    rows.append(io.read_json(lf.done)["row"])
            elif lf.failed.is_file():
                failed.append(io.read_json(lf.failed))
        frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        return frame.sort_values("length_s").reset_index(drop=True), failed

    def write_results(self, lengths: Sequence[int] | None = None) -> tuple[pd.DataFrame, list[dict]]:
        """``results.json`` (rows + failures + run config) and ``results.csv`` (rows)."""
        frame, failed = self.collect_results(lengths)
        io.atomic_write_json(self.results_json, {
            "rows": frame.to_dict(orient="records"), "failed": failed, "config": self.config_dict(),
            "random_weights": bool(frame["random_weights"].fillna(False).astype(bool).any()),
            "clapnb_version": __version__})
        io.atomic_write_text(self.results_csv, frame.to_csv(index=False))
        return frame, failed

    def read_results(self) -> tuple[pd.DataFrame, list[dict], dict]:
        """``(rows, failed, config)`` from ``results.json``."""
        if not self.results_json.is_file():
            raise InputError(f"{self.results_json} does not exist; run 'clapnb sweep --out {self.root}' first "
                             "(it writes results.json when the lengths are done)")
        doc = io.read_json(self.results_json)
        return (pd.DataFrame(doc["rows"], columns=list(RESULT_COLUMNS)), doc.get("failed", []),
                doc.get("config", {}))


def _repeat_order(path: Path) -> tuple:
    kind, _, number = path.name.partition("-")
    return (kind, int(number) if number.isdigit() else 0, path.name)


def repeat_name(config) -> str:
    """A run's repeat id: ``fold-I`` (``--protocol folds``) or ``seed-K``."""
    return f"fold-{config.test_fold}" if config.protocol == "folds" else f"seed-{config.seed}"


def _ci(metrics: dict | None) -> tuple[float | None, float | None]:
    ci = (metrics or {}).get("accuracy_ci") or {}
    return ci.get("low"), ci.get("high")


def backbone_notice(backbone: dict, random_weights: bool, warning: str | None = None) -> str:
    """What every number of this backbone must carry: its registry notice with its name (BirdNET:
    not CLAP, its licence) and the random-weights label of a stand-in; ``''`` for none."""
    parts = []
    if backbone.get("notice"):
        name = backbone.get("display_name") or backbone.get("name")
        parts.append(f"{name}; {backbone['notice']}" if name else str(backbone["notice"]))
    if random_weights:
        parts.append(warning or RANDOM_WEIGHTS_NOTICE)
    return "; ".join(parts)


def length_row(folder: LengthFolder | str | os.PathLike) -> dict:
    """One results row (:data:`RESULT_COLUMNS`) from a length folder's stage outputs."""
    lf = folder if isinstance(folder, LengthFolder) else LengthFolder(folder)
    zs = io.read_json(lf.zeroshot)
    pr = io.read_json(lf.probe)
    ds = io.read_json(lf.dataset)
    backbone = dict(pr.get("backbone") or {})
    row: dict = {
        "length_s": int(round(float(pr["length_s"]))),
        "backbone": backbone.get("name"),
        "weights": backbone.get("weights_path"),
        "weights_fingerprint": backbone.get("fingerprint"),
        "random_weights": bool(pr.get("random_weights") or zs.get("random_weights")),
        "data_fingerprint": ds.get("data_fingerprint"),
        "input_policy": backbone.get("policy"),
        "n_classes": len([c for c in pr.get("classes", []) if c != BACKGROUND]),
        "zeroshot_applicable": bool(zs.get("applicable", False)),
    }
    emb = io.read_json(lf.embeddings) if lf.embeddings.is_file() else {}
    row.update({"zeroshot_method": zs.get("method") or ("zero-shot" if zs.get("applicable") else "none"),
                "zeroshot_label": zs.get("label") or ("zero-shot" if zs.get("applicable") else "none"),
                "backbone_notice": backbone_notice(backbone, row["random_weights"], emb.get("warning"))})
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
    params = ds.get("parameters") or {}
    row.update({"seed": params.get("seed"), "protocol": params.get("protocol", "paper"),
                "test_fold": params.get("test_fold")})
    agree = backbone.get("agreement") or {}
    row.update({"precision": backbone.get("precision", "fp32"), "agreement_min_cosine": agree.get("min_cosine"),
                "agreement_mean_cosine": agree.get("mean_cosine"), "agreement_passed": agree.get("passed")})
    bg = pr.get("background") or {}
    row.update({"background": bool(bg),
                "zeroshot_background_excluded": ((zs.get("background_excluded") or {}).get("validation")
                                                 if zs.get("applicable") else None)})
    for split in ("validation", "test"):
        b = bg.get(split) or {}
        ci = b.get("background_recall_ci") or {}
        row.update({f"background_{split}_n": b.get("n_background"), f"background_{split}_recall": b.get("background_recall"),
                    f"background_{split}_recall_ci_low": ci.get("low"), f"background_{split}_recall_ci_high": ci.get("high"),
                    f"background_{split}_false_events": b.get("false_events"),
                    f"background_{split}_events_called_background": b.get("events_called_background")})
    sc = io.read_json(lf.shortcuts) if lf.shortcuts.is_file() else {}
    test = (sc.get("source_id") or {}).get("test") or {}
    row.update({"source_id_applicable": sc.get("applicable"), "source_id_test_accuracy": test.get("accuracy"),
                "source_id_test_balanced_accuracy": test.get("balanced_accuracy"),
                "source_id_test_chance": test.get("chance"), "source_id_test_majority": test.get("majority"),
                "source_id_test_class_prior": test.get("class_prior")})
    within = (sc.get("source_id_within_classes") or {}).get("test") or {}
    row.update({"source_id_within_test_accuracy": within.get("accuracy"),
                "source_id_within_test_chance": within.get("chance")})
    return row


def iter_runs(run: RunFolder) -> Iterator[RunFolder]:
    """The run and its comparison runs."""
    yield run
    yield from run.variants()
