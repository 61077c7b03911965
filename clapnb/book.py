"""Assemble and build the Jupyter Book of one run (no notebook is re-executed).

The build folder mirrors the repository's book layout::

    _config.yml, _toc.yml, book/*.md      copied from the repository (the toc globs run/L*/...)
    run/01_dataset.ipynb, run/L04/...     copies of the run's executed notebooks, retitled per length,
                                          with the random-weights banner inserted when it applies
    generated/run.md, taxonomy.md,        fragments the static pages include (zero_shot.md: the one
      zero_shot.md                        note of a backbone without text side, whose per-length
                                          zero-shot pages are left out)
    book/results.md, book/accuracy_vs_length.png   Tables 2 and 3 and the figure, from results.json,
                                          and the source-shortcut tables (the run and its
                                          bandwidth variants, from their shortcuts.json)

and ``jupyter-book build`` turns it into ``_build/html`` with warnings as errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import nbformat
import pandas as pd
import yaml

from clapnb import io, report, shortcuts
from clapnb.config import repo_root
from clapnb.errors import ClapnbError, InputError
from clapnb.store import DATASET_NOTEBOOK, PER_LENGTH_NOTEBOOKS, RunFolder
from clapnb.views import prepare_notebook  # noqa: F401  (also detect_book's)

BOOK_FILES = ("_config.yml", "_toc.yml")
DETECTION_TITLE = "Detection: spurious events in long recordings"
PAGES = "book"
ZERO_SHOT_NOTEBOOK = PER_LENGTH_NOTEBOOKS[0]
ZERO_SHOT_GLOB = "run/L*/02_zero_shot"


def without_sections(toc: dict, glob: str) -> dict:
    """``toc`` without the ``glob`` entry (and an emptied ``sections`` list) under any chapter."""
    chapters = []
    for ch in toc.get("chapters", []):
        ch = dict(ch)
        if "sections" in ch:
            ch["sections"] = [sec for sec in ch["sections"] if sec.get("glob") != glob]
            if not ch["sections"]:
                del ch["sections"]
        chapters.append(ch)
    return {**toc, "chapters": chapters}


def _source_root() -> Path:
    root = repo_root()
    missing = [f for f in (*BOOK_FILES, PAGES) if not (root / f).exists()]
    if missing:
        raise ClapnbError(f"the book sources {', '.join(missing)} are not in {root}; run clapnb from its "
                          "source checkout (pip install -e .)")
    return root


def _copy_notebook(src: Path, dst: Path, title: str, banner: str) -> None:
    nb = nbformat.read(src, as_version=4)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(prepare_notebook(nb, title, banner), dst)


def taxonomy_fragment(recordings: pd.DataFrame | None) -> str:
    """The 21 classes with their prompts and, when known, this run's recordings per class."""
    from clapnb.taxonomy import CLASSES

    counts = recordings["class"].value_counts() if recordings is not None else pd.Series(dtype=int)
    rows = [{"Class (paper)": c.name, "Slug": f"`{c.slug}`", "Prompt": c.prompt,
             "Recordings in this run": str(int(counts.get(c.slug, 0)))} for c in CLASSES]
    return report.to_markdown(pd.DataFrame(rows)) + "\n"


def run_fragment(name: str, config: Mapping, meta: Mapping) -> str:
    """Banner (random weights) and the parameters of the run, included at the top of pages."""
    lines = [report.banner(meta),
             f"*Run `{name}`: {report.describe_model(meta)}; data `{config.get('data')}`; lengths "
             f"{config.get('lengths')} s; segments per class (train, validation, early stop, test) "
             f"{config.get('counts')}; seed {config.get('seed')}; input policy "
             f"`{config.get('policy')}`.*\n"]
    return "\n".join(x for x in lines if x)


def assemble(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
             detect: str | os.PathLike | None = None, reference: str | os.PathLike | None = None,
             compare: list[str | os.PathLike] | None = None,
             review: list[str | os.PathLike] | None = None) -> Path:
    """Lay out the build folder for ``run_dir`` (default ``run_dir/book``) and return it.

    ``compare``: runs of the same data with other backbones; the Results page gets them side by
    side with this one (:func:`clapnb.compare.comparison_section`).

    ``detect``: a ``clapnb detect`` folder; adds the Detection page (:mod:`clapnb.detect_book`),
    evaluated against ``reference`` when given.

    ``review``: review rounds in order (each a ``reviewed.parquet`` or the detect folder holding it);
    adds the Review page, precision per class round by round (:mod:`clapnb.review_book`).
    """
    from clapnb import plots

    rounds = None
    if review:  # read (and refuse) the review rounds before anything is written
        from clapnb.review_book import read_rounds

        rounds = read_rounds(review)
    run_dir = Path(run_dir).resolve()
    run = RunFolder(run_dir)
    results, failed, config = run.read_results()
    if results.empty:
        raise InputError(f"{run.results_json} has no completed length; finish the sweep first "
                         "(rerun 'clapnb sweep' with the same --out)")
    dataset_nb = run.dataset_notebook
    if not dataset_nb.is_file():
        raise InputError(f"{dataset_nb} is missing; rerun 'clapnb sweep' with the same --out to execute it")
    out = Path(out).resolve() if out else run.book_dir
    src = _source_root()
    if out.exists():
        for child in out.iterdir():  # keep _build: Sphinx reuses what did not change
            if child.name != "_build":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)

    meta = report.run_meta(results)
    conf = yaml.safe_load((src / "_config.yml").read_text(encoding="utf-8"))
    if meta["random_weights"]:
        conf.setdefault("html", {})["announcement"] = (
            "RANDOM WEIGHTS: this book was built from the random-weights stand-in; "
            "its numbers are NOT CLAP results")
    io.atomic_write_text(out / "_config.yml", yaml.safe_dump(conf, sort_keys=False, allow_unicode=True))
    applicable = {int(n): bool(a) for n, a in zip(results["length_s"], results["zeroshot_applicable"].fillna(False))}
    toc = yaml.safe_load((src / "_toc.yml").read_text(encoding="utf-8"))
    io.atomic_write_text(out / "_toc.yml", yaml.safe_dump(
        toc if any(applicable.values()) else without_sections(toc, ZERO_SHOT_GLOB), sort_keys=False))
    shutil.copytree(src / PAGES, out / PAGES)

    banner = report.banner(meta)
    _copy_notebook(dataset_nb, out / "run" / DATASET_NOTEBOOK, "The dataset: inventory", banner)
    for n in results["length_s"].astype(int):
        ldir = run.length(n).root
        for nb in PER_LENGTH_NOTEBOOKS:
            if nb == ZERO_SHOT_NOTEBOOK and not applicable[int(n)]:
                continue  # an empty page per length says nothing: the chapter page has the one note
            title = nbformat.read(ldir / nb, as_version=4).metadata.get("clapnb", {}).get("title", nb)
            _copy_notebook(ldir / nb, out / "run" / ldir.name / nb, f"{title}: {n}-s segments", banner)

    recordings_path = run.recordings
    recordings = pd.read_parquet(recordings_path) if recordings_path.is_file() else None
    io.atomic_write_text(out / "generated" / "taxonomy.md", taxonomy_fragment(recordings))
    io.atomic_write_text(out / "generated" / "run.md", run_fragment(run_dir.name, config, meta))
    io.atomic_write_text(out / "generated" / "zero_shot.md",
                         report.zeroshot_note(meta) or "```{tableofcontents}\n```\n")

    repeat_rows = repeats_page_rows(run)
    fig = plots.accuracy_vs_length(results, report.PAPER_TABLE2, report.PAPER_TABLE3,
                                   title=report.describe_model(meta), repeats=repeat_rows)
    fig.savefig(out / PAGES / "accuracy_vs_length.png", dpi=120)
    page = report.results_page(results, figure="accuracy_vs_length.png", failed=failed)
    page += "\n" + shortcuts.results_section([run_dir, *(v.root for v in run.variants())], meta)
    if run.repeats_json.is_file():
        from clapnb import repeats

        page += "\n" + repeats.results_section(io.read_json(run.repeats_json), segments_per_class=config_counts(run))
    if compare:
        from clapnb.compare import comparison_section

        page += "\n" + comparison_section([run_dir, *compare])
    io.atomic_write_text(out / PAGES / "results.md", page)
    if detect is not None:
        from clapnb.detect_book import add_detection

        add_detection(out, detect, reference, notebooks_dir=src / "notebooks",
                      prepare=lambda nb: prepare_notebook(nb, DETECTION_TITLE, banner))
    if rounds:
        from clapnb.review_book import add_review

        add_review(out, rounds, banner)
    return out


def repeats_page_rows(run: RunFolder) -> pd.DataFrame | None:
    """Every repeat's results rows (``repeats.json``), or None for a single-split run."""
    if not run.repeats_json.is_file():
        return None
    return pd.DataFrame(io.read_json(run.repeats_json)["rows"])


def config_counts(run: RunFolder) -> int | None:
    """Validation segments per class of the run (for what one split can resolve)."""
    cfg = run.config_dict()
    try:
        return int(str(cfg.get("counts", "")).split(",")[1])
    except (IndexError, ValueError):
        return None


def build(folder: str | os.PathLike) -> Path:
    """``jupyter-book build`` with warnings as errors; returns the path of ``index.html``."""
    folder = Path(folder)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(folder), "--all", "-W", "-n",
           "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise ClapnbError(f"jupyter-book build of {folder} failed (warnings count as errors):\n{tail}")
    index = folder / "_build" / "html" / "index.html"
    if not index.is_file():
        raise ClapnbError(f"jupyter-book finished but {index} is missing")
    prune(index.parent)
    return index


def prune(html: Path) -> int:
    """Delete the theme's source maps (``_static/**/*.map``, ~3.4 MB; browsers fetch them only
    for their developer tools); return the bytes freed."""
    freed = 0
    for f in (html / "_static").rglob("*.map"):
        freed += f.stat().st_size
        f.unlink()
    return freed


def size_bytes(html: str | os.PathLike) -> int:
    """Bytes of a built book's HTML folder: what a reader downloads or a user archives."""
    return sum(f.stat().st_size for f in Path(html).rglob("*") if f.is_file())
