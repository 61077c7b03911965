"""``clapnb benchmark esc50``: the published ESC-50 anchors as a sanity benchmark of an install.

A user with the real MS-CLAP 2023 weights should see at once whether their install reproduces
the published figures: zero-shot 93.9 % (microsoft/CLAP README) and a linear probe on frozen
embeddings 97.7 +/- 0.5 % (EVAR). So the benchmark does what those figures did, not the study's
21-class task:

* ESC-50's own 50 categories and its 5 official folds, one whole-clip embedding per clip (the
  backbone's input policy: msclap repeats a 5-s clip to its 7 s, as msclap's own reader does);
* zero-shot with msclap's prompt ``this is the sound of <label>``, labels as ESC-50 writes them
  with underscores as spaces (msclap's ``examples/esc50_dataset.py``), all 50 categories as
  candidates even on a subset, so the task per clip is the published one;
* the probe of :mod:`clapnb.probe` on frozen embeddings, 5-fold cross-validation as the HEAR kit /
  EVAR: test fold ``i``, early stopping on fold ``i % 5 + 1``, training on the other three;
* mean +/- std over the folds (:func:`clapnb.repeats.spread`) with the per-fold values.

Anything else (a subset of the clips, random weights, another backbone) is flagged in every
output: the anchors are for the full set and MS-CLAP 2023.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import __version__, datasets, io, metrics, repeats, zeroshot
from clapnb.errors import InputError

#: ESC-50's 50 categories in the order of their ``target`` number 0..49 (meta/esc50.csv).
ESC50_CATEGORIES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)
FULL_CLIPS = 2000
FULL_FOLDS = (1, 2, 3, 4, 5)
#: msclap's zero-shot prompt (microsoft/CLAP README and examples/zero_shot_classification.py).
PROMPT_TEMPLATE = "this is the sound of {}"
ANCHOR_BACKBONE = "msclap-2023"

#: The published figures, for MS-CLAP 2023 on the full ESC-50 (2000 clips, 50 classes, 5 folds).
ANCHORS = {
    "zero-shot": {"accuracy": 0.939, "std": None, "backbone": ANCHOR_BACKBONE,
                  "what": "zero-shot accuracy, prompt 'this is the sound of <label>', all 2000 clips",
                  "source": "microsoft/CLAP README",
                  "url": "https://github.com/microsoft/CLAP"},
    "probe": {"accuracy": 0.977, "std": 0.005, "backbone": ANCHOR_BACKBONE,
              "what": "linear probe on frozen MS-CLAP 2023 embeddings, 5-fold cross-validation",
              "source": "EVAR (nttcslab/eval-audio-repr)",
              "url": "https://github.com/nttcslab/eval-audio-repr"},
}
METHODS = ("zero-shot", "probe")
#: Columns a manifest may hold ESC-50's category in, in order of preference.
LABEL_COLUMNS = ("category", "original_label", "label")
SOURCE_COLUMNS = ("source", "source_dataset")

# files of a benchmark folder (--out)
RESULT_JSON = "benchmark.json"
RESULT_CSV = "benchmark.csv"
PREDICTIONS = "predictions.parquet"
CLIPS_CSV = "clips.csv"

Progress = Callable[[str], None]


def prompt(label: str) -> str:
    """msclap's zero-shot prompt for an ESC-50 label (``sea_waves`` -> ``this is the sound of sea waves``)."""
    return PROMPT_TEMPLATE.format(str(label).replace("_", " "))


# --- data ---------------------------------------------------------------------------------------

@dataclass
class Esc50Data:
    """The clips of one benchmark: one row per usable ESC-50 clip, and how they were found."""

    clips: pd.DataFrame  # path, sha256, label, fold, group, duration_s, channel, source
    spec: str  # what load_recordings read (esc50, esc50:PATH or the filtered manifest)
    given: str  # what the user passed as --data
    report: dict  # load_recordings' report (excluded files, ...)
    selection: dict  # how the rows were chosen from a manifest (columns, rows dropped)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.clips["label"]))

    @property
    def folds(self) -> list[int]:
        return sorted(int(f) for f in set(self.clips["fold"]))

    @property
    def subset(self) -> bool:
        counts = self.clips.groupby("label").size()
        return not (len(self.clips) == FULL_CLIPS and set(self.classes) == set(ESC50_CATEGORIES)
                    and tuple(self.folds) == FULL_FOLDS and (counts == FULL_CLIPS // 50).all())

    def groups_in_two_folds(self) -> dict[str, list[int]]:
        """Freesound recordings whose clips lie in more than one official fold.

        ESC-50 keeps a recording's clips of one class in one fold, but a few recordings gave
        clips to two classes in different folds (e.g. 134049: hen in fold 2, rooster in fold 3).
        The published figures used these folds as they are, so the benchmark keeps them and says so.
        """
        spans = self.clips.groupby("group")["fold"].agg(lambda f: sorted({int(x) for x in f}))
        return {str(g): f for g, f in spans.items() if len(f) > 1}

    def fingerprint(self) -> str:
        """Of the sorted (sha256, label, fold, group) of the clips: the data, not where it lies."""
        rows = sorted(zip(self.clips["sha256"], self.clips["label"], self.clips["fold"].astype(int),
                          self.clips["group"]))
        return io.fingerprint([[s, lab, int(f), g] for s, lab, f, g in rows])

    def describe(self) -> dict:
        per_fold = self.clips.groupby("fold").size()
        return {"given": self.given, "read": self.spec, "kind": self.report.get("kind"),
                "root": self.report.get("root"), "n_clips": int(len(self.clips)),
                "n_classes": len(self.classes), "classes": self.classes,
                "folds": {str(int(f)): int(n) for f, n in per_fold.items()},
                "subset": self.subset, "full_set": {"n_clips": FULL_CLIPS, "n_classes": len(ESC50_CATEGORIES),
                                                    "folds": list(FULL_FOLDS)},
                "fingerprint": self.fingerprint(), "selection": self.selection,
                "groups_in_two_folds": self.groups_in_two_folds(),
                "n_excluded": len(self.report.get("excluded", [])),
                "excluded": self.report.get("excluded", [])}


def resolve_data(data: str) -> str:
    """``esc50`` / ``esc50:PATH`` as given; an ESC-50 folder or its ``meta/esc50.csv`` -> ``esc50:ROOT``;
    any other CSV stays a manifest path."""
    low = str(data).lower()
    if low == "esc50" or low.startswith("esc50:"):
        return data
    if low == "urbansound8k" or low.startswith("urbansound8k:"):
        raise InputError(f"--data {data}: the ESC-50 benchmark reads ESC-50 (esc50, esc50:PATH, an ESC-50 "
                         "folder or a manifest CSV with ESC-50 rows), not UrbanSound8K")
    path = Path(data).expanduser()
    if path.is_dir():
        if (path / "meta" / "esc50.csv").is_file() or any(path.glob("*/meta/esc50.csv")):
            return f"esc50:{path}"
        raise InputError(f"--data {data}: a folder without meta/esc50.csv; give the extracted ESC-50-master "
                         "folder, its archive as esc50:PATH, or a manifest CSV with ESC-50 rows")
    if path.is_file() and path.name == "esc50.csv" and path.parent.name == "meta" \
            and (path.parent.parent / "audio").is_dir():
        return f"esc50:{path.parent.parent}"
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return str(path)
    raise InputError(f"--data {data}: no such ESC-50 folder or manifest CSV (give esc50 to download it, "
                     "esc50:PATH to the official archive or folder, or a manifest CSV with ESC-50 rows)")


def _normalised(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def select_manifest_rows(manifest: str | os.PathLike, *, label_column: str | None = None,
                         source_column: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The ESC-50 rows of a manifest as a small manifest (absolute path, label, fold, group, ...).

    Rows are ESC-50's when the source column (``source_column``, else ``source`` /
    ``source_dataset``) says ESC-50; without such a column every row must be. The label column is
    ``label_column`` or the first of :data:`LABEL_COLUMNS`; every label must be an ESC-50 category
    and every row needs its official fold (column ``fold``).
    """
    manifest = Path(manifest)
    df, _ = datasets.read_manifest(manifest, ["path"])
    if "path" not in df.columns:
        raise InputError(f"--data {manifest}: the manifest has no 'path' column (it has {', '.join(df.columns)})")
    src_col = source_column or next((c for c in SOURCE_COLUMNS if c in df.columns), None)
    if source_column and source_column not in df.columns:
        raise InputError(f"--source-column {source_column}: {manifest} has no such column "
                         f"(it has {', '.join(df.columns)})")
    n_rows = len(df)
    if src_col:
        is_esc = df[src_col].fillna("").map(_normalised) == "esc50"
        if not is_esc.any():
            found = ", ".join(sorted(df[src_col].dropna().astype(str).unique())[:5]) or "nothing"
            raise InputError(f"--data {manifest}: no ESC-50 rows (column '{src_col}' holds {found}); the benchmark "
                             "needs ESC-50 clips: pass esc50 (download), esc50:PATH or a manifest with ESC-50 rows")
        df = df[is_esc]
    lab_col = label_column or next((c for c in LABEL_COLUMNS if c in df.columns), None)
    if lab_col is None or lab_col not in df.columns:
        raise InputError(f"--data {manifest}: no label column {label_column or ' / '.join(LABEL_COLUMNS)!r} "
                         f"(it has {', '.join(df.columns)}); name the column of ESC-50's categories with "
                         "--label-column")
    if "fold" not in df.columns:
        raise InputError(f"--data {manifest}: no 'fold' column; the benchmark needs ESC-50's official folds "
                         "(1-5, the first number of each file name, e.g. 1-100032-A-0.wav is fold 1)")
    if df["fold"].isna().any():
        row = df.index[df["fold"].isna()][0]
        raise InputError(f"--data {manifest}: {int(df['fold'].isna().sum())} ESC-50 row(s) have no fold "
                         f"(e.g. CSV line {row + 2}); fill in their official fold 1-5")
    unknown = sorted(set(df[lab_col].dropna()) - set(ESC50_CATEGORIES))
    if unknown or df[lab_col].isna().any():
        shown = ", ".join(unknown[:5]) or "empty labels"
        raise InputError(f"--data {manifest}: column '{lab_col}' holds labels that are not ESC-50 categories "
                         f"({shown}{', ...' if len(unknown) > 5 else ''}); name the column of ESC-50's own "
                         "categories (e.g. dog, sea_waves) with --label-column")
    paths = [p if os.path.isabs(p) else os.path.join(manifest.parent, p) for p in df["path"]]
    out = pd.DataFrame({"path": [os.path.normpath(os.path.abspath(p)) for p in paths],
                        "label": df[lab_col].to_numpy(), "fold": df["fold"].to_numpy(), "source": "ESC-50"})
    for col in ("group", "freesound_id", "license", "attribution"):
        if col in df.columns:
            out[col] = df[col].to_numpy()
    selection = {"manifest": str(manifest.resolve()), "label_column": lab_col, "source_column": src_col,
                 "n_rows": n_rows, "n_esc50_rows": int(len(out)), "n_other_rows": n_rows - int(len(out))}
    return out.reset_index(drop=True), selection


def select(data: str, *, label_column: str | None = None, source_column: str | None = None
           ) -> tuple[str, pd.DataFrame | None, dict]:
    """What :func:`load_esc50` reads: ``(spec, manifest rows or None, selection)``; checks a manifest
    (ESC-50 rows, labels, folds) before anything is written."""
    spec = resolve_data(data)
    if spec.lower().startswith("esc50"):
        if label_column or source_column:
            raise InputError("--label-column / --source-column apply to a manifest CSV; ESC-50's own "
                             "meta/esc50.csv is read as it is")
        return spec, None, {}
    rows, selection = select_manifest_rows(spec, label_column=label_column, source_column=source_column)
    return spec, rows, selection


def load_esc50(data: str, *, work_dir: str | os.PathLike, label_column: str | None = None,
               source_column: str | None = None, cache_dir: str | os.PathLike | None = None) -> Esc50Data:
    """The benchmark's clips from ``data`` (see :func:`resolve_data`); a manifest's ESC-50 rows are
    written to ``work_dir/clips.csv`` first, so that only they are decoded and the run records them."""
    spec, rows, selection = select(data, label_column=label_column, source_column=source_column)
    if rows is not None:
        target = Path(work_dir) / CLIPS_CSV
        io.atomic_write_text(target, rows.to_csv(index=False))
        spec = str(target)
    table, report = datasets.load_recordings(spec, label_column="label", drop_unmapped=True,
                                             cache_dir=cache_dir)
    if table.empty:
        raise InputError(f"--data {data}: no usable ESC-50 clips (every file was excluded: "
                         f"{(report.get('excluded') or [{'reason': 'none listed'}])[0]['reason']})")
    if table["fold"].isna().any():
        example = table.loc[table["fold"].isna(), "path"].iloc[0]
        raise InputError(f"--data {data}: {int(table['fold'].isna().sum())} clip(s) have no official fold, e.g. "
                         f"{example}; the benchmark needs ESC-50's folds 1-5")
    fold = table["fold"].astype(int)
    unknown = sorted(set(table["label"]) - set(ESC50_CATEGORIES))
    if unknown:
        raise InputError(f"--data {data}: labels {', '.join(unknown[:5])} are not ESC-50 categories")
    if not set(fold) <= set(FULL_FOLDS):
        raise InputError(f"--data {data}: folds {sorted(set(fold) - set(FULL_FOLDS))} are not ESC-50 folds (1-5)")
    clips = pd.DataFrame({"path": table["path"], "sha256": table["sha256"], "label": table["label"],
                          "fold": fold.astype(int).to_numpy(), "group": table["group"],
                          "duration_s": table["duration_s"], "channel": table["channel"],
                          "source": table["source"]})
    clips = clips.sort_values(["fold", "label", "path"], kind="mergesort").reset_index(drop=True)
    return Esc50Data(clips, spec, data, report, selection)


# --- splits -------------------------------------------------------------------------------------

def fold_plan(folds: list[int]) -> list[dict]:
    """Per test fold: the early-stopping fold (the next one, cyclically) and the training folds.

    With ESC-50's folds 1-5: test 1 / early stop 2 / train 3, 4, 5; ...; test 5 / early stop 1.
    """
    folds = sorted(int(f) for f in folds)
    if len(folds) < 3:
        raise InputError(f"the data holds fold(s) {folds}; cross-validation needs at least 3 "
                         "(test, early stop, train)")
    plan = []
    for i, test in enumerate(folds):
        early = folds[(i + 1) % len(folds)]
        plan.append({"test_fold": test, "early_stop_fold": early,
                     "train_folds": [f for f in folds if f not in (test, early)]})
    return plan


def fold_splits(clips: pd.DataFrame, test_fold: int, early_stop_fold: int) -> np.ndarray:
    """``test`` / ``early_stop`` / ``train`` per clip for one fold of the cross-validation."""
    fold = clips["fold"].astype(int).to_numpy()
    return np.where(fold == test_fold, "test", np.where(fold == early_stop_fold, "early_stop", "train"))


def clip_segments(clips: pd.DataFrame) -> pd.DataFrame:
    """One whole-clip segment per clip, in the segments-table shape the embedding cache reads."""
    start = np.zeros(len(clips))
    end = clips["duration_s"].astype(float).to_numpy()
    return pd.DataFrame({
        "segment_id": [f"{s[:12]}:0" for s in clips["sha256"]],
        "path": clips["path"].to_numpy(), "sha256": clips["sha256"].to_numpy(),
        "label": clips["label"].to_numpy(), "class": clips["label"].to_numpy(),
        "group": clips["group"].to_numpy(), "fold": clips["fold"].to_numpy(),
        "start_s": start, "end_s": end, "length_s": end - start,
        "channel": clips["channel"].to_numpy(), "augmented": False,
        "snr_db": np.nan, "noise_seed": pd.array([pd.NA] * len(clips), dtype="Int64"),
    })


# --- the two methods ----------------------------------------------------------------------------

def zero_shot_predictions(X: np.ndarray, embed_text: Callable[[list[str]], np.ndarray],
                          candidates: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Predicted label per clip (cosine of audio and prompt embeddings: the argmax of msclap's
    similarity, whose logit scale does not change it) and the prompt of each candidate."""
    prompts = {c: prompt(c) for c in candidates}
    text = zeroshot.class_text_embeddings(embed_text, {c: [p] for c, p in prompts.items()})
    scores = zeroshot.cosine_scores(X, text)
    return np.asarray(candidates, dtype=object)[scores.argmax(axis=1)], prompts


def probe_fold(X: np.ndarray, clips: pd.DataFrame, plan: dict, classes: list[str], config,
               progress: Progress | None = None) -> tuple[dict, np.ndarray]:
    """Train :func:`clapnb.probe.train_probe` for one fold; its record and the test clips' predictions."""
    from clapnb.probe import train_probe

    split = fold_splits(clips, plan["test_fold"], plan["early_stop_fold"])
    index = {c: i for i, c in enumerate(classes)}
    y = clips["label"].map(index).to_numpy()
    tr, es, te = (split == "train"), (split == "early_stop"), (split == "test")
    result = train_probe(X[tr], y[tr], X[es], y[es], classes, config, progress=progress)
    pred = np.asarray(classes, dtype=object)[result.probe.logits(X[te]).argmax(axis=1)]
    truth = clips["label"].to_numpy()[te]
    record = {**plan, "n_train": int(tr.sum()), "n_early_stop": int(es.sum()), "n_test": int(te.sum()),
              "accuracy": metrics.accuracy(truth, pred), "best_epoch": int(result.best_epoch),
              "epochs_run": int(result.epochs_run), "stopped_early": bool(result.stopped_early),
              "classes_not_in_train": sorted(set(classes) - set(clips["label"][tr]))}
    return record, pred


def per_fold_accuracy(clips: pd.DataFrame, pred: np.ndarray) -> dict[int, dict]:
    correct = clips["label"].to_numpy() == pred
    return {int(f): {"n_test": int(m.sum()), "accuracy": float(correct[m].mean())}
            for f in sorted(set(clips["fold"])) for m in [(clips["fold"] == f).to_numpy()]}


# --- the run ------------------------------------------------------------------------------------

def not_applicable_reason(meta: dict) -> str:
    name = meta.get("display_name") or meta.get("name")
    reason = f"n/a: {name} has no text encoder, so there is no zero-shot"
    from clapnb import asis

    if asis.supported(meta.get("name")):
        reason += ("; its own labels' as-is mapping targets the study's 21 classes, not ESC-50's 50, "
                   "so no as-is figure either")
    return reason


def notices(data: Esc50Data, meta: dict) -> list[str]:
    """The loud lines every output of a run carries (subset, random weights, another backbone, licence)."""
    out = []
    if data.subset:
        out.append(f"SUBSET: {len(data.classes)} of ESC-50's {len(ESC50_CATEGORIES)} classes, "
                   f"{len(data.clips)} of {FULL_CLIPS} clips, folds {', '.join(map(str, data.folds))}; the "
                   "published anchors are for the full ESC-50, so these numbers are NOT comparable with them")
    spans = data.groups_in_two_folds()
    if spans:
        shown = ", ".join(f"{g} (folds {', '.join(map(str, f))})" for g, f in list(spans.items())[:3])
        out.append(f"notice: {len(spans)} freesound recording(s) give clips to two official folds (other classes), "
                   f"e.g. {shown}; kept, as the published figures used ESC-50's folds as they are")
    if meta.get("random_weights"):
        out.append("RANDOM WEIGHTS: the offline stand-in, not a trained CLAP model; the numbers check the "
                   "plumbing and are NOT CLAP results")
    if meta.get("name") != ANCHOR_BACKBONE:
        out.append(f"the anchors are MS-CLAP 2023's; this run's backbone is {meta.get('display_name') or meta.get('name')}")
    if meta.get("notice"):
        out.append(f"{meta.get('display_name') or meta.get('name')}: {meta['notice']}")
    return out


def run_benchmark(data: str, out_dir: str | os.PathLike, *, backbone_name: str = ANCHOR_BACKBONE,
                  weights: str | None = None, policy: str | None = None, device: str = "auto",
                  batch_size: int = 16, seed: int = 0, probe_patience: int = 10,
                  probe_max_epochs: int = 300, zeroshot_classes: str = "all",
                  label_column: str | None = None, source_column: str | None = None,
                  cache_dir: str | os.PathLike | None = None, backbone=None, progress: bool = True,
                  log: Progress | None = None) -> dict:
    """Run the ESC-50 benchmark into ``out_dir`` (benchmark.json, benchmark.csv, predictions.parquet).

    ``backbone``: a loaded backbone to reuse (else ``backbone_name`` is loaded). Embeddings go
    through the content-keyed cache, so a rerun computes none. ``zeroshot_classes``: ``all`` (ESC-50's
    50 categories, the published task) or ``present`` (only those in the data).
    """
    from clapnb.backbones import load_backbone
    from clapnb.embeddings import RANDOM_WEIGHTS_WARNING, compute_embeddings
    from clapnb.locks import run_lock
    from clapnb.probe import ProbeConfig

    say = log or (lambda line: print(line, file=sys.stderr))
    if zeroshot_classes not in ("all", "present"):
        raise InputError(f"--zeroshot-classes {zeroshot_classes!r}: choose all or present")
    out = io.writable_dir(out_dir)
    select(data, label_column=label_column, source_column=source_column)  # bad data: refused before any write
    probe_config = ProbeConfig(seed=seed, patience=probe_patience, max_epochs=probe_max_epochs)
    started = time.perf_counter()
    with run_lock(out, command="clapnb benchmark esc50"):
        data_set = load_esc50(data, work_dir=out, label_column=label_column, source_column=source_column,
                              cache_dir=cache_dir)
        clips = data_set.clips
        plan = fold_plan(data_set.folds)
        t_data = time.perf_counter()
        if backbone is None:
            backbone = load_backbone(backbone_name, weights=weights, device=device, policy=policy,
                                     batch_size=batch_size)
        if backbone.random_weights:
            say(f"WARNING: {RANDOM_WEIGHTS_WARNING}")
        emb = compute_embeddings(clip_segments(clips), backbone, cache_dir=cache_dir, batch_size=batch_size,
                                 progress=progress)
        meta = dict(emb.meta["backbone"])
        t_embed = time.perf_counter()
        classes = data_set.classes
        preds = clips[["path", "label", "fold", "group"]].copy()

        if backbone.has_text:
            candidates = sorted(ESC50_CATEGORIES) if zeroshot_classes == "all" else classes
            zs_pred, prompts = zero_shot_predictions(emb.X, backbone.embed_text, candidates)
            per_fold = per_fold_accuracy(clips, zs_pred)
            ci = metrics.bootstrap_accuracy_ci(clips["label"].to_numpy(), zs_pred, groups=clips["group"].to_numpy(),
                                               seed=seed)
            zs = {"applicable": True, "prompt_template": PROMPT_TEMPLATE, "candidates": candidates,
                  "candidate_set": zeroshot_classes, "prompts": prompts,
                  "accuracy": metrics.accuracy(clips["label"].to_numpy(), zs_pred), "n": int(len(clips)),
                  "accuracy_ci": ci.as_dict(), "per_fold": per_fold,
                  "spread": repeats.spread({f: v["accuracy"] for f, v in per_fold.items()}).as_dict()}
            preds["zero_shot_pred"] = zs_pred
        else:
            zs = {"applicable": False, "reason": not_applicable_reason(meta)}
        t_zs = time.perf_counter()

        probe_pred = np.empty(len(clips), dtype=object)
        folds_out = {}
        for p in plan:
            say(f"probe: test fold {p['test_fold']}, early stop on fold {p['early_stop_fold']}, train on folds "
                f"{', '.join(map(str, p['train_folds']))}")
            record, pred = probe_fold(emb.X, clips, p, classes, probe_config)
            probe_pred[(clips["fold"] == p["test_fold"]).to_numpy()] = pred
            folds_out[p["test_fold"]] = record
        probe = {"applicable": True, "classes": classes, "config": asdict(probe_config),
                 "protocol": "5-fold cross-validation on ESC-50's official folds: test fold i, early stopping on "
                             "fold i % 5 + 1, training on the other three (HEAR kit / EVAR)",
                 "per_fold": folds_out,
                 "spread": repeats.spread({f: v["accuracy"] for f, v in folds_out.items()}).as_dict()}
        preds["probe_pred"] = probe_pred
        paired = None
        if zs["applicable"]:
            diff = repeats.paired_difference({f: v["accuracy"] for f, v in folds_out.items()},
                                             {f: v["accuracy"] for f, v in zs["per_fold"].items()})
            paired = {"what": "probe - zero-shot, paired over the test folds", **diff.as_dict()}
        t_probe = time.perf_counter()

        lines = notices(data_set, meta)
        record = {
            "benchmark": "esc50", "clapnb_version": __version__,
            "config": {"data": data, "backbone": meta.get("name", backbone_name), "weights": meta.get("weights_path"),
                       "policy": meta.get("policy"), "device": device, "batch_size": batch_size, "seed": seed,
                       "probe_patience": probe_patience, "probe_max_epochs": probe_max_epochs,
                       "zeroshot_classes": zeroshot_classes, "label_column": label_column,
                       "source_column": source_column, "cache_dir": str(io.cache_dir(cache_dir))},
            "data": data_set.describe(),
            "backbone": meta,
            "embeddings": {k: emb.meta.get(k) for k in ("n_rows", "n_cached", "n_computed", "cache_namespace",
                                                        "x_sha256", "seconds", "clips_per_s")},
            "zero_shot": zs, "probe": probe, "paired": paired, "anchors": ANCHORS,
            "flags": {"subset": data_set.subset, "random_weights": bool(meta.get("random_weights", False)),
                      "anchor_backbone": meta.get("name") == ANCHOR_BACKBONE,
                      "comparable_with_anchors": (not data_set.subset and not meta.get("random_weights")
                                                  and meta.get("name") == ANCHOR_BACKBONE),
                      "notice": meta.get("notice") or None},
            "notices": lines,
            "seconds": {"data": t_data - started, "embeddings": t_embed - t_data, "zero_shot": t_zs - t_embed,
                        "probe": t_probe - t_zs, "total": t_probe - started},
        }
        io.atomic_write_parquet(out / PREDICTIONS, preds)
        io.atomic_write_text(out / RESULT_CSV, result_rows(record).to_csv(index=False))
        io.atomic_write_json(out / RESULT_JSON, record)
    return record


def result_rows(record: dict) -> pd.DataFrame:
    """One row per method and test fold (the CSV beside benchmark.json)."""
    base = {"backbone": record["config"]["backbone"], "random_weights": record["flags"]["random_weights"],
            "subset": record["flags"]["subset"], "seed": record["config"]["seed"]}
    rows = []
    zs = record["zero_shot"]
    for fold, v in (zs.get("per_fold") or {}).items():
        rows.append({**base, "method": "zero-shot", "test_fold": int(fold), "n_test": v["n_test"],
                     "accuracy": v["accuracy"]})
    for fold, v in record["probe"]["per_fold"].items():
        rows.append({**base, "method": "probe", "test_fold": int(fold), "n_test": v["n_test"],
                     "accuracy": v["accuracy"], "early_stop_fold": v["early_stop_fold"],
                     "n_train": v["n_train"], "n_early_stop": v["n_early_stop"],
                     "best_epoch": v["best_epoch"], "epochs_run": v["epochs_run"]})
    return pd.DataFrame(rows)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def format_table(record: dict) -> str:
    """The printed comparison: each published figure beside this run's, with the notices first."""
    b = record["backbone"]
    d = record["data"]
    tag = " [RANDOM WEIGHTS]" if record["flags"]["random_weights"] else ""
    tag += " [SUBSET]" if record["flags"]["subset"] else ""
    lines = [f"ESC-50 benchmark: {b.get('display_name') or b.get('name')}, {d['n_clips']} clips, "
             f"{d['n_classes']} classes, folds {', '.join(d['folds'])}"]
    lines += [f"  ** {n}" for n in record["notices"]]
    zs, pr = record["zero_shot"], record["probe"]
    a_zs, a_pr = ANCHORS["zero-shot"], ANCHORS["probe"]
    if zs["applicable"]:
        s = zs["spread"]
        folds = ", ".join(_pct(v["accuracy"]) for _, v in sorted(zs["per_fold"].items(), key=lambda t: int(t[0])))
        ci = zs["accuracy_ci"]
        yours = (f"{_pct(zs['accuracy'])} % over {zs['n']} clips [{_pct(ci['low'])}, {_pct(ci['high'])}], "
                 f"{len(zs['candidates'])} candidates; folds {_pct(s['mean'])} +/- {_pct(s['std'])} % ({folds})")
    else:
        yours = zs["reason"]
    published_zs = f"{_pct(a_zs['accuracy'])} % (published)"
    published_pr = f"{_pct(a_pr['accuracy'])} +/- {_pct(a_pr['std'])} % (published)"
    width = max(len(published_zs), len(published_pr))
    lines.append(f"zero-shot  {published_zs:<{width}} | yours {yours}{tag if zs['applicable'] else ''}")
    s = pr["spread"]
    folds = ", ".join(_pct(v["accuracy"]) for _, v in sorted(pr["per_fold"].items(), key=lambda t: int(t[0])))
    lines.append(f"probe      {published_pr:<{width}} | yours "
                 f"{_pct(s['mean'])} +/- {_pct(s['std'])} % over {s['n']} folds ({folds}){tag}")
    if record.get("paired"):
        p = record["paired"]
        if p.get("low") is not None:
            lines.append(f"probe - zero-shot: {100 * p['mean']:+.1f} points [{100 * p['low']:+.1f}, "
                         f"{100 * p['high']:+.1f}] (paired t over {p['n']} folds)")
    lines.append(f"published (MS-CLAP 2023, full ESC-50: 2000 clips, 50 classes, 5 folds): zero-shot "
                 f"{a_zs['source']}; probe {a_pr['source']}")
    e = record["embeddings"]
    lines.append(f"embeddings: {e['n_computed']} computed, {e['n_cached']} from the cache; "
                 f"{record['seconds']['total']:.1f} s in all")
    return "\n".join(lines)
