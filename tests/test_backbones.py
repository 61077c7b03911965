"""Backbones: msclap through its unchanged loading path (random-weights stand-in), input policy,
bad weights, the offline error, and the MFCC/GFCC baselines on real clips."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clapnb import audio, backbones, standin
from clapnb.backbones import BackboneUnavailableError, CheckpointError, NoTextEncoderError
from clapnb.errors import ClapnbError, InputError


@pytest.fixture(scope="module")
def clap(clap_2023):
    return clap_2023


@pytest.fixture(scope="module")
def esc_clips(envsounds_meta, envsounds):
    """Three 5-s, 44.1 kHz ESC-50 clips of different classes."""
    rows = envsounds_meta[envsounds_meta["source_dataset"] == "ESC-50"].sort_values("path")
    picked = rows.groupby("original_label").head(1).head(3)
    return [str(envsounds / p) for p in picked["path"]]


# --- input policy ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n_in=st.integers(1, 5000), n_out=st.integers(1, 3000))
def test_msclap_policy_tiles_short_and_centre_crops_long(n_in, n_out):
    x = np.arange(n_in, dtype=np.float32)
    y = backbones.apply_policy(x, "msclap", n_out)
    assert y.shape == (n_out,) and y.dtype == np.float32
    if n_in <= n_out:
        assert np.array_equal(y, x[np.arange(n_out) % n_in])  # repeated end to end
    else:
        start = (n_in - n_out) // 2
        assert np.array_equal(y, x[start:start + n_out])
        assert abs((start) - (n_in - start - n_out)) <= 1  # centred
    assert np.array_equal(backbones.apply_policy(x, "native", n_out), x)
    row = np.full(n_out, np.nan, dtype=np.float32)
    assert backbones.apply_policy(x, "msclap", n_out, out=row) is row and np.array_equal(row, y)


def test_unknown_policy_and_device_are_named():
    with pytest.raises(InputError, match="input policy 'stretch'"):
        backbones.load_backbone("mfcc", policy="stretch")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        backbones.resolve_device("tpu")
    with pytest.raises(InputError, match="unknown backbone 'clap'"):
        backbones.load_backbone("clap")


def test_msclap_policy_equals_msclaps_own_loader(clap, esc_clips, monkeypatch):
    """For a 5-s clip (< 7 s) our repeat equals msclap's load_audio_into_tensor, and so do the embeddings."""
    import msclap  # noqa: F401  (the module whose audio reading we replace)

    def soundfile_load(path):
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    monkeypatch.setattr(sys.modules["msclap.CLAPWrapper"].torchaudio, "load", soundfile_load)
    path = esc_clips[0]
    assert sf.info(path).samplerate == 44100 and sf.info(path).duration < 7
    theirs = clap.wrapper.load_audio_into_tensor(path, 7, resample=True).numpy()
    ours = clap.prepare([audio.load(path)])[0]
    assert ours.shape == theirs.shape == (7 * 44100,)
    np.testing.assert_array_equal(ours, theirs)
    emb_theirs = clap.wrapper.get_audio_embeddings([path]).numpy()
    np.testing.assert_allclose(clap.embed_audio([audio.load(path)]), emb_theirs, rtol=1e-4, atol=1e-5)


# --- msclap through the stand-in ------------------------------------------------------------

def test_clap_embeddings_shape_batching_and_metadata(clap, esc_clips, standin_dir):
    waves = [audio.load(p)[: int(s * 44100)] for p, s in zip(esc_clips, (1.0, 2.5, 4.0))]
    E = clap.embed_audio(waves)
    assert E.shape == (3, 1024) and E.dtype == np.float32 and np.isfinite(E).all()
    one_by_one = np.concatenate([clap.embed_audio([w]) for w in waves])
    np.testing.assert_allclose(E, one_by_one, rtol=1e-4, atol=1e-5)  # batching does not mix rows
    assert not np.allclose(E[0], E[1])
    weights = standin_dir / standin.CHECKPOINT_NAME
    assert clap.fingerprint == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert clap.random_weights is True and clap.metadata["random_weights"] is True
    assert clap.metadata["policy"] == "msclap" and clap.dim == 1024 and clap.sample_rate == 44100
    scale = float(clap.wrapper.clap.logit_scale.detach().exp())
    assert clap.logit_scale == pytest.approx(scale) and clap.logit_scale > 1


def test_text_embeddings_and_too_long_prompt(clap):
    T = clap.embed_text(["this is the sound of a dog barking", "this is the sound of rain"])
    assert T.shape == (2, 1024) and np.isfinite(T).all()
    assert not np.allclose(T[0], T[1])
    with pytest.raises(InputError, match="longer than the text encoder's 77 tokens"):
        clap.embed_text(["qzxv " * 60])


def test_native_policy_refuses_inputs_too_short_to_frame(standin_dir, clap):
    native = backbones.ClapBackbone(name=clap.name, wrapper=clap.wrapper, policy="native", device="cpu",
                                    fingerprint=clap.fingerprint, random_weights=True,
                                    weights_path=clap.weights_path)
    with pytest.raises(InputError, match="shorter than 513 samples"):
        native.embed_audio([np.zeros(512, dtype=np.float32)])
    E = native.embed_audio([np.ones(44100, dtype=np.float32) * 0.1, np.ones(2 * 44100, dtype=np.float32) * 0.1])
    assert E.shape == (2, 1024)  # different lengths are batched separately


def test_backbone_from_metadata_reopens_and_checks_the_fingerprint(clap):
    again = backbones.backbone_from_metadata({"backbone": clap.metadata}, device="cpu")
    assert again.fingerprint == clap.fingerprint and again.random_weights
    with pytest.raises(InputError, match="fingerprint"):
        backbones.backbone_from_metadata({**clap.metadata, "fingerprint": "0" * 64}, device="cpu")


def test_msclap_import_leaves_warning_filters_alone():
    code = ("import warnings, sys\n"
            "from clapnb import backbones\n"
            "before = list(warnings.filters)\n"
            "backbones.import_msclap()\n"
            "ok = list(warnings.filters) == before\n"
            "import importlib; sys.modules.pop('msclap', None); sys.modules.pop('msclap.CLAPWrapper', None)\n"
            "import msclap\n"
            "print(ok, list(warnings.filters) != before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # ours restored the filters; a bare `import msclap` (the control) changes them
    assert out.stdout.split() == ["True", "True"]


def test_loading_clap_shows_no_torch_meshgrid_warning_but_others_still(standin_dir):
    # The warning landed on every zero-shot page of the book; only that one is silenced, only there.
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backbones.load_backbone("msclap-2023", device="cpu", batch_size=4)
        warnings.warn("a later warning", UserWarning)
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "meshgrid" in t], texts
    assert "a later warning" in texts


# --- bad weights ----------------------------------------------------------------------------

def test_missing_files_offline_name_every_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("CLAPNB_WEIGHTS", raising=False)
    with pytest.raises(BackboneUnavailableError) as err:
        backbones.load_backbone("msclap-2023", device="cpu")
    msg = str(err.value)
    for needle in ("CLAP_weights_2023.pth", "https://huggingface.co/microsoft/msclap/resolve/main/CLAP_weights_2023.pth",
                   "--weights", "CLAPNB_WEIGHTS", "'gpt2'", "config.json", "model.safetensors", "tokenizer.json",
                   str(tmp_path / "empty-hf" / "hub" / "models--gpt2"), "https://huggingface.co/gpt2/resolve/main/",
                   "clapnb standin"):
        assert needle in msg, needle
    with pytest.raises(BackboneUnavailableError, match="bert-base-uncased"):
        backbones.check_backbone_available("msclap-2022")


def test_unreachable_hub_without_offline_flag_is_detected(tmp_path, monkeypatch, standin_dir):
    """Weights given but gpt2 absent and the endpoint refuses connections: only gpt2 is named."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(BackboneUnavailableError) as err:
        backbones.check_backbone_available("msclap-2023", standin_dir / standin.CHECKPOINT_NAME)
    assert "gpt2" in str(err.value) and "CLAP_weights_2023.pth:" not in str(err.value)


def test_weights_path_that_does_not_exist(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        backbones.load_backbone("msclap-2023", weights=tmp_path / "nope.pth")


def test_the_nonfinite_check_finds_every_bad_value_and_no_overflow():
    from clapnb.backbones.hub import _has_nonfinite

    big = torch.full((4,), 3e38)  # finite values whose sum overflows: not a bad checkpoint
    assert not _has_nonfinite(big) and not _has_nonfinite(big.to(torch.bfloat16))
    assert not _has_nonfinite(torch.arange(5)) and not _has_nonfinite(torch.zeros(0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            t = torch.ones(1000, dtype=dtype)
            t[417] = bad
            assert _has_nonfinite(t), (bad, dtype)
    assert _has_nonfinite(torch.tensor([float("inf"), -float("inf"), 1.0]))  # inf - inf: NaN sum
    assert _has_nonfinite(torch.tensor([3e38, 3e38, float("nan")]))  # overflow and a NaN


def test_pth_files_that_are_not_checkpoints(tmp_path, standin_dir):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        backbones.load_backbone("msclap-2023", weights=junk, device="cpu")
    a_list = tmp_path / "list.pth"
    torch.save([1, 2, 3], a_list)
    with pytest.raises(CheckpointError, match=r"not a msclap checkpoint.*\{'model': state_dict\}"):
        backbones.load_backbone("msclap-2023", weights=a_list, device="cpu")
    nan = tmp_path / "nan.pth"
    torch.save({"model": {"logit_scale": torch.tensor(float("nan"))}}, nan)
    with pytest.raises(CheckpointError, match="NaN or infinite values: \\['logit_scale'\\]"):
        backbones.load_backbone("msclap-2023", weights=nan, device="cpu")


def test_checkpoint_with_wrong_keys_is_refused_naming_them(tmp_path, standin_dir):
    sd = dict(torch.load(standin_dir / standin.CHECKPOINT_NAME, map_location="cpu", weights_only=True)["model"])
    del sd["audio_encoder.projection.linear2.weight"]
    sd["audio_encoder.extra_head.weight"] = torch.zeros(3)
    bad = tmp_path / "wrong_keys.pth"
    torch.save({"model": sd}, bad)
    with pytest.raises(CheckpointError) as err:
        backbones.load_backbone("msclap-2023", weights=bad, device="cpu")
    msg = str(err.value)
    assert "audio_encoder.projection.linear2.weight" in msg and "audio_encoder.extra_head.weight" in msg
    assert "missing" in msg and "does not have" in msg


def test_non_persistent_buffers_in_a_checkpoint_are_tolerated(clap):
    """Older transformers saved GPT-2's causal mask ('attn.bias'); it is not a mismatch."""
    sd = dict(clap.model.state_dict())
    backbones.compare_keys(clap.model, {**sd, "caption_encoder.base.h.0.attn.bias": torch.zeros(1)}, "x.pth")
    with pytest.raises(CheckpointError, match="logit_scale"):
        backbones.compare_keys(clap.model, {k: v for k, v in sd.items() if k != "logit_scale"}, "x.pth")


def test_weights_fingerprint_is_remembered_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.pth"
    f.write_bytes(b"some weights")
    true = hashlib.sha256(b"some weights").hexdigest()
    assert backbones.weights_sha256(f) == true
    # the remembered value is used while path, size and mtime are unchanged ...
    from clapnb import io

    book = tmp_path / "cache" / "weights-sha256.json"
    entries = io.read_json(book)
    entries[str(f.resolve())]["sha256"] = "remembered"
    io.atomic_write_json(book, entries)
    assert backbones.weights_sha256(f) == "remembered"
    # ... and recomputed once the file changes
    f.write_bytes(b"other weights")
    assert backbones.weights_sha256(f) == hashlib.sha256(b"other weights").hexdigest()


# --- feature baselines on real clips --------------------------------------------------------

def test_mfcc_features_on_real_clips(esc_clips):
    import librosa

    mfcc = backbones.load_backbone("mfcc")
    waves = [audio.load(p) for p in esc_clips]
    F = mfcc.embed_audio(waves)
    assert F.shape == (3, 80) and F.dtype == np.float32 and np.isfinite(F).all()
    # independent recomputation of the documented recipe for one clip (7-s repeat, 20 MFCC + deltas)
    x = np.tile(waves[0], 2)[: 7 * 44100]
    m = librosa.feature.mfcc(y=x, sr=44100, n_mfcc=20, n_fft=2048, hop_length=512)
    d = librosa.feature.delta(m)
    np.testing.assert_allclose(F[0], np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)]), rtol=1e-4, atol=1e-3)
    # log compression: doubling the amplitude only shifts c0 (by sqrt(n_mels) * 20 log10 2 dB)
    G = mfcc.embed_audio([2 * waves[1]])[0]
    shift = G - F[1]
    assert shift[0] == pytest.approx(np.sqrt(128) * 20 * np.log10(2), rel=1e-3)
    np.testing.assert_allclose(shift[1:], 0, atol=2e-2)
    assert not np.allclose(F[0], F[1])
    assert mfcc.has_text is False and mfcc.random_weights is False and mfcc.logit_scale is None


def test_gfcc_features_on_real_clips_scale_as_cube_root_of_power(esc_clips):
    gfcc = backbones.load_backbone("gfcc")
    w = audio.load(esc_clips[2])
    F = gfcc.embed_audio([w, 3 * w])
    assert F.shape == (2, 80) and np.isfinite(F).all()
    # GFCC = DCT(cube root of gammatone energies), all linear in power^(1/3): scaling the
    # waveform by a scales every statistic by a^(2/3).
    np.testing.assert_allclose(F[1], F[0] * 3 ** (2 / 3), rtol=1e-3, atol=1e-4)
    assert gfcc.fingerprint != backbones.load_backbone("mfcc").fingerprint


def test_feature_baselines_have_no_text_side_and_no_weights():
    for name in ("mfcc", "gfcc"):
        b = backbones.load_backbone(name)
        with pytest.raises(NoTextEncoderError, match=f"zero-shot needs a text encoder; {name} has none"):
            b.embed_text(["a dog"])
        assert isinstance(b, backbones.Backbone)
    with pytest.raises(InputError, match="--weights does not apply"):
        backbones.load_backbone("mfcc", weights="x.pth")
    with pytest.raises(InputError, match="at least"):
        backbones.load_backbone("mfcc", policy="native").embed_audio([np.zeros(100, dtype=np.float32)])
    assert issubclass(NoTextEncoderError, ClapnbError)


def test_weights_come_from_argument_then_environment(standin_dir, tmp_path):
    env_weights = str((standin_dir / standin.CHECKPOINT_NAME).resolve())
    assert backbones.check_backbone_available("msclap-2023").weights_source == "CLAPNB_WEIGHTS"
    assert backbones.check_backbone_available("msclap-2023").weights == env_weights
    other = tmp_path / "other.pth"
    other.write_bytes(b"x")
    got = backbones.check_backbone_available("msclap-2023", other)
    assert (got.weights, got.weights_source) == (str(other.resolve()), "argument")


def test_hf_settings_changed_after_import_are_refused(standin_dir, tmp_path, monkeypatch):
    """huggingface_hub froze HF_HOME at import; loading with another one would silently use the old cache."""
    import huggingface_hub  # noqa: F401  (imported, so its constants are frozen)

    moved = tmp_path / "hf2" / "hub"
    moved.mkdir(parents=True)
    (moved / "models--gpt2").symlink_to(standin_dir / "hf" / "hub" / "models--gpt2")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf2"))
    with pytest.raises(ClapnbError, match="changed after huggingface_hub was imported"):
        backbones.load_backbone("msclap-2023", device="cpu")
