"""Official cross-validation folds (``--protocol folds``), beside the paper's seeded plan.

ESC-50 ships 5 folds and UrbanSound8K 10; clips cut from one freesound recording share a fold, so
a fold split is group-disjoint by construction. As in the HEAR kit, repeat ``i`` tests on fold
``i``, stops early and selects on the next fold (``i+1``, cyclically) and trains on the rest. Our
probe keeps the paper's four splits, so that next fold's *groups* are dealt half to
``validation`` (model selection, reported) and half to ``early_stop`` (seeded, per class).

A table mixing sources with different fold counts (the shared clips: ESC-50 and UrbanSound8K) is
put on the smallest count: fold ``f`` becomes ``(f - 1) % n + 1`` (UrbanSound8K folds 1 and 6
become fold 1, ...). Merging folds keeps every group inside one fold.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from clapnb import taxonomy
from clapnb.ranges import parse_seeds  # noqa: F401  (re-exported: folds.parse_seeds is the repeats' API)
from clapnb.errors import InputError

PROTOCOLS = ("paper", "folds")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """The segments module's keyed generator (same construction; no import of segments: no circle)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode("utf-8")) for k in keys)])


def _class_order(classes) -> list[str]:
    rank = {c: i for i, c in enumerate(taxonomy.SLUGS)}
    return sorted(set(classes), key=lambda c: (rank.get(c, len(rank)), c))


def _source(recordings: pd.DataFrame) -> pd.Series:
    return recordings["source"].astype(str) if "source" in recordings.columns else pd.Series("data", recordings.index)


def fold_numbers(recordings: pd.DataFrame) -> tuple[pd.Series, int, list[str]]:
    """Per recording its (possibly merged) fold 1..n, the number of folds n, and notices.

    Refuses recordings without a fold, a source with a single fold, and a group whose recordings of
    one label span folds (it would leak between test and train); a group giving *different* labels to
    different folds is the data set's own protocol (ESC-50 has two): kept, with a notice.
    """
    rec = recordings[recordings["class"].notna()] if "class" in recordings.columns else recordings
    if "fold" not in rec.columns or rec["fold"].isna().any():
        n_missing = len(rec) if "fold" not in rec.columns else int(rec["fold"].isna().sum())
        example = rec.loc[rec["fold"].isna(), "path"].iloc[0] if "fold" in rec.columns else rec["path"].iloc[0]
        raise InputError(f"--protocol folds: {n_missing} recording(s) have no official fold, e.g. {example}; "
                         "use --protocol paper, or give a manifest with a 'fold' column")
    fold = rec["fold"].astype(int)
    src = _source(rec)
    per_source = {s: sorted(fold[src == s].unique()) for s in sorted(src.unique())}
    for s, folds in per_source.items():
        if len(folds) < 3:
            raise InputError(f"--protocol folds: source {s} has {len(folds)} fold(s) ({folds}); cross-validation "
                             "needs at least 3 (test, validation, train); use --protocol paper")
    n = min(max(f) for f in per_source.values())
    notices = []
    if any(max(f) != n for f in per_source.values()):
        merged = ", ".join(f"{s} ({max(f)} folds)" for s, f in per_source.items() if max(f) != n)
        notices.append(f"notice: sources have different fold counts; {merged} put on {n} folds "
                       f"(fold f -> (f-1) % {n} + 1)")
    out = (fold - 1) % n + 1
    table = pd.DataFrame({"group": rec["group"], "fold": out, "source": src,
                          "class": rec[next((c for c in ("label", "class") if c in rec.columns), "group")]})
    # One recording published in two data sets (a freesound clip in ESC-50 and in UrbanSound8K): each
    # set's folds are official but they do not know of each other, so the group follows the fold it has
    # in the source with the fewest folds (whose folds are kept as they are) rather than leak.
    rank = {s: (max(f), s) for s, f in per_source.items()}
    crossing = table.groupby("group").filter(lambda t: t["source"].nunique() > 1 and t["fold"].nunique() > 1)
    if len(crossing):
        anchor = (crossing.assign(rank=crossing["source"].map(rank)).sort_values(["group", "rank", "fold"])
                  .drop_duplicates("group").set_index("group")["fold"])
        moved = table["group"].isin(anchor.index)
        table.loc[moved, "fold"] = table.loc[moved, "group"].map(anchor).to_numpy()
        out = table["fold"].astype(int)
        shown = ", ".join(f"{g} -> fold {int(f)}" for g, f in list(anchor.items())[:3])
        notices.append(f"notice: {len(anchor)} recording group(s) appear in two data sets with different folds, "
                       f"e.g. {shown}; each put in the fold of the data set with the fewest folds, so it is in "
                       "one split only")
    spans = table.groupby("group")["fold"].nunique()
    per_class = table.groupby(["group", "class"])["fold"].nunique()
    if (per_class > 1).any():
        g, _ = per_class[per_class > 1].index[0]
        raise InputError(f"--protocol folds: group {g} has recordings in {int(spans[g])} folds; one source "
                         "recording in two folds leaks between test and train. Fix the manifest's fold column "
                         "or use --protocol paper (it splits by group)")
    if (spans > 1).any():
        # ESC-50 itself does this (freesound 134049: hen in fold 2, rooster in fold 3, both chicken_coop
        # here: the labels, not our classes, tell the data set's own choice); its published
        # figures keep those folds, so we keep them too and say so rather than refuse the data set.
        folds_of = table.groupby("group")["fold"].agg(lambda f: sorted({int(x) for x in f}))
        shown = ", ".join(f"{g} (folds {', '.join(map(str, folds_of[g]))})" for g in spans[spans > 1].index[:3])
        notices.append(f"notice: {int((spans > 1).sum())} group(s) give recordings of different labels to "
                       f"different official folds, e.g. {shown}; kept as the data set gives them (its published "
                       "protocol does), so these source recordings are shared between test and train")
    return out, n, notices


def assign_fold_splits(recordings: pd.DataFrame, *, test_fold: int, seed: int = 0) -> pd.DataFrame:
    """Recordings with a class and a ``split`` column for one cross-validation repeat.

    ``test_fold`` (1..n) is the test split; fold ``test_fold % n + 1`` is halved by group into
    validation and early_stop; the other folds are train.
    """
    rec = recordings[recordings["class"].notna()].copy()
    fold, n, _ = fold_numbers(rec)
    if not (isinstance(test_fold, (int, np.integer)) and 1 <= test_fold <= n):
        raise InputError(f"--protocol folds: test fold {test_fold!r} is not one of the {n} folds (1..{n})")
    held = test_fold % n + 1
    rec["fold"] = fold.astype("Int64").to_numpy()
    rec["split"] = np.where(fold == test_fold, "test", np.where(fold == held, "", "train"))
    # deal the held-out fold's groups per class: validation first, then early_stop, alternating
    held_rows = rec[rec["split"] == ""]
    primary = held_rows.groupby("group")["class"].agg(lambda c: c.value_counts().index[0])
    split_of = {}
    for cls in _class_order(primary.unique()):
        groups = sorted(primary[primary == cls].index)
        order = _rng(seed, "fold-split", cls, str(test_fold)).permutation(len(groups))
        for rank, i in enumerate(order):
            split_of[groups[i]] = "validation" if rank % 2 == 0 else "early_stop"
    mask = rec["split"] == ""
    rec.loc[mask, "split"] = rec.loc[mask, "group"].map(split_of)
    return rec.reset_index(drop=True)
