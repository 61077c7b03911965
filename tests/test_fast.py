"""Fast embedding modes (clapnb.fast) and the agreement check (clapnb.agreement).

Module replacements are checked against the untouched msclap/torchlibrosa modules on real clips
through the random-weights stand-in (and the FFT front-end against librosa, independently); the
precision map with forward hooks; the mode against fp32 with sklearn's cosine; the choice of
``auto`` on simulated machines. torch.compile itself costs minutes per shape on these CPUs: its
numbers are measured by benchmarks/precision.py, here only its keying and recording.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics.pairwise import cosine_similarity

from clapnb import agreement, audio, backbones, cli, embeddings, fast, io
from clapnb.agreement import AgreementError, LowAgreementWarning
from clapnb.errors import InputError

N_FFT, HOP = 1024, 320  # msclap 2023's window_size / hop_size


@pytest.fixture(scope="module")
def clip_paths(envsounds_meta, envsounds) -> list[str]:
    """A 5-s 44.1 kHz ESC-50 clip and a 22.05 kHz UrbanSound8K clip (resampled on load)."""
    rows = envsounds_meta.sort_values("path")
    esc = rows[rows["source_dataset"] == "ESC-50"].head(1)
    us8k = rows[(rows["source_dataset"] == "UrbanSound8K") & (rows["sample_rate"] == 22050)].head(1)
    return [str(envsounds / p) for p in pd.concat([esc, us8k])["path"]]


@pytest.fixture(scope="module")
def waves(clip_paths) -> list[np.ndarray]:
    return [audio.load(p) for p in clip_paths]


@pytest.fixture(scope="module")
def clap(clap_2023):
    return clap_2023  # the session's stand-in (same arguments): one load less


@pytest.fixture(scope="module")
def bf16(standin_dir):
    return backbones.load_backbone("msclap-2023", device="cpu", batch_size=4, precision="bf16")


@pytest.fixture(scope="module")
def batch(clap, waves) -> torch.Tensor:
    return torch.from_numpy(np.stack(clap.prepare(waves)))


def segments_table(paths: list[str]) -> pd.DataFrame:
    rows = []
    for p in paths:
        sha = io.file_sha256(p)
        rows.append({"segment_id": f"{sha[:12]}:0", "path": p, "sha256": sha, "class": Path(p).parent.name,
                     "split": "train", "start_s": 0.0, "end_s": 2.0, "length_s": 2.0, "augmented": False,
                     "snr_db": np.nan, "noise_seed": pd.NA})
    df = pd.DataFrame(rows)
    df["noise_seed"] = df["noise_seed"].astype("Int64")
    return df


# --- choosing the precision (simulated machines) ------------------------------------------------

def test_auto_picks_bf16_only_on_native_hardware():
    avx2 = {"fpu", "sse4_2", "avx2", "fma"}
    assert fast.resolve_precision("auto", "cpu", flags=avx2)[0] == "fp32"
    assert "lacks" in fast.resolve_precision("auto", "cpu", flags=avx2)[1]
    for flag in ("avx512_bf16", "amx_bf16"):
        precision, reason = fast.resolve_precision("auto", "cpu", flags=avx2 | {flag})
        assert precision == "bf16" and flag in reason
    assert fast.resolve_precision("auto", "cuda", capability=(7, 5))[0] == "fp32"  # Turing: emulated
    assert fast.resolve_precision("auto", "cuda", capability=(8, 0))[0] == "bf16"  # Ampere
    assert fast.resolve_precision("auto", "cuda", capability=(9, 0))[0] == "bf16"
    # explicit choices are honoured, with the evidence
    assert fast.resolve_precision("fp32", "cpu", flags={"amx_bf16"})[0] == "fp32"
    precision, reason = fast.resolve_precision("bf16", "cpu", flags=avx2)
    assert precision == "bf16" and "NOT native" in reason
    with pytest.raises(InputError, match="unknown precision 'fp16'"):
        fast.resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert {"avx512_bf16", "amx_tile", "avx2"} <= fast.cpu_flags(x86)
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert fast.bf16_native("cpu", flags=fast.cpu_flags(arm))[0]
    # without /proc/cpuinfo, torch's probes answer (on this machine: whatever it has, nothing else)
    assert fast.cpu_flags(tmp_path / "missing") == fast.cpu_flags(None) <= {"avx512_bf16", "amx_tile"}
    assert ("avx512_bf16" in fast.cpu_flags(None)) == torch.cpu._is_avx512_bf16_supported()


def test_mode_names_round_trip_and_bad_names_are_refused():
    for precision in ("fp32", "bf16"):
        for compiled in (False, True):
            mode = fast.Mode(precision, compiled)
            assert fast.Mode.parse(mode.name) == mode
            assert mode.is_reference == (mode.name == "fp32")
    for bad in ("fp16", "bf16+jit", "auto"):
        with pytest.raises(InputError):
            fast.Mode.parse(bad)
    with pytest.raises(InputError, match="unknown precision 'half'"):
        backbones.load_backbone("mfcc", precision="half")
    with pytest.raises(InputError, match="CLAP backbones only"):
        backbones.load_backbone("mfcc", precision="bf16")
    assert backbones.load_backbone("gfcc", precision="auto").metadata.get("precision", "fp32") == "fp32"


# --- module replacements: equal to the originals on real audio -----------------------------------

def test_fft_frontend_equals_torchlibrosa_and_librosa_on_real_clips(clap, batch):
    htsat = clap.model.audio_encoder.base.htsat
    original = htsat.spectrogram_extractor
    replaced = fast.inference_copy(original)
    assert fast.use_fft_frontend(replaced) == 1
    with torch.inference_mode():
        ref, got = original(batch).numpy(), replaced(batch).numpy()
        db_ref = htsat.logmel_extractor(torch.from_numpy(ref)).numpy()
        db_got = htsat.logmel_extractor(torch.from_numpy(got)).numpy()
    assert got.shape == ref.shape == (len(batch), 1, 1 + batch.shape[1] // HOP, N_FFT // 2 + 1)
    # independent reference: librosa's float64 STFT (hann, centred, reflect padding)
    lib = np.stack([np.abs(librosa.stft(x.numpy().astype(np.float64), n_fft=N_FFT, hop_length=HOP,
                                        window="hann", center=True, pad_mode="reflect")) ** 2
                    for x in batch]).transpose(0, 2, 1)[:, None]
    peak = lib.max(axis=(1, 2, 3), keepdims=True)
    for ours in (got, ref):  # float32 rounding, relative to each clip's peak
        assert (np.abs(ours - lib) / peak).max() < 1e-5
    assert (np.abs(got - ref) / peak).max() < 1e-5
    assert np.abs(db_got - db_ref).max() < 0.05  # dB on the log-mel the encoder sees
    assert type(original).forward.__module__ == "torchlibrosa.stft"  # the original is untouched


def test_skipping_attention_maps_is_exact(clap, batch):
    import msclap.models.htsat as htsat_module

    encoder = clap.model.audio_encoder
    replaced = fast.inference_copy(encoder)
    assert fast.skip_attention_maps(replaced) == len(encoder.base.htsat.layers) == 4
    with torch.inference_mode():
        np.testing.assert_array_equal(replaced(batch)[0].numpy(), encoder(batch)[0].numpy())
    assert all(type(layer) is htsat_module.BasicLayer for layer in encoder.base.htsat.layers)
    assert htsat_module.BasicLayer.__dict__["forward"].__module__ == "msclap.models.htsat"


def test_fast_copy_keeps_the_weights_and_leaves_msclaps_model_alone(clap, bf16):
    ref_state = clap.model.audio_encoder.state_dict()
    fast_state = bf16.encoder.module.state_dict()  # the Autocast wrapper holds the changed copy
    assert list(fast_state) == list(ref_state)
    assert all(torch.equal(fast_state[k], ref_state[k]) for k in ref_state)
    own = bf16.model.audio_encoder
    assert own is not bf16.encoder.module
    assert not any(type(m).__module__ == fast.__name__ for m in own.modules())
    assert bf16.metadata["precision"] == "bf16" and clap.metadata["precision"] == "fp32"


# --- bf16: what runs in which precision, and how close it stays to fp32 --------------------------

def test_bf16_runs_the_front_end_and_projection_in_fp32_and_the_swin_body_in_bf16(bf16, batch):
    fast_encoder = bf16.encoder.module
    htsat = fast_encoder.base.htsat
    watched = {"spectrogram": htsat.spectrogram_extractor, "logmel": htsat.logmel_extractor, "bn0": htsat.bn0,
               "patch_embed": htsat.patch_embed.proj, "qkv": htsat.layers[0].blocks[0].attn.qkv,
               "mlp": htsat.layers[3].blocks[-1].mlp.fc2, "projection": fast_encoder.projection}
    dtypes: dict[str, torch.dtype] = {}

    def recorder(key):
        def hook(_module, _inputs, output) -> None:
            dtypes.setdefault(key, output.dtype)
        return hook

    hooks = [m.register_forward_hook(recorder(k)) for k, m in watched.items()]
    try:
        out = bf16.forward(batch[:1].numpy())
    finally:
        for h in hooks:
            h.remove()
    assert out.dtype == np.float32
    assert {k: dtypes[k] for k in ("spectrogram", "logmel", "bn0", "projection")} == dict.fromkeys(
        ("spectrogram", "logmel", "bn0", "projection"), torch.float32)
    assert {k: dtypes[k] for k in ("patch_embed", "qkv", "mlp")} == dict.fromkeys(
        ("patch_embed", "qkv", "mlp"), torch.bfloat16)


def test_bf16_agrees_with_fp32_on_real_clips(clap, bf16, waves):
    ref = clap.embed_audio(waves)
    got = bf16.embed_audio(waves)
    cos = np.diag(cosine_similarity(ref.astype(np.float64), got.astype(np.float64)))
    assert cos.min() >= 0.999
    assert np.abs(got - ref).max() > 0  # it really ran in reduced precision
    # the reference is msclap's untouched fp32 (same batch shape: GEMM blocking depends on it)
    np.testing.assert_array_equal(bf16.embed_audio_reference(waves[:1]), clap.embed_audio(waves[:1]))


# --- the agreement check ---------------------------------------------------------------------------

def test_cosine_agreement_matches_sklearn():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 16))
    b = a + rng.normal(scale=0.1, size=a.shape)
    got = agreement.cosine_agreement(a, b)
    expected = np.diag(cosine_similarity(a, b))
    assert got["n"] == 6
    assert got["min_cosine"] == pytest.approx(expected.min()) and got["mean_cosine"] == pytest.approx(expected.mean())
    assert agreement.cosine_agreement([[1.0, 0.0]], [[0.0, 2.0]])["min_cosine"] == pytest.approx(0.0)
    with pytest.raises(InputError, match="shapes"):
        agreement.cosine_agreement(a, b[:3])
    with pytest.raises(InputError, match="zero embedding"):
        agreement.cosine_agreement([[0.0, 0.0]], [[1.0, 0.0]])


@settings(max_examples=40, deadline=None)
@given(n_rows=st.integers(1, 40), n_classes=st.integers(1, 6), n=st.integers(1, 10), seed=st.integers(0, 2**16),
       aug_share=st.floats(0, 1))
def test_pick_segments_is_seeded_order_free_and_prefers_real_spread_segments(n_rows, n_classes, n, seed, aug_share):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"segment_id": [f"s{i:03d}" for i in range(n_rows)],
                       "path": [f"rec{i % 7}.wav" for i in range(n_rows)], "start_s": 0.0, "end_s": 1.0,
                       "class": [f"c{i % n_classes}" for i in range(n_rows)],
                       "augmented": rng.random(n_rows) < aug_share})
    picked = agreement.pick_segments(df, n, seed)
    shuffled = agreement.pick_segments(df.sample(frac=1, random_state=seed), n, seed)
    assert picked["segment_id"].tolist() == shuffled["segment_id"].tolist()
    assert len(picked) == min(n, n_rows) and picked["segment_id"].is_unique
    n_real = int((~df["augmented"]).sum())
    assert int((~picked["augmented"]).sum()) == min(n_real, len(picked))  # real ones first
    real = df[~df["augmented"]]
    if len(picked) <= real["class"].nunique():  # then one per class, all real
        assert picked["class"].is_unique


def test_check_agreement_records_refuses_and_warns(clap, bf16, clip_paths, capsys):
    segs = segments_table(clip_paths[:2])
    assert agreement.check_agreement(clap, segs) is None  # fp32 is the reference itself
    record = agreement.check_agreement(bf16, segs, n_clips=2, seed=1)
    assert record["passed"] and record["mode"] == "bf16" and record["n"] == 2
    assert sorted(record["segments"]) == sorted(segs["segment_id"])
    assert bf16.metadata["agreement"] == record
    with pytest.raises(AgreementError, match=r"bf16 agrees with fp32 only down to cosine 0\.99.*--precision fp32"):
        agreement.check_agreement(bf16, segs, n_clips=1, threshold=1.0)
    with pytest.warns(LowAgreementWarning):
        low = agreement.check_agreement(bf16, segs, n_clips=1, threshold=1.0, warn_only=True)
    assert not low["passed"] and low["on_fail"] == "warn" and bf16.metadata["agreement"] == low
    assert "WARNING" in capsys.readouterr().err
    assert "BELOW THE 1.0 THRESHOLD" in agreement.describe(low)
    with pytest.raises(InputError, match="threshold"):
        agreement.check_agreement(bf16, segs, threshold=0)
    bf16.metadata.pop("agreement")


# --- keying and recording ---------------------------------------------------------------------------

def test_cache_is_keyed_by_mode_and_fp32_and_bf16_never_mix(clap, bf16, clip_paths, tmp_path):
    segs = segments_table(clip_paths[:2])
    a = embeddings.compute_embeddings(segs, clap, cache_dir=tmp_path, progress=False)
    b = embeddings.compute_embeddings(segs, bf16, cache_dir=tmp_path, progress=False)
    assert a.meta["cache_namespace"] != b.meta["cache_namespace"]
    assert (a.meta["n_computed"], b.meta["n_computed"], b.meta["n_cached"]) == (2, 2, 0)
    assert b.meta["backbone"]["precision"] == "bf16" and a.meta["backbone"]["precision"] == "fp32"
    again = embeddings.compute_embeddings(segs, bf16, cache_dir=tmp_path, progress=False)
    assert again.meta["n_cached"] == 2 and np.array_equal(again.X, b.X)
    ns = {p.name for p in tmp_path.iterdir() if p.is_dir()}
    assert len(ns) == 2
    # compiled is its own mode, and metadata reopens it (no forward: compiling takes minutes on a CPU)
    compiled = backbones.backbone_from_metadata({**b.meta["backbone"], "precision": "bf16+compile"}, device="cpu")
    assert (compiled.precision, compiled.compile, compiled.metadata["precision"]) == ("bf16", True, "bf16+compile")
    assert isinstance(compiled.encoder, torch._dynamo.eval_frame.OptimizedModule)
    keys = {io.fingerprint([embeddings.cache_namespace(m.metadata, None)]) for m in (clap, bf16, compiled)}
    assert len(keys) == 3


def test_cli_embed_records_the_mode_and_an_accepted_low_agreement(clip_paths, tmp_path, capsys, standin_dir):
    run = tmp_path / "run"
    run.mkdir()
    segs = segments_table(clip_paths[:2])
    segs.to_parquet(run / "segments.parquet")
    base = ["embed", "--segments", str(run / "segments.parquet"), "--backbone", "msclap-2023", "--device", "cpu",
            "--cache", str(tmp_path / "cache"), "--no-progress", "--precision", "bf16", "--batch-size", "2"]
    with pytest.warns(LowAgreementWarning):
        assert cli.main(base + ["--agreement-threshold", "1", "--warn-low-agreement"]) == 0
    err = capsys.readouterr().err
    assert "below the threshold 1.0" in err and "WARNING" in err and "BELOW THE 1.0 THRESHOLD" in err
    meta = io.read_json(run / "embeddings.json")
    rec = meta["backbone"]["agreement"]
    assert meta["backbone"]["precision"] == "bf16" and meta["backbone"]["precision_requested"] == "bf16"
    assert not rec["passed"] and rec["on_fail"] == "warn" and rec["n"] == 2 and 0.999 <= rec["min_cosine"] < 1
    assert meta["n_computed"] == 2


# --- the sweep and the book carry the mode ---------------------------------------------------------

def test_sweep_rows_and_captions_carry_the_mode_and_its_agreement(tmp_path):
    from dataclasses import replace

    from clapnb import report, stages, store, sweep

    ldir = tmp_path / "L04"
    ldir.mkdir()
    pd.DataFrame({"segment_id": ["a:0"]}).to_parquet(ldir / "segments.parquet")
    bmeta = {"name": "msclap-2023", "policy": "msclap", "fingerprint": "f" * 64, "precision": "bf16",
             "precision_requested": "auto", "random_weights": True,
             "agreement": {"min_cosine": 0.99991, "mean_cosine": 0.99995, "passed": True, "n": 8}}
    io.atomic_write_json(ldir / "embeddings.json", {"segments_sha256": io.file_sha256(ldir / "segments.parquet"),
                                                    "backbone": bmeta})
    cfg = sweep.SweepConfig(data=str(tmp_path), precision="auto").resolved()
    lf = store.LengthFolder(ldir)
    params = cfg.stage_parameters("embeddings")
    stages.write_record(lf.stage_record("embeddings"), "embeddings", params, {}, {"embeddings": lf.embeddings}, 0.0)
    assert stages.check_record(lf.stage_record("embeddings"), params, {}, {"embeddings": lf.embeddings})[0]
    for other in (replace(cfg, precision="fp32"), replace(cfg, torch_compile=True)):  # recomputed in the other mode
        current, why = stages.check_record(lf.stage_record("embeddings"), other.stage_parameters("embeddings"), {},
                                           {"embeddings": lf.embeddings})
        assert not current and ("precision" in why or "torch_compile" in why)
    with pytest.raises(InputError, match="CLAP backbones only"):
        sweep.SweepConfig(data=str(tmp_path), backbone="mfcc", torch_compile=True).resolved()
    with pytest.raises(InputError, match="--precision 'fp8'"):
        sweep.SweepConfig(data=str(tmp_path), precision="fp8").resolved()

    metrics = {s: {"n": 4, "accuracy": 0.5} for s in ("validation", "test")}
    io.atomic_write_json(ldir / "zeroshot.json", {"applicable": False, "random_weights": True, "backbone": bmeta})
    io.atomic_write_json(ldir / "probe.json", {"length_s": 4, "backbone": bmeta, "random_weights": True,
                                              "classes": ["dogs"], "metrics": metrics})
    io.atomic_write_json(ldir / "dataset.json", {"data_fingerprint": "d", "lowpass_hz": None})
    row = sweep.length_row(ldir)
    assert (row["precision"], row["agreement_min_cosine"], row["agreement_passed"]) == ("bf16", 0.99991, True)
    assert set(row) <= set(report.RESULT_COLUMNS)

    caption = report.describe_model(report.record_model({"backbone": bmeta, "random_weights": True}))
    assert "bf16 embeddings (min cosine 0.99991 to fp32)" in caption and "RANDOM WEIGHTS" in caption
    low = {**bmeta, "agreement": {**bmeta["agreement"], "passed": False}}
    assert "BELOW THE AGREEMENT THRESHOLD" in report.describe_model(report.record_model({"backbone": low}))
    assert "embeddings" not in report.describe_model(report.record_model({"backbone": {**bmeta, "precision": "fp32"}}))
    rows = pd.DataFrame([row, {**row, "length_s": 5, "agreement_min_cosine": 0.9995}])
    meta = report.run_meta(rows)
    assert meta["precision"] == "bf16" and meta["agreement_min_cosine"] == 0.9995 and meta["agreement_passed"]
    assert "bf16 embeddings (min cosine 0.99950 to fp32)" in report.describe_model(meta)
