"""Zero-shot: prompts, text-embedding averaging, cosine scores and the two losses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clapnb import zeroshot
from clapnb.errors import InputError
from clapnb.taxonomy import BY_SLUG, SLUGS


def test_default_prompts_cover_the_21_classes_with_msclap_template():
    prompts = zeroshot.class_prompts()
    assert list(prompts) == list(SLUGS) and len(prompts) == 21
    assert prompts["dogs"] == ["this is the sound of a dog barking"]


def test_ensemble_adds_synonyms_and_custom_template():
    prompts = zeroshot.class_prompts(["dogs", "bells"], template="a recording of {}.", ensemble=True)
    assert prompts["dogs"] == ["a recording of a dog barking."] + [
        f"a recording of {s}." for s in BY_SLUG["dogs"].synonyms]


@pytest.mark.parametrize("template", ["no placeholder", "{} and {}"])
def test_bad_template_is_rejected(template):
    with pytest.raises(InputError, match="exactly one"):
        zeroshot.class_prompts(template=template)


def test_unknown_class_is_rejected():
    with pytest.raises(InputError, match="unknown class"):
        zeroshot.class_prompts(["dogs", "unicorns"])


def fake_text_encoder(prompts):
    """Deterministic text 'encoder' for the arithmetic: one seeded random vector per prompt string."""
    return np.stack([np.random.default_rng(sum(map(ord, p))).normal(size=8) * (1 + len(p)) for p in prompts])


def test_class_embedding_is_mean_of_normalised_prompt_embeddings():
    prompts = {"dogs": ["p one", "p two long"], "cats": ["p three"]}
    got = zeroshot.class_text_embeddings(fake_text_encoder, prompts)
    raw = fake_text_encoder(["p one", "p two long", "p three"])
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    dogs = unit[:2].mean(0)
    np.testing.assert_allclose(got[0], dogs / np.linalg.norm(dogs))
    np.testing.assert_allclose(got[1], unit[2])


def test_cosine_scores_match_sklearn():
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(0)
    a, t = rng.normal(size=(6, 10)) * 7, rng.normal(size=(3, 10))
    np.testing.assert_allclose(zeroshot.cosine_scores(a, t), cosine_similarity(a, t), atol=1e-12)


def test_zero_or_nan_embeddings_are_rejected():
    with pytest.raises(InputError, match="all-zero row or NaN"):
        zeroshot.cosine_scores(np.zeros((2, 4)), np.ones((3, 4)))
    with pytest.raises(InputError, match="same dimension"):
        zeroshot.cosine_scores(np.ones((2, 4)), np.ones((3, 5)))


# --- the two losses on fixed embeddings vs a numpy formula -----------------------------------

AUDIO = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
TEXT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 4.0]])
Y = np.array([0, 1, 2, 0])


def numpy_ce(logits, y):
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def test_paper_style_and_calibrated_losses_match_numpy():
    cos = np.array([[1.0, 0.0, 0.0],
                    [0.6, 0.8, 0.48],
                    [0.0, 0.0, 0.8],
                    [1 / math.sqrt(3), 1 / math.sqrt(3), 7 / (5 * math.sqrt(3))]])
    scores = zeroshot.cosine_scores(AUDIO, TEXT)
    np.testing.assert_allclose(scores, cos, atol=1e-12)
    m = zeroshot.split_metrics(scores, Y, logit_scale=33.37)
    assert m["loss_paper_style"] == pytest.approx(numpy_ce(cos, Y), rel=1e-12)
    assert m["loss_calibrated"] == pytest.approx(numpy_ce(33.37 * cos, Y), rel=1e-12)
    # argmax: rows 0, 1 right; row 2 (true 2) right; row 3 (true 0) picks class 2 -> 3/4
    assert m["accuracy"] == pytest.approx(0.75) and m["n"] == 4
    assert zeroshot.split_metrics(scores, Y, logit_scale=None)["loss_calibrated"] is None


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (5, 21), elements=st.floats(-1, 1)), st.lists(st.integers(0, 20), min_size=5, max_size=5))
def test_paper_style_loss_stays_near_log_k(cos, y):
    """Cosines lie in [-1, 1], so softmax over them can never be far from uniform: the unscaled
    loss is within ln(21) +/- 2 -- which is why the paper's losses are all ~2.83."""
    loss = zeroshot.split_metrics(cos, np.array(y), None)["loss_paper_style"]
    assert math.log(21) - 2 <= loss <= math.log(21) + 2


def test_evaluate_per_split_and_prediction_rows():
    scores = zeroshot.cosine_scores(AUDIO, TEXT)
    classes = ["dogs", "cats", "birds"]
    segs = pd.DataFrame({"segment_id": ["s0", "s1", "s2", "s3"],
                         "split": ["validation", "validation", "test", "test"],
                         "class": ["dogs", "cats", "birds", "dogs"],
                         "group": ["g0", "g1", "g2", "g3"]})
    per_split, preds = zeroshot.evaluate(scores, segs, classes, logit_scale=10.0)
    assert set(per_split) == {"validation", "test"}
    assert per_split["validation"]["accuracy"] == 1.0 and per_split["test"]["accuracy"] == 0.5
    assert per_split["test"]["accuracy_ci"]["resampled"] == "group"
    assert preds["pred"].tolist() == ["dogs", "cats", "birds", "birds"]
    assert preds["correct"].tolist() == [True, True, True, False]
    np.testing.assert_allclose(np.stack(preds["scores"]), scores, rtol=1e-6)
    with pytest.raises(InputError, match="not among the candidate"):
        zeroshot.evaluate(scores, segs, ["dogs", "cats", "train"], None)


def test_class_sets():
    assert zeroshot.resolve_classes(["dogs", "airplane"], "all") == list(SLUGS)
    assert zeroshot.resolve_classes(["dogs", "airplane"], "present") == ["airplane", "dogs"]
    with pytest.raises(InputError):
        zeroshot.resolve_classes(["dogs"], "some")


# --- run folders: the random-weights stand-in through msclap's loading path, and MFCC ----------

LABELS = ["dog", "siren", "church_bells"]


def _build_run(envsounds, envsounds_meta, out, backbone_args):
    from conftest import small_manifest

    from clapnb.cli import main

    distinct = envsounds_meta.drop_duplicates(["original_label", "freesound_id"])
    small_manifest(distinct, envsounds, 5, LABELS).to_csv(out / "manifest.csv", index=False)
    run = out / "L03"
    assert main(["segments", "--data", str(out / "manifest.csv"), "--label-column", "original_label",
                 "--length", "3", "--counts", "3,2,1,2", "--out", str(run)]) == 0
    assert main(["embed", "--segments", str(run / "segments.parquet"), *backbone_args,
                 "--cache", str(out / "cache"), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def standin_run(clap_2023, envsounds, envsounds_meta, tmp_path_factory):
    run = _build_run(envsounds, envsounds_meta, tmp_path_factory.mktemp("zs"),
                     ["--backbone", "msclap-2023", "--device", "cpu"])
    return run, clap_2023  # the session's stand-in: one load less


def test_zeroshot_run_with_standin_matches_numpy(standin_run, standin_dir):
    import torch

    from clapnb import standin
    from clapnb.embeddings import load_run_embeddings

    run, backbone = standin_run
    record = zeroshot.run_zeroshot(run, backbone=backbone, device="cpu")
    assert record["applicable"] and record["random_weights"] is True
    assert record["classes"] == list(SLUGS) and record["template"] == zeroshot.DEFAULT_TEMPLATE
    # CLAP's multiplier is exp(logit_scale) of the checkpoint msclap loaded
    sd = torch.load(standin_dir / standin.CHECKPOINT_NAME, map_location="cpu", weights_only=True)["model"]
    assert record["logit_scale"] == pytest.approx(float(sd["logit_scale"].exp()), rel=1e-6)

    emb = load_run_embeddings(run)
    text = backbone.embed_text([f"this is the sound of {BY_SLUG[c].prompt}" for c in SLUGS])
    a = emb.X / np.linalg.norm(emb.X, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    cos = a.astype(np.float64) @ t.T.astype(np.float64)
    y = emb.segments["class"].map({c: i for i, c in enumerate(SLUGS)}).to_numpy()
    for split, m in record["metrics"].items():
        mask = (emb.segments["split"] == split).to_numpy()
        assert m["n"] == mask.sum()
        assert m["accuracy"] == pytest.approx(float((cos[mask].argmax(1) == y[mask]).mean()))
        assert m["loss_paper_style"] == pytest.approx(numpy_ce(cos[mask], y[mask]), rel=1e-5)
        assert m["loss_calibrated"] == pytest.approx(numpy_ce(record["logit_scale"] * cos[mask], y[mask]), rel=1e-4)
    preds = pd.read_parquet(run / "zeroshot_predictions.parquet")
    assert preds["segment_id"].tolist() == emb.segments["segment_id"].tolist()
    assert np.stack(preds["scores"]).shape == (len(emb.segments), 21)


def test_zeroshot_ensemble_and_present_classes_with_cli(standin_run, capsys):
    import json

    from clapnb.cli import main

    run, _ = standin_run
    assert main(["zeroshot", "--run", str(run), "--ensemble", "--classes", "present", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "NOT CLAP results" in out and "paper-style" in out
    record = json.loads((run / "zeroshot.json").read_text())
    assert record["classes"] == ["bells", "dogs", "sirens_alarms"] and record["ensemble"] is True
    assert record["prompts"]["dogs"][1:] == [f"this is the sound of {s}" for s in BY_SLUG["dogs"].synonyms]


def test_mfcc_run_records_not_applicable(envsounds, envsounds_meta, tmp_path, capsys):
    import json

    from clapnb.cli import main

    run = _build_run(envsounds, envsounds_meta, tmp_path, ["--backbone", "mfcc"])
    with pytest.raises(zeroshot.ZeroShotNotApplicable, match="not applicable to mfcc: no text encoder"):
        zeroshot.run_zeroshot(run)
    assert not (run / "zeroshot.json").exists()
    assert main(["zeroshot", "--run", str(run)]) == 2
    assert "zero-shot is not applicable to mfcc: no text encoder" in capsys.readouterr().err
    record = json.loads((run / "zeroshot.json").read_text())
    assert record["applicable"] is False and "no text encoder" in record["reason"]


def test_background_segments_are_left_out_of_zero_shot_and_said_so(standin_run):
    """Issue 12: the background class (--background) has no prompt; zero-shot scores event segments
    only, records how many background segments it left out, and says so (no silent miscount)."""
    import soundfile as sf

    from clapnb import scene
    from clapnb.cli import main
    from clapnb.embeddings import embed_run
    from clapnb.taxonomy import BACKGROUND

    run, backbone = standin_run
    out = run.parent
    bg = out / "site"
    bg.mkdir(exist_ok=True)
    for k in range(6):
        sf.write(bg / f"site_{k}.wav", scene.noise(44100 * 4, "pink", -40.0 + 2 * k, 200 + k), 44100)
    bgrun = out / "L03-background"
    assert main(["segments", "--data", str(out / "manifest.csv"), "--label-column", "original_label",
                 "--background", str(bg), "--length", "3", "--counts", "3,2,1,2", "--out", str(bgrun)]) == 0
    emb = embed_run(bgrun, backbone, cache_dir=out / "cache", progress=False)  # the events' rows are cached
    assert emb.meta["n_computed"] == 3 + 2 + 1 + 2
    record = zeroshot.run_zeroshot(bgrun, backbone=backbone, device="cpu")
    is_bg = (emb.segments["class"] == BACKGROUND).to_numpy()
    assert record["n_background_excluded"] == is_bg.sum() == 3 + 2 + 1 + 2
    assert record["method"] == "zero-shot" and record["label"] == "zero-shot, 21 classes"
    assert "event segments only" in record["background_note"]
    text = backbone.embed_text([f"this is the sound of {BY_SLUG[c].prompt}" for c in SLUGS])
    cos = (emb.X / np.linalg.norm(emb.X, axis=1, keepdims=True)).astype(np.float64) @ \
        (text / np.linalg.norm(text, axis=1, keepdims=True)).T.astype(np.float64)
    y = emb.segments["class"].map({c: i for i, c in enumerate(SLUGS)}).to_numpy()
    for split, m in record["metrics"].items():
        mask = (emb.segments["split"] == split).to_numpy() & ~is_bg
        assert record["background_excluded"][split] == ((emb.segments["split"] == split).to_numpy() & is_bg).sum()
        assert m["n"] == mask.sum()
        assert m["accuracy"] == pytest.approx(float((cos[mask].argmax(1) == y[mask]).mean()))
    preds = pd.read_parquet(bgrun / "zeroshot_predictions.parquet")
    assert BACKGROUND not in set(preds["true"]) and len(preds) == (~is_bg).sum()
