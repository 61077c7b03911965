"""Results tables next to the paper's values: the paper's numbers, the join, the sort, the text."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clapnb import report, sweep
from clapnb.errors import InputError

from conftest import SHARED

PAPER = SHARED / "paper" / "artuso2025-clap-transfer-learning.md"


def paper_table(number: int) -> pd.DataFrame:
    """Rows 'N s <tab> A % <tab> L' of the paper's Table ``number``, read from its text."""
    if not PAPER.is_file():
        pytest.skip(f"paper text not found at {PAPER}")
    text = PAPER.read_text(encoding="utf-8")
    start = text.index(f"**Table {number}.**")
    block = text[start:text.index("**", text.index("Audio length", start))] if number == 2 else text[start:start + 400]
    rows = re.findall(r"^(\d+) s\s+([\d.]+) %\s+([\d.]+)\s*$", block, flags=re.MULTILINE)
    return pd.DataFrame({"length_s": [int(r[0]) for r in rows], "accuracy": [round(float(r[1]) / 100, 6) for r in rows],
                         "loss": [float(r[2]) for r in rows]})


def results_frame(acc: dict[int, float | None], *, random_weights: bool = False,
                  backbone: str = "msclap-2023") -> pd.DataFrame:
    """Results rows with the given zero-shot accuracy per length; probe accuracy = 1 - length/100."""
    rows = []
    for n, a in acc.items():
        ok = a is not None
        rows.append({
            "length_s": n, "backbone": backbone, "weights": "/w/CLAP_weights_2023.pth",
            "weights_fingerprint": "ab" * 32, "random_weights": random_weights, "data_fingerprint": "d" * 16,
            "input_policy": "msclap", "n_classes": 20, "zeroshot_applicable": ok,
            "zeroshot_accuracy": a if ok else np.nan, "zeroshot_ci_low": a - 0.05 if ok else np.nan,
            "zeroshot_ci_high": a + 0.05 if ok else np.nan, "zeroshot_loss_paper": 2.9 if ok else np.nan,
            "zeroshot_loss_calibrated": 1.1 if ok else np.nan,
            "probe_validation_accuracy": 1 - n / 100, "probe_validation_ci_low": 0.8,
            "probe_validation_ci_high": 0.99, "probe_validation_loss": 0.3,
            "probe_test_accuracy": 0.9, "probe_test_ci_low": 0.85, "probe_test_ci_high": 0.95,
            "probe_test_loss": 0.35, "probe_best_epoch": 12,
        })
    return pd.DataFrame(rows).reindex(columns=list(report.RESULT_COLUMNS))


def test_paper_constants_match_the_paper_text():
    t2 = paper_table(2)
    assert len(t2) == 10
    pd.testing.assert_frame_equal(report.PAPER_TABLE2.reset_index(drop=True), t2, check_dtype=False)
    t3 = paper_table(3)
    pd.testing.assert_frame_equal(report.PAPER_TABLE3.reset_index(drop=True), t3, check_dtype=False)
    # the paper lists Table 2 best first
    assert report.PAPER_TABLE2["accuracy"].is_monotonic_decreasing


def test_table2_sorts_by_our_accuracy_and_joins_the_paper_by_length():
    ours = {1: 0.50, 2: 0.61, 3: 0.55, 4: 0.70, 5: 0.61, 6: 0.40, 7: 0.66, 8: 0.30, 9: 0.59, 10: 0.58}
    t = report.table2(results_frame(ours))
    # best first; the tie (2 s and 5 s at 0.61) keeps the shorter length first
    assert t["length_s"].tolist() == [4, 7, 2, 5, 9, 10, 3, 1, 6, 8]
    assert t["rank"].tolist() == [1, 2, 3, 3, 5, 6, 7, 8, 9, 10]
    paper = paper_table(2).set_index("length_s")
    for row in t.itertuples():
        assert row.paper_accuracy == paper.loc[row.length_s, "accuracy"]
        assert row.paper_loss == paper.loc[row.length_s, "loss"]
        assert row.paper_rank == paper.index.get_loc(row.length_s) + 1
        assert math.isclose(row.delta_accuracy, ours[row.length_s] - paper.loc[row.length_s, "accuracy"])


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(1, 12), st.one_of(st.none(), st.floats(0, 1)), min_size=1, max_size=12))
def test_table2_is_a_sorted_permutation_with_not_applicable_last(acc):
    t = report.table2(results_frame(acc))
    assert sorted(t["length_s"]) == sorted(acc)
    known = t["zeroshot_accuracy"].dropna()
    assert known.is_monotonic_decreasing
    n_known = len(known)
    assert t["zeroshot_accuracy"].iloc[:n_known].notna().all()
    assert t["length_s"].iloc[n_known:].is_monotonic_increasing  # n/a rows by length
    # the paper's value is there exactly for the lengths the paper has
    assert t["paper_accuracy"].notna().tolist() == [n in set(report.PAPER_TABLE2["length_s"]) for n in t["length_s"]]


def test_format_table2_prints_percent_with_two_decimals_and_na():
    t = report.format_table2(report.table2(results_frame({4: 0.72934, 1: None})))
    four = t[t["Audio length"] == "4 s"].iloc[0]
    assert four["Accuracy (ours)"] == "72.93 %"
    assert four["95 % CI"] == "[67.9, 77.9]"
    assert four["Accuracy (paper)"] == "72.93 %" and four["Loss (paper)"] == "2.83"
    assert four["Rank (ours)"] == "1" and four["Rank (paper)"] == "1"
    one = t[t["Audio length"] == "1 s"].iloc[0]
    assert one["Accuracy (ours)"] == "n/a" and one["Rank (ours)"] == "n/a"
    assert one["Accuracy (paper)"] == "60.42 %" and one["Rank (paper)"] == "10"
    assert t["Audio length"].tolist() == ["4 s", "1 s"]


def test_table3_has_the_paper_value_at_4_s_only_and_sorts_by_validation_accuracy():
    t = report.table3(results_frame({n: 0.5 for n in range(1, 11)}))
    assert t["length_s"].tolist() == list(range(1, 11))  # validation accuracy = 1 - n/100
    paper = t.set_index("length_s")["paper_accuracy"]
    assert paper.loc[4] == pytest.approx(0.9183) and paper.drop(4).isna().all()
    f = report.format_table3(t).set_index("Audio length")
    assert f.loc["4 s", "Accuracy (paper)"] == "91.83 %" and f.loc["4 s", "Loss (paper)"] == "0.28"
    assert f.loc["5 s", "Accuracy (paper)"] == "n/a"
    assert f.loc["4 s", "Validation accuracy (ours)"] == "96.00 %"


def _table_rows(markdown: str, caption_start: str) -> list[list[str]]:
    block = markdown[markdown.index(caption_start):]
    block = block[:block.index("\n:::")]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_results_page_states_the_model_and_warns_for_random_weights():
    page = report.results_page(results_frame({n: 0.5 + n / 100 for n in range(1, 11)}, random_weights=True),
                               figure="fig.png", failed=[{"length_s": 3, "error": "boom"}])
    assert page.index(":::{danger}") < page.index("Table 2")
    assert "NOT CLAP results" in page
    t2 = _table_rows(page, ":::{table} Table 2")
    t3 = _table_rows(page, ":::{table} Table 3")
    assert len(t2) == 10 and len(t3) == 10
    assert [r[0] for r in t2] == [f"{n} s" for n in range(10, 0, -1)]
    assert t2[-1][5] == "60.42 %"  # 1 s: our worst beside the paper's 1 s value
    for caption in re.findall(r":::\{table\} (.*)", page):
        assert "msclap-2023" in caption and "CLAP_weights_2023.pth" in caption and "RANDOM WEIGHTS" in caption
    assert "3 s: boom" in page
    assert ":::{figure} fig.png" in page

    clean = report.results_page(results_frame({4: 0.7}))
    assert "danger" not in clean and "RANDOM" not in clean


def test_feature_baseline_is_described_without_weights_and_zero_shot_not_applicable():
    frame = results_frame({1: None, 2: None}, backbone="mfcc")
    frame["weights"] = None
    page = report.results_page(frame)
    assert "backbone mfcc (feature baseline, no weights" in page
    assert "not applicable" in page
    assert all(r[1] == "n/a" for r in _table_rows(page, ":::{table} Table 2"))


@given(st.lists(st.integers(1, 30), min_size=1, max_size=10))
def test_parse_lengths_accepts_lists_and_ranges(values):
    text = ",".join(map(str, values))
    assert sweep.parse_lengths(text) == tuple(sorted(set(values)))
    lo, hi = min(values), max(values)
    assert sweep.parse_lengths(f"{lo}-{hi}") == tuple(range(lo, hi + 1))


@pytest.mark.parametrize("bad", ["", "0", "3-1", "a", "1-x", "2.5"])
def test_parse_lengths_rejects_bad_input_by_name(bad):
    with pytest.raises(InputError, match="--lengths"):
        sweep.parse_lengths(bad)


@pytest.mark.parametrize("bad", ["1,2,3", "1,2,3,0", "a,b,c,d", "1,2,3,4,5"])
def test_parse_counts_rejects_bad_input_by_name(bad):
    with pytest.raises(InputError, match="--counts"):
        sweep.parse_counts(bad)


def test_a_run_folder_refuses_other_parameters_but_accepts_more_lengths(tmp_path):
    cfg = sweep.SweepConfig(data=str(tmp_path), backbone="mfcc", counts="4,2,2,2", lengths="1-3").resolved()
    sweep.write_sweep_config(tmp_path, cfg)
    more = sweep.SweepConfig(**{**cfg.parameters(), "lengths": "4-5"})
    sweep.check_compatible(tmp_path, more)
    sweep.write_sweep_config(tmp_path, more)
    assert sweep.parse_lengths(sweep.io.read_json(tmp_path / "sweep.json")["config"]["lengths"]) == (1, 2, 3, 4, 5)
    with pytest.raises(InputError, match=r"seed: 0 -> 1.*new\s+--out"):
        sweep.check_compatible(tmp_path, sweep.SweepConfig(**{**cfg.parameters(), "seed": 1}))


def test_notebook_tables_are_captioned_with_the_model():
    record = {"backbone": {"name": "msclap-2023", "weights_path": "/x/CLAP_weights_2023.pth",
                           "fingerprint": "0123456789abcdef"}, "random_weights": True,
              "metrics": {"validation": {"n": 10, "accuracy": 0.5, "accuracy_ci": {"low": 0.2, "high": 0.8},
                                         "loss": 1.23456}}}
    html = report.captioned(report.probe_table(record), "Linear probe, 4 s", record).to_html()
    caption = re.search(r"<caption>(.*?)</caption>", html).group(1)
    assert caption.startswith("Linear probe, 4 s (backbone msclap-2023, weights CLAP_weights_2023.pth")
    assert "0123456789ab" in caption and "RANDOM WEIGHTS" in caption
    assert "50.00 %" in html and "[20.0, 80.0]" in html and "1.235" in html


# --- what readers see: padded tables, display names, small players --------------------------------

def test_notebook_tables_have_padded_cells_and_display_names():
    from bs4 import BeautifulSoup

    record = {"backbone": {"name": "mfcc", "fingerprint": "f" * 64}, "random_weights": False}
    df = pd.DataFrame({"true": ["thunder_fireworks_gunshot", "dogs"], "pred": ["dogs", "bells"], "n": [800, 12]})
    html = report.captioned(df, "Most confused pairs", record).to_html()
    soup = BeautifulSoup(html, "html.parser")
    table = soup.select_one("table")
    assert "dataframe" in table["class"]  # the class the book theme pads and borders
    style = soup.select_one("style").get_text()
    for cell in ("th", "td"):
        assert re.search(rf"#{table['id']}\s+{cell}\s*{{[^}}]*padding: 0\.3em 0\.8em", style), style
    cells = [td.get_text(strip=True) for td in table.select("tbody td")]
    assert cells[:3] == ["Thunder, fireworks and gunshot", "Dogs", "800"]
    assert not any("_" in c for c in cells)

    cm = pd.DataFrame([[3, 1], [0, 2]], index=pd.Index(["dogs", "bells"], name="class"), columns=["dogs", "bells"])
    shown = report.display_names(cm)
    assert shown.index.tolist() == ["Dogs", "Bells"] and shown.columns.tolist() == ["Dogs", "Bells"]
    assert shown.index.name == "class" and cm.index.tolist() == ["dogs", "bells"]  # the input is untouched
    assert report.display_names(pd.DataFrame({"true": ["background"]}))["true"].tolist() == ["Background (site residual)"]


def test_dataset_tables_name_classes_as_the_paper_does():
    rec = pd.DataFrame({"path": ["/a", "/b"], "source": ["E", "E"], "class": ["thunder_fireworks_gunshot", "dogs"],
                        "duration_s": [5.0, 2.0], "approximate": False})
    assert report.recordings_summary(rec).index.tolist() == ["Dogs", "Thunder, fireworks and gunshot"]
    seg = pd.DataFrame({"class": ["dogs", "dogs", "vehicle_passby"], "length_s": [4.0, 4.0, 4.0],
                        "augmented": [True, False, False]})
    share = report.augmented_share(seg)
    assert share.index.tolist() == ["Dogs", "Vehicle pass-by"] and share.loc["Dogs", "4 s"] == 50.0


def test_players_are_compressed_capped_and_still_the_sound():
    import io as stdio

    import soundfile as sf

    from conftest import ENVSOUNDS

    clip = sorted((ENVSOUNDS / "esc50").rglob("*.flac"))[0] if ENVSOUNDS.is_dir() else None
    if clip is None:
        pytest.skip("shared clips not found")
    from clapnb import audio

    x = audio.load(str(clip), report.PLAYER_SR)
    data, mime = report.player_bytes(x)
    wav = 44 + 2 * len(x)  # what IPython's Audio embedded before: 16-bit PCM
    assert mime == "audio/mpeg" and len(data) < wav / 4
    y, sr = sf.read(stdio.BytesIO(data))
    assert sr == report.PLAYER_SR and abs(len(y) - len(x)) < 0.05 * sr
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.9  # the same sound, not just any bytes
    long, _ = report.player_bytes(np.tile(x, 10), max_s=3.0)  # a long recording: only its start
    assert len(sf.read(stdio.BytesIO(long))[0]) <= 3.05 * sr
    html = report.player(x)._repr_html_()
    assert "data:audio/mpeg;base64," in html


def test_zero_shot_note_once_for_a_backbone_without_text():
    meta = report.run_meta(results_frame({2: None, 4: None}, backbone="mfcc"))
    note = report.zeroshot_note(meta)
    assert note.startswith(":::{admonition} Zero-shot: not applicable\n:class: note") and "`mfcc` has no text encoder" in note
    assert report.zeroshot_note(report.run_meta(results_frame({4: 0.5}))) == ""
    assert "no text encoder" in report.zeroshot_note({"applicable": False, "backbone": {"name": "gfcc"}})
    assert report.zeroshot_note({"applicable": True}) == ""


def test_background_rows_get_their_own_table_and_the_method_column():
    """Issue 11/12: Table 2 says what our column was measured with; a background run's Tables 2/3 say
    event segments only and its background class has a table of its own."""
    frame = results_frame({2: 0.6, 4: 0.7})
    frame["zeroshot_method"], frame["zeroshot_label"], frame["zeroshot_background_excluded"] = "zero-shot", "zero-shot, 21 classes", 2
    frame["background"] = True
    for split in ("validation", "test"):
        frame[f"background_{split}_n"], frame[f"background_{split}_recall"] = 4, 0.75
        frame[f"background_{split}_recall_ci_low"], frame[f"background_{split}_recall_ci_high"] = 0.5, 1.0
        frame[f"background_{split}_false_events"], frame[f"background_{split}_events_called_background"] = 1, 3
        frame[f"probe_{split}_n"] = 40
    page = report.results_page(frame)
    t2 = _table_rows(page, ":::{table} Table 2")
    assert [r[-1] for r in t2] == ["zero-shot, 21 classes"] * 2
    assert "event segments only" in page[page.index(":::{table} Table 3"):].split("\n:::")[0]
    bg = _table_rows(page, ":::{table} Background class")
    assert bg[0][:5] == ["2 s", "4", "75.00 % [50.0, 100.0]", "1 of 4", "3 of 40"]
    assert "leaves its 2 validation segment(s) out" in page
    plain = report.results_page(results_frame({4: 0.7}))
    assert "Background class" not in plain and "event segments only" not in plain
