"""clapnb levels: weighting, calibration, streaming levels and exclusions against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.signal import lfilter, sosfilt

from clapnb import calibration, levels, weighting
from clapnb.cli import main
from clapnb.errors import InputError

FS = 16000


def _write(path, x, fs=FS, subtype="FLOAT"):
    sf.write(path, np.asarray(x), fs, subtype=subtype)
    return str(path)


def _sine(seconds, amp, hz=1000.0, fs=FS):
    t = np.arange(int(round(seconds * fs))) / fs
    return amp * np.sin(2 * np.pi * hz * t)


def _events(rows):
    return pd.DataFrame(rows, columns=["file", "onset_s", "offset_s", "class", "score"])


# --- frequency weighting -------------------------------------------------------------------------

@pytest.mark.parametrize("fs", [44100, 48000])
@pytest.mark.parametrize("curve", ["A", "C"])
def test_weighting_within_iec_class1_limits_at_table_frequencies(curve, fs):
    rows = weighting.class1_check(curve, fs)
    assert len(rows) == 34  # every table frequency lies below Nyquist at 44.1 and 48 kHz
    bad = [(r["hz"], round(r["deviation_db"], 2)) for r in rows if not r["pass"]]
    assert not bad
    # and close to the standard's analog weighting where a digital filter can be (independent formula)
    f = weighting.IEC_EXACT_HZ[weighting.IEC_EXACT_HZ <= 10000]
    assert np.max(np.abs(weighting.response_db(curve, fs, f) - weighting.analog_db(curve, f))) < 0.15


def test_analog_formula_reproduces_the_iec_table():
    for nominal, a, c, _, _ in weighting.IEC_TABLE:
        exact = weighting.IEC_EXACT_HZ[[n for n, *_ in weighting.IEC_TABLE].index(nominal)]
        assert abs(weighting.analog_db("A", exact) - a) <= 0.05 + 1e-9
        assert abs(weighting.analog_db("C", exact) - c) <= 0.05 + 1e-9


@pytest.mark.parametrize("hz", [31.5, 1000.0, 8000.0])
def test_streamed_filter_gain_on_sines_matches_the_table(hz):
    """The filter as the pipeline runs it (blocks, carried state), measured on sines, not via freqz."""
    fs = 48000
    x = _sine(4.0, 0.5, hz, fs)
    fw = weighting.FrequencyWeighting("A", fs)
    y = np.concatenate([fw(b) for b in np.array_split(x, 7)])
    tail = slice(2 * fs, None)  # after the filter's transient
    gain = 10 * np.log10(np.mean(y[tail] ** 2) / np.mean(x[tail] ** 2))
    row = next(r for r in weighting.IEC_TABLE if r[0] == hz)
    assert row[4] <= gain - row[1] <= row[3]


# --- calibration -----------------------------------------------------------------------------------

def test_sine_with_sensitivity_gives_hand_computed_spl(tmp_path):
    amp, sens = 0.2, 0.05  # sample value per pascal
    spl = 20 * math.log10(amp / math.sqrt(2) / sens / 20e-6)  # 89.03 dB
    path = _write(tmp_path / "s.wav", _sine(5.0, amp, fs=48000), fs=48000)
    m = levels.measure([path], weighting="A", calibration=calibration.from_sensitivity(sens))
    t = levels.interval_table(m, 1.0)
    steady = t[(t["scope"] == "interval") & (t["start_s"] >= 1)]
    assert np.all(np.abs(steady["LAeq_dBSPL"] - spl) < 0.05)
    assert not any("dBFS" in c for c in t.columns)


def test_tone_calibration_then_measurement(tmp_path):
    a_cal = 0.1
    tone = _write(tmp_path / "tone.wav", _sine(5.0, a_cal) + 1e-4 * np.random.default_rng(0).standard_normal(5 * FS))
    cal = calibration.from_tone(tone, 94.0)
    assert cal.kind == "tone" and cal.unit == "dBSPL" and abs(cal.details["frequency_hz"] - 1000) < 5
    # a sine twice the calibrator's amplitude is 94 + 6.02 dB
    path = _write(tmp_path / "m.wav", _sine(4.0, 2 * a_cal))
    t = levels.interval_table(levels.measure([path], weighting="Z", calibration=cal), 1.0)
    assert abs(t.loc[t["scope"] == "total", "LZeq_dBSPL"].iloc[0] - (94 + 20 * math.log10(2))) < 0.05


@pytest.mark.parametrize("kind", ["noise", "500hz", "unstable", "short"])
def test_tone_file_that_is_not_a_tone_is_refused(tmp_path, kind):
    rng = np.random.default_rng(1)
    x = {"noise": 0.1 * rng.standard_normal(5 * FS), "500hz": _sine(5.0, 0.1, 500.0),
         "unstable": np.concatenate([_sine(2.5, 0.1), _sine(2.5, 0.05)]), "short": _sine(2.0, 0.1)}[kind]
    path = _write(tmp_path / f"{kind}.wav", x)
    with pytest.raises(InputError, match="calibration tone"):
        calibration.from_tone(path, 94.0)


# --- energy bookkeeping ---------------------------------------------------------------------------

def test_laeq_of_constant_level_blocks_is_their_energy_mean(tmp_path):
    amps = [0.01, 0.1, 0.03, 0.3]
    x = np.concatenate([_sine(2.0, a) for a in amps])
    path = _write(tmp_path / "blocks.wav", x)
    t = levels.interval_table(levels.measure([path], weighting="Z"), 2.0)
    iv = t[t["scope"] == "interval"]
    hand = [10 * math.log10(a * a / 2) for a in amps]
    assert np.allclose(iv["LZeq_dBFS"], hand, atol=1e-6)
    total = 10 * math.log10(np.mean([a * a / 2 for a in amps]))
    assert abs(t.loc[t["scope"] == "total", "LZeq_dBFS"].iloc[0] - total) < 1e-6
    # A-weighting is 0 dB at 1 kHz: same within the class 1 limit at 1 kHz, away from the steps' transients
    ta = levels.interval_table(levels.measure([path], weighting="A"), 2.0)
    assert np.all(np.abs(ta.loc[ta["scope"] == "interval", "LAeq_dBFS"].to_numpy() - hand) < 0.1)


def test_excluding_a_span_removes_exactly_its_energy(tmp_path):
    rng = np.random.default_rng(2)
    x = 0.02 * rng.standard_normal(10 * FS)
    x[int(3.03 * FS):int(4.57 * FS)] += 0.1 * rng.standard_normal(int(4.57 * FS) - int(3.03 * FS))
    path = _write(tmp_path / "ev.wav", x)
    ev = _events([[path, 3.03, 4.57, "dogs", 0.9]])
    m = levels.measure([path], events=ev, exclusions={"x": ["dogs"]}, weighting="A")
    t = levels.interval_table(m, 5.0, exclusion="x")
    y = sosfilt(weighting.design_sos("A", FS), x) ** 2  # the whole file at once
    a, b = round(3.03 * FS), round(4.57 * FS)
    keep = np.ones(len(y), bool)
    keep[a:b] = False
    first = t.iloc[0]
    assert abs(first["LAeq_excl_dBFS"] - 10 * math.log10(y[:5 * FS][keep[:5 * FS]].mean())) < 1e-6
    assert abs(first["LAeq_dBFS"] - 10 * math.log10(y[:5 * FS].mean())) < 1e-6
    assert abs(first["excluded_s"] - (b - a) / FS) < 1e-9 and abs(first["excluded_pct"] - 100 * (b - a) / (5 * FS)) < 1e-6
    total = t[t["scope"] == "total"].iloc[0]
    assert abs(total["LAeq_excl_dBFS"] - 10 * math.log10(y[keep].mean())) < 1e-6
    # per event: LAE = 10 lg(sum of squares / fs); contribution = LAeq with minus without it
    e = levels.events_table(m, 5.0, t, exclusion="x").iloc[0]
    assert abs(e["LAE_dBFS"] - 10 * math.log10(y[a:b].sum() / FS)) < 1e-6
    assert abs(e["contribution_dB"] - (10 * math.log10(y[:5 * FS].mean()) -
                                       10 * math.log10(y[:5 * FS][keep[:5 * FS]].mean()))) < 1e-6
    assert e["excluded"] and not e["below_residual"]


def test_block_size_does_not_change_any_number(tmp_path):
    rng = np.random.default_rng(3)
    x = 0.05 * rng.standard_normal(23 * FS + 777) + _sine(23 + 777 / FS, 0.1, 300.0)
    path = _write(tmp_path / "b.wav", x)
    ev = _events([[path, 4.2, 9.9, "sirens_alarms", 0.5], [path, 15.0, 15.5, "dogs", 0.7]])
    tables = []
    for block_s in (1.0, 1.23, 60.0):  # 1.23 s: blocks start inside a step (the general path)
        m = levels.measure([path], events=ev, exclusions={"x": ["sirens_alarms", "dogs"]}, block_s=block_s)
        tables.append((levels.interval_table(m, 5.0, exclusion="x", residual="90"),
                       levels.events_table(m, 5.0, levels.interval_table(m, 5.0, exclusion="x"), exclusion="x")))
    for t, e in tables[1:]:
        pd.testing.assert_frame_equal(t, tables[0][0], rtol=1e-9, atol=1e-9)
        pd.testing.assert_frame_equal(e, tables[0][1], rtol=1e-9, atol=1e-9)


def test_percentiles_and_max_against_numpy_on_laf_samples(tmp_path):
    rng = np.random.default_rng(4)
    x = 0.02 * rng.standard_normal(12 * FS) * np.repeat(rng.uniform(0.3, 3, 120), FS // 10)
    path = _write(tmp_path / "p.wav", x)
    ev = _events([[path, 2.0, 3.0, "dogs", 0.9]])
    m = levels.measure([path], events=ev, exclusions={"x": ["dogs"]}, weighting="Z")
    t = levels.interval_table(m, 6.0, exclusion="x")
    # independent F detector over the whole file (same start: mean square of the first 125 ms)
    sq = x ** 2
    a = math.exp(-1 / (0.125 * FS))
    f = lfilter([1 - a], [1, -a], sq, zi=[a * sq[: FS // 8].mean()])[0]
    ends = (np.arange(1, 121) * FS) // 10 - 1
    laf = 10 * np.log10(f[ends])
    t_end = ends / FS
    hold = levels.HOLDOFF_S
    out = (t_end >= 2.0) & (t_end < 3.0 + hold)
    for k, row in t[t["scope"] == "interval"].reset_index(drop=True).iterrows():
        sel = (t_end >= 6 * k) & (t_end < 6 * (k + 1))
        for p, q in ((10, 90), (50, 50), (90, 10)):
            assert abs(row[f"LZ{p}_dBFS"] - np.percentile(laf[sel], q)) < 1e-6
            assert abs(row[f"LZ{p}_excl_dBFS"] - np.percentile(laf[sel & ~out], q)) < 1e-6
        seg = slice(6 * k * FS, 6 * (k + 1) * FS)
        assert abs(row["LZFmax_dBFS"] - 10 * math.log10(f[seg].max())) < 1e-6


def test_f_time_constant_follows_the_exponential_decay(tmp_path):
    x = np.concatenate([_sine(3.0, 0.5), 1e-6 * np.ones(2 * FS)])
    path = _write(tmp_path / "decay.wav", x)
    h = levels.measure([path], weighting="Z", rate=100).histories[0]
    laf = 10 * np.log10(h.f_end)
    l0 = 10 * math.log10(0.5 ** 2 / 2)
    for ms in (100, 250, 500):  # 8.69 dB per 125 ms
        k = 300 + ms // 10 - 1
        assert abs(laf[k] - (l0 - 10 * math.log10(math.e) * ms / 125)) < 0.05
    las_max = 10 * np.log10(h.s_max)  # S (1 s) during the decay: its maximum in a step is at the step's start
    for ms in (200, 1000, 1500):  # 4.34 dB per second
        k = 300 + ms // 10
        assert abs(las_max[k] - (l0 - 10 * math.log10(math.e) * (ms / 1000 + 1 / FS))) < 0.05


def test_residual_correction_against_the_formula():
    lv, res = np.array([60.0, 53.0, 53.01, 40.0]), np.array([50.0, 50.0, 50.0, 45.0])
    out, upper = levels.residual_correction(lv, res)
    assert abs(out[0] - 10 * math.log10(10 ** 6 - 10 ** 5)) < 1e-9
    assert out[1] == 53.0 and upper[1]  # difference of exactly 3 dB: no correction, upper bound
    assert abs(out[2] - 10 * math.log10(10 ** 5.301 - 10 ** 5)) < 1e-9 and not upper[2]
    assert out[3] == 40.0 and upper[3]


def test_interval_parsing():
    assert levels.parse_interval("60") == 60 and levels.parse_interval("10min") == 600
    assert levels.parse_interval("1h") == 3600 and levels.parse_interval("90s") == 90
    for bad in ("0.5", "2h", "ten", "1.05"):
        with pytest.raises(InputError, match="--interval"):
            levels.parse_interval(bad)


# --- the command -----------------------------------------------------------------------------------

def test_cli_outputs_uncalibrated_dbfs_and_records_everything(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x = 0.01 * rng.standard_normal(20 * FS)
    x[5 * FS:7 * FS] += _sine(2.0, 0.3)
    x[14 * FS:16 * FS] += _sine(2.0, 0.1, 500.0)  # the source under assessment: stays in, well above LA90
    path = _write(tmp_path / "site_20240501_120000.wav", x)
    ev_path = tmp_path / "events.csv"
    _events([[path, 5.0, 7.0, "dogs", 0.9], [path, 12.0, 12.5, "sirens_alarms", 0.2]]).to_csv(ev_path, index=False)
    out = tmp_path / "out"
    rc = main(["levels", "--audio", path, "--events", str(ev_path), "--exclude", "dogs", "--interval", "10s",
               "--residual-percentile", "90", "--start-time-from-name", "%Y%m%d_%H%M%S", "--out", str(out)])
    assert rc == 0
    assert "whole measurement: LAeq" in capsys.readouterr().out
    t = pd.read_csv(out / "levels.csv")
    assert {"LAeq_dBFS", "LAeq_excl_dBFS", "LA90_excl_dBFS", "excluded_pct", "valid", "start_time"} <= set(t.columns)
    assert not any("SPL" in c for c in t.columns)
    assert t["start_time"].iloc[0] == "2024-05-01T12:00:00" and t["end_time"].iloc[1] == "2024-05-01T12:00:20"
    assert abs(t["excluded_pct"].iloc[0] - 20.0) < 1e-6 and t["excluded_pct"].iloc[1] == 0
    assert t["LAeq_excl_dBFS"].iloc[0] < t["LAeq_dBFS"].iloc[0] - 10
    assert pd.read_parquet(out / "levels.parquet").shape == t.shape
    pq = pd.read_parquet(out / "levels.parquet")
    lp, lr = pq["LAeq_excl_dBFS"], pq["Lres_dBFS"]
    hand = np.where(lp - lr > 3, 10 * np.log10(10 ** (lp / 10) - 10 ** (lr / 10)), lp)
    assert np.allclose(pq["LAeq_excl_corrected_dBFS"], hand) and (pq["corrected_is_upper_bound"] == ~(lp - lr > 3)).all()
    assert pq["corrected_is_upper_bound"].tolist()[:2] == [True, False]
    e = pd.read_csv(out / "events_levels.csv")
    assert list(e["excluded"]) == [True, False] and e["below_residual"].tolist() == [False, True]
    rec = json.loads((out / "levels.json").read_text())
    assert rec["residual"]["source"].startswith("LA90") and rec["events"]["rows_for_these_files"] == 2
    assert rec["exclude"]["events_excluded"] == 1 and abs(rec["exclude"]["excluded_s"] - 2.0) < 1e-9
    assert rec["calibration"]["kind"] == "none" and rec["unit"] == "dBFS" and "NOT a sound pressure" in rec["unit_text"]
    assert rec["weighting"]["iec_61672_1_class1_limits_met"] is False  # 16 kHz: tolerance fails near Nyquist
    assert rec["inputs"][0]["start_time_source"] == "name" and rec["exclude"]["classes"] == ["dogs"]


def _bad(tmp_path, capsys, argv):
    rc = main(["levels", *argv, "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "bad" / "levels.csv").exists()
    return err


def test_bad_inputs_get_one_clear_line(tmp_path, capsys):
    ok = _write(tmp_path / "ok.wav", 0.01 * np.random.default_rng(6).standard_normal(5 * FS))
    other = _write(tmp_path / "other.wav", np.zeros(5 * 8000) + 0.01, fs=8000)
    clipped = _write(tmp_path / "clip.wav", np.clip(_sine(3.0, 2.0), -1, 1), subtype="PCM_16")
    noise_tone = _write(tmp_path / "tone.wav", 0.1 * np.random.default_rng(7).standard_normal(5 * FS))
    ev = tmp_path / "ev.csv"
    _events([[ok, 1.0, 9.0, "dogs", 0.9]]).to_csv(ev, index=False)
    ev_ok = tmp_path / "ev_ok.csv"
    _events([[ok, 1.0, 2.0, "dogs", 0.9]]).to_csv(ev_ok, index=False)
    assert "calibration tone" in _bad(tmp_path, capsys, ["--audio", ok, "--calibration-tone", noise_tone])
    assert "clips" in _bad(tmp_path, capsys, ["--audio", clipped, "--interval", "1"])
    assert "longer than the recording" in _bad(tmp_path, capsys, ["--audio", ok, "--interval", "10min"])
    assert "outside the recording" in _bad(tmp_path, capsys, ["--audio", ok, "--events", str(ev), "--interval", "1"])
    assert "mixed sample rates" in _bad(tmp_path, capsys, ["--audio", ok, other, "--interval", "1"])
    assert "unknown class" in _bad(tmp_path, capsys, ["--audio", ok, "--events", str(ev_ok), "--exclude", "dgos",
                                                      "--interval", "1"])
    assert "no such file" in _bad(tmp_path, capsys, ["--audio", str(tmp_path / "nope.wav"), "--interval", "1"])


def test_laf_history_plot_shades_excluded_spans(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from clapnb import level_plots

    x = 0.01 * np.random.default_rng(8).standard_normal(12 * FS)
    path = _write(tmp_path / "plot.wav", x)
    ev = _events([[path, 2.0, 3.0, "dogs", 0.9], [path, 6.0, 7.0, "voices", 0.4]])
    m = levels.measure([path], events=ev, exclusions={"excl": ["dogs"]})
    fig = level_plots.laf_history(m, exclusion="excl", intervals=levels.interval_table(m, 4.0, exclusion="excl"))
    ax = fig.axes[0]
    assert len(ax.patches) == 1  # one shaded (excluded) span, the voices event only marked
    assert len(ax.lines) == 4    # LAF, onset markers, LAeq steps with and without exclusions


# --- composed scenes (real clips over noise, clapnb.scene) ------------------------------------------

def _scene_clips(envsounds, envsounds_meta):
    from conftest import small_manifest

    m = small_manifest(envsounds_meta, envsounds, 2, ["siren", "dog"])
    return m.assign(**{"class": m["original_label"].map({"siren": "sirens_alarms", "dog": "dogs"})})


def test_detected_vs_reference_exclusion_error_on_a_composed_scene(envsounds, envsounds_meta, tmp_path):
    from clapnb import scene

    cfg = scene.SceneConfig(duration_s=30.0, n_events=3, snr_db=(10.0, 20.0), sample_rate=FS, seed=5)
    truth = scene.compose_scenes(_scene_clips(envsounds, envsounds_meta), tmp_path, cfg)
    path = truth["file"].iloc[0]
    same = levels.measure([path], exclusions={"detected": truth, "reference": truth})
    err = levels.exclusion_error(same, 10.0)
    assert np.all(err["LAeq_error_dB"] == 0) and np.all(err["LA90_error_dB"] == 0)
    # a detector that misses the first event and ends the others 0.5 s early
    det = truth.iloc[1:].assign(offset_s=lambda d: d["offset_s"] - 0.5)
    m = levels.measure([path], exclusions={"detected": det, "reference": truth})
    err = levels.exclusion_error(m, 10.0)
    x, sr = sf.read(path, dtype="float64")
    y = sosfilt(weighting.design_sos("A", sr), x) ** 2

    def leq(spans, a, b):
        keep = np.zeros(len(y), bool)
        keep[a:b] = True
        for on, off in spans:
            keep[round(on * sr):round(off * sr)] = False
        return 10 * np.log10(y[keep].mean())

    for k, row in err[err["scope"] == "interval"].reset_index(drop=True).iterrows():
        a, b = k * 10 * sr, (k + 1) * 10 * sr
        hand = (leq(det[["onset_s", "offset_s"]].to_numpy(), a, b) -
                leq(truth[["onset_s", "offset_s"]].to_numpy(), a, b))
        assert abs(row["LAeq_error_dB"] - hand) < 1e-6
    missed = int(truth["onset_s"].iloc[0] // 10)
    assert err.loc[missed, "LAeq_error_dB"] > 1.0  # the missed event stays in the detected-excluded level
    page = levels.summarise_detection([path], det, reference=truth, interval_s=10.0)
    assert np.allclose(page["error"]["LAeq_error_dB"], err["LAeq_error_dB"])
    assert page["events"]["contribution_dB"].is_monotonic_decreasing and len(page["events"]) == len(det)
    assert np.allclose(page["intervals"]["LAeq_diff_dB"],
                       page["intervals"]["LAeq_excl_dBFS"] - page["intervals"]["LAeq_dBFS"])


def timebase_start(path):
    from clapnb import timebase

    return timebase.start_time(path).time


def test_clock_axis_from_bwf_start_spans_files(envsounds, envsounds_meta, tmp_path):
    from clapnb import scene

    cfg = scene.SceneConfig(duration_s=20.0, n_events=1, sample_rate=FS, seed=6)
    truth = scene.compose_scenes(_scene_clips(envsounds, envsounds_meta), tmp_path, cfg, n_scenes=2,
                                 start_time=pd.Timestamp("2024-05-01 12:00:05"))
    files = sorted(truth["file"].unique())
    rc = main(["levels", "--audio", str(tmp_path), "--events", str(tmp_path / "truth.csv"), "--exclude", "all",
               "--interval", "10", "--out", str(tmp_path / "out")])
    assert rc == 0
    t = pd.read_csv(tmp_path / "out" / "levels.csv")
    iv = t[t["scope"] == "interval"].reset_index(drop=True)
    assert iv["start_time"].tolist()[:2] == ["2024-05-01T12:00:00", "2024-05-01T12:00:10"]
    assert abs(iv["duration_s"].iloc[0] - 5.0) < 1e-9  # the recording starts 5 s into the first interval
    spanning = iv[iv["start_time"] == "2024-05-01T12:00:20"].iloc[0]
    assert spanning["file"] == ", ".join(files) and abs(spanning["duration_s"] - 10.0) < 1e-9
    y = np.concatenate([sosfilt(weighting.design_sos("A", FS), sf.read(f, dtype="float64")[0]) ** 2 for f in files])
    total = pd.read_parquet(tmp_path / "out" / "levels.parquet").query("scope == 'total'").iloc[0]
    assert abs(total["LAeq_dBFS"] - 10 * np.log10(y.mean())) < 1e-6
    ev = pd.read_csv(tmp_path / "out" / "events_levels.csv")
    assert len(ev) == 2 and ev["start_time"].str.startswith("2024-05-01T12:00").all()
    import matplotlib

    matplotlib.use("Agg")
    from clapnb import level_plots

    m = levels.measure(files, starts=[timebase_start(f) for f in files])
    fig = level_plots.laf_history(m, 1, intervals=levels.interval_table(m, 10.0))
    steps = fig.axes[0].lines[-1].get_xdata()  # the second file starts at 12:00:25: its intervals at -5, 5, 15 s
    assert np.allclose(steps[:3], [-5.0, 5.0, 15.0])
    with pytest.raises(InputError, match="overlap in time"):
        levels.measure(files, starts=[pd.Timestamp("2024-05-01 12:00:00"), pd.Timestamp("2024-05-01 12:00:19")])


def test_channel_is_measured_not_mixed(tmp_path):
    x = np.stack([_sine(2.0, 0.2), _sine(2.0, 0.02)], axis=1)
    path = _write(tmp_path / "stereo.wav", x, subtype="PCM_24")
    lv = [levels.interval_table(levels.measure([path], weighting="Z", channel=c), 1.0).iloc[-1]["LZeq_dBFS"]
          for c in (0, 1)]
    assert abs(lv[0] - 10 * math.log10(0.02)) < 0.01 and abs(lv[1] - 10 * math.log10(0.0002)) < 0.01
    with pytest.raises(InputError, match="--channel 2"):
        levels.measure([path], channel=2)


def test_an_empty_events_table_is_fine(tmp_path):
    path = _write(tmp_path / "quiet.wav", 0.01 * np.random.default_rng(9).standard_normal(4 * FS))
    ev = tmp_path / "events.csv"
    _events([]).to_csv(ev, index=False)
    assert main(["levels", "--audio", path, "--events", str(ev), "--exclude", "all", "--interval", "2",
                 "--out", str(tmp_path / "out")]) == 0
    t = pd.read_csv(tmp_path / "out" / "levels.csv")
    assert (t["excluded_pct"] == 0).all() and np.allclose(t["LAeq_excl_dBFS"], t["LAeq_dBFS"])
    e = pd.read_csv(tmp_path / "out" / "events_levels.csv")
    assert len(e) == 0 and {"LAE_dBFS", "contribution_dB", "below_residual"} <= set(e.columns)


@pytest.mark.parametrize("basis", ["S", "eq"])
def test_percentiles_from_las_or_step_leq_against_numpy(tmp_path, basis):
    rng = np.random.default_rng(10)
    x = 0.02 * rng.standard_normal(12 * FS) * np.repeat(rng.uniform(0.3, 3, 120), FS // 10)
    path = _write(tmp_path / "pb.wav", x)
    ev = _events([[path, 2.05, 3.0, "dogs", 0.9]])
    hold = levels.PERCENTILE_BASES[basis]
    m = levels.measure([path], events=ev, exclusions={"x": ["dogs"]}, weighting="Z", holdoff_s=hold)
    t = levels.interval_table(m, 6.0, exclusion="x", basis=basis)
    sq = x ** 2
    ends = (np.arange(1, 121) * FS) // 10 - 1
    if basis == "S":
        a = math.exp(-1 / FS)
        v = lfilter([1 - a], [1, -a], sq, zi=[a * sq[:FS].mean()])[0][ends]
        t_end = ends / FS
        out = (t_end >= 2.05) & (t_end < 3.0 + hold)
    else:
        v = sq.reshape(120, -1).mean(axis=1)
        lo, hi = np.arange(120) / 10, np.arange(1, 121) / 10
        out = (hi > 2.05) & (lo < 3.0)  # steps holding any excluded sample
    lv = 10 * np.log10(v)
    for k, row in t[t["scope"] == "interval"].reset_index(drop=True).iterrows():
        sel = np.zeros(120, bool)
        sel[60 * k:60 * (k + 1)] = True
        for p, q in ((10, 90), (50, 50), (90, 10)):
            assert abs(row[f"LZ{p}_dBFS"] - np.percentile(lv[sel], q)) < 1e-6
            assert abs(row[f"LZ{p}_excl_dBFS"] - np.percentile(lv[sel & ~out], q)) < 1e-6
