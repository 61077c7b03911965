"""The book's Review page: precision per class round by round, from reviewed tables made by hand."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from clapnb import events, io, review, review_book
from clapnb.cli import main
from clapnb.errors import InputError
from clapnb.store import LengthFolder


def reviewed_round(root, name, rows, answers, probe=None):
    """A detect folder with ``rows`` (class, score) as events and ``answers`` (status or class) given in order."""
    d = root / name
    ev = pd.DataFrame({"file": [str(root / "rec.wav")] * len(rows), "onset_s": [10.0 * k for k in range(len(rows))],
                       "offset_s": [10.0 * k + 2 for k in range(len(rows))], "class": [c for c, _ in rows],
                       "score": [s for _, s in rows]})
    events.write_events(ev, d)
    io.atomic_write_json(d / "detect.json", {"probe": {"classes": ["dogs", "sirens_alarms", "background"],
                                                       "path": str(probe) if probe else None}})
    r = review.Review(d, "op", sort="time")
    for a in answers:
        if a == "accept":
            r.accept()
        elif a == "reject":
            r.reject()
        else:
            r.relabel(a)
    return d


@pytest.fixture()
def rounds(tmp_path):
    # round 1: dogs 1 of 3 right, sirens 1 of 2; round 2 (the retrained probe): dogs 3 of 4, sirens 0 of 1
    r1 = reviewed_round(tmp_path, "det1", [("dogs", .9), ("dogs", .7), ("dogs", .6), ("sirens_alarms", .8),
                                            ("sirens_alarms", .5)],
                        ["accept", "reject", "sirens_alarms", "accept", "reject"])
    run2 = tmp_path / "L02_reviewed"
    run2.mkdir()
    io.atomic_write_json(LengthFolder(run2).probe,
                         {"extra_labels": {"path": str(r1 / "reviewed.parquet"), "n_windows": 7}})
    r2 = reviewed_round(tmp_path, "det2", [("dogs", .95), ("dogs", .8), ("dogs", .7), ("dogs", .4),
                                            ("sirens_alarms", .6), ("sirens_alarms", .3)],
                        ["accept", "accept", "reject", "accept", "dogs"], probe=LengthFolder(run2).probe_model)
    return r1, r2


def test_precision_per_class_round_by_round_by_hand(rounds, tmp_path):
    r1, r2 = rounds
    got = review_book.read_rounds([r1, r2 / "reviewed.parquet"])  # a folder or the table itself
    t = review_book.precision_table(got).set_index("Class")
    assert t.loc["Dogs", "round 1: judged"] == "3" and t.loc["Dogs", "round 1: precision"] == "33 % (1)"
    assert t.loc["Dogs", "round 2: judged"] == "4" and t.loc["Dogs", "round 2: precision"] == "75 % (3)"
    assert t.loc["Dogs", "Change"] == f"{100 * (3 / 4 - 1 / 3):+.0f} points"
    assert t.loc["Sirens and alarms", "round 2: precision"] == "0 % (0)"  # the pending 0.3 one is not judged
    assert t.loc["Sirens and alarms", "Change"] == "-50 points"
    page = review_book.review_page(got)
    assert "retrained with 7 windows of reviewed answers (those of round 1)" in page
    assert "5 of 6 event(s) answered" in page and "dogs" not in page.split(":name: review-precision")[1].split(":::")[0]


def test_review_page_is_listed_in_the_toc_and_bad_rounds_are_refused(rounds, tmp_path, capsys):
    book = tmp_path / "book"
    book.mkdir()
    (book / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/index",
                                                   "chapters": [{"file": "book/results"}]}))
    page = review_book.add_review(book, list(rounds))
    assert yaml.safe_load((book / "_toc.yml").read_text())["chapters"][-1] == {"file": "book/review"}
    assert page.read_text().count("round 2") >= 3 and (book / "book" / review_book.FIGURE).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="no reviewed.parquet there"):
        review_book.read_rounds([tmp_path])
    assert main(["book", "--run", str(tmp_path / "no_run"), "--review", str(tmp_path / "nope")]) == 2
    assert "--review" in capsys.readouterr().err
