"""Test scenes: event clips mixed into a background at chosen SNRs, with the truth table.

A user checks a detector on their own site by mixing known events into a recording of it; the
tests do the same with the shared clips. A scene is a *plan* (which clip, where, at which SNR:
a plain DataFrame, drawn from a seed) and its *rendering* (the waveform).

Definitions (stated so that a scene can be rebuilt by hand):

* an event clip is trimmed to where its 10-ms RMS frames lie within ``trim_db`` dB of its loudest
  frame (ESC-50 pads short clips with digital silence; the truth table must not count it), then,
  when ``event_duration_s`` is set, tiled to that duration ("a long event");
* **SNR** = 10 lg(mean power of the scaled event / mean power of the background over the event's
  own interval) - a local SNR, as DCASE's synthetic sets and scaper use it (scaper in LUFS);
* events do not overlap each other: onsets are drawn uniformly (seeded) with at least
  ``min_gap_s`` between events and from the scene's ends;
* if the mix would clip, the whole scene (background and events) is scaled down by one gain,
  recorded in ``scene.json``: SNRs are unchanged.

Scaper 1.6.5 (the field's tool) installs with numpy<2 here (a pip dry run adds jams, mir_eval,
pyloudnorm, sox and soxbindings; scaper uses soxbindings, so no sox program is needed). It is not
used: its SNR is a difference of LUFS loudness (K-weighted), not the unweighted power ratio that level
work compares, it wants a folder per label for foreground and background, and its truth comes as JAMS;
this small composer has one stated definition and no extra dependency.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import audio, io
from clapnb.errors import InputError

#: Columns of a truth table (the reference format of ``clapnb score-events``) plus provenance.
TRUTH_COLUMNS = ("file", "onset_s", "offset_s", "class", "snr_db", "source_path", "source_offset_s")
NOISE_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class SceneConfig:
    duration_s: float = 60.0
    n_events: int = 3
    snr_db: tuple[float, float] = (0.0, 20.0)  # drawn uniformly in [lo, hi]
    min_gap_s: float = 2.0
    event_duration_s: float | None = None  # tile each clip to this length (a long event)
    trim_db: float = 40.0
    sample_rate: int = audio.TARGET_SR
    noise: str = "pink"  # generated background when none is given
    noise_dbfs: float = -40.0  # RMS of the generated background, dB re full scale
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.snr_db
        problems = []
        if not self.duration_s > 0:
            problems.append(f"duration_s={self.duration_s!r} (> 0)")
        if self.n_events < 0:
            problems.append(f"n_events={self.n_events!r} (>= 0)")
        if lo > hi:
            problems.append(f"snr_db={self.snr_db!r} (low <= high)")
        if self.min_gap_s < 0:
            problems.append(f"min_gap_s={self.min_gap_s!r} (>= 0)")
        if self.event_duration_s is not None and not self.event_duration_s > 0:
            problems.append(f"event_duration_s={self.event_duration_s!r} (> 0)")
        if self.noise not in NOISE_COLOURS:
            problems.append(f"noise={self.noise!r} (one of {', '.join(NOISE_COLOURS)})")
        if problems:
            raise InputError("invalid scene parameter(s): " + ", ".join(problems))


def trim(x: np.ndarray, sr: int, trim_db: float = 40.0, frame_s: float = 0.01) -> tuple[int, int]:
    """``(start, end)`` samples of the part of ``x`` within ``trim_db`` of its loudest 10-ms frame."""
    f = max(1, int(round(frame_s * sr)))
    n = int(np.ceil(len(x) / f))
    padded = np.zeros(n * f, dtype=np.float64)
    padded[:len(x)] = x
    rms = np.sqrt(np.mean(padded.reshape(n, f) ** 2, axis=1))
    if not rms.max() > 0:
        raise InputError("the event clip is digital silence; choose another clip")
    on = np.flatnonzero(rms >= rms.max() * 10 ** (-trim_db / 20))
    return int(on[0] * f), int(min(len(x), (on[-1] + 1) * f))


def noise(n: int, colour: str, dbfs: float, seed: int) -> np.ndarray:
    """Seeded white/pink/brown Gaussian noise of RMS ``dbfs`` dB re full scale (spectrum shaped by FFT)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n)
    if colour != "white" and n > 1:
        spec = np.fft.rfft(w)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        spec /= f ** (0.5 if colour == "pink" else 1.0)
        spec[0] = 0.0
        w = np.fft.irfft(spec, n)
    w = w / max(np.sqrt(np.mean(w ** 2)), 1e-20) * 10 ** (dbfs / 20)
    return w.astype(np.float32)


def _clip_audio(path: str, sr: int, config: SceneConfig) -> tuple[np.ndarray, float]:
    """The trimmed (and tiled) event and the offset in the source clip where it starts."""
    x = audio.load(path, sr=sr)
    a, b = trim(x, sr, config.trim_db)
    x = x[a:b]
    if config.event_duration_s is not None:
        x = audio.repeat_to(x, int(round(config.event_duration_s * sr)))
    return x, a / sr


def plan_scene(clips: pd.DataFrame, config: SceneConfig,
               name: str = "scene") -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Draw which clips go where at which SNR: the truth table rows and the prepared event waves.

    ``clips``: at least ``path`` and ``class``. Clips are drawn without replacement (seeded).
    """
    for col in ("path", "class"):
        if col not in clips.columns:
            raise InputError(f"the event clips table needs a {col!r} column (got {list(clips.columns)})")
    clips = clips.dropna(subset=["class"]).reset_index(drop=True)
    if config.n_events > len(clips):
        raise InputError(f"{config.n_events} events asked for but only {len(clips)} event clips given")
    rng = np.random.default_rng(config.seed)
    pick = rng.choice(len(clips), size=config.n_events, replace=False) if config.n_events else []
    sr = config.sample_rate
    waves, rows = [], []
    for i in pick:
        path = str(clips.at[int(i), "path"])
        x, src_off = _clip_audio(path, sr, config)
        waves.append(x)
        rows.append({"class": str(clips.at[int(i), "class"]), "source_path": path,
                     "source_offset_s": round(src_off, 6), "n": len(x)})
    durs = np.array([r["n"] / sr for r in rows])
    free = config.duration_s - durs.sum() - config.min_gap_s * (len(rows) + 1)
    if free < 0:
        raise InputError(f"{len(rows)} events ({durs.sum():.1f} s) with {config.min_gap_s} s gaps do not fit "
                         f"in a {config.duration_s} s scene; lengthen the scene or use fewer events")
    cuts = np.sort(rng.uniform(0.0, free, size=len(rows)))
    snrs = rng.uniform(config.snr_db[0], config.snr_db[1], size=len(rows))
    out = []
    t = config.min_gap_s
    for k, r in enumerate(rows):
        onset_n = int(round((t + cuts[k]) * sr))
        out.append({"file": name, "onset_s": onset_n / sr, "offset_s": (onset_n + r["n"]) / sr,
                    "class": r["class"], "snr_db": round(float(snrs[k]), 3), "source_path": r["source_path"],
                    "source_offset_s": r["source_offset_s"]})
        t += durs[k] + config.min_gap_s
    return pd.DataFrame(out, columns=list(TRUTH_COLUMNS)), waves


def background_audio(background: str | os.PathLike | None, config: SceneConfig, seed_offset: int = 0) -> np.ndarray:
    """The scene's background: a recording (tiled or cut to the duration) or generated noise."""
    n = int(round(config.duration_s * config.sample_rate))
    if background is None:
        return noise(n, config.noise, config.noise_dbfs, config.seed + 1_000_003 + seed_offset)
    x = audio.load(background, sr=config.sample_rate)
    return audio.repeat_to(x, n) if len(x) < n else x[:n].copy()


def render_scene(plan: pd.DataFrame, background: np.ndarray, config: SceneConfig,
                 waves: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """Mix the plan's events into ``background`` at their SNRs; returns (wave, record)."""
    sr = config.sample_rate
    if waves is None:
        waves = [_clip_audio(p, sr, config)[0] for p in plan["source_path"]]
    mix = background.astype(np.float64).copy()
    bg = background.astype(np.float64)
    for row, x in zip(plan.itertuples(index=False), waves):
        a = int(round(row.onset_s * sr))
        b = a + len(x)
        p_bg = float(np.mean(bg[a:b] ** 2))
        p_ev = float(np.mean(np.asarray(x, dtype=np.float64) ** 2))
        if p_bg <= 0:
            raise InputError(f"the background is digital silence around {row.onset_s:.1f} s: an SNR is undefined "
                             "there; use a real background or generated noise")
        gain = np.sqrt(p_bg * 10 ** (row.snr_db / 10) / p_ev)
        mix[a:b] += gain * np.asarray(x, dtype=np.float64)
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    scale = 1.0 if peak <= 0.99 else 0.99 / peak
    record = {"config": asdict(config), "gain_db": round(20 * np.log10(scale), 3), "n_events": len(plan),
              "snr_definition": "10 lg(event power / background power over the event's interval)"}
    return (mix * scale).astype(np.float32), record


def compose_scenes(clips: pd.DataFrame, out_dir: str | os.PathLike, config: SceneConfig, *, n_scenes: int = 1,
                   background: str | os.PathLike | None = None, prefix: str = "scene",
                   subtype: str = "PCM_16", start_time: pd.Timestamp | None = None) -> pd.DataFrame:
    """Write ``n_scenes`` WAV scenes + ``truth.csv`` (one table, absolute ``file`` paths) + ``scene.json``.

    Scene ``k`` uses seed ``config.seed + k``; clips are drawn without replacement *within* a scene.
    ``start_time``: written into each WAV's BWF ``bext`` chunk (scene k starts ``k * duration`` later).
    """
    import soundfile as sf

    from clapnb import timebase

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables, records = [], {}
    for k in range(n_scenes):
        cfg = SceneConfig(**{**asdict(config), "seed": config.seed + k})
        path = (out / f"{prefix}_{k:03d}.wav").resolve()
        plan, waves = plan_scene(clips, cfg, name=str(path))
        wave, record = render_scene(plan, background_audio(background, cfg), cfg, waves)
        tmp = path.with_name(f".{path.name}.tmp")
        sf.write(tmp, wave, cfg.sample_rate, subtype=subtype, format="WAV")
        if start_time is not None:
            timebase.write_bext(tmp, start_time + pd.Timedelta(seconds=k * cfg.duration_s), cfg.sample_rate)
        os.replace(tmp, path)
        records[path.name] = record
        tables.append(plan)
    truth = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(TRUTH_COLUMNS))
    io.atomic_write_text(out / "truth.csv", truth.to_csv(index=False))
    io.atomic_write_json(out / "scene.json", {"background": None if background is None else os.fspath(background),
                                              "n_scenes": n_scenes, "scenes": records,
                                              "truth": "truth.csv", "columns": list(TRUTH_COLUMNS)})
    return truth
