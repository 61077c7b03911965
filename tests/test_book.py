"""The book's configuration and the pieces ``clapnb book`` assembles, without running a sweep."""

from __future__ import annotations

from pathlib import Path

from jupyter_book.config import get_final_config

REPO = Path(__file__).resolve().parents[1]


def test_sphinx_numbering_stays_off_so_captions_keep_the_papers_table_numbers():
    # sphinx-jupyterbook-latex forces numfig=True on every builder ("Table 1 Table 2: ..."):
    # the book must not load it, and numfig must reach Sphinx as False.
    config, _ = get_final_config(user_yaml=REPO / "_config.yml", cli_config={"latex_individualpages": False},
                                 sourcedir=str(REPO))
    assert config["numfig"] is False
    assert "sphinx_jupyterbook_latex" not in config["extensions"]


def test_a_run_without_zero_shot_drops_its_pages_from_the_toc():
    import yaml

    from clapnb import book

    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    cut = book.without_sections(toc, book.ZERO_SHOT_GLOB)
    chapters = {c["file"]: c for c in cut["chapters"]}
    assert "sections" not in chapters["book/zero_shot"]
    assert chapters["book/linear_probe"]["sections"] == [{"glob": "run/L*/03_linear_probe"}]
    assert any(s.get("glob") == book.ZERO_SHOT_GLOB for c in toc["chapters"] for s in c.get("sections", []))
