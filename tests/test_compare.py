"""Backbones side by side (clapnb.compare): rows per method with their class counts and CIs, the
as-is label kept, the notices carried, and runs of different data refused."""

from __future__ import annotations

import pytest

from clapnb import compare, io
from clapnb.errors import InputError


def metrics(acc: float, n: int = 40) -> dict:
    return {s: {"n": n, "accuracy": acc, "accuracy_ci": {"low": acc - 0.1, "high": min(1.0, acc + 0.1)}}
            for s in ("validation", "test")}


def fake_run(root, backbone: dict, probe_acc: float, zs: dict | None, data="d1", lengths=(1, 4)):
    io.atomic_write_json(root / "results.json", {"rows": [{"length_s": n, "backbone": backbone["name"],
                                                           "data_fingerprint": data} for n in lengths]})
    for n in lengths:
        ldir = root / f"L{n:02d}"
        io.atomic_write_json(ldir / "probe.json", {"backbone": backbone, "random_weights": False,
                                                   "classes": ["a", "b", "c", "d"], "metrics": metrics(probe_acc)})
        io.atomic_write_json(ldir / "zeroshot.json", zs or {"applicable": False, "backbone": backbone})
    return root


def test_side_by_side_rows_labels_and_notice(tmp_path):
    bn = fake_run(tmp_path / "bn", {"name": "birdnet"}, 0.9,
                  {"applicable": True, "method": "as-is", "label": "as-is, 2 of 4 classes", "classes": ["a", "b"],
                   "metrics": metrics(0.7, 20)})
    mf = fake_run(tmp_path / "mf", {"name": "mfcc"}, 0.55, None)
    t = compare.comparison([bn, mf])
    assert len(t) == 2 * 3  # per length: birdnet as-is, birdnet probe, mfcc probe (no zero-shot for mfcc)
    l4 = t[t["length_s"] == 4].set_index(["backbone", "method"])
    assert l4.loc[("birdnet", "as-is, 2 of 4 classes"), "classes"] == 2
    assert l4.loc[("birdnet", "probe"), "test_accuracy"] == pytest.approx(0.9)
    assert l4.loc[("mfcc", "probe"), "classes"] == 4
    page = compare.comparison_section([bn, mf])
    assert page.count(":::{table}") == 2 and "as-is, 2 of 4 classes" in page
    assert "90.00 % [80.0, 100.0]" in page
    assert "not CLAP" in page and "CC BY-NC-SA 4.0: non-commercial" in page  # from the registry


def test_runs_of_other_data_are_refused(tmp_path):
    a = fake_run(tmp_path / "a", {"name": "mfcc"}, 0.5, None, data="d1")
    b = fake_run(tmp_path / "b", {"name": "gfcc"}, 0.5, None, data="d2")
    with pytest.raises(InputError, match="different data"):
        compare.comparison([a, b])
    with pytest.raises(InputError, match="two or more"):
        compare.comparison([a])


def test_rows_give_method_label_and_notice_and_background_is_not_a_class(tmp_path):
    """Issue 11/12: the results rows' zeroshot_label/zeroshot_method/backbone_notice fill the table;
    a probe with a background class counts its event classes only and the page says so."""
    bn = fake_run(tmp_path / "bn", {"name": "birdnet"}, 0.9,
                  {"applicable": True, "method": "as-is", "label": "as-is, 2 of 4 classes", "classes": ["a", "b"],
                   "metrics": metrics(0.7, 20)})
    notice = "BirdNET V2.4 (a bird-and-environment model, not CLAP); model licence CC BY-NC-SA 4.0: non-commercial"
    doc = io.read_json(bn / "results.json")
    for r in doc["rows"]:
        r.update({"zeroshot_method": "as-is", "zeroshot_label": "as-is, 2 of 5 classes", "backbone_notice": notice})
    io.atomic_write_json(bn / "results.json", doc)
    mf = fake_run(tmp_path / "mf", {"name": "mfcc"}, 0.55, None)
    for n in (1, 4):
        probe = io.read_json(mf / f"L{n:02d}" / "probe.json")
        probe.update({"classes": ["a", "b", "c", "d", "background"], "background": {"test": {"n_background": 4}}})
        io.atomic_write_json(mf / f"L{n:02d}" / "probe.json", probe)
    t = compare.comparison([bn, mf]).set_index(["length_s", "backbone", "method"])
    assert t.loc[(4, "birdnet", "as-is, 2 of 5 classes"), "kind"] == "as-is"  # the row's label wins
    assert t.loc[(4, "mfcc", "probe"), "classes"] == 4 and t.loc[(4, "mfcc", "probe"), "background"]
    assert t.loc[(4, "birdnet", "probe"), "model"] == f"birdnet: {notice}"
    page = compare.comparison_section([bn, mf])
    assert "event segments only" in page and page.count(notice) == 1


def test_the_papers_values_stand_beside_ours_where_it_has_that_length(tmp_path):
    from clapnb.report import PAPER_TABLE2, PAPER_TABLE3

    a = fake_run(tmp_path / "a", {"name": "mfcc"}, 0.5, None)
    b = fake_run(tmp_path / "b", {"name": "gfcc"}, 0.6, None)
    page = compare.comparison_section([a, b])

    def rows(length: int) -> dict:
        block = page[page.index(f"{length} s segments"):]
        block = block[:block.index("\n:::")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in block.splitlines() if ln.startswith("|")][2:]
        return {(c[0], c[1]): c[2:] for c in cells}

    zs = PAPER_TABLE2.set_index("length_s")["accuracy"]
    paper = "MS-CLAP 2023 (paper, its own data)"
    assert rows(4)[(paper, "zero-shot (paper)")] == ["21", f"{100 * zs[4]:.2f} %", "n/a"]
    assert rows(4)[(paper, "probe (paper)")][1] == f"{100 * PAPER_TABLE3['accuracy'].iloc[0]:.2f} %"
    assert rows(1)[(paper, "zero-shot (paper)")][1] == f"{100 * zs[1]:.2f} %"
    assert (paper, "probe (paper)") not in rows(1)  # the paper trained its probe at 4 s only
    assert rows(4)[("mfcc", "probe")][1].startswith("50.00 %")
