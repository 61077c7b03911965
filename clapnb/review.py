"""Operator review of detected events: a queue, answers saved at once, and the reviewed events table.

An operator listens to each detected event and answers: **accept** (the detector was right),
**reject** (a false alarm: the site's background), **relabel** (another class, or ``background``)
or **adjust** (right class, wrong onset/offset). This module is the review *model*: plain Python
over DataFrames, no widgets (:mod:`clapnb.review_widget` only calls it), so a script, a test,
the JupyterLab widget and an Audacity/Raven round trip all record answers the same way.

``DIR/reviewed.parquet`` (next to ``events.parquet``) holds one row per event of the queue and is
rewritten atomically after **every** answer, so a closed browser or a restarted kernel loses
nothing and reopening continues at the first unanswered event. It is also an events table
(``file, onset_s, offset_s, class, score``, the operator's *final* values): readers of events
tables drop its ``rejected`` rows and rows whose final class is ``background``
(:func:`clapnb.events.drop_rejected`), so ``clapnb levels --events reviewed.parquet`` uses the
operator's final events. Columns: docs/architecture.md, "Review".
"""

from __future__ import annotations

import builtins
import datetime as _dt
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import io
from clapnb.errors import InputError

REVIEWED_NAME = "reviewed.parquet"
STATUSES = ("pending", "accepted", "rejected", "relabelled", "adjusted", "added")
ANSWERED = ("accepted", "rejected", "relabelled", "adjusted", "added")
SORTS = ("score", "uncertainty", "level", "time")
BACKGROUND = "background"
#: One-letter shortcuts of the review widget (:meth:`Review.press`): answers to the current event, moves.
SHORTCUTS = {"a": "accept", "r": "reject", "b": "background", "l": "relabel", "n": "next", "p": "previous"}
REVIEW_COLUMNS = ("event_id", "status", "reviewer", "reviewed_at", "source", "original_class", "original_onset_s",
                  "original_offset_s", "threshold", "contribution_dB")


def event_id(file: str, onset_s: float, offset_s: float, cls: str) -> str:
    """A stable id of a detected event (its file, times to the millisecond and class)."""
    return io.fingerprint([str(file), round(float(onset_s), 3), round(float(offset_s), 3), str(cls)])[:12]


def thresholds(record: dict, classes: Iterable[str]) -> dict[str, float]:
    """Each class's decision threshold as detect.json records it (class thresholds override the global one)."""
    p = record.get("parameters", {})
    base = float(p.get("threshold", 0.5))
    per = {str(k): float(v) for k, v in (p.get("class_thresholds") or {}).items()}
    return {c: per.get(c, base) for c in classes}


def read_contributions(path: str | os.PathLike) -> pd.DataFrame:
    """``file, onset_s, class, contribution_dB`` from the ``events_levels.csv`` of ``clapnb levels``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"levels table {p} does not exist; run `clapnb levels --events DIR/events.csv ...` "
                         "(it writes OUT/events_levels.csv)")
    df = pd.read_csv(p)
    need = ["file", "onset_s", "class", "contribution_dB"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{p}: not an events_levels.csv of `clapnb levels` (missing {missing})")
    return df[need]


def _utc_now() -> pd.Timestamp:
    return pd.Timestamp(_dt.datetime.now(_dt.timezone.utc)).tz_convert(None)


def queue_from_events(events: pd.DataFrame, record: dict | None = None,
                      contributions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The review table of a detection: every event ``pending``, with its id, threshold and level contribution."""
    from clapnb import events as ev_mod

    ev = ev_mod.normalise(events)
    q = ev.copy()
    q.insert(0, "event_id", [event_id(*r) for r in ev[["file", "onset_s", "offset_s", "class"]].itertuples(index=False)])
    th = thresholds(record or {}, ev["class"].unique())
    q["status"] = "pending"
    q["reviewer"] = ""
    q["reviewed_at"] = pd.Series(pd.NaT, index=q.index, dtype="datetime64[ns]")
    q["source"] = ""
    q["original_class"] = ev["class"]
    q["original_onset_s"] = ev["onset_s"]
    q["original_offset_s"] = ev["offset_s"]
    q["threshold"] = ev["class"].map(th).astype(float)
    q["contribution_dB"] = np.nan
    if contributions is not None and len(contributions):
        key = lambda f, o, c: (os.path.realpath(str(f)), round(float(o), 2), str(c))  # noqa: E731
        lut = {key(r.file, r.onset_s, r["class"]): float(r.contribution_dB) for _, r in contributions.iterrows()}
        q["contribution_dB"] = [lut.get(key(f, o, c), np.nan) for f, o, c in zip(q["file"], q["onset_s"], q["class"])]
    return q


def order(queue: pd.DataFrame, sort: str = "score") -> pd.DataFrame:
    """The queue in review order: ``score`` (highest first), ``uncertainty`` (score closest to its class's
    threshold first), ``level`` (largest contribution to its interval's LAeq first) or ``time`` (file, onset)."""
    if sort not in SORTS:
        raise InputError(f"sort {sort!r}: choose one of {', '.join(SORTS)}")
    q = queue.copy()
    if sort == "score":
        key = -q["score"]
    elif sort == "uncertainty":
        key = (q["score"] - q["threshold"]).abs()
    elif sort == "level":
        if q["contribution_dB"].isna().all() and len(q):
            raise InputError("sort 'level' needs the level contributions: give levels=OUT/events_levels.csv "
                             "(from `clapnb levels --events DIR/events.csv`)")
        key = -q["contribution_dB"].fillna(-np.inf)
    else:
        key = pd.Series(0.0, index=q.index)
    q["_k"] = key.to_numpy()
    q["_o"] = q["original_onset_s"].fillna(q["onset_s"])
    by = ["_k", "file", "_o"] if sort != "time" else ["file", "_o"]
    q = q.sort_values(by, kind="stable").drop(columns=["_k", "_o"])
    return q.reset_index(drop=True)


def final_events(table: pd.DataFrame, include_pending: bool = True) -> pd.DataFrame:
    """The operator's final events: rejected rows and rows relabelled ``background`` left out."""
    keep = (table["status"] != "rejected") & (table["class"] != BACKGROUND)
    if not include_pending:
        keep &= table["status"] != "pending"
    return table[keep].reset_index(drop=True)


def read_reviewed(path: str | os.PathLike) -> pd.DataFrame:
    """A ``reviewed.parquet`` with every column (rejected rows included)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"reviewed table {p} does not exist; review a detection first (clapnb.review.open(DIR))")
    df = io.read_parquet(p, "reviewed events table", "restore it or delete it to start the review again",
                         nullable_int=False)
    missing = [c for c in ("file", "onset_s", "offset_s", "class", "score", "event_id", "status") if c not in df]
    if missing:
        raise InputError(f"{p}: not a reviewed events table (missing columns {missing})")
    bad = sorted(set(df["status"]) - set(STATUSES))
    if bad:
        raise InputError(f"{p}: unknown status value(s) {bad} (expected {', '.join(STATUSES)})")
    return df


class Review:
    """The review of one detect output folder by one operator.

    ``sort``: see :func:`order`; ``levels``: an ``events_levels.csv`` (needed for ``sort="level"``);
    ``classes``/``files``: filters (the queue shows only those); ``path``: where answers go
    (default ``DIR/reviewed.parquet``). Answers by earlier sessions (any reviewer) are kept.
    """

    def __init__(self, detect_dir: str | os.PathLike, reviewer: str, *, sort: str = "score",
                 levels: str | os.PathLike | None = None, classes: Sequence[str] | None = None,
                 files: Sequence[str] | None = None, path: str | os.PathLike | None = None) -> None:
        from clapnb import events as ev_mod

        self.dir = Path(detect_dir)
        if not reviewer or not str(reviewer).strip():
            raise InputError("reviewer: give the operator's name or initials (recorded with every answer)")
        self.reviewer = str(reviewer).strip()
        ev_path = self.dir / "events.parquet"
        if not ev_path.is_file():
            raise InputError(f"{self.dir}: no events.parquet; give the output folder of `clapnb detect`")
        self.record = io.read_json(self.dir / "detect.json") if (self.dir / "detect.json").is_file() else {}
        self.classes = list(self.record.get("probe", {}).get("classes", [])) or None
        contributions = read_contributions(levels) if levels is not None else None
        self.path = Path(path) if path is not None else self.dir / REVIEWED_NAME
        fresh = queue_from_events(ev_mod.read_events(ev_path), self.record, contributions)
        self.table = self._merge(fresh, read_reviewed(self.path) if self.path.is_file() else None)
        self.sort = sort
        self.filter_classes = list(classes) if classes else None
        self.filter_files = list(files) if files else None
        self.position = 0
        self._refresh()
        self.position = self.first_pending()

    # --- the table --------------------------------------------------------------------------

    @staticmethod
    def _merge(fresh: pd.DataFrame, saved: pd.DataFrame | None) -> pd.DataFrame:
        """Saved answers win over the fresh detection; answers whose event is gone are kept."""
        if saved is None or not len(saved):
            return fresh
        answered = saved[saved["status"] != "pending"]
        keep = fresh[~fresh["event_id"].isin(answered["event_id"])]
        if "contribution_dB" in fresh and len(answered):  # a newer levels table refreshes contributions
            lut = dict(zip(fresh["event_id"], fresh["contribution_dB"]))
            answered = answered.assign(contribution_dB=[lut.get(i, c) for i, c in
                                                        zip(answered["event_id"], answered["contribution_dB"])])
        return pd.concat([keep, answered.reindex(columns=fresh.columns)], ignore_index=True)

    def _refresh(self) -> None:
        self.table = order(self.table, self.sort)
        m = pd.Series(True, index=self.table.index)
        if self.filter_classes:
            m &= self.table["original_class"].fillna(self.table["class"]).isin(self.filter_classes)
        if self.filter_files:
            wanted = {os.path.realpath(f) for f in self.filter_files} | set(self.filter_files)
            m &= self.table["file"].map(lambda f: f in wanted or os.path.realpath(f) in wanted)
        self.queue = self.table[m].reset_index(drop=True)

    def set_sort(self, sort: str) -> None:
        self.sort = sort
        self._refresh()
        self.position = self.first_pending()

    def set_filter(self, classes: Sequence[str] | None = None, files: Sequence[str] | None = None) -> None:
        self.filter_classes = list(classes) if classes else None
        self.filter_files = list(files) if files else None
        self._refresh()
        self.position = self.first_pending()

    # --- navigation -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.queue)

    def first_pending(self) -> int:
        """Index of the first unanswered event of the queue (``len`` when all are answered)."""
        pend = np.flatnonzero(self.queue["status"].to_numpy() == "pending")
        return int(pend[0]) if len(pend) else len(self.queue)

    def current(self) -> dict | None:
        """The event at the current position (None past the end)."""
        return None if self.position >= len(self.queue) else self.queue.iloc[self.position].to_dict()

    def goto(self, i: int) -> dict | None:
        self.position = int(min(max(i, 0), len(self.queue)))
        return self.current()

    def next(self) -> dict | None:
        return self.goto(self.position + 1)

    def previous(self) -> dict | None:
        return self.goto(self.position - 1)

    def progress(self) -> tuple[int, int]:
        """(answered, total) over the current queue (filters applied)."""
        return int((self.queue["status"] != "pending").sum()), len(self.queue)

    def progress_text(self) -> str:
        done, total = self.progress()
        return f"{done} / {total} reviewed" + (f" (filtered; {len(self.table)} in all)" if total != len(self.table)
                                                else "")

    # --- answers ----------------------------------------------------------------------------

    def _target(self, event: str | None) -> str:
        if event is None:
            cur = self.current()
            if cur is None:
                raise InputError("no event at the current position: the queue is done")
            return cur["event_id"]
        if event not in set(self.table["event_id"]):
            raise InputError(f"no event {event!r} in this review")
        return event

    def answer(self, event: str | None = None, *, status: str, cls: str | None = None, onset_s: float | None = None,
               offset_s: float | None = None, source: str = "widget", advance: bool = True) -> dict:
        """Record one answer and save the table at once; returns the answered row."""
        if status not in ANSWERED:
            raise InputError(f"status {status!r}: choose one of {', '.join(ANSWERED)}")
        eid = self._target(event)
        i = int(np.flatnonzero(self.table["event_id"].to_numpy() == eid)[0])
        row = self.table.loc[i]
        cls = str(row["original_class"]) if cls is None else str(cls).strip()
        if self.classes is not None and cls not in self.classes and cls != BACKGROUND:
            raise InputError(f"class {cls!r} is not one of the probe's classes ({', '.join(self.classes)}) "
                             "nor 'background'")
        on = float(row["original_onset_s"] if onset_s is None else onset_s)
        off = float(row["original_offset_s"] if offset_s is None else offset_s)
        if not (0 <= on < off):
            raise InputError(f"onset {on:g} s / offset {off:g} s: need 0 <= onset < offset")
        if status == "rejected":
            cls, on, off = str(row["original_class"]), float(row["original_onset_s"]), float(row["original_offset_s"])
        self._write_row(i, status=status, cls=cls, on=on, off=off, source=source)
        out = self.table.loc[i].to_dict()
        self._save()
        self._refresh()
        if advance:
            self.position = self.first_pending()
        return out

    def _write_row(self, i: int, *, status: str, cls: str, on: float, off: float, source: str) -> None:
        t = self.table
        t.loc[i, ["status", "reviewer", "source", "class"]] = [status, self.reviewer, source, cls]
        t.loc[i, ["onset_s", "offset_s"]] = [on, off]
        t.loc[i, "reviewed_at"] = _utc_now()
        for c, base in (("start_time", "onset_s"), ("end_time", "offset_s")):
            if c in t and pd.notna(t.loc[i, c]) and pd.notna(t.loc[i, f"original_{base}"]):
                start = t.loc[i, c] - pd.Timedelta(seconds=float(t.loc[i, f"original_{base}"]))
                t.loc[i, c] = start + pd.Timedelta(seconds=float(t.loc[i, base]))

    def accept(self, event: str | None = None, **kw) -> dict:
        return self.answer(event, status="accepted", **kw)

    def reject(self, event: str | None = None, **kw) -> dict:
        return self.answer(event, status="rejected", **kw)

    def relabel(self, cls: str, event: str | None = None, **kw) -> dict:
        return self.answer(event, status="relabelled", cls=cls, **kw)

    def adjust(self, onset_s: float, offset_s: float, event: str | None = None, **kw) -> dict:
        return self.answer(event, status="adjusted", onset_s=onset_s, offset_s=offset_s, **kw)

    def add(self, file: str, onset_s: float, offset_s: float, cls: str, source: str = "widget") -> dict:
        """An event the detector missed (e.g. a label drawn in Audacity): status ``added``, score NaN."""
        if not 0 <= onset_s < offset_s:
            raise InputError(f"added event {file} {onset_s:g}..{offset_s:g} s: need 0 <= onset < offset")
        cls = str(cls).strip()
        if self.classes is not None and cls not in self.classes:
            raise InputError(f"added event {file} {onset_s:g} s: class {cls!r} is not one of the probe's classes "
                             f"({', '.join(self.classes)})")
        eid = "added-" + event_id(file, onset_s, offset_s, cls)
        row = {"event_id": eid, "file": str(file), "onset_s": float(onset_s), "offset_s": float(offset_s),
               "class": cls, "score": np.nan, "status": "added", "reviewer": self.reviewer, "source": source,
               "reviewed_at": _utc_now(), "original_class": "", "original_onset_s": np.nan,
               "original_offset_s": np.nan, "threshold": np.nan, "contribution_dB": np.nan}
        if eid not in set(self.table["event_id"]):
            self.table = pd.concat([self.table, pd.DataFrame([row])], ignore_index=True)
        self._save()
        self._refresh()
        return row

    # --- saving -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with builtins.open(self.path.parent / f".{self.path.name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _save(self) -> None:
        """Atomic rewrite; answers another session saved meanwhile (a second widget) are merged in."""
        with self._locked():
            if self.path.is_file():
                other = read_reviewed(self.path)
                mine = self.table.set_index("event_id")
                theirs = other[other["status"] != "pending"].set_index("event_id")
                newer = [e for e in theirs.index if e not in mine.index or (
                    mine.loc[e, "status"] == "pending" or
                    (pd.notna(theirs.loc[e, "reviewed_at"]) and theirs.loc[e, "reviewed_at"] > mine.loc[e, "reviewed_at"]))]
                if newer:
                    mine = pd.concat([mine.drop(index=[e for e in newer if e in mine.index]),
                                      theirs.loc[newer].reindex(columns=mine.columns)])
                self.table = mine.reset_index()
            io.atomic_write_parquet(self.path, self.table)

    def press(self, key: str, relabel_to: str | None = None) -> dict | None:
        """Act on one shortcut key (:data:`SHORTCUTS`; upper case too): an answer to the current event
        (saved at once, like a button) or a move. ``l`` relabels to ``relabel_to`` (the widget's class
        choice). Returns the answered row, or the event now current after a move."""
        k = str(key).lower()
        action = SHORTCUTS.get(k)
        if action is None:
            keys = ", ".join(f"{c}={a}" for c, a in SHORTCUTS.items())
            raise InputError(f"key {key!r} is not a shortcut ({keys})")
        if action == "next":
            return self.next()
        if action == "previous":
            return self.previous()
        if action == "accept":
            return self.accept()
        if action == "reject":
            return self.reject()
        if action == "background":
            return self.relabel(BACKGROUND)
        if not relabel_to:
            raise InputError("key 'l' relabels to the chosen class: choose a class first")
        return self.relabel(relabel_to)

    def answers(self) -> pd.DataFrame:
        """The answered rows (every status but pending)."""
        return self.table[self.table["status"] != "pending"].reset_index(drop=True)


def open(detect_dir: str | os.PathLike, reviewer: str | None = None, **kw):  # noqa: A001 (clapnb.review.open)
    """The review widget on a detect folder (JupyterLab); ``.model`` is its :class:`Review`."""
    from clapnb.review_widget import open_widget

    return open_widget(detect_dir, reviewer, **kw)


# --- round trip with Audacity and Raven ----------------------------------------------------------------

EXPORT_MANIFEST = "review_export.json"
TIME_TOLERANCE_S = 0.01  # times written with 6 decimals; an edit smaller than this is no edit


def _exported_rows(review: Review) -> pd.DataFrame:
    """What the operator edits: the queue's current events (filters applied), rejected ones left out."""
    q = review.queue
    return q[(q["status"] != "rejected") & (q["class"] != BACKGROUND)].reset_index(drop=True)


def _durations(review: Review, files: Iterable[str]) -> dict[str, float]:
    from clapnb import audio

    known = {f["file"]: f.get("duration_s") for f in review.record.get("files", []) if f.get("duration_s")}
    return {f: float(known[f]) if f in known else audio.probe(f).duration_s for f in files}


def export_queue(review: Review, out_dir: str | os.PathLike, kind: str = "audacity") -> Path:
    """Write the queue for a desktop tool: ``audacity`` (one label file per recording, label = class slug)
    or ``raven`` (one selection table, ``Class`` column). A manifest (``review_export.json``) lists the
    exported events, so :func:`import_edits` can tell what the operator changed, deleted or added."""
    from clapnb import events as ev_mod

    if kind not in ("audacity", "raven"):
        raise InputError(f"export kind {kind!r}: choose audacity or raven")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _exported_rows(review)
    files = list(dict.fromkeys(review.queue["file"]))
    ev = rows[["file", "onset_s", "offset_s", "class", "score"]].copy()
    ev["score"] = ev["score"].fillna(1.0)
    outputs: dict[str, str] = {}
    if kind == "audacity":
        used: set[str] = set()
        for f in files:
            name = Path(f).stem
            if name in used:
                name = f"{name}-{io.fingerprint([f])[:6]}"
            used.add(name)
            ev_mod.write_audacity(ev[ev["file"] == f], out / f"{name}.txt")
            outputs[f] = f"{name}.txt"
    else:
        ev_mod.write_raven(ev, out / "review_selections.txt", _durations(review, files))
        outputs = {f: "review_selections.txt" for f in files}
    manifest = {"kind": kind, "detect_dir": str(review.dir.resolve()), "outputs": outputs,
                "events": rows[["event_id", "file", "onset_s", "offset_s", "class"]].to_dict(orient="records")}
    io.atomic_write_json(out / EXPORT_MANIFEST, manifest)
    return out


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def match_edits(exported: pd.DataFrame, edited: pd.DataFrame) -> list[tuple[int | None, int | None]]:
    """Pairs (exported row, edited row) per file, one to one, greatest time overlap (IoU) first;
    ``(i, None)``: deleted, ``(None, j)``: a label the operator added."""
    pairs: list[tuple[int | None, int | None]] = []
    used_e: set[int] = set()
    used_d: set[int] = set()
    cand = []
    for i, a in exported.iterrows():
        for j, b in edited[edited["file"] == a["file"]].iterrows():
            iou = _overlap(a["onset_s"], a["offset_s"], b["onset_s"], b["offset_s"])
            if iou > 0:
                cand.append((-iou, i, j))
    for _, i, j in sorted(cand):
        if i not in used_e and j not in used_d:
            pairs.append((i, j))
            used_e.add(i)
            used_d.add(j)
    pairs += [(i, None) for i in exported.index if i not in used_e]
    pairs += [(None, j) for j in edited.index if j not in used_d]
    return pairs


def import_edits(review: Review, folder: str | os.PathLike, *, unchanged: str = "accept") -> dict[str, int]:
    """Read the files :func:`export_queue` wrote, after the operator edited them, as answers.

    A changed label -> relabel (a class slug, or ``background``); a deleted label -> reject; moved
    onset/offset -> adjust; an extra label -> an added event; an unchanged label -> accept
    (``unchanged="accept"``) or left as it was (``"keep"``). Returns counts per answer.
    """
    from clapnb import events as ev_mod

    folder = Path(folder)
    mpath = folder / EXPORT_MANIFEST
    if not mpath.is_file():
        raise InputError(f"{folder}: no {EXPORT_MANIFEST}; import the folder that export_queue wrote")
    if unchanged not in ("accept", "keep"):
        raise InputError(f"unchanged={unchanged!r}: accept or keep")
    man = io.read_json(mpath)
    exported = pd.DataFrame(man["events"], columns=["event_id", "file", "onset_s", "offset_s", "class"])
    by_name = {Path(f).name: f for f in man["outputs"]}
    if man["kind"] == "audacity":
        parts = []
        for f, name in man["outputs"].items():
            p = folder / name
            if not p.is_file():
                raise InputError(f"{p}: the label file of {f} is missing (export again, or restore it)")
            parts.append(ev_mod.read_audacity(p, file=f))
        edited = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(ev_mod.REFERENCE_COLUMNS))
    else:
        p = folder / "review_selections.txt"
        edited = ev_mod.read_raven(p)
        edited["file"] = edited["file"].map(lambda b: by_name.get(Path(b).name, b))
        unknown = sorted(set(edited["file"]) - set(man["outputs"]))
        if unknown:
            raise InputError(f"{p}: rows name file(s) {unknown[:3]} that were not exported")
    edited["class"] = edited["class"].astype(str).str.strip()
    allowed = set(review.classes or []) | {BACKGROUND}
    if review.classes is not None:
        bad = edited[~edited["class"].isin(allowed)]
        if len(bad):
            r = bad.iloc[0]
            raise InputError(f"{folder}: label {r['class']!r} ({r['file']} at {r['onset_s']:g} s) is not a class of "
                             f"the probe; use one of {', '.join(sorted(allowed))}")
    counts = {k: 0 for k in ("accepted", "rejected", "relabelled", "adjusted", "added", "unchanged")}
    source = man["kind"]
    for i, j in match_edits(exported, edited):
        if j is None:
            review.reject(exported.loc[i, "event_id"], source=source, advance=False)
            counts["rejected"] += 1
            continue
        b = edited.loc[j]
        if i is None:
            review.add(b["file"], float(b["onset_s"]), float(b["offset_s"]), b["class"], source=source)
            counts["added"] += 1
            continue
        a = exported.loc[i]
        moved = (abs(a["onset_s"] - b["onset_s"]) > TIME_TOLERANCE_S or abs(a["offset_s"] - b["offset_s"]) > TIME_TOLERANCE_S)
        times = dict(onset_s=float(b["onset_s"]), offset_s=float(b["offset_s"])) if moved else {}
        if b["class"] != a["class"]:
            review.relabel(b["class"], a["event_id"], source=source, advance=False, **times)
            counts["relabelled"] += 1
        elif moved:
            review.adjust(event=a["event_id"], source=source, advance=False, **times)
            counts["adjusted"] += 1
        elif unchanged == "accept":
            review.accept(a["event_id"], source=source, advance=False)
            counts["accepted"] += 1
        else:
            counts["unchanged"] += 1
    review.position = review.first_pending()
    return counts


# --- answers from a reference (a scripted review) -------------------------------------------------------

def answer_from_reference(review: Review, reference: pd.DataFrame, *, min_overlap: float = 0.1,
                          add_missed: bool = True) -> dict[str, int]:
    """Answer every pending event from a reference table (a scene's truth, another operator's labels).

    An event overlapping (IoU >= ``min_overlap``) a reference event of its class is accepted (adjusted
    to the reference's times when they differ by more than 0.5 s); of another class: relabelled to it;
    no overlap: rejected. Reference events no detection matched are added (``add_missed``).
    """
    q = review.table[review.table["status"] == "pending"]
    ref = reference.reset_index(drop=True)
    counts = {k: 0 for k in ("accepted", "rejected", "relabelled", "adjusted", "added")}
    matched: set[int] = set()
    for _, e in q.iterrows():
        same = ref[ref["file"].map(os.path.realpath) == os.path.realpath(e["file"])]
        best, best_iou = None, 0.0
        for j, r in same.iterrows():
            iou = _overlap(e["onset_s"], e["offset_s"], r["onset_s"], r["offset_s"])
            if iou > best_iou or (iou == best_iou and best is not None and r["class"] == e["class"]):
                best, best_iou = j, iou
        if best is None or best_iou < min_overlap:
            review.reject(e["event_id"], source="reference", advance=False)
            counts["rejected"] += 1
            continue
        r = ref.loc[best]
        matched.add(best)
        moved = abs(r["onset_s"] - e["onset_s"]) > 0.5 or abs(r["offset_s"] - e["offset_s"]) > 0.5
        times = dict(onset_s=float(r["onset_s"]), offset_s=float(r["offset_s"])) if moved else {}
        if r["class"] != e["class"]:
            review.relabel(str(r["class"]), e["event_id"], source="reference", advance=False, **times)
            counts["relabelled"] += 1
        elif moved:
            review.adjust(event=e["event_id"], source="reference", advance=False, **times)
            counts["adjusted"] += 1
        else:
            review.accept(e["event_id"], source="reference", advance=False)
            counts["accepted"] += 1
    if add_missed:
        analysed = [f["file"] for f in review.record.get("files", []) if f.get("status") != "skipped"]
        files = {os.path.realpath(f) for f in [*review.table["file"], *analysed]}
        for j, r in ref.iterrows():
            if j not in matched and os.path.realpath(r["file"]) in files:
                review.add(str(r["file"]), float(r["onset_s"]), float(r["offset_s"]), str(r["class"]), source="reference")
                counts["added"] += 1
    review.position = review.first_pending()
    return counts


# --- from answers to numbers -------------------------------------------------------------------------

def judged(table: pd.DataFrame) -> pd.DataFrame:
    """Detections the operator judged: ``class`` = the detector's, ``correct`` = confirmed as that class."""
    t = table[table["status"].isin(("accepted", "rejected", "relabelled", "adjusted"))]
    correct = t["status"].isin(("accepted", "adjusted")) | ((t["status"] == "relabelled") &
                                                             (t["class"] == t["original_class"]))
    return pd.DataFrame({"class": t["original_class"].to_numpy(), "score": t["score"].to_numpy(dtype=float),
                         "correct": correct.to_numpy(dtype=bool)})


def precision_by_class(table: pd.DataFrame) -> pd.DataFrame:
    """Per detected class: events judged, confirmed, precision (confirmed / judged)."""
    j = judged(table)
    g = j.groupby("class")["correct"]
    out = pd.DataFrame({"judged": g.size(), "confirmed": g.sum().astype(int)})
    out["precision"] = out["confirmed"] / out["judged"]
    return out.reset_index()


def precision_curve(table: pd.DataFrame) -> pd.DataFrame:
    """Per class, precision of the judged events scoring at least each judged score (BirdNET-style
    "how far can a score be trusted"): columns class, min_score, n, precision."""
    rows = []
    for cls, g in judged(table).groupby("class"):
        g = g.sort_values("score", ascending=False, kind="stable")
        hits = np.cumsum(g["correct"].to_numpy())
        n = np.arange(1, len(g) + 1)
        for s, h, k in zip(g["score"], hits, n):
            rows.append({"class": cls, "min_score": float(s), "n": int(k), "precision": float(h / k)})
    df = pd.DataFrame(rows, columns=["class", "min_score", "n", "precision"])
    return df.drop_duplicates(["class", "min_score"], keep="last").reset_index(drop=True)


# --- answers as training data (clapnb probe --extra-labels) ---------------------------------------------

EXTRA_MAX_WINDOWS = 8  # windows per event at most, so one long event does not outweigh the rest


def training_labels(table: pd.DataFrame) -> pd.DataFrame:
    """The operator's answers as labels: accepted/adjusted/relabelled/added events with their final class,
    rejected ones as ``background``; pending rows are not labels."""
    t = table[table["status"].isin(ANSWERED)]
    cls = np.where(t["status"] == "rejected", BACKGROUND, t["class"].astype(str))
    return pd.DataFrame({"file": t["file"].astype(str).to_numpy(), "onset_s": t["onset_s"].to_numpy(float),
                         "offset_s": t["offset_s"].to_numpy(float), "class": cls,
                         "status": t["status"].to_numpy()})


def label_windows(onset_s: float, offset_s: float, length_s: float, duration_s: float,
                  max_windows: int = EXTRA_MAX_WINDOWS) -> list[float]:
    """Start times of the probe-length windows that represent one labelled event.

    Shorter than a window: one window centred on it (inside the file where it fits); longer: up to
    ``max_windows`` windows spread evenly from its onset to its offset, each inside the event.
    """
    top = max(0.0, duration_s - length_s)
    d = offset_s - onset_s
    if d <= length_s:
        return [float(min(max(0.0, (onset_s + offset_s - length_s) / 2), top))]
    n = int(min(max_windows, math.floor(d / length_s)))
    if n == 1:
        return [float(min(onset_s + (d - length_s) / 2, top))]
    return [float(min(onset_s + i * (d - length_s) / (n - 1), top)) for i in range(n)]


def _read_window(path: str, start_s: float, length_s: float, sr: int) -> np.ndarray:
    import soundfile as sf

    from clapnb import audio

    info = audio.probe(path)
    a = int(round(start_s * info.sample_rate))
    b = a + int(round(length_s * info.sample_rate))
    x, sr_in = sf.read(path, start=a, stop=min(b, info.frames), dtype="float32", always_2d=True)
    y = audio.resample(x.mean(axis=1), sr_in, sr)
    return audio.cut(y, sr, 0.0, length_s)


def scene_provenance(file: str) -> tuple[pd.DataFrame, str | None] | None:
    """The truth rows (``onset_s, offset_s, source_path``) and background of a composed scene, from the
    ``scene.json``/``truth.csv`` that ``clapnb scene`` writes beside it; None for any other recording."""
    folder = Path(file).resolve().parent
    record = folder / "scene.json"
    if not record.is_file():
        return None
    rec = io.read_json(record)
    truth_path = folder / rec.get("truth", "truth.csv")
    if not truth_path.is_file():
        raise InputError(f"{file}: {record} names the scene truth {truth_path.name}, which is missing; without it "
                         "the scene's source clips cannot be checked against the run's held-out splits")
    truth = pd.read_csv(truth_path)
    if "source_path" not in truth:
        raise InputError(f"{truth_path}: no source_path column; compose the scenes again with `clapnb scene`")
    mine = truth[truth["file"].astype(str).map(os.path.realpath) == os.path.realpath(file)]
    return mine[["onset_s", "offset_s", "source_path"]].reset_index(drop=True), rec.get("background")


class _HeldOut:
    """Which audio of a run is held out (validation, early stop, test): by path, content or recording group."""

    def __init__(self, segments: pd.DataFrame) -> None:
        seg = segments.assign(_real=segments["path"].astype(str).map(os.path.realpath))
        held = seg[seg["split"] != "train"]
        self.paths = dict(zip(held["_real"], held["split"]))
        self.shas = dict(zip(held["sha256"].astype(str), held["split"])) if "sha256" in held else {}
        has_group = "group" in seg
        self.groups = dict(zip(held["group"].astype(str), held["split"])) if has_group else {}
        self.group_of_path = dict(zip(seg["_real"], seg["group"].astype(str))) if has_group else {}
        self.group_of_sha = (dict(zip(seg["sha256"].astype(str), seg["group"].astype(str)))
                             if has_group and "sha256" in seg else {})
        self._cache: dict[str, str | None] = {}

    def split_of(self, path: str) -> str | None:
        """The held-out split ``path`` belongs to (itself, its bytes, or its recording group), else None."""
        from clapnb.datasets import name_groups

        real = os.path.realpath(str(path))
        if real in self._cache:
            return self._cache[real]
        found = self.paths.get(real)
        if found is None and os.path.isfile(real):
            sha = io.file_sha256(real)
            found = self.shas.get(sha)
            group = self.group_of_path.get(real) or self.group_of_sha.get(sha) or name_groups([real], [""])[0][0]
            if found is None and group:
                found = self.groups.get(group)
        elif found is None:
            group = self.group_of_path.get(real) or name_groups([real], [""])[0][0]
            found = self.groups.get(group) if group else None
        self._cache[real] = found
        return found


def _scene_leaks(labels: pd.DataFrame, held: _HeldOut, length_s: float, durations: dict[str, float],
                 max_windows: int) -> list[dict]:
    """Answers whose training windows would hold audio of a held-out clip mixed into a composed scene
    (a truth row's ``source_path``, or the scene's background recording)."""
    leaks = []
    for f, g in labels.groupby("file", sort=True):
        prov = scene_provenance(f)
        if prov is None:
            continue
        truth, background = prov
        bg_split = held.split_of(background) if background else None
        bad = [(r.onset_s, r.offset_s, r.source_path, split) for r in truth.itertuples(index=False)
               if (split := held.split_of(r.source_path)) is not None]
        for i, r in g.iterrows():
            wins = label_windows(r["onset_s"], r["offset_s"], length_s, durations[f], max_windows)
            hit = next(((src, split) for on, off, src, split in bad
                        if any(s < off and s + length_s > on for s in wins)), None)
            if bg_split is not None:
                hit = (background, bg_split)
            if hit is not None:
                leaks.append({"index": i, "file": f, "onset_s": float(r["onset_s"]), "offset_s": float(r["offset_s"]),
                              "class": r["class"], "source_path": str(hit[0]), "split": hit[1]})
    return leaks


def extra_examples(path: str | os.PathLike, length_s: float, backbone_meta: dict, segments: pd.DataFrame, *,
                   backbone=None, max_windows: int = EXTRA_MAX_WINDOWS) -> tuple[np.ndarray, list[str], dict]:
    """Embeddings and labels of a reviewed table's answers, for the probe's train split only.

    Grouped by file: every window of a file goes to training, and a file that any non-train segment
    of the run comes from (same path or same content) is refused, so nothing of validation, early
    stop or test is seen in training. A composed scene (``clapnb scene``: ``scene.json`` and
    ``truth.csv`` beside it) is checked through its truth: an answer whose windows overlap a clip
    whose ``source_path`` is held out (path, content or recording group) is dropped, and so is every
    answer of a scene whose background recording is held out; the drops are listed in the record
    (``dropped``), and nothing left is refused. Returns (X, labels, provenance record).
    """
    from clapnb import audio
    from clapnb.embeddings import embed_waveforms

    p = Path(path)
    table = read_reviewed(p)
    labels = training_labels(table)
    if not len(labels):
        raise InputError(f"--extra-labels {p}: no answered events (every row is pending); review some first")
    files = sorted(set(labels["file"]))
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise InputError(f"--extra-labels {p}: the audio of {len(missing)} file(s) is missing, e.g. {missing[0]}")
    held = segments[segments["split"] != "train"]
    held_paths = {os.path.realpath(q) for q in held["path"].astype(str)}
    held_sha = set(held["sha256"].astype(str)) if "sha256" in held else set()
    shas = {f: io.file_sha256(f) for f in files}
    leaks = [f for f in files if os.path.realpath(f) in held_paths or shas[f] in held_sha]
    if leaks:
        raise InputError(f"--extra-labels {p}: {len(leaks)} file(s) also hold validation/early-stop/test segments "
                         f"of this run, e.g. {leaks[0]}; extra labels must come from other recordings")
    durations = {f: audio.probe(f).duration_s for f in files}
    dropped = _scene_leaks(labels, _HeldOut(segments), length_s, durations, max_windows)
    if dropped:
        labels = labels.drop(index=[d.pop("index") for d in dropped])
        if not len(labels):
            d = dropped[0]
            raise InputError(f"--extra-labels {p}: every answer's windows hold audio of a held-out clip of this run, "
                             f"e.g. {d['file']} at {d['onset_s']:g} s: {d['source_path']} ({d['split']}); review "
                             "scenes composed from other recordings")
        files = sorted(set(labels["file"]))
    if backbone is None:
        from clapnb.backbones import backbone_from_metadata

        backbone = backbone_from_metadata(backbone_meta)
    waves, ys, per_file = [], [], {}
    for f, g in labels.groupby("file", sort=True):
        dur = durations[f]
        n0 = len(ys)
        for r in g.itertuples(index=False):
            for s in label_windows(r.onset_s, r.offset_s, length_s, dur, max_windows):
                waves.append(_read_window(f, s, length_s, backbone.sample_rate))
                ys.append(r[3])
        per_file[f] = len(ys) - n0
    X = embed_waveforms(backbone, waves, backbone_meta)
    info = {"path": str(p.resolve()), "sha256": io.file_sha256(p), "split": "train",
            "n_answers": {s: int(n) for s, n in labels["status"].value_counts().sort_index().items()},
            "n_windows": len(ys),
            "windows_per_class": {c: int(n) for c, n in pd.Series(ys).value_counts().sort_index().items()},
            "files": [{"path": f, "sha256": shas[f], "n_windows": per_file[f]} for f in files],
            "reviewers": sorted(set(table.loc[table["status"].isin(ANSWERED), "reviewer"].astype(str)) - {""}),
            "dropped": dropped,
            "rule": (f"answered events only (pending rows ignored); rejected -> background; up to {max_windows} "
                     f"windows of {length_s:g} s per event (one centred on a shorter event); all to the train "
                     "split, grouped by file; files holding validation/early_stop/test segments refused; answers "
                     "whose windows overlap a composed scene's held-out source clip (truth source_path: path, "
                     "content or recording group), or of a scene with a held-out background, dropped")}
    return X, ys, info
