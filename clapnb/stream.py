"""Long recordings streamed in blocks: decode, mix to mono, resample and cut windows incrementally.

``audio.load`` decodes a whole file (about 635 MB of float32 per hour at 44.1 kHz); detection on
hours to months of audio cannot do that. Here a file is read in blocks of ``block_s`` seconds
(``soundfile.SoundFile.read``), each block is mixed to mono exactly as :func:`clapnb.audio.decode`
does (channel mean in float32) and passed through soxr's stream resampler (``soxr.ResampleStream``,
the same VHQ quality as :func:`clapnb.audio.resample`), and windows of ``length_s`` are cut every
``hop_s`` from a buffer that never holds more than one window plus one block. Memory is therefore
flat in the file's duration.

Window ``k`` starts at sample ``round(k * hop_s * sr)`` and holds ``round(length_s * sr)`` samples,
the indices :func:`clapnb.audio.cut` uses, so a streamed window equals the same window cut from the
fully decoded and resampled file, up to the resampler's block-edge rounding (none when the rates
agree; ~1e-6 otherwise, checked in the tests). Windows lie on the hop grid and are whole; when the
last grid window does not reach the end of the file, one more window ending exactly at the end is
added (``tail=True``), so every sample is seen and no window is padded with invented audio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from clapnb import audio
from clapnb.audio import AudioError

#: Default block read from the file at a time, in seconds of the file's own rate.
BLOCK_S = 30.0
#: soxr quality of the stream resampler: the one ``audio.resample`` uses.
QUALITY = "VHQ"


@dataclass(frozen=True)
class Window:
    """One analysis window: ``wave`` covers ``[start_s, end_s)`` of the recording at ``sr``."""

    index: int
    start_s: float
    end_s: float
    wave: np.ndarray
    tail: bool = False  # the extra window aligned to the file's end (off the hop grid)


def output_frames(frames: int, sr_in: int, sr_out: int) -> int:
    """Samples of a ``frames``-long recording once resampled (what soxr's one-shot call returns)."""
    if sr_in == sr_out:
        return int(frames)
    return int(math.floor(frames * sr_out / sr_in + 0.5))


def iter_blocks(path: str | os.PathLike, sr: int = audio.TARGET_SR, *,
                block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Yield the recording as consecutive float32 mono blocks at ``sr`` (concatenated: the whole file).

    Raises :class:`clapnb.audio.AudioError` naming the file (and the position) when it cannot be
    opened, when decoding fails part-way (corrupt or truncated data) or when it holds NaN/inf.
    """
    import soundfile as sf
    import soxr

    path = os.fspath(path)
    info = audio.probe(path)  # refuses unreadable and 0-frame files with the usual message
    if block_s <= 0:
        raise AudioError(f"block_s must be positive, got {block_s!r}")
    block = max(1, int(round(block_s * info.sample_rate)))
    stream = None if info.sample_rate == sr else soxr.ResampleStream(info.sample_rate, sr, 1, dtype="float32",
                                                                      quality=QUALITY)
    read = 0
    try:
        fh = sf.SoundFile(path)
    except Exception as exc:
        raise AudioError(f"{path}: cannot be opened ({exc}); convert it to WAV or FLAC, or remove it") from exc
    with fh:
        while True:
            try:
                data = fh.read(block, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(f"{path}: decoding failed after {read / info.sample_rate:.1f} s ({exc}); "
                                 "the file is corrupt or truncated: re-export it or remove it") from exc
            last = len(data) < block
            if len(data):
                if not np.isfinite(data).all():
                    raise AudioError(f"{path}: NaN or infinite samples after {read / info.sample_rate:.1f} s; "
                                     "re-export the file or remove it")
                read += len(data)
                mono = data.mean(axis=1, dtype=np.float32)
            else:
                mono = np.zeros(0, dtype=np.float32)
            if stream is None:
                out = mono
            else:
                out = stream.resample_chunk(mono, last=last)
            if len(out):
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                break
    if read == 0:
        raise AudioError(f"{path}: the file holds no audio samples (empty); remove it")


def window_starts(n_total: int, sr: int, length_s: float, hop_s: float) -> list[tuple[int, bool]]:
    """Start samples of the windows of a recording of ``n_total`` samples at ``sr``: ``(start, tail)``.

    Empty when the recording is shorter than one window.
    """
    n = int(round(length_s * sr))
    if n_total < n:
        return []
    starts: list[tuple[int, bool]] = []
    k = 0
    while True:
        s = int(round(round(k * hop_s, 9) * sr))
        if s + n > n_total:
            break
        starts.append((s, False))
        k += 1
    if starts[-1][0] + n < n_total:
        starts.append((n_total - n, True))
    return starts


def check_window(length_s: float, hop_s: float) -> None:
    if not (length_s > 0 and math.isfinite(length_s)):
        raise AudioError(f"window length must be a positive number of seconds, got {length_s!r}")
    if not (hop_s > 0 and math.isfinite(hop_s)):
        raise AudioError(f"--hop must be a positive number of seconds, got {hop_s!r}")
    if hop_s > length_s:
        raise AudioError(f"--hop {hop_s} s is longer than the window ({length_s} s): audio between windows "
                         "would never be analysed; use a hop <= the window length")


def iter_windows(path: str | os.PathLike, length_s: float, hop_s: float | None = None, sr: int = audio.TARGET_SR,
                 *, block_s: float = BLOCK_S, skip: int = 0) -> Iterator[Window]:
    """Stream windows of ``length_s`` every ``hop_s`` (default ``length_s / 2``) from a recording.

    ``skip``: windows before this index are not yielded (they are still decoded: resampling is
    sequential) - used to resume a file part-way. Raises :class:`AudioError` (naming the file)
    when the recording is shorter than one window.
    """
    path = os.fspath(path)
    hop_s = length_s / 2 if hop_s is None else hop_s
    check_window(length_s, hop_s)
    info = audio.probe(path)
    n_total = output_frames(info.frames, info.sample_rate, sr)
    n = int(round(length_s * sr))
    starts = window_starts(n_total, sr, length_s, hop_s)
    if not starts:
        raise AudioError(f"{path}: {info.duration_s:.2f} s is shorter than one {length_s:g}-s window; "
                         "nothing to analyse (use a probe trained on shorter segments, or leave the file out)")
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # sample index of buf[0]
    i = 0
    received = 0
    for block in iter_blocks(path, sr, block_s=block_s):
        received += len(block)
        buf = np.concatenate([buf, block]) if len(buf) else block
        while i < len(starts) and starts[i][0] + n <= buf_start + len(buf):
            s, tail = starts[i]
            if i >= skip:
                lo = s - buf_start
                yield Window(i, s / sr, (s + n) / sr, buf[lo:lo + n].copy(), tail)
            i += 1
        keep_from = starts[i][0] if i < len(starts) else buf_start + len(buf)
        drop = min(keep_from - buf_start, len(buf))
        if drop > 0:
            buf = buf[drop:]
            buf_start += drop
    if i < len(starts) and received >= n_total - 2 and received >= n:
        # a resampler that rounds the length differently by a sample: end-align what is left
        while i < len(starts):
            s = min(starts[i][0], received - n)
            if i >= skip:
                lo = s - buf_start
                yield Window(i, s / sr, (s + n) / sr, buf[lo:lo + n].copy(), starts[i][1])
            i += 1
    if i < len(starts):
        # the header promised more audio than the decoder delivered (a truncated file)
        raise AudioError(f"{path}: the header announces {info.duration_s:.1f} s but only {received / sr:.1f} s "
                         "could be decoded; the file is truncated: re-export it or remove it")


def n_windows(path: str | os.PathLike, length_s: float, hop_s: float | None = None, sr: int = audio.TARGET_SR) -> int:
    """How many windows :func:`iter_windows` yields (from the header alone)."""
    hop_s = length_s / 2 if hop_s is None else hop_s
    info = audio.probe(path)
    return len(window_starts(output_frames(info.frames, info.sample_rate, sr), sr, length_s, hop_s))
