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
