"""From digital sample values to sound pressure levels (or, without calibration, dB re full scale).

A level is ``10 lg(mean(x^2)) + offset_db``, ``x`` the sample values (full scale = 1.0). Without a
calibration the offset is 0 and the unit is **dBFS** (0 dBFS = an RMS of 1.0, i.e. a full-scale
square wave; a full-scale sine reads -3.01 dBFS): such a number is not a sound pressure level and is
never labelled as one. With a calibration the unit is dB re 20 uPa (``dBSPL`` in column names):
- ``sensitivity``: sample value per pascal (``x = S * p``): ``offset = -20 lg(S * 20e-6)``;
- ``offset``: a known dB offset (e.g. from a sound level meter beside the recorder);
- ``tone``: a recording of a reference calibrator (e.g. 94 dB at 1 kHz) made with the same chain;
  it must be a stable tone near the stated frequency, or it is refused.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from clapnb.errors import InputError

P_REF = 20e-6  # Pa, reference sound pressure


@dataclass(frozen=True)
class Calibration:
    kind: str            # "none", "sensitivity", "offset", "tone"
    offset_db: float     # added to 10 lg(mean square of sample values)
    details: dict = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return self.kind != "none"

    @property
    def unit(self) -> str:
        """Suffix of every level column: ``dBFS`` (uncalibrated) or ``dBSPL`` (dB re 20 uPa)."""
        return "dBSPL" if self.calibrated else "dBFS"

    @property
    def unit_text(self) -> str:
        return ("dB re 20 uPa (calibrated sound pressure level)" if self.calibrated else
                "dB re full scale (0 dBFS = RMS 1.0; NOT a sound pressure level: no calibration given)")

    def to_dict(self) -> dict:
        return {**asdict(self), "unit": self.unit, "unit_text": self.unit_text}


NONE = Calibration("none", 0.0)


def from_sensitivity(sensitivity: float) -> Calibration:
    """``sensitivity``: sample value (full scale 1.0) per pascal at the microphone."""
    if not (sensitivity > 0 and math.isfinite(sensitivity)):
        raise InputError(f"--sensitivity {sensitivity!r}: must be a positive number (sample value per pascal, "
                         "full scale = 1.0)")
    return Calibration("sensitivity", -20 * math.log10(sensitivity * P_REF),
                       {"sensitivity_fs_per_pa": float(sensitivity)})


def from_offset(offset_db: float) -> Calibration:
    if not math.isfinite(offset_db):
        raise InputError(f"--offset-db {offset_db!r}: must be a finite number of dB")
    return Calibration("offset", float(offset_db), {"offset_db": float(offset_db)})


def tone_check(x: np.ndarray, sr: int, tone_hz: float = 1000.0, *, freq_tol: float = 0.03,
               max_spread_db: float = 0.5, min_purity: float = 0.95, frame_s: float = 0.1,
               trim_s: float = 0.5) -> dict:
    """Measure a calibrator recording and say why it is not a usable tone (``problem`` None if it is).

    Checks: at least 2 s left after trimming ``trim_s`` at both ends (insertion of the calibrator);
    no clipping; dominant frequency within ``freq_tol`` of ``tone_hz``; at least ``min_purity`` of
    the energy within +-10 % of that frequency; frame levels (``frame_s``) within ``max_spread_db``
    (max - min) of each other.
    """
    x = np.asarray(x, dtype=np.float64)
    n_trim = int(trim_s * sr)
    core = x[n_trim:len(x) - n_trim] if len(x) > 2 * n_trim else x[:0]
    out: dict = {"duration_s": len(x) / sr, "tone_hz_expected": tone_hz, "problem": None}
    if len(core) < 2 * sr:
        out["problem"] = f"too short ({len(x) / sr:.2f} s): record at least {2 + 2 * trim_s:g} s of the calibrator"
        return out
    peak = float(np.max(np.abs(core)))
    out["peak"] = peak
    if peak >= 0.999:
        out["problem"] = "the tone clips (peak at full scale): lower the recorder's gain and record it again"
        return out
    spec = np.abs(np.fft.rfft(core * np.hanning(len(core)))) ** 2
    freqs = np.fft.rfftfreq(len(core), 1 / sr)
    k = int(np.argmax(spec[1:]) + 1)
    f0 = float(freqs[k])
    band = (freqs >= 0.9 * f0) & (freqs <= 1.1 * f0)
    purity = float(spec[band].sum() / spec[1:].sum())
    n = int(frame_s * sr)
    frames = core[: len(core) // n * n].reshape(-1, n)
    lv = 10 * np.log10(np.maximum(np.mean(frames ** 2, axis=1), 1e-30))
    spread = float(lv.max() - lv.min())
    out.update({"frequency_hz": f0, "purity": purity, "level_spread_db": spread,
                "mean_square": float(np.mean(core ** 2)), "dbfs": float(10 * np.log10(np.mean(core ** 2) + 1e-300))})
    if abs(f0 - tone_hz) > freq_tol * tone_hz:
        out["problem"] = (f"its strongest frequency is {f0:.0f} Hz, not {tone_hz:g} Hz +-{freq_tol:.0%} "
                          "(pass --tone-hz if your calibrator uses another frequency)")
    elif purity < min_purity:
        out["problem"] = (f"only {purity:.0%} of its energy is near {f0:.0f} Hz (need {min_purity:.0%}): "
                          "it is not a clean calibrator tone (noise, speech or a wrong file?)")
    elif spread > max_spread_db:
        out["problem"] = (f"its level varies by {spread:.2f} dB over {frame_s * 1000:.0f}-ms frames (allowed "
                          f"{max_spread_db} dB): the calibrator was not seated or the recording was cut")
    return out


def from_tone(path: str | os.PathLike, tone_db: float, tone_hz: float = 1000.0, channel: int = 0,
              **check_kwargs) -> Calibration:
    """Calibration from a reference-tone recording of ``tone_db`` dB re 20 uPa; refuses a non-tone."""
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"--calibration-tone {path}: no such file")
    if not math.isfinite(tone_db) or not 0 < tone_db < 200:
        raise InputError(f"--tone-db {tone_db!r}: give the calibrator's level in dB re 20 uPa (e.g. 94 or 114)")
    try:
        data, sr = sf.read(path, dtype="float64", always_2d=True)
    except Exception as exc:
        raise InputError(f"--calibration-tone {path}: cannot be read as audio ({exc})") from exc
    if channel >= data.shape[1]:
        raise InputError(f"--calibration-tone {path}: has {data.shape[1]} channel(s), --channel {channel} asked")
    check = tone_check(data[:, channel], int(sr), tone_hz, **check_kwargs)
    if check["problem"]:
        raise InputError(f"--calibration-tone {path}: not usable as a calibration tone: {check['problem']}")
    offset = tone_db - check["dbfs"]
    return Calibration("tone", float(offset), {"tone_file": os.path.abspath(path), "tone_db": float(tone_db),
                                                "sample_rate": int(sr), "channel": channel, **check})
