"""Decoding, mono mixing, resampling and cutting of recordings.

One rule: a recording is decoded and resampled *once*, then every segment is cut from the
resampled waveform by sample index. Channels are averaged (msclap's own ``reshape(-1)`` lays
stereo channels end to end, which is not a mix).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from clapnb.errors import InputError

#: Sample rate the msclap 2023/2022 audio encoders expect.
TARGET_SR = 44100


class AudioError(InputError):
    """A recording cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header; raise :class:`AudioError` for unreadable or empty files."""
    path = os.fspath(path)
    try:
        info = sf.info(path)
    except Exception as exc:  # libsndfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioError(f"{path}: cannot be read as audio by libsndfile ({exc}); "
                         "convert it to WAV or FLAC, or remove it") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: the file holds no audio samples (empty); remove it")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


def decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode to float32 mono (channels averaged) at the file's own rate."""
    path = os.fspath(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot be decoded ({exc}); convert it to WAV or FLAC, or remove it") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples (empty); remove it")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: the decoded audio contains NaN or infinite samples; "
                         "re-export the file or remove it")
    return data.mean(axis=1, dtype=np.float32), int(sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int = TARGET_SR) -> np.ndarray:
    """High-quality (soxr VHQ) resampling; a no-op when the rates agree."""
    if sr_in == sr_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    return soxr.resample(x.astype(np.float32, copy=False), sr_in, sr_out, quality="VHQ").astype(np.float32)


#: The low-pass filter :func:`lowpass` applies; part of the embedding cache key when used.
LOWPASS_DESIGN = "fir-kaiser-100dB-transition-5pct-below-cutoff/1"


def lowpass(x: np.ndarray, sr: int, cutoff_hz: float) -> np.ndarray:
    """Linear-phase FIR low-pass: flat up to 0.95 x ``cutoff_hz``, >= 100 dB down from ``cutoff_hz``.

    Shaped like a resampler's anti-aliasing filter (the stopband starts at the cutoff, as it starts
    at the new Nyquist frequency when a recording is downsampled), so that band-limiting a
    recording leaves nothing above the cutoff: bandwidth harmonisation must remove the band, not
    merely attenuate it. The signal is mirrored at both ends, so the output has the input's length
    and no fade at the edges.
    """
    from scipy.signal import fftconvolve, firwin, kaiserord

    if cutoff_hz >= sr / 2:
        return x
    if not cutoff_hz > 0:
        raise InputError(f"low-pass cutoff must be a positive frequency in Hz, got {cutoff_hz!r}")
    width = 0.05 * cutoff_hz
    numtaps, beta = kaiserord(100.0, width / (sr / 2))
    numtaps |= 1  # odd length: a whole-sample delay, removed by the 'valid' convolution below
    taps = firwin(numtaps, cutoff_hz - width / 2, window=("kaiser", beta), fs=sr)
    padded = np.pad(np.asarray(x, dtype=np.float64), numtaps // 2, mode="reflect" if len(x) > 1 else "edge")
    return fftconvolve(padded, taps, mode="valid").astype(np.float32)


def load(path: str | os.PathLike, sr: int = TARGET_SR, lowpass_hz: float | None = None) -> np.ndarray:
    """Decode, mix to mono, resample once to ``sr`` and optionally low-pass a recording."""
    x, sr_in = decode(path)
    y = resample(x, sr_in, sr)
    if lowpass_hz is not None:
        y = lowpass(y, sr, lowpass_hz)
    return y


def repeat_to(x: np.ndarray, n: int) -> np.ndarray:
    """Tile ``x`` end to end up to exactly ``n`` samples (msclap's policy for short audio)."""
    if len(x) == 0:
        raise AudioError("cannot repeat an empty waveform")
    reps = int(np.ceil(n / len(x)))
    return np.tile(x, reps)[:n]


def cut(x: np.ndarray, sr: int, start_s: float, end_s: float) -> np.ndarray:
    """Samples ``[start_s, end_s)`` by index; past the end of the recording the audio repeats.

    A recording shorter than the segment therefore yields one full-length segment made of the
    recording repeated (the documented policy), never an empty one.
    """
    start = int(round(start_s * sr))
    # Round the duration first: (start + L) - start is not exactly L in floating point, and at a
    # half-sample boundary that would make segments of one length differ by a sample.
    n = int(round(round(end_s - start_s, 9) * sr))
    if n <= 0:
        raise AudioError(f"segment [{start_s}, {end_s}) s is empty")
    seg = x[start:start + n]
    if len(seg) < n:
        seg = repeat_to(x[start:] if start < len(x) else x, n)
    return np.ascontiguousarray(seg, dtype=np.float32)


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` relative to the segment's own mean power."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(x.astype(np.float64) ** 2))
    power = max(power, 1e-12)
    sigma = np.sqrt(power / (10.0 ** (snr_db / 10.0)))
    return (x + rng.normal(0.0, sigma, size=x.shape)).astype(np.float32)
