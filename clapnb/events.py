"""The events table and its exports/readers: CSV/parquet, Audacity labels, Raven selection tables.

The events table (contract between detect, levels and review; docs/architecture.md): one row per
event, ``file`` (str, path as given), ``onset_s``, ``offset_s`` (seconds from the file's start),
``class`` (taxonomy slug), ``score`` (in [0, 1]); optional ``start_time``/``end_time`` (clock
time, when the recording's start is known). Extra columns are allowed and ignored by readers.

A *reference* (annotations to score against) has the same first four columns and no score; it
may come as a CSV, an Audacity label file (``onset<TAB>offset<TAB>label``) or a Raven selection
table; :func:`read_reference` reads all three.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import io
from clapnb.errors import InputError

EVENT_COLUMNS = ("file", "onset_s", "offset_s", "class", "score")
TIME_COLUMNS = ("start_time", "end_time")
REFERENCE_COLUMNS = ("file", "onset_s", "offset_s", "class")
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Begin File", "File Offset (s)", "Class", "Score")


def empty_events(with_times: bool = False) -> pd.DataFrame:
    cols = list(EVENT_COLUMNS) + (list(TIME_COLUMNS) if with_times else [])
    return normalise(pd.DataFrame({c: [] for c in cols}))


def normalise(events: pd.DataFrame) -> pd.DataFrame:
    """Column order and dtypes of the contract; rows sorted by (file, onset, class)."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise InputError(f"an events table needs columns {list(EVENT_COLUMNS)}; missing {missing}")
    df = events.copy()
    df["file"] = df["file"].astype(str)
    df["class"] = df["class"].astype(str)
    for c in ("onset_s", "offset_s", "score"):
        df[c] = df[c].astype(np.float64)
    for c in TIME_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_datetime(df[c])
    first = [c for c in list(EVENT_COLUMNS) + list(TIME_COLUMNS) if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values(["file", "onset_s", "class"], kind="stable").reset_index(drop=True)


def drop_rejected(events: pd.DataFrame) -> pd.DataFrame:
    """A reviewed table (``clapnb.review``, a ``status`` column) as an events table: the operator's final
    events, i.e. without its ``rejected`` rows and rows relabelled ``background``. Other tables unchanged."""
    if "status" not in events.columns:
        return events
    keep = (events["status"].astype(str) != "rejected") & (events["class"].astype(str) != "background")
    return events[keep].reset_index(drop=True)


def write_events(events: pd.DataFrame, out_dir: str | os.PathLike, stem: str = "events") -> tuple[Path, Path]:
    """``<stem>.csv`` (ISO 8601 times) and ``<stem>.parquet``, both atomic."""
    out = Path(out_dir)
    df = normalise(events)
    csv_df = df.copy()
    for c in TIME_COLUMNS:
        if c in csv_df.columns:
            csv_df[c] = csv_df[c].map(lambda t: "" if pd.isna(t) else t.isoformat())
    io.atomic_write_text(out / f"{stem}.csv", csv_df.to_csv(index=False, float_format="%.6f"))
    io.atomic_write_parquet(out / f"{stem}.parquet", df)
    return out / f"{stem}.csv", out / f"{stem}.parquet"


def read_events(path: str | os.PathLike) -> pd.DataFrame:
    """An events table from ``events.csv`` or ``events.parquet`` (checked against the contract)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"events table {p} does not exist; run `clapnb detect` (it writes DIR/events.csv)")
    df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, keep_default_na=False,
                                                                        na_values={"onset_s": [""]})
    for c in TIME_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_datetime(df[c].replace("", None), format="ISO8601")
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{p}: not an events table (missing columns {missing}; expected {list(EVENT_COLUMNS)})")
    return normalise(drop_rejected(df))


# --- Audacity ----------------------------------------------------------------------------------

def write_audacity(events: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Audacity label track: ``onset<TAB>offset<TAB>label`` per event (label = class slug)."""
    lines = [f"{r['onset_s']:.6f}\t{r['offset_s']:.6f}\t{r['class']}" for r in events.to_dict("records")]
    return io.atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_audacity(path: str | os.PathLike, file: str | None = None) -> pd.DataFrame:
    """Reference rows from an Audacity label file; ``file`` defaults to the audio beside it (same stem)."""
    p = Path(path)
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.startswith("\\"):  # '\' lines hold a label's frequency range
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise InputError(f"{p} line {n}: an Audacity label line is 'onset<TAB>offset<TAB>label', got {line!r}")
        try:
            onset, offset = float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError(f"{p} line {n}: onset/offset are not numbers: {line!r}") from None
        rows.append({"onset_s": onset, "offset_s": offset, "class": parts[2].strip() if len(parts) > 2 else ""})
    df = pd.DataFrame(rows, columns=["onset_s", "offset_s", "class"]).astype({"onset_s": float, "offset_s": float,
                                                                              "class": object})
    df.insert(0, "file", file if file is not None else str(p.with_suffix("")))
    return df


# --- Raven -------------------------------------------------------------------------------------

def write_raven(events: pd.DataFrame, path: str | os.PathLike, durations: dict[str, float],
                high_freq_hz: dict[str, float] | None = None) -> Path:
    """One Raven selection table over every file, in the order of ``durations``.

    As Raven does for a file sequence, ``Begin Time (s)`` runs on across the files (the sum of the
    earlier files' durations plus the event's onset) and ``File Offset (s)`` is within
    ``Begin File``. Frequencies span the whole band (0 to Nyquist).
    """
    order = list(durations)
    base = dict(zip(order, np.concatenate([[0.0], np.cumsum([durations[f] for f in order])[:-1]])))
    df = normalise(events)
    unknown = sorted(set(df["file"]) - set(order))
    if unknown:
        raise InputError(f"write_raven: no duration for {unknown[:3]}")
    df = df.assign(_o=df["file"].map({f: i for i, f in enumerate(order)})).sort_values(["_o", "onset_s"], kind="stable")
    rows = []
    for k, rd in enumerate(df.drop(columns="_o").to_dict("records"), 1):
        b = base[rd["file"]]
        rows.append([k, "Spectrogram 1", 1, f"{b + rd['onset_s']:.6f}", f"{b + rd['offset_s']:.6f}", "0.0",
                     f"{(high_freq_hz or {}).get(rd['file'], 22050.0):.1f}", os.path.basename(rd["file"]),
                     f"{rd['onset_s']:.6f}", rd["class"], f"{rd['score']:.4f}"])
    text = "\t".join(RAVEN_COLUMNS) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows)
    return io.atomic_write_text(path, text)


def _raven_class_column(columns: Iterable[str]) -> str | None:
    for c in ("Class", "class", "Annotation", "Label", "Species", "Sound Type"):
        if c in columns:
            return c
    return None


def read_raven(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """Reference (or events) rows from a Raven selection table.

    The file comes from ``Begin Path`` when present, else ``Begin File`` (joined to ``folder`` when
    given); times from ``File Offset (s)`` when present (within the file), else ``Begin Time (s)``.
    Only the spectrogram view's rows are kept when a table lists one selection per view.
    """
    p = Path(path)
    df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    need = {"Begin Time (s)", "End Time (s)"}
    if not need <= set(df.columns):
        raise InputError(f"{p}: not a Raven selection table (needs columns {sorted(need)}; has {list(df.columns)[:8]})")
    if "View" in df.columns and df["View"].str.startswith("Spectrogram").any():
        df = df[df["View"].str.startswith("Spectrogram")]
    begin = df["Begin Time (s)"].astype(float)
    end = df["End Time (s)"].astype(float)
    onset = df["File Offset (s)"].astype(float) if "File Offset (s)" in df.columns else begin
    if "Begin Path" in df.columns:
        files = df["Begin Path"]
    elif "Begin File" in df.columns:
        files = df["Begin File"].map(lambda f: str(Path(folder) / f) if folder is not None else f)
    else:
        files = pd.Series([str(p.with_suffix(""))] * len(df), index=df.index)
    cls = _raven_class_column(df.columns)
    out = pd.DataFrame({"file": files.to_numpy(), "onset_s": onset.to_numpy(),
                        "offset_s": (onset + (end - begin)).to_numpy(),
                        "class": df[cls].to_numpy() if cls else ""})
    if "Score" in df.columns:
        out["score"] = df["Score"].replace("", np.nan).astype(float).to_numpy()
    return out.reset_index(drop=True)


# --- references --------------------------------------------------------------------------------

def sniff(path: str | os.PathLike) -> str:
    """``csv``, ``raven``, ``audacity`` or ``parquet`` from a file's first line."""
    p = Path(path)
    if p.suffix == ".parquet":
        return "parquet"
    with open(p, encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline()
    if first.startswith("Selection\t") or "Begin Time (s)" in first:
        return "raven"
    parts = first.rstrip("\n").split("\t")
    if len(parts) >= 2:
        try:
            float(parts[0]), float(parts[1])
            return "audacity"
        except ValueError:
            pass
    if first.startswith("\\") or not first.strip():
        return "audacity"
    return "csv"


def read_reference(path: str | os.PathLike, *, file: str | None = None, folder: str | os.PathLike | None = None,
                   classes: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A reference table (``file, onset_s, offset_s, class``) and notes on what was fixed.

    Reads CSV/parquet, Audacity labels (``file``: the audio it annotates; default the label
    file's stem) and Raven tables (``folder``: where ``Begin File`` lives). Refuses, naming the
    rows: a class not in ``classes`` (InputError), onset > offset, negative times. Overlapping
    events of one class in one file are merged into one (and said so in the notes), since
    event-based scoring would otherwise count one sound twice.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"reference {p} does not exist")
    kind = sniff(p)
    if kind == "raven":
        ref = read_raven(p, folder)
    elif kind == "audacity":
        ref = read_audacity(p, file)
    else:
        ref = pd.read_parquet(p) if kind == "parquet" else pd.read_csv(p)
        missing = [c for c in REFERENCE_COLUMNS if c not in ref.columns]
        if missing:
            raise InputError(f"{p}: a reference CSV needs columns {list(REFERENCE_COLUMNS)}; missing {missing} "
                             "(or give an Audacity label file or a Raven selection table)")
        if file is not None:
            ref["file"] = file
    ref = ref[list(REFERENCE_COLUMNS)].copy()
    ref["file"] = ref["file"].astype(str)
    ref["class"] = ref["class"].astype(str).str.strip()
    try:
        ref["onset_s"] = ref["onset_s"].astype(float)
        ref["offset_s"] = ref["offset_s"].astype(float)
    except ValueError as exc:
        raise InputError(f"{p}: onset_s/offset_s must be numbers ({exc})") from None
    times = ref[["onset_s", "offset_s"]]
    bad = ref[(ref["offset_s"] < ref["onset_s"]) | (ref["onset_s"] < 0) | times.isna().any(axis=1)]
    if len(bad):
        raise InputError(f"{p}: {len(bad)} reference event(s) with a negative time or offset before onset, e.g. "
                         f"{bad.iloc[0].to_dict()}; fix those rows")
    if classes is not None:
        known = set(classes)
        unknown = sorted(set(ref["class"]) - known)
        if unknown:
            n = int(ref["class"].isin(unknown).sum())
            raise InputError(f"{p}: {n} reference event(s) name class(es) {unknown} that the probe does not "
                             f"know (it has {sorted(known)}); map them to taxonomy slugs or remove them")
    return merge_overlaps(ref, p)


def merge_overlaps(ref: pd.DataFrame, source: str | os.PathLike = "reference") -> tuple[pd.DataFrame, list[str]]:
    """Merge overlapping (or touching) events of one class in one file; notes say which."""
    notes, rows = [], []
    ordered = ref.sort_values(["file", "class", "onset_s"], kind="stable")
    for (f, c), g in ordered.groupby(["file", "class"], sort=False):
        cur = None
        merged = 0
        for r in g.itertuples(index=False):
            if cur is not None and r.onset_s <= cur[1]:
                cur[1] = max(cur[1], r.offset_s)
                merged += 1
            else:
                if cur is not None:
                    rows.append((f, cur[0], cur[1], c))
                cur = [r.onset_s, r.offset_s]
        if cur is not None:
            rows.append((f, cur[0], cur[1], c))
        if merged:
            notes.append(f"{source}: {merged} overlapping '{c}' event(s) in {f} merged into the events they overlap")
    out = pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))
    return out.sort_values(["file", "onset_s", "class"], kind="stable").reset_index(drop=True), notes
