"""--seeds / --repeats / --protocol folds through the sweep: sub-runs, shared embeddings, repeats.json."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import small_manifest

from clapnb import cli, config, io, repeats, segments, store, sweep

LABELS = ["church_bells", "dog", "gun_shot"]


@pytest.fixture(scope="module")
def manifest(envsounds, envsounds_meta, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    small_manifest(envsounds_meta, envsounds, 6, LABELS).to_csv(path, index=False)
    return path


def _keys(seg: pd.DataFrame) -> set:
    return set(zip(seg["sha256"], seg["start_s"], seg["noise_seed"].astype("string").fillna("")))


def test_seeded_repeats_redraw_recordings_reuse_embeddings_and_summarise(manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    cfg = config.StudyConfig(data=str(manifest), label_column="original_label", counts="4,2,2,2", backbone="mfcc",
                             lengths="1,4", seeds="0-2", probe_max_epochs=20)
    outcomes = sweep.run_repeats(cfg, tmp_path / "run", log=lambda s: None, views=False)
    assert [o.ok for o in outcomes] == [True] * 3
    run = store.RunFolder(tmp_path / "run")
    subs = dict(run.repeat_runs())
    assert sorted(subs) == ["seed-1", "seed-2"]
    tests = {}
    for name, r in {"seed-0": run, **subs}.items():
        seg = segments.read_segments(r.length(4).segments)
        assert seg.groupby("group")["split"].nunique().max() == 1  # no recording group in two splits
        tests[name] = frozenset(seg.loc[seg["split"] == "test", "path"])
        assert config.read_run_config(r).seed == int(name.split("-")[1])
    assert len(set(tests.values())) == 3  # each seed tests on other recordings
    # embeddings: the second seed computes only segments the first did not have; the rest is cached
    first = _keys(segments.read_segments(run.length(4).segments))
    second = segments.read_segments(subs["seed-1"].length(4).segments)
    meta = io.read_json(subs["seed-1"].length(4).embeddings)
    assert meta["n_cached"] > 0 and meta["n_computed"] == len(_keys(second) - first)
    # repeats.json: every row traceable to its seed; the spread and comparisons from those rows
    doc = io.read_json(run.repeats_json)
    rows = pd.DataFrame(doc["rows"])
    assert sorted(zip(rows["repeat"], rows["seed"], rows["length_s"])) == [
        (f"seed-{k}", k, n) for k in range(3) for n in (1, 4)]
    spread = pd.DataFrame(doc["spread"])
    got = spread[(spread["length_s"] == 4) & (spread["metric"] == "probe_test_accuracy")].iloc[0]
    vals = rows.loc[rows["length_s"] == 4, "probe_test_accuracy"]
    assert got["mean"] == pytest.approx(vals.mean()) and got["n"] == 3
    assert got["std"] == pytest.approx(vals.std(ddof=1)) if vals.std() > 0 else got["std"] in (0, None)
    comp = pd.DataFrame(doc["comparisons"])
    assert len(comp) == 1 and comp["comparison"].iloc[0].startswith("probe: ")
    # a rerun builds nothing
    log: list[str] = []
    sweep.run_repeats(cfg, tmp_path / "run", log=log.append, views=False)
    assert not [line for line in log if "building" in line]


def test_fold_protocol_runs_one_repeat_per_fold(envsounds, envsounds_meta, tmp_path, monkeypatch):
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    m = envsounds_meta[(envsounds_meta["source_dataset"] == "ESC-50") & envsounds_meta["original_label"].isin(["dog", "siren"])]
    m = m.sort_values("path").drop_duplicates("freesound_id").groupby(["original_label", "fold"]).head(2).copy()
    m["path"] = [str(envsounds / p) for p in m["path"]]
    m.to_csv(tmp_path / "m.csv", index=False)
    cfg = config.StudyConfig(data=str(tmp_path / "m.csv"), label_column="original_label", counts="2,1,1,1",
                             backbone="mfcc", lengths="2", protocol="folds", repeats=2, probe_max_epochs=10)
    assert [c.test_fold for c in sweep.repeat_configs(config.StudyConfig(protocol="folds", repeats=0), 5)] == [1, 2, 3, 4, 5]
    assert [c.test_fold for c in sweep.repeat_configs(config.StudyConfig(protocol="folds", test_fold=4, repeats=3), 5)] \
        == [4, 5, 1]
    outcomes = sweep.run_repeats(cfg, tmp_path / "run", log=lambda s: None, views=False)
    assert all(o.ok for o in outcomes) and len(outcomes) == 2
    run = store.RunFolder(tmp_path / "run")
    rows = pd.DataFrame(io.read_json(run.repeats_json)["rows"])
    assert sorted(rows["test_fold"]) == [1, 2] and set(rows["protocol"]) == {"folds"}
    assert sorted(rows["repeat"]) == ["fold-1", "fold-2"]
    fold = m.set_index("path")["fold"]
    for name, r in (("fold-1", run), ("fold-2", run.repeat("fold-2"))):
        seg = segments.read_segments(r.length(2).segments)
        assert set(fold[seg.loc[seg["split"] == "test", "path"]]) == {int(name[-1])}


def test_repeat_options_are_validated(tmp_path, capsys):
    assert cli.main(["sweep", "--data", str(tmp_path), "--backbone", "mfcc", "--seeds", "0-4", "--repeats", "3",
                     "--out", str(tmp_path / "o")]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(Exception, match="needs --protocol folds"):
        config.StudyConfig(test_fold=2)
    assert config.StudyConfig(repeats=3, seed=5).seed_list == (5, 6, 7)
    assert repeats.spread(config.StudyConfig(seeds="0,3").seed_list).values == {0: 0.0, 1: 3.0}
