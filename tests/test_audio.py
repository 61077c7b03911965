"""Decoding, mono mixing, resampling and cutting: real clips, bad files, independent references."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import butter, resample_poly, sosfiltfilt

from clapnb import audio

ESC50_CLIP = "esc50/dog/1-100032-A-0.flac"          # 5 s, 44.1 kHz
US8K_SHORT = "us8k/jackhammer/165775-7-1-0.flac"     # 0.392 s, 22.05 kHz


def _sine(sr: int, seconds: float, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("rel, sr, seconds", [(ESC50_CLIP, 44100, 5.0), (US8K_SHORT, 22050, 0.392)])
def test_real_clips_probe_decode_and_resample(envsounds, rel, sr, seconds):
    path = envsounds / rel
    info = audio.probe(path)
    assert (info.sample_rate, info.channels) == (sr, 1)
    assert info.duration_s == pytest.approx(seconds, abs=1e-3)
    x, sr_in = audio.decode(path)
    assert sr_in == sr and x.dtype == np.float32 and len(x) == info.frames
    y = audio.load(path, sr=44100)
    assert len(y) == pytest.approx(info.frames * 44100 / sr, abs=1)
    # Same signal after resampling: compare against scipy's polyphase resampler (independent code)
    # below 80 % of the input's Nyquist, where both resamplers' anti-alias filters are flat.
    g = np.gcd(44100, sr)
    ref = resample_poly(x.astype(np.float64), 44100 // g, sr // g)
    sos = butter(8, 0.8 * sr / 2, fs=44100, output="sos")
    n = min(len(ref), len(y))
    a, b = sosfiltfilt(sos, ref[:n]), sosfiltfilt(sos, y[:n].astype(np.float64))
    mid = slice(n // 10, n - n // 10)
    assert np.corrcoef(a[mid], b[mid])[0, 1] > 0.9999


def test_stereo_is_averaged_not_concatenated(tmp_path):
    left, right = _sine(16000, 0.5), -0.25 * _sine(16000, 0.5, hz=1000)
    f = tmp_path / "stereo.wav"
    sf.write(f, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    x, sr = audio.decode(f)
    assert sr == 16000 and len(x) == len(left)  # msclap's reshape(-1) would give 2x the length
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("sr_in", [8000, 48000, 22050])
def test_unusual_rates_resample_to_the_analytic_sine(tmp_path, sr_in):
    f = tmp_path / f"sine_{sr_in}.wav"
    sf.write(f, _sine(sr_in, 1.0), sr_in, subtype="FLOAT")
    y = audio.load(f, sr=44100)
    assert len(y) == 44100
    expected = _sine(44100, 1.0)
    mid = slice(2205, 44100 - 2205)  # the resampler's edges see zeros beyond the file
    assert np.max(np.abs(y[mid] - expected[mid])) < 2e-3


def test_lowpass_removes_the_band_above_the_cutoff():
    sr = 44100
    x = _sine(sr, 1.0, hz=1000) + _sine(sr, 1.0, hz=15000)
    y = audio.lowpass(x, sr, 11025)
    spectrum = np.abs(np.fft.rfft(y)) / len(y)
    assert spectrum[15000] < 1e-3 * spectrum[1000]  # 1 Hz bins for a 1-s signal
    assert audio.lowpass(x, sr, 30000) is x


def test_corrupt_empty_and_nan_files_raise_audio_errors_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + np.random.default_rng(0).bytes(2000))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    no_frames = tmp_path / "no_frames.wav"
    sf.write(no_frames, np.zeros((0, 1), np.float32), 16000)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2] * 100, np.float32), 16000, subtype="FLOAT")

    for f in (corrupt, empty):
        with pytest.raises(audio.AudioError, match="cannot be read") as err:
            audio.probe(f)
        assert str(f) in str(err.value)
    with pytest.raises(audio.AudioError, match="empty"):
        audio.probe(no_frames)
    audio.probe(nan)  # the header is fine; the samples are not
    with pytest.raises(audio.AudioError, match="NaN") as err:
        audio.decode(nan)
    assert str(nan) in str(err.value)


def test_non_ascii_path(tmp_path, envsounds):
    d = tmp_path / "grabación ñandú 鳥"
    d.mkdir()
    f = d / "perro_ladrando_ü.flac"
    f.write_bytes((envsounds / ESC50_CLIP).read_bytes())
    assert audio.probe(f).duration_s == pytest.approx(5.0)
    assert len(audio.load(f)) == 5 * 44100


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), sr=st.integers(50, 48000), start_us=st.integers(0, 4_000_000),
       length_us=st.integers(10_000, 6_000_000))
def test_cut_has_the_exact_length_and_real_audio_first(n, sr, start_us, length_us):
    """Segment times are microsecond-rounded in the segments table; the length never depends on start."""
    x = np.arange(1, n + 1, dtype=np.float32)
    start, length = start_us / 1e6, length_us / 1e6
    want = int(round(length * sr))
    if want == 0:
        return
    seg = audio.cut(x, sr, start, start + length)
    assert len(seg) == want
    i0 = int(round(start * sr))
    real = x[i0:i0 + want]
    np.testing.assert_array_equal(seg[:len(real)], real)
    # Past the end the recording repeats: every sample is one of the recording's own samples.
    assert np.isin(seg, x).all()


def test_short_recording_is_repeated_to_fill_the_segment():
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(audio.cut(x, 1, 0, 7), [1, 2, 3, 1, 2, 3, 1])
    with pytest.raises(audio.AudioError):
        audio.repeat_to(np.zeros(0, np.float32), 4)


def test_add_noise_hits_the_requested_snr_and_is_seeded():
    x = _sine(44100, 2.0)
    y = audio.add_noise(x, 20.0, seed=7)
    noise = y.astype(np.float64) - x
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(20.0, abs=0.1)
    np.testing.assert_array_equal(y, audio.add_noise(x, 20.0, seed=7))
    assert not np.array_equal(y, audio.add_noise(x, 20.0, seed=8))
    silent = audio.add_noise(np.zeros(100, np.float32), 20.0, seed=1)
    assert np.isfinite(silent).all() and np.abs(silent).max() < 1e-4
