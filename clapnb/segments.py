"""Segments of L seconds from a recordings table: group-aware split, cutting, balancing.

Order matters for leakage: recordings are split into train / validation / early_stop / test *by
group* (clips of one source recording share a group) before anything is cut, so no recording, and
no freesound source, contributes to two splits. The split depends on the seed and the recordings
only, not on L, so every length is evaluated on the same test recordings.

Per class and split, the real segments are then subsampled to the target count, or topped up
with Gaussian-noise copies of real segments of the same split (the paper's augmentation). Every
random choice draws from a generator keyed by (seed, purpose, class, split), so adding a class
does not reshuffle the others. The noise of a copy is keyed by the copy itself (:func:`noise_seed`),
so repeats over seeds share the embeddings of the copies they have in common.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import __version__, io, taxonomy
from clapnb.errors import InputError
from clapnb.store import LengthFolder

SPLITS: tuple[str, ...] = ("train", "validation", "early_stop", "test")
#: Paper: 500 train, 100 validation, 100 early-stopping and 100 test segments per class.
DEFAULT_COUNTS: tuple[int, ...] = (500, 100, 100, 100)

COLUMNS = ["segment_id", "path", "sha256", "source", "label", "class", "approximate", "split", "group",
           "fold", "start_s", "end_s", "length_s", "padded", "augmented", "source_segment", "snr_db",
           "noise_seed", "lowpass_hz", "channel"]
_NEEDED = ["path", "sha256", "source", "label", "class", "group", "duration_s"]


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(k.encode("utf-8")) for k in keys)])


def _class_order(classes) -> list[str]:
    rank = {c: i for i, c in enumerate(taxonomy.SLUGS)}
    return sorted(set(classes), key=lambda c: (rank.get(c, len(rank)), c))


def _check_counts(counts: Sequence[int]) -> tuple[int, ...]:
    counts = tuple(counts)
    if len(counts) != len(SPLITS) or not all(isinstance(c, (int, np.integer)) and c > 0 for c in counts):
        raise InputError(f"counts must be {len(SPLITS)} positive whole numbers ({', '.join(SPLITS)}), "
                         f"got {counts!r}; e.g. --counts 500,100,100,100")
    return tuple(int(c) for c in counts)


def _fractions(counts: tuple[int, ...], split_fractions: Sequence[float] | None) -> np.ndarray:
    f = np.asarray(counts if split_fractions is None else split_fractions, dtype=float)
    if f.shape != (len(SPLITS),) or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise InputError(f"split_fractions must be {len(SPLITS)} positive numbers ({', '.join(SPLITS)}), "
                         f"got {split_fractions!r}")
    return f / f.sum()


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative whole number, got {seed!r}")
    return int(seed)


def allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` groups into len(fractions) whole shares (largest remainder), each >= 1 if n allows.

    With fewer groups than splits, the largest-fraction splits get one group each and the rest
    none; the caller reports those empty splits.
    """
    f = np.asarray(fractions, dtype=float)
    k = len(f)
    order = sorted(range(k), key=lambda i: (-f[i], i))
    if n < k:
        alloc = [0] * k
        for i in order[:n]:
            alloc[i] = 1
        return alloc
    raw = n * f / f.sum()
    alloc = [int(math.floor(r)) for r in raw]
    by_remainder = sorted(range(k), key=lambda i: (-(raw[i] - alloc[i]), i))
    for i in by_remainder[: n - sum(alloc)]:
        alloc[i] += 1
    while 0 in alloc:
        donor = max(range(k), key=lambda i: (alloc[i], -i))
        alloc[donor] -= 1
        alloc[alloc.index(0)] += 1
    return alloc


def _require(recordings: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in recordings.columns]
    if missing:
        raise InputError(f"the recordings table lacks the column(s) {', '.join(missing)}; "
                         "build it with clapnb.datasets.load_recordings")


def assign_splits(recordings: pd.DataFrame, *, seed: int = 0, counts: Sequence[int] = DEFAULT_COUNTS,
                  split_fractions: Sequence[float] | None = None) -> pd.DataFrame:
    """Recordings that have a class, with a ``split`` column; whole groups go to one split.

    Each group belongs to the class most of its recordings have (ties: the class with fewer groups,
    then taxonomy order); per class
    its groups are shuffled (seeded) and dealt to the splits in proportion to ``split_fractions``
    (default: proportional to ``counts``).
    """
    _require(recordings, ["class", "group"])
    seed = _check_seed(seed)
    fractions = _fractions(_check_counts(counts), split_fractions)
    rec = recordings[recordings["class"].notna()].copy()
    rank = {c: i for i, c in enumerate(_class_order(rec["class"]))}
    sizes = rec.groupby(["group", "class"]).size().reset_index(name="n")
    sizes["rank"] = sizes["class"].map(rank)
    # Ties go to the class with fewer groups: it is the one that may otherwise miss a split.
    sizes["n_groups"] = sizes["class"].map(sizes.groupby("class")["group"].nunique())
    primary = (sizes.sort_values(["group", "n", "n_groups", "rank"], ascending=[True, False, True, True])
               .drop_duplicates("group"))
    split_of: dict[str, str] = {}
    for cls in _class_order(primary["class"]):
        groups = sorted(primary.loc[primary["class"] == cls, "group"])
        shuffled = [groups[i] for i in _rng(seed, "split", cls).permutation(len(groups))]
        start = 0
        for split, n in zip(SPLITS, allocate(len(groups), fractions)):
            for g in shuffled[start:start + n]:
                split_of[g] = split
            start += n
    rec["split"] = rec["group"].map(split_of)
    return rec.reset_index(drop=True)


def empty_cells(assigned: pd.DataFrame) -> dict[str, list[str]]:
    """Classes with no recording in some split: {class: [missing splits]}."""
    present = assigned.groupby("class")["split"].agg(set)
    return {c: [s for s in SPLITS if s not in present[c]] for c in _class_order(assigned["class"])
            if len(present[c]) < len(SPLITS)}


def cut_segments(assigned: pd.DataFrame, length_s: float, hop_s: float | None = None) -> pd.DataFrame:
    """Every real segment: starts at 0, hop, 2*hop, ... while the segment fits in the recording.

    A recording shorter than ``length_s`` yields exactly one segment starting at 0 (``padded``:
    the audio repeats to fill it, see :func:`clapnb.audio.cut`).
    """
    hop = length_s if hop_s is None else hop_s
    dur = assigned["duration_s"].to_numpy(dtype=float)
    n = np.where(dur + 1e-9 < length_s, 1, np.floor((dur - length_s) / hop + 1e-9).astype(int) + 1)
    idx = np.repeat(np.arange(len(assigned)), n)
    k = np.concatenate([np.arange(m) for m in n]) if len(n) else np.zeros(0, int)
    seg = assigned.iloc[idx].reset_index(drop=True)
    seg["start_s"] = np.round(k * hop, 6)
    seg["end_s"] = np.round(seg["start_s"] + length_s, 6)
    seg["length_s"] = float(length_s)
    seg["padded"] = seg["end_s"] > seg["duration_s"] + 1e-6
    start_ms = np.rint(seg["start_s"].to_numpy() * 1000).astype(np.int64)
    seg["segment_id"] = [f"{h[:12]}:{ms}" for h, ms in zip(seg["sha256"], start_ms)]
    return seg


def noise_seed(segment_id: str) -> int:
    """Seed of one augmented segment's noise: a hash of the copy's id (recording, start, copy number).

    Not of the run seed: the split seed re-draws which recordings go where and which segments are
    copied, but a given copy of a given segment is the same audio in every repeat, so ``--seeds``
    reuses its cached embedding (5 seeds at 500/100/100/100 embed 1.16 x one seed's segments on the
    shared data instead of 4.6 x). 52 bits, so that even a reader that turns the nullable column
    into float64 keeps it exact.
    """
    return int(hashlib.sha256(f"noise:{segment_id}".encode()).hexdigest()[:13], 16)


def _round_robin(cell: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Seeded order that takes one segment per recording per round, so picks spread over recordings."""
    shuffled = cell.iloc[rng.permutation(len(cell))]
    rounds = shuffled.groupby("path", sort=False).cumcount().to_numpy()
    return shuffled.iloc[np.argsort(rounds, kind="stable")]


def balance(real: pd.DataFrame, counts: Sequence[int], *, seed: int = 0, snr_db: float = 20.0) -> pd.DataFrame:
    """Exactly ``counts[split]`` segments per class and split: subsample, or top up with noisy copies."""
    counts = _check_counts(counts)
    parts = []
    for (cls, split), cell in real.groupby(["class", "split"], sort=True):
        target = counts[SPLITS.index(split)]
        order = _round_robin(cell.sort_values("segment_id"), _rng(seed, "select", cls, split))
        chosen = order.iloc[:target].assign(augmented=False, source_segment="", snr_db=np.nan)
        chosen["noise_seed"] = pd.array([pd.NA] * len(chosen), dtype="Int64")
        parts.append(chosen)
        extra = target - len(order)
        if extra > 0:
            pos = np.arange(extra)
            aug = order.iloc[pos % len(order)].copy()
            src = aug["segment_id"].to_numpy()
            aug["segment_id"] = [f"{s}+aug{r}" for s, r in zip(src, pos // len(order) + 1)]
            aug["augmented"] = True
            aug["source_segment"] = src
            aug["snr_db"] = float(snr_db)
            aug["noise_seed"] = pd.array([noise_seed(s) for s in aug["segment_id"]], dtype="Int64")
            parts.append(aug)
    out = pd.concat(parts, ignore_index=True)
    out["_split"] = out["split"].map(SPLITS.index)
    out["_class"] = out["class"].map({c: i for i, c in enumerate(_class_order(out["class"]))})
    out = out.sort_values(["_split", "_class", "path", "start_s", "augmented", "segment_id"], kind="mergesort")
    return out.drop(columns=["_split", "_class"]).reset_index(drop=True)


def build_segments(recordings: pd.DataFrame, length_s: float, *, counts: Sequence[int] = DEFAULT_COUNTS,
                   seed: int = 0, hop_s: float | None = None, snr_db: float = 20.0,
                   drop_empty_classes: bool = False,
                   split_fractions: Sequence[float] | None = None,
                   lowpass_hz: float | None = None, test_fold: int | None = None) -> pd.DataFrame:
    """The segments table for one length (schema: docs/architecture.md, "Segments table").

    ``test_fold``: split by the data set's official folds (:mod:`clapnb.folds`, ``--protocol
    folds``) instead of the seeded plan; the seed still drives sampling and augmentation.

    ``lowpass_hz``: bandwidth harmonisation (:mod:`clapnb.shortcuts`); every segment is to be
    cut from its recording low-passed at this frequency. Recorded in the ``lowpass_hz`` column
    (NaN: full bandwidth), which the embeddings read when they materialise the audio.
    """
    _require(recordings, _NEEDED)
    if not (isinstance(length_s, (int, float, np.number)) and math.isfinite(length_s) and length_s >= 0.01):
        raise InputError(f"segment length must be a number of seconds >= 0.01, got {length_s!r}")
    if hop_s is not None and not (math.isfinite(hop_s) and hop_s >= 0.001):
        raise InputError(f"hop must be a number of seconds >= 0.001 (or omitted for non-overlapping "
                         f"segments), got {hop_s!r}")
    if not math.isfinite(snr_db):
        raise InputError(f"snr_db must be a finite number of decibels, got {snr_db!r}")
    if lowpass_hz is not None and not (isinstance(lowpass_hz, (int, float, np.number))
                                       and math.isfinite(lowpass_hz) and lowpass_hz > 0):
        raise InputError(f"lowpass_hz must be a positive frequency in Hz (or None for full bandwidth), "
                         f"got {lowpass_hz!r}")
    counts = _check_counts(counts)
    rec = recordings[recordings["class"].notna()]
    if rec.empty:
        raise InputError("no recording has a class: check the label mapping (--mapping)")
    dup = rec["sha256"][rec["sha256"].duplicated()]
    if len(dup):
        paths = rec.loc[rec["sha256"] == dup.iloc[0], "path"].tolist()
        raise InputError(f"{len(dup)} recording(s) have the same bytes as another, e.g. {' and '.join(paths)}; "
                         "a duplicate would leak between splits, remove it")
    if "content_sha256" in rec.columns:
        cdup = rec["content_sha256"][rec["content_sha256"].notna() & rec["content_sha256"].duplicated()]
        if len(cdup):
            paths = rec.loc[rec["content_sha256"] == cdup.iloc[0], "path"].tolist()
            raise InputError(f"{len(cdup)} recording(s) hold the same decoded audio as another, e.g. "
                             f"{' and '.join(paths)}; a duplicate would leak between splits, remove it")
    bad_dur = rec.loc[~(rec["duration_s"] > 0), "path"].tolist()
    if bad_dur:
        raise InputError(f"{len(bad_dur)} recording(s) have no duration, e.g. {bad_dur[0]}")

    if test_fold is None:
        assigned = assign_splits(rec, seed=seed, counts=counts, split_fractions=split_fractions)
    else:
        from clapnb.folds import assign_fold_splits

        assigned = assign_fold_splits(rec, test_fold=test_fold, seed=seed)
    holes = empty_cells(assigned)
    if holes and not drop_empty_classes:
        n_groups = assigned.groupby("class")["group"].nunique()
        lines = "; ".join(f"{c} has {n_groups[c]} group(s), none in {', '.join(s)}" for c, s in holes.items())
        raise InputError(
            f"every class needs audio from at least one independent recording (group) in each of the "
            f"{len(SPLITS)} splits ({', '.join(SPLITS)}): {lines}. Add recordings, map the class away, "
            "or pass --drop-empty-classes to leave these classes out")
    assigned = assigned[~assigned["class"].isin(list(holes))]
    if assigned.empty:
        raise InputError("every class lacks audio in some split; nothing is left to segment")
    for col, default in (("approximate", False), ("fold", pd.NA), ("channel", "mix")):
        if col not in assigned.columns:
            assigned = assigned.assign(**{col: default})
    assigned = assigned.assign(fold=assigned["fold"].astype("Int64"), approximate=assigned["approximate"].astype(bool))
    real = cut_segments(assigned, float(length_s), hop_s)
    out = balance(real, counts, seed=seed, snr_db=snr_db)
    out["lowpass_hz"] = np.nan if lowpass_hz is None else float(lowpass_hz)
    out["channel"] = out["channel"].fillna("mix").astype(str)
    return out[COLUMNS]


#: Above these shares :func:`notices` speaks up: most segments repeat a shorter recording, or
#: most are noisy copies (the counts ask for more than the recordings hold).
PADDED_NOTICE = 0.5
AUGMENTED_NOTICE = 0.5


def notices(table: pd.DataFrame) -> list[str]:
    """One-line notices about a segments table a user should know before trusting its numbers."""
    out = []
    if not len(table):
        return out
    real = table[~table["augmented"].astype(bool)]
    length = float(table["length_s"].iloc[0])
    if len(real) and real["padded"].mean() > PADDED_NOTICE:
        n_pad = int(real["padded"].sum())
        out.append(f"notice: {n_pad} of {len(real)} real segments ({100 * n_pad / len(real):.0f} %) are longer than "
                   f"their recording, which repeats to fill {length:g} s; choose a --length up to the typical "
                   "recording duration" + ("" if n_pad < len(real) else " (every segment is padded)"))
    aug = float(table["augmented"].mean())
    if aug > AUGMENTED_NOTICE:
        out.append(f"notice: {int(table['augmented'].sum())} of {len(table)} segments ({100 * aug:.0f} %) are "
                   f"noise-augmented copies of {len(real)} real segments: --counts asks for more than the "
                   "recordings hold; lower --counts or add recordings")
    return out


def table_lowpass(table: pd.DataFrame, explicit: float | None = None) -> float | None:
    """The low-pass frequency a segments table asks for (its ``lowpass_hz`` column), or ``explicit``.

    One table has one bandwidth: mixed values, or an ``explicit`` value that contradicts the
    column, are refused, since the embedding cache is keyed by a single low-pass setting.
    """
    values = set()
    if "lowpass_hz" in table.columns:
        values = {float(v) for v in pd.to_numeric(table["lowpass_hz"]).dropna().unique()}
    if len(values) > 1:
        raise InputError(f"the segments table mixes low-pass frequencies {sorted(values)} Hz in its lowpass_hz "
                         "column; rebuild it with one --harmonise-bandwidth setting")
    recorded = values.pop() if values else None
    if explicit is not None and recorded is not None and float(explicit) != recorded:
        raise InputError(f"low-pass {explicit:g} Hz was asked for, but the segments table was built "
                         f"harmonised at {recorded:g} Hz (column lowpass_hz); drop the low-pass option or "
                         "rebuild the segments with the bandwidth you want")
    return float(explicit) if explicit is not None else recorded


def data_fingerprint(table: pd.DataFrame) -> str:
    """Fingerprint of the data a table rests on: the sorted (sha256, class, group) triples."""
    rows = table[table["class"].notna()]
    triples = sorted({(h, c, g) for h, c, g in zip(rows["sha256"], rows["class"], rows["group"])})
    return io.fingerprint([[list(t) for t in triples]])


def count_table(segments: pd.DataFrame) -> pd.DataFrame:
    """Real vs augmented segments per class and split (one row per class, split)."""
    t = (segments.assign(real=~segments["augmented"], aug=segments["augmented"])
         .groupby(["class", "split"], sort=False)[["real", "aug"]].sum().astype(int)
         .rename(columns={"aug": "augmented"}).reset_index())
    t["_s"] = t["split"].map(SPLITS.index)
    t["_c"] = t["class"].map({c: i for i, c in enumerate(_class_order(t["class"]))})
    return t.sort_values(["_c", "_s"]).drop(columns=["_c", "_s"]).reset_index(drop=True)


def read_segments(path: str | os.PathLike, *, nullable_int: bool = True) -> pd.DataFrame:
    """Read a segments.parquet with its nullable integer columns (``fold``, ``noise_seed``) as Int64.

    Plain ``pd.read_parquet`` turns an integer column with missing values into float64.
    """
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist; build it with `clapnb segments`")
    return io.read_parquet(path, "segments table", "rebuild it with `clapnb segments` (delete it and its "
                                                   "dataset.json first)", nullable_int=nullable_int)


def write_segments(df: pd.DataFrame, out_dir: str | os.PathLike, info: dict) -> Path:
    """Write ``segments.parquet`` and ``dataset.json`` (written last: its presence means complete)."""
    lf = LengthFolder(out_dir)
    path = io.atomic_write_parquet(lf.segments, df)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for row in count_table(df).itertuples(index=False):
        counts.setdefault(row[0], {})[row[1]] = {"real": int(row.real), "augmented": int(row.augmented)}
    doc = {
        **info,
        "clapnb_version": __version__,
        "length_s": float(df["length_s"].iloc[0]) if len(df) else None,
        "n_segments": int(len(df)),
        "n_augmented": int(df["augmented"].sum()),
        "lowpass_hz": table_lowpass(df),
        "notices": notices(df),
        "counts": counts,
        "data_fingerprint": info.get("data_fingerprint") or data_fingerprint(df),
        "segments_sha256": io.file_sha256(path),
    }
    io.atomic_write_json(lf.dataset, doc)
    return path
