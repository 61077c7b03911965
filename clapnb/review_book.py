"""The Review page of the book: how far each class's scores could be trusted, review round by round.

``clapnb book --run RUN --review R1 [--review R2 ...]`` calls :func:`add_review` after the study's
pages are laid out. Each ``R`` is one review round: a ``reviewed.parquet`` (or the detect folder
holding it), in the order the rounds happened, typically the detection of the original probe and,
after ``clapnb probe --extra-labels R1``, the retrained probe's detection of other recordings. The
page (``book/review.md`` + ``book/review_precision.png``, listed last in ``_toc.yml``) has the
per-class precision of the judged detections per round, its change from the first round to the
last, and the score -> precision curves (:func:`clapnb.review.precision_curve`). Nothing is
re-executed and nothing is written without ``--review``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from clapnb import io, report, review
from clapnb.errors import InputError

PAGE = "book/review"
FIGURE = "review_precision.png"
TITLE = "Review: how far the detector's scores can be trusted"


@dataclass
class Round:
    """One review round: the answers and where they came from."""

    label: str
    path: Path
    table: pd.DataFrame
    detect: dict  # detect.json of the reviewed detection ({} when it is not beside the answers)
    probe_extra: dict | None  # the probe's extra_labels record: it was retrained with answers


def read_round(source: str | os.PathLike, label: str) -> Round:
    """A round from a ``reviewed.parquet`` or a detect folder holding one (one clear line otherwise)."""
    from clapnb.store import LengthFolder

    p = Path(source)
    path = p / review.REVIEWED_NAME if p.is_dir() else p
    if not path.is_file():
        raise InputError(f"--review {source}: no {review.REVIEWED_NAME} there; review the detection first "
                         "(notebooks/06_review.md or `clapnb review --detect DIR`)")
    table = review.read_reviewed(path)
    rec_path = path.parent / "detect.json"
    detect = io.read_json(rec_path) if rec_path.is_file() else {}
    extra = None
    probe_pt = detect.get("probe", {}).get("path")
    if probe_pt and LengthFolder(Path(probe_pt).parent).probe.is_file():
        extra = io.read_json(LengthFolder(Path(probe_pt).parent).probe).get("extra_labels")
    return Round(label, path.resolve(), table, detect, extra)


def precision_table(rounds: Sequence[Round]) -> pd.DataFrame:
    """Per detected class (display names) and round: judged detections and precision; the change in
    points from the first round to the last where both judged the class."""
    per = [review.precision_by_class(r.table).set_index("class") for r in rounds]
    classes = sorted(set().union(*(p.index for p in per)))
    rows = []
    for c in classes:
        row = {"Class": _name(c)}
        for r, p in zip(rounds, per):
            if c in p.index:
                row[f"{r.label}: judged"] = str(int(p.loc[c, "judged"]))
                row[f"{r.label}: precision"] = f"{100 * p.loc[c, 'precision']:.0f} % ({int(p.loc[c, 'confirmed'])})"
            else:
                row[f"{r.label}: judged"], row[f"{r.label}: precision"] = "0", "-"
        if len(rounds) > 1:
            a, b = per[0], per[-1]
            row["Change"] = (f"{100 * (b.loc[c, 'precision'] - a.loc[c, 'precision']):+.0f} points"
                             if c in a.index and c in b.index else "-")
        rows.append(row)
    return pd.DataFrame(rows)


def _name(slug: str) -> str:
    from clapnb.taxonomy import class_name

    return class_name(slug)


def curves_figure(rounds: Sequence[Round]):
    """Score -> precision steps, one panel per detected class, one line per round."""
    from matplotlib.figure import Figure

    curves = [review.precision_curve(r.table) for r in rounds]
    judged = [review.judged(r.table)["class"].value_counts() for r in rounds]
    classes = sorted(set().union(*(set(c["class"]) for c in curves)))
    low = min([float(c["min_score"].min()) for c in curves if len(c)] or [0.0])
    n = max(1, len(classes))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), dpi=100)
    for k, cls in enumerate(classes):
        ax = fig.add_subplot(rows, cols, k + 1)
        for j, (r, c) in enumerate(zip(rounds, curves)):
            g = c[c["class"] == cls]
            if len(g):  # one colour per round in every panel
                ax.step(g["min_score"], g["precision"], where="post", marker=".", color=f"C{j}",
                        label=f"{r.label} (n={int(judged[j].get(cls, 0))})")
        ax.set_title(_name(cls), fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(1.0, max(0.0, low - 0.05))  # highest scores on the left, the same axis in every panel
        ax.set_xlabel("minimum detector score", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _describe(r: Round, previous: Round | None) -> str:
    t = r.table
    done = t[t["status"] != "pending"]
    counts = ", ".join(f"{n} {s}" for s, n in done["status"].value_counts().sort_index().items()) or "none"
    who = ", ".join(sorted(set(done["reviewer"].astype(str)) - {""})) or "nobody"
    line = (f"- **{r.label}**: `{r.path}`: {len(done)} of {len(t)} event(s) answered ({counts}) by {who}")
    probe = r.detect.get("probe", {}).get("path")
    if probe:
        line += f"; detections by the probe `{probe}`"
        if r.probe_extra:
            src = r.probe_extra.get("path")
            same = previous is not None and src is not None and Path(src).resolve() == previous.path
            line += (f", retrained with {r.probe_extra.get('n_windows')} windows of reviewed answers"
                     + (f" (those of {previous.label})" if same else f" from `{src}`"))
    if r.detect.get("random_weights"):
        line += " **(RANDOM WEIGHTS: NOT CLAP results)**"
    return line + "."


def review_page(rounds: Sequence[Round], figure: str | None = FIGURE, banner: str = "") -> str:
    """The MyST Markdown of the Review page."""
    if not rounds:
        raise InputError("--review: give at least one reviewed.parquet (or detect folder holding one)")
    parts = [f"# {TITLE}\n", banner,
             "An operator listened to the detected events and accepted, rejected or relabelled them "
             "(`notebooks/06_review.md`). A detection counts as **confirmed** when it was accepted, "
             "adjusted, or relabelled to its own class; **precision** = confirmed / judged (pending "
             "events and events the operator added are not judged). Each round below is one review:\n",
             "\n".join(_describe(r, rounds[k - 1] if k else None) for k, r in enumerate(rounds)) + "\n"]
    if any(r.detect.get("random_weights") for r in rounds):
        parts.append(":::{danger} RANDOM WEIGHTS\nAt least one round's detections come from the random-weights "
                     "stand-in: its precision is a plumbing check, NOT a CLAP result.\n:::\n")
    table = precision_table(rounds)
    caption = ("Precision of the judged detections per class, round by round (confirmed count in brackets)"
               + ("; change from the first round to the last" if len(rounds) > 1 else ""))
    parts.append(f":::{{table}} {caption}\n:name: review-precision\n\n" + report.to_markdown(table) + "\n:::\n")
    if figure:
        parts.append(f":::{{figure}} {figure}\n:name: review-precision-curves\n\nPrecision of the judged "
                     "detections scoring at least a given score (the highest scores on the left). "
                     "Where a round's line stays high down to a score, detections above that score could be "
                     "accepted without listening.\n:::\n")
    return "\n".join(p for p in parts if p)


def read_rounds(sources: Sequence[str | os.PathLike]) -> list[Round]:
    """The rounds of ``sources`` in order, labelled ``round 1``, ``round 2``, ..."""
    return [read_round(s, f"round {k + 1}") for k, s in enumerate(sources)]


def add_review(book_dir: str | os.PathLike, sources: Sequence[str | os.PathLike | Round], banner: str = "") -> Path:
    """Write ``book_dir/book/review.md`` and its figure from the rounds in ``sources`` (paths, or rounds
    already read); list it in the toc."""
    book_dir = Path(book_dir)
    rounds = [s if isinstance(s, Round) else read_round(s, f"round {k + 1}") for k, s in enumerate(sources)]
    pages = book_dir / "book"
    pages.mkdir(parents=True, exist_ok=True)
    curves_figure(rounds).savefig(pages / FIGURE)
    target = pages / "review.md"
    io.atomic_write_text(target, review_page(rounds, FIGURE, banner))
    toc_path = book_dir / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    entry = {"file": PAGE}
    if entry not in toc.setdefault("chapters", []):
        toc["chapters"].append(entry)
    io.atomic_write_text(toc_path, yaml.safe_dump(toc, sort_keys=False))
    return target
