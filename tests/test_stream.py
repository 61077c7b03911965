"""Streaming windows equal windows cut from the fully decoded file, at every block edge, flat memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from clapnb import audio, stream
from clapnb.audio import AudioError


def _write(path, seconds, sr, channels=1, subtype="PCM_16", seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + rng.normal(0, 0.05, (len(t), channels))
    sf.write(path, x.astype(np.float32), sr, subtype=subtype)
    return path


@pytest.mark.parametrize("sr_in,channels,subtype", [(48000, 2, "PCM_24"), (8000, 1, "PCM_16"),
                                                    (44100, 2, "FLOAT"), (22050, 1, "PCM_16")])
def test_streamed_windows_equal_windows_of_the_decoded_file(tmp_path, sr_in, channels, subtype):
    path = _write(tmp_path / "x.wav", 23.7, sr_in, channels, subtype)
    full = audio.load(path)  # decode whole, mono mean, soxr VHQ one-shot
    # a block that is no divisor of the window or hop: windows straddle block edges
    wins = list(stream.iter_windows(path, 4.0, 1.5, block_s=1.37))
    assert len(wins) == stream.n_windows(path, 4.0, 1.5)
    starts = [w.start_s for w in wins]
    assert starts[:3] == pytest.approx([0.0, 1.5, 3.0], abs=1e-9)
    assert wins[-1].tail and wins[-1].end_s == pytest.approx(len(full) / audio.TARGET_SR)
    edges = np.arange(0, 23.7, 1.37)
    assert any(w.start_s < e < w.end_s for w in wins for e in edges)
    for w in wins:
        ref = audio.cut(full, audio.TARGET_SR, w.start_s, w.end_s)
        assert len(w.wave) == len(ref) == 4 * audio.TARGET_SR
        # measured: bit-identical (soxr's stream and one-shot calls share one engine); tolerance
        # is what a resampler may differ by at block edges
        np.testing.assert_allclose(w.wave, ref, atol=1e-5, rtol=0)


def test_long_file_streams_in_flat_memory(tmp_path):
    """A 4-min file: every window right, and the peak allocation a fraction of the decoded file."""
    path = _write(tmp_path / "long.wav", 240, 22050)
    full = audio.load(path)
    decoded_bytes = full.nbytes
    checked = 0
    for w in stream.iter_windows(path, 3.0, 3.0, block_s=2.0):
        if w.index % 7 == 0 or w.tail:
            np.testing.assert_allclose(w.wave, audio.cut(full, audio.TARGET_SR, w.start_s, w.end_s), atol=1e-5, rtol=0)
            checked += 1
    assert checked > 10
    del full
    tracemalloc.start()
    n = sum(1 for _ in stream.iter_windows(path, 3.0, 3.0, block_s=2.0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 80
    assert peak < decoded_bytes / 10, (peak, decoded_bytes)


def test_skip_resumes_at_the_same_windows(tmp_path):
    path = _write(tmp_path / "x.wav", 12.0, 44100)
    all_w = list(stream.iter_windows(path, 2.0, 1.0))
    rest = list(stream.iter_windows(path, 2.0, 1.0, skip=5))
    assert [w.index for w in rest] == list(range(5, len(all_w)))
    for a, b in zip(all_w[5:], rest):
        assert np.array_equal(a.wave, b.wave)


def test_bad_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        list(stream.iter_windows(empty, 2.0))
    short = _write(tmp_path / "short.wav", 1.0, 44100)
    with pytest.raises(AudioError, match="shorter than one 2-s window"):
        list(stream.iter_windows(short, 2.0))
    with pytest.raises(AudioError, match="--hop 3"):
        list(stream.iter_windows(short, 2.0, 3.0))
    good = _write(tmp_path / "c.flac", 20.0, 44100)
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 4000] = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(AudioError, match="corrupt.flac"):
        list(stream.iter_windows(corrupt, 2.0))


@pytest.mark.parametrize("sr_in", [48000, 22050, 44100])
def test_a_late_start_seeks_and_gives_the_same_bits(tmp_path, sr_in):
    """Windows from index k read after a seek (to the resampling segment when resampled) equal those
    of a decode from the file's start, bit for bit; the seek decodes only what follows it."""
    path = _write(tmp_path / "x.wav", 31.3, sr_in, 2, "PCM_24")
    whole = list(stream.iter_windows(path, 3.0, 1.0, block_s=1.37, seek=False))
    for skip in (1, 13, 17, len(whole) - 1):
        late = list(stream.iter_windows(path, 3.0, 1.0, block_s=2.9, skip=skip))
        assert [w.index for w in late] == list(range(skip, len(whole)))
        for a, b in zip(late, whole[skip:]):
            assert a.start_s == b.start_s and a.tail == b.tail and np.array_equal(a.wave, b.wave)
    n_total = stream.output_frames(sf.info(path).frames, sr_in, audio.TARGET_SR)
    start = int(round(whole[17].start_s * audio.TARGET_SR))
    origin = stream.block_origin(sr_in, audio.TARGET_SR, start)
    assert start - 6 * audio.TARGET_SR < origin <= start  # within one segment (~5 s) before the window
    assert sum(len(b) for b in stream.iter_blocks(path, start=start)) == n_total - origin
