"""Sound levels of long recordings, with spurious events excluded: what an acoustician reports.

One pass over each recording in blocks (``soundfile.blocks``; filter states carried across blocks,
so the block size does not change any number) builds a *step history* at ``rate`` steps per second
(default 10: one LAF sample per 100 ms): per step the sum of the frequency-weighted squared samples,
their count, the F-weighted level at the step's end and the F/S maxima inside it, and the same
sums for the samples inside excluded spans (sample-exact, not rounded to steps). Everything else is
arithmetic on that history, whose size is 10 rows per second of audio (~0.9 M rows a day) while the
audio itself is never held beyond one block.

- LAeq over an interval = 10 lg(sum of squares / number of samples) + calibration offset.
- With exclusions: the excluded samples leave both sums (energy and time); the LAF samples whose
  instant lies inside an excluded span, or less than ``holdoff_s`` (0.625 s) after it, where the
  F detector still reads the event's decay, leave the percentile samples; LAFmax is taken over
  the samples outside those spans.
- LA10/LA50/LA90: levels exceeded 10/50/90 % of the time, i.e. the 90th/50th/10th percentiles
  (numpy's linear interpolation) of the LAF samples (dB) at ``rate`` per second.
- ISO 1996-2 residual correction: L = 10 lg(10^(L'/10) - 10^(Lres/10)) when L' - Lres > 3 dB, else
  L' is reported as an upper bound.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clapnb.calibration import NONE, Calibration
from clapnb.errors import InputError
from clapnb.weighting import TIME_CONSTANTS, FrequencyWeighting, TimeWeighting, check_curve

RATE_HZ = 10          # LAF samples (steps) per second
BLOCK_S = 10.0        # seconds of audio read at once
MIN_VALID = 0.5       # an interval needs this fraction of its length left after exclusions to be valid
HOLDOFF_S = 5 * TIME_CONSTANTS["F"]  # after an excluded span, LAF samples still hold its decay
#: What the percentiles (LA10/50/90) are taken from: the F or S detector at each step's end, or the
#: step's own LAeq ("eq", no detector memory); the default hold-off after excluded spans is 5 time constants.
PERCENTILE_BASES = {"F": 5 * TIME_CONSTANTS["F"], "S": 5 * TIME_CONSTANTS["S"], "eq": 0.0}
CLIP_LEVEL = 0.9999   # |sample| at or above this counts as clipped (PCM full scale is 1 - 2^-15 .. 1)
INTERVAL_MIN_S, INTERVAL_MAX_S = 1.0, 3600.0
EVENT_COLUMNS = ("file", "onset_s", "offset_s", "class")

_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


def parse_interval(text: str | float, rate: int = RATE_HZ) -> float:
    """``60``, ``90s``, ``10min``, ``1h`` -> seconds; 1 s ... 1 h and a whole number of steps."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)?\s*", str(text))
    if not m:
        raise InputError(f"--interval {text!r}: give seconds or a number with a unit, e.g. 60, 10min, 1h")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if not INTERVAL_MIN_S <= seconds <= INTERVAL_MAX_S:
        raise InputError(f"--interval {text!r} = {seconds:g} s: must lie between 1 s and 1 h")
    if abs(seconds * rate - round(seconds * rate)) > 1e-9:
        raise InputError(f"--interval {text!r}: must be a whole number of {1 / rate:g}-s steps")
    return seconds


def db(x, offset: float = 0.0):
    """10 lg(x) + offset; -inf for 0, NaN for NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10 * np.log10(x) + offset


def residual_correction(level, residual) -> tuple[np.ndarray, np.ndarray]:
    """ISO 1996-2: (corrected level, upper_bound flag). No correction when level - residual <= 3 dB."""
    level = np.asarray(level, dtype=float)
    residual = np.broadcast_to(np.asarray(residual, dtype=float), level.shape)
    upper = ~(level - residual > 3.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corrected = 10 * np.log10(10 ** (level / 10) - 10 ** (residual / 10))
    out = np.where(upper, level, corrected)
    return out, upper & np.isfinite(level)


# ---------------------------------------------------------------------------------------------------
# events


def read_events(path: str | os.PathLike) -> pd.DataFrame:
    """The events table (csv or parquet) with at least file, onset_s, offset_s, class."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"--events {path}: no such file")
    try:
        df = pd.read_parquet(path) if path.endswith((".parquet", ".pq")) else pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"--events {path}: cannot be read as CSV/parquet ({exc})") from exc
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"--events {path}: missing column(s) {', '.join(missing)}; an events table has "
                         "file, onset_s, offset_s, class (and score)")
    from clapnb.events import drop_rejected

    df = drop_rejected(df)  # a reviewed table: the operator's final events
    df = df.copy()
    df["onset_s"] = pd.to_numeric(df["onset_s"], errors="coerce")
    df["offset_s"] = pd.to_numeric(df["offset_s"], errors="coerce")
    bad = df[~(df["offset_s"] > df["onset_s"])]
    if len(bad):
        r = bad.iloc[0]
        raise InputError(f"--events {path}: row {bad.index[0]} ({r['file']}, {r['onset_s']}..{r['offset_s']}): "
                         "offset_s must be a number greater than onset_s")
    df["class"] = df["class"].astype(str)
    return df


def parse_exclude(spec: str | None, events: pd.DataFrame | None) -> list[str] | None:
    """``all`` -> every class in the table; ``dog,siren`` -> those (taxonomy slugs); None -> nothing."""
    from clapnb.taxonomy import SLUGS

    if spec is None or spec == "":
        return None
    if events is None:
        raise InputError("--exclude needs --events (the table of spans to exclude)")
    if spec.strip().lower() == "all":
        return sorted(events["class"].unique())
    classes = [c.strip() for c in spec.split(",") if c.strip()]
    known = set(SLUGS) | set(events["class"].unique())
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise InputError(f"--exclude: unknown class(es) {', '.join(unknown)}; use 'all' or taxonomy slugs such as "
                         f"{', '.join(sorted(SLUGS)[:6])}, ...")
    return classes


def _real(p) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(p)))


# ---------------------------------------------------------------------------------------------------
# one pass over a file


@dataclass
class FileHistory:
    """Step history of one recording (see module docstring)."""

    path: str
    sample_rate: int
    frames: int
    rate: int
    start: pd.Timestamp | None
    energy: np.ndarray            # sum of weighted squares per step
    count: np.ndarray             # samples per step
    f_end: np.ndarray             # F-weighted mean square at the step's last sample
    f_max: np.ndarray             # max F-weighted mean square in the step
    s_max: np.ndarray             # max S-weighted mean square in the step
    s_end: np.ndarray             # S-weighted mean square at the step's last sample
    clipped: np.ndarray           # clipped samples per step
    excl: dict = field(default_factory=dict)     # name -> dict(energy, count, f_masked (bool), f_max)
    events: list = field(default_factory=list)   # per event: dict(steps -> energy, count), f_max

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def n_steps(self) -> int:
        return len(self.energy)


def measure_file(path: str | os.PathLike, *, weighting: str = "A", rate: int = RATE_HZ, block_s: float = BLOCK_S,
                 channel: int = 0, exclusions: dict[str, np.ndarray] | None = None,
                 events: np.ndarray | None = None, allow_clipping: bool = False,
                 start: pd.Timestamp | None = None, holdoff_s: float = HOLDOFF_S) -> FileHistory:
    """Stream ``path`` once. ``exclusions``: name -> (n, 2) spans in seconds; ``events``: (m, 2) spans.

    LAF samples and LAFmax also leave out ``holdoff_s`` after each excluded span: the F detector
    still reads the event's decay there (5 x 125 ms = 27 dB below its level at the span's end).
    """
    import soundfile as sf

    path = os.fspath(path)
    try:
        info = sf.info(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as audio ({exc}); convert it to WAV or FLAC") from exc
    fs, frames = int(info.samplerate), int(info.frames)
    if frames <= 0:
        raise InputError(f"{path}: holds no audio samples")
    if not 0 <= channel < info.channels:
        raise InputError(f"--channel {channel}: {path} has {info.channels} channel(s)")
    n_steps = (frames * rate + fs - 1) // fs
    z = lambda dt=np.float64: np.zeros(n_steps, dtype=dt)  # noqa: E731
    h = FileHistory(path, fs, frames, rate, start, z(), z(np.int64), z(), z(), z(), z(), z(np.int64))

    def to_samples(spans) -> np.ndarray:
        a = np.asarray(spans, dtype=float).reshape(-1, 2)
        return np.clip(np.round(a * fs).astype(np.int64), 0, frames)

    ex = {name: to_samples(sp) for name, sp in (exclusions or {}).items()}
    for name in ex:
        h.excl[name] = {"energy": z(), "count": z(np.int64), "f_masked": np.zeros(n_steps, bool), "f_max": z()}
    ev = to_samples(events if events is not None else np.zeros((0, 2)))
    h.events = [{"energy": {}, "count": {}, "f_max": 0.0} for _ in range(len(ev))]

    hold = int(round(holdoff_s * fs))
    fw = FrequencyWeighting(weighting, fs)
    tw_f = tw_s = None
    block = max(int(block_s * fs), fs)  # >= 1 s so the detectors' start (below) never depends on it
    pos = 0
    for blk in sf.blocks(path, blocksize=block, dtype="float64", always_2d=True):
        x = blk[:, channel]
        n = len(x)
        if n == 0:
            break
        clip = np.abs(x) >= CLIP_LEVEL
        if clip.any() and not allow_clipping:
            t = (pos + int(np.argmax(clip))) / fs
            raise InputError(f"{path}: the recording clips (full-scale samples from {t:.2f} s): levels there are "
                             "too low; pass --allow-clipping to count clipped samples per interval instead")
        y = fw(x)
        sq = y * y
        if tw_f is None:
            init = {k: float(np.mean(sq[: max(1, int(tau * fs))])) for k, tau in TIME_CONSTANTS.items()}
            tw_f = TimeWeighting(TIME_CONSTANTS["F"], fs, init["F"])
            tw_s = TimeWeighting(TIME_CONSTANTS["S"], fs, init["S"])
        f = tw_f(sq)
        s = tw_s(sq)
        # steps in this block: step k holds the samples with floor(sample * rate / fs) == k
        k0 = (pos * rate) // fs
        if fs % rate == 0 and pos % (fs // rate) == 0:  # whole steps from the block's start (the usual case)
            starts = np.arange(0, n, fs // rate)
        else:
            idx = (np.arange(pos, pos + n, dtype=np.int64) * rate) // fs
            starts = np.concatenate([[0], np.flatnonzero(np.diff(idx)) + 1])
        m = len(starts)
        ends = np.concatenate([starts[1:] - 1, [n - 1]])
        if k0 + m > n_steps:  # header under-reported the length: grow
            grow = k0 + m - n_steps
            for a in ("energy", "count", "f_end", "f_max", "s_max", "s_end", "clipped"):
                setattr(h, a, np.concatenate([getattr(h, a), np.zeros(grow, getattr(h, a).dtype)]))
            for d in h.excl.values():
                for a in d:
                    d[a] = np.concatenate([d[a], np.zeros(grow, d[a].dtype)])
            n_steps += grow
        sl = slice(k0, k0 + m)
        h.energy[sl] += np.add.reduceat(sq, starts)
        h.count[sl] += np.diff(np.concatenate([starts, [n]]))
        if clip.any():
            h.clipped[sl] += np.add.reduceat(clip.astype(np.int64), starts)
        h.f_end[sl] = f[ends]
        block_fmax = np.maximum.reduceat(f, starts)
        h.f_max[sl] = np.maximum(h.f_max[sl], block_fmax)
        h.s_max[sl] = np.maximum(h.s_max[sl], np.maximum.reduceat(s, starts))
        h.s_end[sl] = s[ends]
        for name, spans in ex.items():
            mask = np.zeros(n, bool)
            fmask = np.zeros(n, bool)
            for a, b in spans[(spans[:, 0] < pos + n) & (spans[:, 1] + hold > pos)]:
                mask[max(a - pos, 0):max(min(b - pos, n), 0)] = True
                fmask[max(a - pos, 0):min(b + hold - pos, n)] = True
            d = h.excl[name]
            if mask.any():
                d["energy"][sl] += np.add.reduceat(np.where(mask, sq, 0.0), starts)
                d["count"][sl] += np.add.reduceat(mask.astype(np.int64), starts)
            if fmask.any():
                d["f_masked"][sl] = fmask[ends]
                d["f_max"][sl] = np.maximum(d["f_max"][sl], np.maximum.reduceat(np.where(fmask, 0.0, f), starts))
            else:
                d["f_masked"][sl] = False
                d["f_max"][sl] = np.maximum(d["f_max"][sl], block_fmax)
        if len(ev):
            for i in np.flatnonzero((ev[:, 0] < pos + n) & (ev[:, 1] > pos)):
                a, b = max(int(ev[i, 0]) - pos, 0), min(int(ev[i, 1]) - pos, n)
                if b <= a:
                    continue
                loc = (np.arange(pos + a, pos + b, dtype=np.int64) * rate) // fs
                e = np.bincount(loc - loc[0], sq[a:b])
                c = np.bincount(loc - loc[0])
                rec = h.events[i]
                for j in range(len(e)):
                    k = int(loc[0]) + j
                    rec["energy"][k] = rec["energy"].get(k, 0.0) + float(e[j])
                    rec["count"][k] = rec["count"].get(k, 0) + int(c[j])
                rec["f_max"] = max(rec["f_max"], float(f[a:b].max()))
        pos += n
    if pos != frames:  # trust what was decoded, not the header
        h.frames = pos
    return h


# ---------------------------------------------------------------------------------------------------
# measurement = several files, intervals, tables


@dataclass
class Measurement:
    histories: list[FileHistory]
    events: pd.DataFrame | None          # the events of these files (index = row in the table read)
    exclusion_names: list[str]
    weighting: str
    rate: int
    calibration: Calibration
    clock: bool                          # True: every file's start is known, intervals on the clock
    excluded_rows: dict = field(default_factory=dict)  # exclusion name -> rows of ``events`` it excludes

    @property
    def duration_s(self) -> float:
        return float(sum(h.duration_s for h in self.histories))


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".w64", ".rf64", ".caf")


def expand_audio(inputs: list[str]) -> list[str]:
    """Files as given; a folder becomes its audio files (recursively, sorted by path)."""
    from pathlib import Path

    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise InputError(f"--audio {item}: the folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(os.fspath(item))
    return out


def check_inputs(paths: list[str]) -> list[tuple[str, int, int, int]]:
    """(path, sample rate, frames, channels) per file; refuses missing files and mixed sample rates."""
    import soundfile as sf

    out = []
    for p in paths:
        if not os.path.isfile(p):
            raise InputError(f"--audio {p}: no such file")
        try:
            info = sf.info(p)
        except Exception as exc:
            raise InputError(f"--audio {p}: cannot be read as audio ({exc}); convert it to WAV or FLAC") from exc
        if info.frames <= 0:
            raise InputError(f"--audio {p}: holds no audio samples")
        out.append((p, int(info.samplerate), int(info.frames), int(info.channels)))
    rates = sorted({r for _, r, _, _ in out})
    if len(rates) > 1:
        by = {r: next(p for p, rr, _, _ in out if rr == r) for r in rates}
        raise InputError("--audio: mixed sample rates (" + ", ".join(f"{r} Hz: {by[r]}" for r in rates) +
                         "); levels of one measurement need one rate: resample the odd files first")
    return out


def events_for(events: pd.DataFrame | None, infos: list[tuple[str, int, int, int]], tolerance_s: float
               ) -> tuple[pd.DataFrame | None, int]:
    """Events of the given files (column ``_file_index``) and the number of rows naming other files.

    Refuses events that lie outside their recording (by more than ``tolerance_s``) and a table none
    of whose rows names one of the files.
    """
    if events is None:
        return None, 0
    real = {_real(p): i for i, (p, _, _, _) in enumerate(infos)}
    idx = events["file"].map(lambda f: real.get(_real(f), -1))
    ours = events[idx >= 0].copy()
    ours["_file_index"] = idx[idx >= 0].astype(int)
    if len(events) and not len(ours):
        raise InputError(f"--events: none of its {len(events)} rows names one of the --audio files (its file column "
                         f"holds e.g. {events['file'].iloc[0]!r}); pass the same paths detection was given")
    for i, r in ours.iterrows():
        dur = infos[r["_file_index"]][2] / infos[r["_file_index"]][1]
        if r["onset_s"] < -tolerance_s or r["offset_s"] > dur + tolerance_s:
            raise InputError(f"--events: row {i} ({r['file']}, {r['onset_s']:g}..{r['offset_s']:g} s, {r['class']}) lies "
                             f"outside the recording (0..{dur:.2f} s): wrong file or a table from another run")
    return ours, int(len(events) - len(ours))


def measure(paths: list[str], *, events: pd.DataFrame | None = None,
            exclusions: dict[str, list[str] | pd.DataFrame] | None = None, weighting: str = "A",
            rate: int = RATE_HZ, block_s: float = BLOCK_S, channel: int = 0, calibration: Calibration = NONE,
            starts: list[pd.Timestamp | None] | None = None, allow_clipping: bool = False,
            holdoff_s: float = HOLDOFF_S, progress=None, executor=None) -> Measurement:
    """One pass over every file.

    ``events``: the table whose rows get per-event levels. ``exclusions``: name -> either a list of
    classes of ``events`` to exclude, or a separate events table (e.g. the reference events when
    comparing with detected ones). ``executor``: where the per-file passes run
    (:mod:`clapnb.executor`, :mod:`clapnb.dask_executor`; default: here, one after the other); a
    pass is a pure function of its file and spans, so the histories are the same wherever it runs.
    """
    weighting = check_curve(weighting)
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputError("--audio: give at least one recording")
    infos = check_inputs(paths)
    tol = 1.0 / rate
    ev, _ = events_for(events, infos, tol)
    tables: dict[str, pd.DataFrame] = {}
    excluded_rows: dict[str, set] = {}
    for name, spec in (exclusions or {}).items():
        if isinstance(spec, pd.DataFrame):
            tables[name], _ = events_for(spec, infos, tol)
        else:
            if ev is None:
                raise InputError("--exclude needs --events")
            tables[name] = ev[ev["class"].isin(list(spec))]
            excluded_rows[name] = set(tables[name].index)
    starts = starts if starts is not None else [None] * len(paths)
    clock = all(s is not None for s in starts)
    if clock:
        spans = sorted((s, s + pd.Timedelta(seconds=fr / sr), p) for s, (p, sr, fr, _) in zip(starts, infos))
        for (s0, e0, p0), (s1, _, p1) in zip(spans, spans[1:]):
            if s1 < e0 - pd.Timedelta(seconds=tol):
                raise InputError(f"--audio: {p1} starts at {s1} before {p0} ends ({e0}): recordings of one measurement "
                                 "must not overlap in time (two recorders? measure them separately)")
    jobs = []
    for i, (p, _, _, _) in enumerate(infos):
        spans = {n: t.loc[t["_file_index"] == i, ["onset_s", "offset_s"]].to_numpy() for n, t in tables.items()}
        evs = None if ev is None else ev.loc[ev["_file_index"] == i, ["onset_s", "offset_s"]].to_numpy()
        jobs.append({"index": i, "path": p, "weighting": weighting, "rate": rate, "block_s": block_s,
                     "channel": channel, "exclusions": spans, "events": evs, "allow_clipping": allow_clipping,
                     "start": starts[i] if clock else None, "holdoff_s": holdoff_s})
    hs: list[FileHistory | None] = [None] * len(jobs)
    if executor is None:
        results = ((job, measure_file_job(job)) for job in jobs)
    else:
        results = ((job, fut.result()) for job, fut in executor.map_unordered(measure_file_job, jobs))
    for done, (job, history) in enumerate(results, start=1):
        hs[job["index"]] = history
        if progress:
            progress(done, len(infos), job["path"])
    return Measurement(hs, ev, list(tables), weighting, rate, calibration, clock, excluded_rows)


def measure_file_job(job: dict) -> FileHistory:
    """:func:`measure_file` of one work unit (a plain dict: what an executor ships to a worker)."""
    return measure_file(**{k: v for k, v in job.items() if k != "index"})


def steps_frame(m: Measurement, interval_s: float) -> pd.DataFrame:
    """One row per step of every file with its interval key (``file_index``/``interval`` or clock ``interval``)."""
    parts = []
    for i, h in enumerate(m.histories):
        k = np.arange(h.n_steps)
        d = {"file_index": i, "step": k, "energy": h.energy, "count": h.count, "f_end": h.f_end, "f_max": h.f_max,
             "s_max": h.s_max, "s_end": h.s_end, "clipped": h.clipped}
        if m.clock:
            t0 = h.start.value / 1e9 + k / m.rate
            d["interval"] = np.floor(np.round(t0 / interval_s, 9)).astype(np.int64)
        else:
            d["interval"] = (k // int(round(interval_s * m.rate))).astype(np.int64)
        for name, x in h.excl.items():
            d[f"{name}:energy"], d[f"{name}:count"] = x["energy"], x["count"]
            d[f"{name}:f_masked"], d[f"{name}:f_max"] = x["f_masked"], x["f_max"]
        parts.append(pd.DataFrame(d))
    df = pd.concat(parts, ignore_index=True)
    return df[df["count"] > 0]


def _summaries(df: pd.DataFrame, keys: list[str], fs: int, offset: float, excl: str | None,
               basis: str = "F") -> pd.DataFrame:
    """Energy sums, maxima and percentiles (of ``basis``) per group (all samples, or those outside ``excl``)."""
    if excl is None:
        energy, count, fmax = df["energy"], df["count"], df["f_max"]
        keep = np.ones(len(df), bool)
    else:
        energy = df["energy"] - df[f"{excl}:energy"]
        count = df["count"] - df[f"{excl}:count"]
        fmax = df[f"{excl}:f_max"]
        keep = ~df[f"{excl}:f_masked"].to_numpy()
        if basis == "eq":  # a step's own LAeq counts only when none of its samples is excluded
            keep &= df[f"{excl}:count"].to_numpy() == 0
    g = pd.DataFrame({"energy": energy, "count": count, "fmax": fmax}).join(df[keys]).groupby(keys, sort=True)
    out = pd.DataFrame({"energy": g["energy"].sum(), "count": g["count"].sum(), "fmax": g["fmax"].max()})
    lv = df[keys].copy()
    source = {"F": df["f_end"].to_numpy(), "S": df["s_end"].to_numpy()}.get(basis)
    if source is None:
        source = df["energy"].to_numpy() / df["count"].to_numpy()
    lv["laf"] = db(source, offset)
    lv = lv[keep]
    q = lv.groupby(keys, sort=True)["laf"].quantile([0.9, 0.5, 0.1]).unstack()
    q.columns = ["p10", "p50", "p90"]
    out = out.join(q)
    out["leq"] = db(out["energy"] / out["count"].where(out["count"] > 0), offset)
    out["lfmax"] = db(out["fmax"].where(out["fmax"] > 0), offset)
    out["seconds"] = out["count"] / fs
    return out


def check_basis(basis: str) -> str:
    if basis not in PERCENTILE_BASES:
        raise InputError(f"--percentiles-from {basis!r}: use F (LAF samples), S (LAS samples) or eq (each step's LAeq)")
    return basis


def interval_table(m: Measurement, interval_s: float, *, exclusion: str | None = None, min_valid: float = MIN_VALID,
                   residual: str | float | None = None, basis: str = "F") -> pd.DataFrame:
    """The interval rows (``scope`` = ``interval``) plus one row for the whole measurement (``total``).

    ``basis``: the percentiles' samples (see :data:`PERCENTILE_BASES`), one per step.
    """
    check_basis(basis)
    if m.duration_s + 1e-9 < interval_s:
        raise InputError(f"--interval {interval_s:g} s is longer than the recording(s) ({m.duration_s:.1f} s in all): "
                         "choose a shorter interval")
    if exclusion is not None and exclusion not in m.exclusion_names:
        raise InputError(f"no exclusion set {exclusion!r}")
    fs = m.histories[0].sample_rate
    off = m.calibration.offset_db
    unit = m.calibration.unit
    W = m.weighting
    df = steps_frame(m, interval_s)
    df["_all"] = 0
    rows = []
    for scope, keys in (("interval", ["interval"] if m.clock else ["file_index", "interval"]), ("total", ["_all"])):
        allv = _summaries(df, keys, fs, off, None, basis)
        g = df.groupby(keys, sort=True)
        t = pd.DataFrame(index=allv.index)
        t["scope"] = scope
        t["clipped_samples"] = g["clipped"].sum()
        t["duration_s"] = allv["seconds"]
        if scope == "interval":
            if m.clock:
                start = pd.to_datetime(t.index.get_level_values(-1) * interval_s, unit="s")
                t["start_time"], t["end_time"] = start, start + pd.Timedelta(seconds=interval_s)
                t["file"] = [", ".join(m.histories[j].path for j in sorted(js, key=lambda j: m.histories[j].start))
                             for js in g["file_index"].unique()]
            else:
                t["file"] = [m.histories[j].path for j in t.index.get_level_values(0)]
            k = t.index.get_level_values(-1)
            t["start_s"] = k * interval_s if not m.clock else np.nan
            t["end_s"] = (k + 1) * interval_s if not m.clock else np.nan
            nominal = np.full(len(t), interval_s)
        else:
            t["file"] = ", ".join(h.path for h in m.histories)
            t["start_s"], t["end_s"] = 0.0, m.duration_s
            if m.clock:
                t["start_time"] = min(h.start for h in m.histories)
                t["end_time"] = max(h.start + pd.Timedelta(seconds=h.duration_s) for h in m.histories)
            nominal = t["duration_s"].to_numpy()
        t[f"L{W}eq_{unit}"] = allv["leq"]
        t[f"L{W}Fmax_{unit}"] = allv["lfmax"]
        t[f"L{W}Smax_{unit}"] = db(g["s_max"].max().where(lambda s: s > 0), off)
        for p in (10, 50, 90):
            t[f"L{W}{p}_{unit}"] = allv[f"p{p}"]
        if exclusion is not None:
            ex = _summaries(df, keys, fs, off, exclusion, basis)
            t["excluded_s"] = allv["seconds"] - ex["seconds"]
            t["excluded_pct"] = 100 * t["excluded_s"] / t["duration_s"]
            t["valid_s"] = ex["seconds"]
            t[f"L{W}eq_excl_{unit}"] = ex["leq"]
            t[f"L{W}Fmax_excl_{unit}"] = ex["lfmax"]
            for p in (10, 50, 90):
                t[f"L{W}{p}_excl_{unit}"] = ex[f"p{p}"]
            t[f"L{W}eq_diff_dB"] = t[f"L{W}eq_excl_{unit}"] - t[f"L{W}eq_{unit}"]
            t[f"L{W}90_diff_dB"] = t[f"L{W}90_excl_{unit}"] - t[f"L{W}90_{unit}"]
        else:
            t["excluded_s"], t["excluded_pct"], t["valid_s"] = 0.0, 0.0, t["duration_s"]
        t["valid"] = t["valid_s"].to_numpy() >= min_valid * nominal - 1e-9
        sfx = "_excl" if exclusion is not None else ""
        if residual is not None:
            if isinstance(residual, str):
                lres = t[f"L{W}{int(residual)}{sfx}_{unit}"]
                t["residual_source"] = f"L{W}{int(residual)}{sfx}"
            else:
                lres = pd.Series(float(residual), index=t.index)
                t["residual_source"] = "given"
            t[f"Lres_{unit}"] = lres
            corr, upper = residual_correction(t[f"L{W}eq{sfx}_{unit}"], lres)
            t[f"L{W}eq{sfx}_corrected_{unit}"] = corr
            t["corrected_is_upper_bound"] = upper
        rows.append(t.reset_index(drop=True))
    out = pd.concat(rows, ignore_index=True)
    lead = ["scope", "file", "start_s", "end_s"] + (["start_time", "end_time"] if m.clock else [])
    return out[lead + [c for c in out.columns if c not in lead]]


def events_table(m: Measurement, interval_s: float, intervals: pd.DataFrame, *, exclusion: str | None = None,
                 residual: str | float | None = 90) -> pd.DataFrame:
    """Per event: LAE (SEL), LAeq and LAFmax over its span, its contribution to its interval, residual flag.

    Contribution = LAeq of the event's interval (the one holding its onset) minus the same LAeq with
    the event's samples in that interval removed. ``below_residual``: the event's own LAeq is not
    more than 3 dB above the interval's residual (``residual``: a percentile of that interval, with
    exclusions when given, or a level): a likely false alarm or a masked event.
    """
    if m.events is None or not len(m.events):
        W, unit = m.weighting, m.calibration.unit
        when = ["start_time", "interval_start"] if m.clock else ["interval_start_s"]
        return pd.DataFrame(columns=["event_row", "file", "onset_s", "offset_s", "class", "score", *when, "excluded",
                                     "duration_s", f"L{W}E_{unit}", f"L{W}eq_event_{unit}", f"L{W}Fmax_{unit}",
                                     "contribution_dB", f"Lres_{unit}", "below_residual"])
    fs = m.histories[0].sample_rate
    off, unit, W = m.calibration.offset_db, m.calibration.unit, m.weighting
    df = steps_frame(m, interval_s)
    per = df.groupby(["file_index", "interval"] if not m.clock else ["interval"])[["energy", "count"]].sum()
    ints = intervals[intervals["scope"] == "interval"].reset_index(drop=True)
    sfx = "_excl" if exclusion is not None else ""
    res_col = f"L{W}{int(residual)}{sfx}_{unit}" if isinstance(residual, (int, str)) else None
    rows = []
    counters: dict[int, int] = {}
    for (idx, r) in m.events.iterrows():
        fi = int(r["_file_index"])
        h = m.histories[fi]
        j = counters.get(fi, 0)
        counters[fi] = j + 1
        rec = h.events[j]
        steps = np.array(sorted(rec["energy"]), dtype=np.int64)
        e = np.array([rec["energy"][k] for k in steps])
        c = np.array([rec["count"][k] for k in steps])
        total_e, total_c = float(e.sum()), int(c.sum())
        if m.clock:
            t0 = h.start.value / 1e9 + r["onset_s"]
            key = int(math.floor(round(t0 / interval_s, 9)))
            step_int = np.floor(np.round((h.start.value / 1e9 + steps / m.rate) / interval_s, 9)).astype(np.int64)
            pkey = key
        else:
            key = int(r["onset_s"] // interval_s)
            step_int = steps // int(round(interval_s * m.rate))
            pkey = (fi, key)
        inside = step_int == key
        e_in, c_in = float(e[inside].sum()), int(c[inside].sum())
        row = {"event_row": idx, "file": r["file"], "onset_s": r["onset_s"], "offset_s": r["offset_s"],
               "class": r["class"], "score": r.get("score", np.nan)}
        if m.clock:
            row["start_time"] = h.start + pd.Timedelta(seconds=float(r["onset_s"]))
            row["interval_start"] = pd.to_datetime(key * interval_s, unit="s")
        else:
            row["interval_start_s"] = key * interval_s
        row["excluded"] = idx in m.excluded_rows.get(exclusion, set())
        row["duration_s"] = total_c / fs
        row[f"L{W}E_{unit}"] = float(db(total_e / fs, off)) if total_e > 0 else -np.inf
        row[f"L{W}eq_event_{unit}"] = float(db(total_e / total_c, off)) if total_c else np.nan
        row[f"L{W}Fmax_{unit}"] = float(db(rec["f_max"], off)) if rec["f_max"] > 0 else np.nan
        E, N = per.loc[pkey, "energy"], per.loc[pkey, "count"]
        with_it = db(E / N, off)
        without = db((E - e_in) / (N - c_in), off) if N > c_in else np.nan
        row["contribution_dB"] = float(with_it - without)
        if res_col is not None:
            match = ints[(ints["start_time"] == row["interval_start"]) if m.clock else
                         ((ints["file"] == h.path) & (ints["start_s"] == row["interval_start_s"]))]
            lres = float(match[res_col].iloc[0]) if len(match) and res_col in match else np.nan
        else:
            lres = float(residual)
        row[f"Lres_{unit}"] = lres
        row["below_residual"] = bool(np.isfinite(lres) and not (row[f"L{W}eq_event_{unit}"] - lres > 3.0))
        rows.append(row)
    return pd.DataFrame(rows)


def exclusion_error(m: Measurement, interval_s: float, detected: str = "detected", reference: str = "reference",
                    min_valid: float = MIN_VALID, basis: str = "F") -> pd.DataFrame:
    """Per interval: LAeq and LA90 after excluding ``detected`` minus after excluding ``reference`` (dB).

    ``m`` must have been measured with both exclusion sets (``measure(..., exclusions={"detected": det_table,
    "reference": ref_table})``): one pass over the audio gives both.
    """
    W, unit = m.weighting, m.calibration.unit
    det = interval_table(m, interval_s, exclusion=detected, min_valid=min_valid, basis=basis)
    ref = interval_table(m, interval_s, exclusion=reference, min_valid=min_valid, basis=basis)
    keys = [c for c in ("scope", "file", "start_s", "end_s", "start_time", "end_time") if c in det]
    out = det[keys].copy()
    for metric in ("eq", "90"):
        out[f"L{W}{metric}_detected_{unit}"] = det[f"L{W}{metric}_excl_{unit}"]
        out[f"L{W}{metric}_reference_{unit}"] = ref[f"L{W}{metric}_excl_{unit}"]
        out[f"L{W}{metric}_error_dB"] = det[f"L{W}{metric}_excl_{unit}"] - ref[f"L{W}{metric}_excl_{unit}"]
    out["excluded_pct_detected"] = det["excluded_pct"]
    out["excluded_pct_reference"] = ref["excluded_pct"]
    out["valid_detected"], out["valid_reference"] = det["valid"], ref["valid"]
    return out


# ---------------------------------------------------------------------------------------------------
# the command's whole job: read, measure, write atomically


def run_levels(audio: list[str], out_dir: str | os.PathLike, *, events_path: str | None = None,
               exclude: str | None = None, interval_s: float = 600.0, interval_text: str | None = None,
               weighting: str = "A", rate: int = RATE_HZ, min_valid: float = MIN_VALID,
               residual: int | float | None = None, calibration: Calibration = NONE, channel: int = 0,
               start_time_format: str | None = None, allow_clipping: bool = False, block_s: float = BLOCK_S,
               holdoff_s: float | None = None, min_score: float = 0.0, basis: str = "F", progress=None,
               executor=None) -> dict:
    """``clapnb levels``: levels.csv/.parquet, events_levels.csv, levels.json in ``out_dir``.

    ``executor``: where the per-file passes run (see :func:`measure`); the outputs do not depend on it.
    """
    from pathlib import Path

    from clapnb import __version__, io, timebase, weighting as wmod

    out = Path(out_dir)
    weighting = check_curve(weighting)
    basis = check_basis(basis)
    holdoff_s = PERCENTILE_BASES[basis] if holdoff_s is None else float(holdoff_s)
    if holdoff_s < 0:
        raise InputError(f"--holdoff {holdoff_s}: must be >= 0 seconds")
    infos = check_inputs(expand_audio([os.fspath(a) for a in audio]))
    events = read_events(events_path) if events_path else None
    if min_score > 0:
        if events is None or "score" not in events:
            raise InputError("--min-score needs --events with a score column")
        events = events[events["score"] >= min_score]
    classes = parse_exclude(exclude, events)
    st = [timebase.start_time(p, start_time_format) for p, _, _, _ in infos]
    if start_time_format:
        missing = [p for (p, _, _, _), s in zip(infos, st) if s.time is None]
        if missing:
            raise InputError(f"--start-time-from-name {start_time_format!r}: no start time in the name of {missing[0]}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                             + "; fix the format or rename the files")
    starts = [s.time for s in st]
    total_s = sum(fr / sr for _, sr, fr, _ in infos)
    if total_s + 1e-9 < interval_s:
        raise InputError(f"--interval {interval_text or interval_s} = {interval_s:g} s is longer than the recording(s) "
                         f"({total_s:.1f} s in all): choose a shorter interval")
    excl = {"excl": classes} if classes is not None else None
    m = measure([p for p, _, _, _ in infos], events=events, exclusions=excl, weighting=weighting, rate=rate,
                block_s=block_s, channel=channel, calibration=calibration, starts=starts,
                allow_clipping=allow_clipping, holdoff_s=holdoff_s, progress=progress, executor=executor)
    name = "excl" if classes is not None else None
    if isinstance(residual, int) and not isinstance(residual, bool) and residual not in (10, 50, 90):
        raise InputError(f"--residual-percentile {residual}: use 10, 50 or 90 (LA10, LA50, LA90)")
    res = None if residual is None else (str(int(residual)) if isinstance(residual, int) else float(residual))
    table = interval_table(m, interval_s, exclusion=name, min_valid=min_valid, residual=res, basis=basis)
    ev_table = events_table(m, interval_s, table, exclusion=name,
                            residual=res if res is not None else 90)
    n_other = 0 if events is None else len(events) - len(m.events)

    def iso(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        for c in ("start_time", "end_time", "interval_start"):
            if c in df:
                df[c] = df[c].map(lambda t: "" if pd.isna(t) else pd.Timestamp(t).isoformat())
        return df

    io.atomic_write_text(out / "levels.csv", iso(table).to_csv(index=False, float_format="%.3f"))
    io.atomic_write_parquet(out / "levels.parquet", table)
    io.atomic_write_text(out / "events_levels.csv", iso(ev_table).to_csv(index=False, float_format="%.3f"))
    fs = infos[0][1]
    unit = calibration.unit
    check = wmod.class1_check(weighting, fs)
    record = {
        "clapnb_version": __version__,
        "inputs": [{"path": p, "sample_rate": sr, "frames": fr, "channels": ch, "duration_s": fr / sr,
                    "sha256": io.file_sha256(p), **s.to_dict()} for (p, sr, fr, ch), s in zip(infos, st)],
        "channel": channel,
        "events": None if events_path is None else {
            "path": os.path.abspath(events_path), "sha256": io.file_sha256(events_path), "min_score": min_score,
            "rows": len(events),
            "rows_for_these_files": 0 if m.events is None else len(m.events), "rows_for_other_files": n_other},
        "exclude": {"spec": exclude, "classes": classes, "events_excluded": len(m.excluded_rows.get("excl", ())),
                    "excluded_s": float(table.loc[table["scope"] == "total", "excluded_s"].iloc[0]),
                    "holdoff_s": holdoff_s,
                    "rule": "excluded samples leave the energy and time sums; LAF samples whose instant lies in an "
                            "excluded span or less than holdoff_s after it leave the percentiles; LAFmax over the "
                            "samples outside those spans"},
        "interval": {"text": interval_text, "seconds": interval_s,
                     "axis": "clock (every start known: intervals aligned to the clock)" if m.clock
                     else "seconds from each file's start"},
        "weighting": {"frequency": weighting, "design": wmod.DESIGN if weighting != "Z" else "none",
                      "sample_rate": fs, "iec_61672_1_class1_limits_met": all(r["pass"] for r in check),
                      "fails_at_hz": [r["hz"] for r in check if not r["pass"]],
                      "max_abs_deviation_db_to_10khz": max((abs(r["deviation_db"]) for r in check if r["hz"] <= 10000),
                                                           default=0.0),
                      "time": {"F_s": TIME_CONSTANTS["F"], "S_s": TIME_CONSTANTS["S"],
                               "detector_start": "mean square of the file's first tau seconds"}},
        "percentiles": {"basis": basis,
                        "from": (f"L{weighting}{basis} sampled at the end of each {1 / rate:g}-s step" if basis != "eq"
                                 else f"L{weighting}eq of each {1 / rate:g}-s step"), "rate_hz": rate,
                        "method": "numpy linear interpolation; LN = level exceeded N % of the time"},
        "min_valid_fraction": min_valid,
        "residual": None if residual is None else {
            "source": f"L{weighting}{int(residual)} of the interval" + (" after exclusions" if name else "")
            if isinstance(residual, int) else f"given: {residual} {unit}",
            "rule": "ISO 1996-2: L = 10 lg(10^(L'/10) - 10^(Lres/10)); no correction and L' as upper bound "
                    "when L' - Lres <= 3 dB"},
        "events_residual": "below_residual: event LAeq - Lres <= 3 dB, Lres = " +
                           (f"L{weighting}{int(res)}" if isinstance(res, str) else
                            (f"{res} {unit}" if res is not None else f"L{weighting}90")) + " of its interval",
        "calibration": calibration.to_dict(),
        "unit": unit,
        "unit_text": calibration.unit_text,
        "allow_clipping": allow_clipping,
        "clipped_samples": int(sum(int(h.clipped.sum()) for h in m.histories)),
        "block_s": block_s,
        "outputs": {"levels": ["levels.csv", "levels.parquet"], "events": "events_levels.csv"},
        "n_intervals": int((table["scope"] == "interval").sum()),
    }
    io.atomic_write_json(out / "levels.json", record)
    return {"levels_csv": out / "levels.csv", "events_csv": out / "events_levels.csv", "json": out / "levels.json",
            "n_intervals": record["n_intervals"], "table": table, "events": ev_table, "measurement": m}


def summarise_detection(audio: list[str], detected: pd.DataFrame, *, reference: pd.DataFrame | None = None,
                        interval_s: float = 60.0, weighting: str = "A", calibration: Calibration = NONE,
                        start_time_format: str | None = None, residual: int | float = 90, basis: str = "F") -> dict:
    """What the Detection page shows, from one pass over the audio (every detected event excluded).

    Returns ``measurement`` (for :func:`clapnb.level_plots.laf_history` with ``exclusion="excl"``),
    ``intervals`` (with/without exclusions and the difference in dB), ``events`` (ranked by their
    contribution) and, with a ``reference`` table (scene truth, a reviewed table), ``error``: per
    interval LAeq/LA90 after excluding the detected minus after excluding the reference events.
    """
    from clapnb import timebase

    paths = [os.fspath(a) for a in audio]
    starts = [timebase.start_time(p, start_time_format).time for p in paths]
    exclusions: dict = {"excl": sorted(detected["class"].astype(str).unique())}
    if reference is not None:
        exclusions["reference"] = reference
    m = measure(paths, events=detected, exclusions=exclusions, weighting=weighting, calibration=calibration,
                starts=starts, holdoff_s=PERCENTILE_BASES[check_basis(basis)])
    res = str(int(residual)) if isinstance(residual, int) else float(residual)
    intervals = interval_table(m, interval_s, exclusion="excl", residual=res, basis=basis)
    events = events_table(m, interval_s, intervals, exclusion="excl", residual=res)
    if len(events):
        events = events.sort_values("contribution_dB", ascending=False, kind="stable").reset_index(drop=True)
    out = {"measurement": m, "intervals": intervals, "events": events}
    if reference is not None:
        out["error"] = exclusion_error(m, interval_s, detected="excl", reference="reference", basis=basis)
    return out
