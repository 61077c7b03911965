"""Several backbones of one data set side by side: "pretrained + probe vs as-is / zero-shot vs hand
features" as one table per segment length, with 95 % CIs, for the book's Results page.

Input: run folders (one sweep per backbone) of the *same data* (their data fingerprints must agree;
otherwise the comparison is refused naming them). Each row says what it is: the method (``probe``,
``zero-shot`` or the as-is label, e.g. "as-is, 10 of 20 classes": an as-is number covers fewer
classes and is never a like-for-like comparison with the others), the number of classes it was
evaluated on, the backbone in words with its notice (BirdNET's licence, random weights).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clapnb import io
from clapnb.backbones import REGISTRY
from clapnb.errors import InputError
from clapnb.report import PAPER_TABLE2, PAPER_TABLE3, _ci, _pct, to_markdown
from clapnb.store import LengthFolder, RunFolder
from clapnb.taxonomy import BACKGROUND


def _length_folder(run: Path, length_s: int) -> Path:
    return RunFolder(run).length(int(length_s)).root


def _results(run: Path) -> pd.DataFrame:
    path = RunFolder(run).results_json
    if not path.is_file():
        raise InputError(f"{run}: no {path.name} (run `clapnb sweep` into it first)")
    return pd.DataFrame(io.read_json(path).get("rows") or [])


def _acc(m: dict | None) -> tuple[float | None, float | None, float | None, int | None]:
    if not m:
        return None, None, None, None
    ci = m.get("accuracy_ci") or {}
    return m.get("accuracy"), ci.get("low"), ci.get("high"), m.get("n")


def _who(backbone: dict, random_weights: bool, row_notice: str | None = None) -> str:
    """The backbone in words with what its numbers must carry: the results row's ``backbone_notice``
    where recorded, else the registry's notice and the random-weights label."""
    name = str(backbone.get("name"))
    spec = REGISTRY.get(name)
    text = backbone.get("display_name") or (spec.display_name if spec else name)
    if row_notice:
        return f"{name}: " + (row_notice if row_notice.startswith(text) else f"{text} ({row_notice})")
    notice = backbone.get("notice") or (spec.notice if spec else "")
    if random_weights:
        text += ", RANDOM WEIGHTS (not CLAP results)"
    return f"{name}: {text}" + (f" ({notice})" if notice else "")


def _row_value(table: pd.DataFrame, length: int, column: str):
    """``column`` of the results row of ``length`` (None where the row or column is missing or NaN)."""
    if column not in table or "length_s" not in table:
        return None
    hit = table.loc[table["length_s"].astype(int) == int(length), column]
    value = hit.iloc[0] if len(hit) else None
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def comparison(run_dirs: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per (length, run, method): ``length_s, backbone, model, method, classes,
    validation_{accuracy,ci_low,ci_high,n}, test_{...}``; runs must share their data fingerprint."""
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise InputError("a comparison needs two or more run folders (one per backbone)")
    tables = {r: _results(r) for r in runs}
    prints = {r: sorted(set(t["data_fingerprint"].dropna())) if "data_fingerprint" in t else [] for r, t in tables.items()}
    distinct = {fp for fps in prints.values() for fp in fps}
    if len(distinct) > 1:
        raise InputError("these runs were made from different data, so their numbers cannot share a table: "
                         + "; ".join(f"{r}: {', '.join(fps) or '?'}" for r, fps in prints.items()))
    rows = []
    for run, table in tables.items():
        for length in sorted(int(v) for v in table.get("length_s", [])):
            folder = LengthFolder(_length_folder(run, length))
            probe = io.read_json(folder.probe)
            zs_path = folder.zeroshot
            zs = io.read_json(zs_path) if zs_path.is_file() else {}
            backbone = dict(probe.get("backbone") or {})
            who = _who(backbone, bool(probe.get("random_weights")), _row_value(table, length, "backbone_notice"))
            entries = []
            if zs.get("applicable"):  # the zero-shot/as-is label as the results row (or the record) gives it
                label = _row_value(table, length, "zeroshot_label") or zs.get("label") or "zero-shot"
                kind = _row_value(table, length, "zeroshot_method") or zs.get("method") or "zero-shot"
                entries.append((label, kind, len(zs.get("classes") or []), zs["metrics"]))
            # the probe's numbers are over event segments: a background class is not counted
            n_events = len([c for c in probe.get("classes") or [] if c != BACKGROUND])
            entries.append(("probe", "probe", n_events, probe["metrics"]))
            background = bool(probe.get("background"))
            for method, kind, n_classes, metrics in entries:
                row = {"length_s": length, "backbone": backbone.get("name"), "model": who, "method": method,
                       "kind": kind, "classes": n_classes, "background": background, "run": str(run)}
                for split in ("validation", "test"):
                    acc, lo, hi, n = _acc(metrics.get(split))
                    row.update({f"{split}_accuracy": acc, f"{split}_ci_low": lo, f"{split}_ci_high": hi,
                                f"{split}_n": n})
                rows.append(row)
    return pd.DataFrame(rows).sort_values(["length_s", "backbone", "method"], kind="stable").reset_index(drop=True)


def paper_rows(length_s: int) -> pd.DataFrame:
    """The paper's MS-CLAP 2023 values at one length (Table 2 zero-shot, Table 3 probe at 4 s only), as
    rows of the side-by-side table: validation set, 21 classes, their private data (no CI, no test)."""
    rows = []
    for method, paper in (("zero-shot (paper)", PAPER_TABLE2), ("probe (paper)", PAPER_TABLE3)):
        hit = paper.loc[paper["length_s"] == length_s, "accuracy"]
        if len(hit):
            rows.append({"backbone": "MS-CLAP 2023 (paper, its own data)", "method": method, "classes": "21",
                         "validation": _pct(float(hit.iloc[0])), "test": "n/a"})
    return pd.DataFrame(rows, columns=["backbone", "method", "classes", "validation", "test"])


def comparison_section(run_dirs: Sequence[str | os.PathLike]) -> str:
    """MyST for the Results page: one table per length, then who each backbone is."""
    table = comparison(run_dirs)
    parts = ["## Backbones side by side\n",
             "The same data through each backbone's run: the linear probe on its frozen embeddings, and "
             "the backbone used as it comes (CLAP zero-shot; for a model with its own labels but no text "
             "encoder, those labels *as-is*, evaluated only on the classes they cover, so that row is not "
             "a like-for-like comparison). Accuracy with a 95 % bootstrap interval over recordings; the "
             "paper's MS-CLAP 2023 values (validation set, measured on the authors' own data) where it has one "
             "for that length.\n"]
    for length, t in table.groupby("length_s", sort=True):
        shown = pd.DataFrame({
            "backbone": t["backbone"], "method": t["method"], "classes": t["classes"].astype(str),
            "validation": [f"{_pct(a)} {_ci(lo, hi)}" for a, lo, hi in
                           zip(t["validation_accuracy"], t["validation_ci_low"], t["validation_ci_high"])],
            "test": [f"{_pct(a)} {_ci(lo, hi)}" for a, lo, hi in
                     zip(t["test_accuracy"], t["test_ci_low"], t["test_ci_high"])],
        })
        shown = pd.concat([shown, paper_rows(int(length))], ignore_index=True)
        parts.append(f":::{{table}} Backbones side by side, {length} s segments\n:name: table-backbones-L{length:02d}\n\n"
                     + to_markdown(shown) + "\n:::\n")
    parts.append("Backbones: " + "; ".join(sorted(set(table["model"]))) + ".\n")
    if table["background"].any():
        parts.append("Runs with a background class (`--background`): every accuracy here is over event segments "
                     "only (background segments left out; zero-shot and as-is have no prompt or label for them); "
                     "the background class itself is reported apart, in each run's table *Background class*.\n")
    return "\n".join(parts)
