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
from clapnb.report import _ci, _pct, to_markdown
from clapnb.store import LengthFolder, RunFolder


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


def _who(backbone: dict, random_weights: bool) -> str:
    name = str(backbone.get("name"))
    spec = REGISTRY.get(name)
    text = backbone.get("display_name") or (spec.display_name if spec else name)
    notice = backbone.get("notice") or (spec.notice if spec else "")
    if random_weights:
        text += ", RANDOM WEIGHTS (not CLAP results)"
    return f"{name}: {text}" + (f" ({notice})" if notice else "")


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
            who = _who(backbone, bool(probe.get("random_weights")))
            entries = []
            if zs.get("applicable"):
                entries.append((zs.get("label") or "zero-shot", len(zs.get("classes") or []), zs["metrics"]))
            entries.append(("probe", len(probe.get("classes") or []), probe["metrics"]))
            for method, n_classes, metrics in entries:
                row = {"length_s": length, "backbone": backbone.get("name"), "model": who, "method": method,
                       "classes": n_classes, "run": str(run)}
                for split in ("validation", "test"):
                    acc, lo, hi, n = _acc(metrics.get(split))
                    row.update({f"{split}_accuracy": acc, f"{split}_ci_low": lo, f"{split}_ci_high": hi,
                                f"{split}_n": n})
                rows.append(row)
    return pd.DataFrame(rows).sort_values(["length_s", "backbone", "method"], kind="stable").reset_index(drop=True)


def comparison_section(run_dirs: Sequence[str | os.PathLike]) -> str:
    """MyST for the Results page: one table per length, then who each backbone is."""
    table = comparison(run_dirs)
    parts = ["## Backbones side by side\n",
             "The same data through each backbone's run: the linear probe on its frozen embeddings, and "
             "the backbone used as it comes (CLAP zero-shot; for a model with its own labels but no text "
             "encoder, those labels *as-is*, evaluated only on the classes they cover, so that row is not "
             "a like-for-like comparison). Accuracy with a 95 % bootstrap interval over recordings.\n"]
    for length, t in table.groupby("length_s", sort=True):
        shown = pd.DataFrame({
            "backbone": t["backbone"], "method": t["method"], "classes": t["classes"].astype(str),
            "validation": [f"{_pct(a)} {_ci(lo, hi)}" for a, lo, hi in
                           zip(t["validation_accuracy"], t["validation_ci_low"], t["validation_ci_high"])],
            "test": [f"{_pct(a)} {_ci(lo, hi)}" for a, lo, hi in
                     zip(t["test_accuracy"], t["test_ci_low"], t["test_ci_high"])],
        })
        parts.append(f":::{{table}} Backbones side by side, {length} s segments\n:name: table-backbones-L{length:02d}\n\n"
                     + to_markdown(shown) + "\n:::\n")
    parts.append("Backbones: " + "; ".join(sorted(set(table["model"]))) + ".\n")
    return "\n".join(parts)
