"""What a new user reading a built book must not meet (shared by the end-to-end book tests).

Each check parses the built HTML with BeautifulSoup: Sphinx's own numbers glued to ours
("Table 1 Table 2: ..."), Python warnings rendered as output, class slugs where readers expect the
paper's names, Styler tables without cell padding, players that bloat the pages, and empty
zero-shot pages for a backbone without a text side.
"""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup

from clapnb import book
from clapnb.taxonomy import SLUGS

#: Slugs that cannot be mistaken for an English word in a table (``train`` is also a split name).
RAW_SLUGS = {s for s in SLUGS if "_" in s}


def _soup(path: Path) -> BeautifulSoup:
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    return soup


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


def check_readable_book(site: Path, *, max_mb: float, zero_shot: bool, names: list[str]) -> None:
    """Assert the reader-facing fixes on the book in ``site`` (``_build/html``).

    ``names``: display names of the run's classes, each expected in some table; ``max_mb``: the
    size the whole HTML folder must stay under; ``zero_shot``: whether the backbone has a text side.
    """
    assert not (site / "_sources").exists(), "no _sources/ copy of every notebook"
    size = book.size_bytes(site)
    assert size < max_mb * 1e6, f"the book is {size / 1e6:.1f} MB (limit {max_mb} MB)"
    cells_seen: set[str] = set()
    for page in pages(site):
        soup = _soup(page)
        styles = " ".join(s.get_text() for s in soup.select("style"))
        for tag in soup(["script", "style"]):
            tag.decompose()
        text = soup.get_text(" ", strip=True)
        where = page.relative_to(site)
        assert not re.search(r"\bTable \d+\s+Table \d+", text), f"double table numbers on {where}"
        assert "UserWarning" not in text and "DeprecationWarning" not in text, f"a Python warning on {where}"
        for table in soup.select("table"):
            cells = [c.get_text(" ", strip=True) for c in table.select("td, th")]
            cells_seen.update(cells)
            # the taxonomy table documents the slugs as `code` (what a mapping file uses): allowed
            prose = {c.get_text(" ", strip=True) for c in table.select("td, th") if not c.find("code")}
            raw = sorted(RAW_SLUGS & prose)
            assert not raw, f"raw class slugs {raw} in a table on {where}"
            if table.get("id", "").startswith("T_"):  # a pandas Styler table from a notebook
                assert "dataframe" in table.get("class", []), f"unstyled table {table['id']} on {where}"
                assert re.search(rf"#{table['id']}\s+td\s*{{[^}}]*padding", styles), \
                    f"table {table['id']} on {where} has no cell padding"
        for source in soup.select("audio source"):
            assert source["src"].startswith("data:audio/mpeg;base64,"), f"uncompressed player on {where}"
    missing = [n for n in names if n not in cells_seen]
    assert not missing, f"display names {missing} appear in no table"
    zero_shot_pages = list(site.glob("run/L*/02_zero_shot.html"))
    chapter = _soup(site / "book" / "zero_shot.html").get_text(" ", strip=True)
    if zero_shot:
        assert zero_shot_pages, "zero-shot pages per length"
    else:
        assert not zero_shot_pages, "no empty zero-shot page per length for a backbone without text"
        assert chapter.count("Zero-shot: not applicable") == 1 and "no text encoder" in chapter
