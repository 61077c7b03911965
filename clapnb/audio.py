"""Decoding, mono mixing, resampling and cutting of recordings.

One rule: a recording is decoded and resampled *once*, then every segment is cut from the
resampled waveform by sample index. Channels are averaged (msclap's own ``reshape(-1)`` lays
stereo channels end to end, which is not a mix).
"""

from __future__ import annotations

import hashlib
import os
import struct
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


def _require_file(path: str) -> None:
    """A missing file is reported as missing, not as a file libsndfile cannot decode."""
    if not os.path.lexists(path):
        raise AudioError(f"{path}: file not found (deleted or moved?); restore it or remove it from the input")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a folder, not an audio file")


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header; raise :class:`AudioError` for unreadable or empty files."""
    path = os.fspath(path)
    _require_file(path)
    try:
        info = sf.info(path)
    except Exception as exc:  # libsndfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioError(f"{path}: cannot be read as audio by libsndfile ({exc}); "
                         "convert it to WAV or FLAC, or remove it") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{path}: the file holds no audio samples (empty); remove it")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


#: ``channel`` value meaning "average the channels" (the default mono mix).
MIX = "mix"


def canonical_channel(channel: str | int | None) -> str:
    """``mix`` (average of the channels), or a 0-based channel index as a string (``left`` = 0, ``right`` = 1)."""
    if channel is None:
        return MIX
    text = str(channel).strip().lower()
    named = {"mix": MIX, "mean": MIX, "left": "0", "l": "0", "right": "1", "r": "1"}
    if text in named:
        return named[text]
    if text.isdigit():
        return str(int(text))
    raise InputError(f"--channel {channel!r}: give mix (average of the channels), left, right or a 0-based "
                     "channel number")


def decode_channels(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Every channel, float32 (frames x channels), at the file's own rate."""
    path = os.fspath(path)
    _require_file(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot be decoded ({exc}); the file may be truncated or damaged: "
                         "convert it to WAV or FLAC, or remove it") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples (empty); remove it")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: the decoded audio contains NaN or infinite samples; "
                         "re-export the file or remove it")
    return data, int(sr)


def to_mono(data: np.ndarray, channel: str = MIX, path: str = "") -> np.ndarray:
    """The mono signal of ``data`` (frames x channels): the channel mean, or one channel.

    A mono file is its only channel whatever ``channel`` says (there is nothing to choose).
    """
    channel = canonical_channel(channel)
    if channel == MIX or data.shape[1] == 1:
        return data.mean(axis=1, dtype=np.float32)
    k = int(channel)
    if k >= data.shape[1]:
        raise AudioError(f"{path}: has {data.shape[1]} channels, no channel {k} (--channel counts from 0)")
    return np.ascontiguousarray(data[:, k], dtype=np.float32)


def decode(path: str | os.PathLike, channel: str = MIX) -> tuple[np.ndarray, int]:
    """Decode to float32 mono (channels averaged, or the chosen ``channel``) at the file's own rate."""
    data, sr = decode_channels(path)
    return to_mono(data, channel, os.fspath(path)), sr


def header_frames(path: str | os.PathLike) -> int | None:
    """Frames the file's header promises, independent of how many its body holds.

    libsndfile trims a WAV's frame count to the bytes present, so a WAV cut short looks like a
    short recording; its RIFF ``data`` chunk size still says what it should hold. Other formats:
    the frame count libsndfile reads from the header (FLAC STREAMINFO, AIFF COMM, ...).
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            block_align = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                    continue
                if cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):  # streamed WAVs leave the size unset
                        return None
                    return size // block_align
                fh.seek(size + (size & 1), os.SEEK_CUR)
    try:
        return int(sf.info(path).frames)
    except Exception:
        return None


def content_sha256(x: np.ndarray) -> str:
    """Hash of a decoded mono signal quantised to 16 bits: equal for the same audio in other files.

    A re-encoded copy (WAV <-> FLAC, another bit depth, other metadata) has other bytes but the
    same samples, and would leak between splits just as a byte copy does.
    """
    q = np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(q.tobytes()).hexdigest()


def level_dbfs(x: np.ndarray) -> tuple[float, float]:
    """(peak, RMS) of ``x`` in dB re full scale; -inf for digital silence."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        peak = 20 * np.log10(np.max(np.abs(x))) if len(x) else -np.inf
        rms = 10 * np.log10(np.mean(x ** 2)) if len(x) else -np.inf
    return float(peak), float(rms)


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` measured on one file (every field is plain data)."""

    path: str
    sample_rate: int
    channels: int
    frames: int                  # decoded
    header_frames: int | None    # promised by the header
    peak_dbfs: float             # of the mono signal that is used
    rms_dbfs: float
    mix_loss_db: float | None    # energy lost by the channel mean vs. the mean channel energy (None: mono)
    content_sha256: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def truncated(self) -> bool:
        """The body holds clearly less than the header promises (more than 1 % missing)."""
        return self.header_frames is not None and self.frames < 0.99 * self.header_frames


def analyse(path: str | os.PathLike, channel: str = MIX) -> Analysis:
    """Decode a file fully and measure what decides whether it may enter a dataset."""
    path = os.fspath(path)
    info = probe(path)
    data, sr = decode_channels(path)
    mono = to_mono(data, channel, path)
    peak, rms = level_dbfs(mono)
    loss = None
    if data.shape[1] > 1:
        d = data.astype(np.float64)
        per_channel = float(np.mean(d ** 2))
        mixed = float(np.mean(d.mean(axis=1) ** 2))
        loss = 0.0 if per_channel == 0 else (np.inf if mixed == 0 else 10 * np.log10(per_channel / mixed))
    claimed = header_frames(path)
    return Analysis(path, sr, info.channels, int(data.shape[0]), claimed if claimed is not None else info.frames,
                    peak, rms, None if loss is None else float(loss), content_sha256(mono))


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


def load(path: str | os.PathLike, sr: int = TARGET_SR, lowpass_hz: float | None = None,
         channel: str = MIX) -> np.ndarray:
    """Decode, mix to mono (or take ``channel``), resample once to ``sr`` and optionally low-pass."""
    x, sr_in = decode(path, channel)
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
