"""Notebooks as views: the MyST sources in ``notebooks/``, executed on finished stage outputs.

The study notebooks are jupytext MyST Markdown files (``notebooks/*.md``, what a JupyterLab user
opens and edits). :class:`ViewRunner` converts one with jupytext, injects the parameters as
papermill does (``run_dir``, ``length_s`` and view options only), and executes it in a kernel it
keeps for every view of the sweep (one kernel start instead of one per notebook; the namespace
is reset between notebooks). The kernel talks over IPC sockets, so no "running over TCP without
encryption" warning. Inside a notebook, :func:`open_length` / :func:`open_run` load what the
stages wrote, or stop with a message saying how to make the run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nbformat

from clapnb import io
from clapnb.config import StudyConfig, read_run_config, repo_root
from clapnb.errors import ClapnbError, InputError
from clapnb.store import NOTEBOOKS, LengthFolder, RunFolder

KERNEL = "python3"
SOURCE_SUFFIX = ".md"


def notebooks_dir() -> Path:
    """The folder of the MyST sources (``$CLAPNB_NOTEBOOKS``, else the checkout's ``notebooks/``)."""
    path = Path(os.environ.get("CLAPNB_NOTEBOOKS", repo_root() / "notebooks"))
    missing = [source_name(n) for n in NOTEBOOKS if not (path / source_name(n)).is_file()]
    if missing:
        raise ClapnbError(f"the study notebooks {', '.join(missing)} are not in {path}; run clapnb "
                          "from its source checkout (pip install -e .) or set CLAPNB_NOTEBOOKS to "
                          "the folder that holds them")
    return path


def source_name(notebook: str) -> str:
    """``02_zero_shot.ipynb`` -> ``02_zero_shot.md``."""
    return Path(notebook).with_suffix(SOURCE_SUFFIX).name


def sources_fingerprint(notebooks: Sequence[str]) -> str:
    """sha256 over the MyST sources of ``notebooks``: a view rendered from other sources is stale."""
    digest = hashlib.sha256()
    for nb in notebooks:
        digest.update(source_name(nb).encode() + b"\0" + (notebooks_dir() / source_name(nb)).read_bytes())
    return digest.hexdigest()


def read_source(notebook: str):
    """The notebook (nbformat v4) from its MyST source."""
    import jupytext  # only the scheduler and the book need it

    nb = jupytext.read(notebooks_dir() / source_name(notebook), fmt="md:myst")
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


class ViewRunner:
    """Executes views in one long-lived kernel (started on first use; ``close()`` stops it)."""

    def __init__(self, cwd: str | os.PathLike | None = None) -> None:
        self._km = None
        self._kc = None
        self._tmp = None
        self._cwd = str(cwd or os.getcwd())

    def _start(self) -> None:
        from jupyter_client.manager import KernelManager  # zmq: only when a view runs

        self._tmp = tempfile.TemporaryDirectory(prefix="clapnb-kernel-")
        # Kernels inherit the environment. tqdm.auto warns in every kernel without ipywidgets;
        # no progress bar runs in a view, so the warning is noise.
        os.environ.setdefault("PYTHONWARNINGS", "ignore:IProgress not found")
        self._km = KernelManager(kernel_name=KERNEL, transport="ipc", ip=os.path.join(self._tmp.name, "k"))
        self._km.start_kernel(cwd=self._cwd)
        self._kc = self._km.client()
        self._kc.start_channels()
        self._kc.wait_for_ready(timeout=120)

    def execute(self, notebook: str, out: Path, parameters: dict, cwd: Path) -> None:
        """Execute ``notebook`` (a name in :data:`clapnb.store.NOTEBOOKS`) into ``out``.

        On failure the partly executed notebook (with the error) is written and the error raised.
        """
        from nbclient import NotebookClient  # the executing machinery: only when a view runs
        from papermill.parameterize import parameterize_notebook

        if self._km is None or not self._km.is_alive():
            self.close()
            self._start()
        nb = read_source(notebook)
        nb.metadata["papermill"] = {}
        nb = parameterize_notebook(nb, parameters, kernel_name=KERNEL, language="python")
        self._kc.execute_interactive(
            "get_ipython().run_line_magic('reset', '-f')\nimport os as _os\n"
            f"_os.chdir({str(cwd)!r})\ndel _os", timeout=60)
        client = NotebookClient(nb, km=self._km, timeout=1800, kernel_name=KERNEL)
        client.kc = self._kc
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.execute()
        finally:
            io.atomic_write_text(out, nbformat.writes(nb))

    def close(self) -> None:
        if self._kc is not None:
            self._kc.stop_channels()
        if self._km is not None and self._km.has_kernel:
            self._km.shutdown_kernel(now=False)
        if self._tmp is not None:
            self._tmp.cleanup()
        self._km = self._kc = self._tmp = None

    def __enter__(self) -> "ViewRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prepare_notebook(nb, title: str, banner: str):
    """Retitle a run's notebook for the book, put the banner under the title, hide the defaults.

    The default ``parameters`` cell is removed (papermill's injected cell shows what really ran,
    collapsed); the ``title`` cell moves to the top so the page title comes first.
    """
    cells = []
    for cell in nb.cells:
        tags = list(cell.get("metadata", {}).get("tags", []))
        if "title" in tags:
            continue
        if "parameters" in tags:
            continue
        if "injected-parameters" in tags:
            cell.metadata["tags"] = tags + ["hide-cell"]
        cells.append(cell)
    head = [nbformat.v4.new_markdown_cell(f"# {title}")]
    if banner:
        head.append(nbformat.v4.new_markdown_cell(banner))
    nb.cells = head + cells
    return nb



# --- inside a notebook ---------------------------------------------------------------------------

class NoRun(InputError):
    """No finished run where the notebook looks: shown as one message, not a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of the traceback
        return [f"No run to show: {self}"]


HOW_TO = ("make one with `clapnb sweep --data DATA --out RUN` (e.g. `--data auto --counts 8,2,2,2 --lengths 4 "
          "--backbone mfcc` for a one-minute demo), then set `run_dir` in the parameters cell to RUN")


def open_run(run_dir: str | os.PathLike) -> tuple[RunFolder, StudyConfig]:
    """The run folder and its recorded configuration (read only: a view never changes it)."""
    run = RunFolder(Path(run_dir).expanduser().resolve())
    config = read_run_config(run)
    if config is None or not run.recordings.is_file():
        raise NoRun(f"{run.root} holds no study run; {HOW_TO}")
    return run, config


def open_length(run_dir: str | os.PathLike, length_s: int) -> tuple[RunFolder, StudyConfig, LengthFolder]:
    """As :func:`open_run`, plus the length's folder, which must hold every stage's output."""
    run, config = open_run(run_dir)
    lf = run.length(int(length_s))
    missing = [p.name for p in (lf.segments, lf.embeddings, lf.zeroshot, lf.probe, lf.shortcuts) if not p.is_file()]
    if missing:
        built = [f.length_s for f in run.length_folders() if f.probe.is_file()]
        raise NoRun(f"{lf.root} lacks {', '.join(missing)}; "
                    + (f"this run has lengths {', '.join(map(str, built))}: set length_s to one of them, or "
                       f"add {length_s} with `clapnb sweep ... --lengths {length_s} --out {run.root}`"
                       if built else HOW_TO))
    return run, config, lf
