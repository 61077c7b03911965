"""Warm re-run of a 10-length sweep after changing only a probe setting: what is recomputed, and how long.

Cold: a sweep over lengths 1-10 into a fresh run folder, then the book. Warm: the same sweep with
``--probe-patience`` changed (``--rebuild``), then the book again. The warm run must rebuild only
the probe stage and the one that reads it (the shortcut check uses the class probe's predictions),
and re-render the views. Printed: stages rebuilt per kind, and seconds for stages vs notebook
execution vs book, cold and warm, measured in this one run.

    python benchmarks/warm_rerun.py                     # mfcc, 4,2,2,2 segments per class, shared clips
    python benchmarks/warm_rerun.py --backbone msclap-2023 --weights CKPT
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clapnb import book, config, sweep  # noqa: E402


def manifest(out: Path, per_label: int, labels: list[str]) -> Path:
    meta_path = Path(config.default_data()[0])
    if not meta_path.is_file():
        sys.exit(f"needs the shared clips ({meta_path}); set CLAPNB_SHARED")
    meta = pd.read_csv(meta_path)
    df = meta[meta["original_label"].isin(labels)].sort_values("path")
    df = df.groupby("original_label", group_keys=False).head(per_label).copy()
    df["path"] = [str(meta_path.parent / p) for p in df["path"]]
    path = out / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def records(run: Path) -> dict[Path, int]:
    """Every stage record of the run and its modification time (a rebuilt stage rewrites its record)."""
    return {p: p.stat().st_mtime_ns for p in run.glob("**/stages/*.json")}


def timed_sweep(cfg: config.StudyConfig, run: Path, rebuild: bool) -> tuple[dict, collections.Counter]:
    before = records(run)
    start = time.monotonic()
    outcome = sweep.run_sweep(cfg, run, rebuild=rebuild, log=lambda line: None, progress=False)
    total = time.monotonic() - start
    if not outcome.ok:
        sys.exit(outcome.summary())
    built = collections.Counter(p.stem for p, t in records(run).items() if before.get(p) != t)
    t0 = time.monotonic()
    book.build(book.assemble(run))
    return {**outcome.timings, "book": time.monotonic() - t0, "sweep total": total}, built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="mfcc")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--counts", default="4,2,2,2")
    ap.add_argument("--per-label", type=int, default=5)
    ap.add_argument("--labels", default="church_bells,dog,gun_shot")
    ap.add_argument("--lengths", default="1-10")
    ap.add_argument("--keep", default=None, help="run folder to use (default: a temporary one)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = manifest(root, a.per_label, a.labels.split(","))
        cfg = config.StudyConfig(data=str(data), label_column="original_label", backbone=a.backbone,
                                 weights=a.weights, counts=a.counts, lengths=a.lengths)
        run = root / "run"
        cold, cold_built = timed_sweep(cfg, run, rebuild=False)
        warm_cfg = config.StudyConfig(**{**cfg.parameters(), "probe_patience": cfg.probe_patience + 5})
        warm, warm_built = timed_sweep(warm_cfg, run, rebuild=True)
    n = len(cfg.length_list)
    print(f"{n} lengths, backbone {a.backbone}, counts {a.counts}; warm = probe_patience "
          f"{cfg.probe_patience} -> {warm_cfg.probe_patience}")
    print(f"{'':12}{'stages':>10}{'views':>10}{'book':>10}{'total':>10}   stages built")
    for name, t, built in (("cold", cold, cold_built), ("warm", warm, warm_built)):
        total = t["sweep total"] + t["book"]
        print(f"{name:12}{t['stages']:>9.1f}s{t['views']:>9.1f}s{t['book']:>9.1f}s{total:>9.1f}s   "
              + ", ".join(f"{k} x{v}" for k, v in sorted(built.items())))
    expected = {"probe": n, "shortcuts": n}
    print("warm rebuilt only probe (+ shortcuts, which reads it):", dict(warm_built) == expected)


if __name__ == "__main__":
    main()
