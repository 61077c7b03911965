"""The Detection page of the book: notebook 05 executed on a ``clapnb detect`` folder.

``clapnb book --run RUN --detect DIR [--reference REF]`` calls :func:`add_detection` after the
study's pages are laid out: ``notebooks/05_detection.md`` (MyST) is converted with jupytext,
executed with papermill (parameters ``detect_dir``, ``reference``) into ``OUT/run/05_detection.ipynb``,
and a ``Detection`` chapter is appended to the copied ``_toc.yml``. Without ``--detect`` nothing of
this happens (the page is not listed, so no orphan-page warning).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import yaml

from clapnb import io
from clapnb.errors import ClapnbError, InputError

NOTEBOOK = "05_detection"
#: The MyST sources of the source checkout (``clapnb book`` passes the book's own source root).
NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def execute(detect_dir: str | os.PathLike, out_path: str | os.PathLike, *, reference: str | os.PathLike | None = None,
            notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR, **parameters) -> Path:
    """Execute notebook 05 on ``detect_dir`` into ``out_path`` (an .ipynb); returns it."""
    import jupytext
    import nbformat
    import papermill

    det = Path(detect_dir).resolve()
    if not (det / "detect.json").is_file():
        raise InputError(f"--detect {detect_dir}: no detect.json there; "
                         f"run `clapnb detect --out {detect_dir} ...` first")
    if reference is not None and not Path(reference).is_file():
        raise InputError(f"--reference {reference} does not exist")
    src = Path(notebooks_dir) / f"{NOTEBOOK}.md"
    nb = jupytext.read(src, fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.src.ipynb")
    nbformat.write(nb, tmp)
    params = {"detect_dir": str(det), "reference": None if reference is None else str(Path(reference).resolve()),
              **parameters}
    try:
        papermill.execute_notebook(str(tmp), str(out_path), parameters=params, kernel_name="python3",
                                   progress_bar=False, cwd=str(det))
    except papermill.PapermillExecutionError as exc:
        raise ClapnbError(f"notebook {src.name} failed on {det}: {exc.ename}: {exc.evalue}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def add_detection(book_dir: str | os.PathLike, detect_dir: str | os.PathLike,
                  reference: str | os.PathLike | None = None, *, prepare: Callable | None = None,
                  notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR, parameters: dict | None = None) -> Path:
    """Execute notebook 05 into ``book_dir/run/`` and list it in ``book_dir/_toc.yml``.

    ``prepare``: applied to the executed notebook before it is saved (the book retitles it and adds
    its banner: ``book.prepare_notebook``; passed in so that this module does not import the book).
    ``parameters``: other values of the notebook's parameters cell (``max_files``, ``n_top``, ...).
    """
    import nbformat

    book_dir = Path(book_dir)
    target = book_dir / "run" / f"{NOTEBOOK}.ipynb"
    execute(detect_dir, target, reference=reference, notebooks_dir=notebooks_dir, **(parameters or {}))
    if prepare is not None:
        nb = nbformat.read(target, as_version=4)
        nbformat.write(prepare(nb), target)
    toc_path = book_dir / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    entry = {"file": f"run/{NOTEBOOK}"}
    if entry not in toc.setdefault("chapters", []):
        toc["chapters"].append(entry)
    io.atomic_write_text(toc_path, yaml.safe_dump(toc, sort_keys=False))
    return target
