"""Long recordings streamed in blocks: decode, mix to mono, resample and cut windows incrementally.

``audio.load`` decodes a whole file (about 635 MB of float32 per hour at 44.1 kHz); detection on
hours to months of audio cannot do that. Here a file is read in blocks of ``block_s`` seconds
(``soundfile.SoundFile.read``), each block is mixed to mono exactly as :func:`clapnb.audio.decode`
does (channel mean in float32), and windows of ``length_s`` are cut every ``hop_s`` from a buffer
that never holds more than one window plus one block. Memory is therefore flat in the file's duration.

Resampling (when the file's rate is not the backbone's) runs on **fixed segments** of the input:
segment ``k`` covers input samples ``[k*S, (k+1)*S)`` (``S`` ~ :data:`SEGMENT_S` seconds, a
multiple of the rates' period ``sr_in / gcd(sr_in, sr_out)`` times :data:`ALIGN`) and is
resampled by one soxr call (VHQ, as :func:`clapnb.audio.resample`) over the segment plus a
:data:`MARGIN_S` warm-up margin each side, of which only the segment's own output samples are
kept. Every output sample thus depends only on its segment's input, whatever was decoded
before: a work unit that starts mid-file **seeks** to its first segment (minus the margin)
instead of decoding the file from its start, and gets the same bits as a run over the whole
file. Measured against a one-shot resample of the whole file: identical for 48/32/22.05/16/11.025/
8/96 kHz -> 44.1 kHz and 44.1 -> 48 kHz on the signals tried, at most one float32 step
otherwise (the tests keep a 1e-5 tolerance).

Window ``k`` starts at sample ``round(k * hop_s * sr)`` and holds ``round(length_s * sr)`` samples,
the indices :func:`clapnb.audio.cut` uses, so a streamed window equals the same window cut from the
fully decoded and resampled file. Windows lie on the hop grid and are whole; when the
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
#: soxr quality of the resampler: the one ``audio.resample`` uses.
QUALITY = "VHQ"
#: Resampling segments (see the module docstring): length and warm-up margin in input seconds,
#: alignment in units of the rates' period. Changing any changes the resampled samples' last bits.
SEGMENT_S = 5.0
MARGIN_S = 0.05
ALIGN = 16
#: Names this resampling scheme in cache namespaces and output keys of resampled files.
RESAMPLER = f"soxr-{QUALITY}-segments-{SEGMENT_S:g}s-{MARGIN_S:g}s-{ALIGN}/1"


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


@dataclass(frozen=True)
class Segments:
    """The resampling segments of a rate pair: ``size``/``margin`` in input samples, ``out`` per segment."""

    sr_in: int
    sr_out: int
    size: int
    margin: int
    out: int

    @classmethod
    def of(cls, sr_in: int, sr_out: int) -> "Segments":
        g = math.gcd(sr_in, sr_out)
        unit = (sr_in // g) * ALIGN  # output positions of multiples of it are whole samples
        size = max(1, round(SEGMENT_S * sr_in / unit)) * unit
        margin = max(1, math.ceil(MARGIN_S * sr_in / unit)) * unit
        return cls(sr_in, sr_out, size, margin, size * sr_out // sr_in)

    def origin(self, start: int) -> tuple[int, int]:
        """``(segment, its first output sample)`` of the segment holding output sample ``start``."""
        k = int(start) // self.out
        return k, k * self.out


def block_origin(sr_in: int, sr_out: int, start: int) -> int:
    """The output sample where :func:`iter_blocks` ``(start=start)`` begins (``<= start``)."""
    return int(start) if sr_in == sr_out else Segments.of(sr_in, sr_out).origin(start)[1]


def iter_blocks(path: str | os.PathLike, sr: int = audio.TARGET_SR, *,
                block_s: float = BLOCK_S, start: int = 0) -> Iterator[np.ndarray]:
    """Yield the recording as consecutive float32 mono blocks at ``sr`` (concatenated: the whole file).

    ``start``: an output sample; the blocks then begin at :func:`block_origin` (the start itself at
    the file's rate, else the first sample of its resampling segment), read after a seek.
    Raises :class:`clapnb.audio.AudioError` naming the file (and the position) when it cannot be
    opened, when decoding fails part-way (corrupt or truncated data) or when it holds NaN/inf.
    """
    import soundfile as sf

    path = os.fspath(path)
    info = audio.probe(path)  # refuses unreadable and 0-frame files with the usual message
    if block_s <= 0:
        raise AudioError(f"block_s must be positive, got {block_s!r}")
    block = max(1, int(round(block_s * info.sample_rate)))
    try:
        fh = sf.SoundFile(path)
    except Exception as exc:
        raise AudioError(f"{path}: cannot be opened ({exc}); convert it to WAV or FLAC, or remove it") from exc
    with fh:
        if info.sample_rate == sr:
            yield from _same_rate_blocks(fh, path, info, block, int(start))
        else:
            yield from _resampled_blocks(fh, path, info, sr, block, int(start))


def _read_mono(fh, path: str, info, block: int, pos: int) -> np.ndarray:
    """The next ``block`` frames (fewer at the end) mixed to mono; ``pos``: where they start (for messages)."""
    try:
        data = fh.read(block, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: decoding failed after {pos / info.sample_rate:.1f} s ({exc}); "
                         "the file is corrupt or truncated: re-export it or remove it") from exc
    if len(data) and not np.isfinite(data).all():
        raise AudioError(f"{path}: NaN or infinite samples after {pos / info.sample_rate:.1f} s; "
                         "re-export the file or remove it")
    return data.mean(axis=1, dtype=np.float32) if len(data) else np.zeros(0, dtype=np.float32)


def _seek(fh, path: str, frame: int) -> None:
    if frame:
        try:
            fh.seek(frame)
        except Exception as exc:
            raise AudioError(f"{path}: cannot seek to frame {frame} ({exc}); the file is corrupt or "
                             "truncated: re-export it or remove it") from exc


def _same_rate_blocks(fh, path: str, info, block: int, start: int) -> Iterator[np.ndarray]:
    _seek(fh, path, start)
    pos = start
    while True:
        mono = _read_mono(fh, path, info, block, pos)
        pos += len(mono)
        if len(mono):
            yield np.ascontiguousarray(mono)
        if len(mono) < block:
            break
    if pos == 0:
        raise AudioError(f"{path}: the file holds no audio samples (empty); remove it")


def _resampled_blocks(fh, path: str, info, sr: int, block: int, start: int) -> Iterator[np.ndarray]:
    """One block per resampling segment, from the segment holding output sample ``start`` on."""
    import soxr

    seg = Segments.of(info.sample_rate, sr)
    k = seg.origin(start)[0]
    buf_start = max(0, k * seg.size - seg.margin)  # input sample index of buf[0]
    _seek(fh, path, buf_start)
    buf = np.zeros(0, dtype=np.float32)
    eof = False
    while True:
        lo, hi = k * seg.size, (k + 1) * seg.size
        while not eof and buf_start + len(buf) < hi + seg.margin:
            mono = _read_mono(fh, path, info, block, buf_start + len(buf))
            eof = len(mono) < block
            buf = np.concatenate([buf, mono]) if len(buf) else mono
        end = buf_start + len(buf)  # input decoded so far
        if lo >= end:
            break
        last = eof and end <= hi
        a = max(0, lo - seg.margin)
        y = soxr.resample(buf[a - buf_start:min(end, hi + seg.margin) - buf_start], info.sample_rate, sr,
                          quality=QUALITY)
        skip = (lo - a) * sr // info.sample_rate  # whole: lo and a are multiples of the rates' period
        out = y[skip:] if last else y[skip:skip + seg.out]
        if len(out):
            yield np.ascontiguousarray(out, dtype=np.float32)
        if last:
            break
        k += 1
        drop = max(0, k * seg.size - seg.margin - buf_start)
        buf, buf_start = buf[drop:], buf_start + drop
    if buf_start + len(buf) == 0:
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
                 *, block_s: float = BLOCK_S, skip: int = 0, seek: bool = True) -> Iterator[Window]:
    """Stream windows of ``length_s`` every ``hop_s`` (default ``length_s / 2``) from a recording.

    ``skip``: windows before this index are not yielded - a work unit or a resumed file starts
    there. With ``seek`` the file is read from that window's start (at the file's rate) or from
    its resampling segment (see the module docstring); ``seek=False`` decodes from the file's start
    (the same windows, bit for bit: how chunks were read before segments, kept for benchmarks and
    checks). Raises :class:`AudioError` (naming the file) when the recording is shorter than one window.
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
    if skip >= len(starts):
        return
    i = max(0, int(skip))
    origin = block_origin(info.sample_rate, sr, starts[i][0]) if seek and i else 0
    buf = np.zeros(0, dtype=np.float32)
    buf_start = origin  # sample index of buf[0]
    received = origin  # output samples up to the end of what was decoded
    for block in iter_blocks(path, sr, block_s=block_s, start=origin):
        received += len(block)
        buf = np.concatenate([buf, block]) if len(buf) else block
        while i < len(starts) and starts[i][0] + n <= buf_start + len(buf):
            s, tail = starts[i]
            lo = s - buf_start
            yield Window(i, s / sr, (s + n) / sr, buf[lo:lo + n].copy(), tail)
            i += 1
        keep_from = starts[i][0] if i < len(starts) else buf_start + len(buf)
        drop = min(keep_from - buf_start, len(buf))
        if drop > 0:
            buf = buf[drop:]
            buf_start += drop
    if i < len(starts) and received >= n_total - 2 and received - n >= buf_start:
        # a resampler that rounds the length differently by a sample: end-align what is left
        while i < len(starts):
            s = min(starts[i][0], received - n)
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
