"""The sweep's embedding stage on Dask: 1 vs N workers vs in-process, and the cost estimate's error.

    python benchmarks/sweep_scaling.py [--backbone mfcc] [--counts 10,3,3,3] [--lengths 1,4]
                                       [--workers 1,2] [--unit-segments 64] [--out results.json]

On the shared real clips (../shared/data/envsounds, every class), one study configuration is swept
``views=False`` (no notebooks) into a fresh run folder and an empty embedding cache, once in-process
(the embeddings stage inside each length, as without ``--scheduler``) and once per ``--workers`` N on a
Dask ``LocalCluster`` of N one-thread processes (started, and each worker's import, backbone load and
first call done, before the timing: reported apart). Reported per run: the estimate printed
before the work (``clapnb.embed_units``), the measured embedding time (in-process: the embeddings stage
records; Dask: the units), the estimate's error, segments/s, and the ratio of N to 1 worker. A
random-weights stand-in (``--backbone msclap-2023 --weights STANDIN``) times like CLAP; its numbers are
plumbing. All numbers come from one run on this machine; compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def warm_worker(params: dict) -> None:
    """On each worker before the timing: import, load the backbone, one call (a real run pays this once)."""
    import numpy as np

    from clapnb import config, stages

    backbone = stages.cached_backbone(config.from_mapping(params))
    backbone.embed_audio([np.zeros(backbone.sample_rate, dtype=np.float32)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="mfcc")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--counts", default="10,3,3,3")
    ap.add_argument("--lengths", default="1,4")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--unit-segments", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from clapnb import config, io, store, sweep
    from clapnb.dask_executor import make_executor

    cfg = config.StudyConfig(data="auto", counts=args.counts, backbone=args.backbone, weights=args.weights,
                             lengths=args.lengths, probe_max_epochs=5, unit_segments=args.unit_segments)
    quiet = lambda s: None  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory(prefix="clapnb-sweep-scaling-") as tmp:
        tmp = Path(tmp)

        def one(name: str, c, executor) -> dict:
            os.environ["CLAPNB_CACHE"] = str(tmp / f"cache-{name}")
            t0 = time.monotonic()
            out = sweep.run_sweep(c, tmp / name, log=quiet, views=False, embed_executor=executor, estimate=True)
            wall = time.monotonic() - t0
            assert out.ok, out.summary()
            run = store.RunFolder(tmp / name)
            if out.embedding_units:
                measured = out.embedding_units["seconds"]
            else:
                measured = sum(io.read_json(run.length(n).stage_record("embeddings"))["seconds"] for n in c.length_list)
            est = out.estimate
            row = {"run": name, "workers": est["workers"], "segments": est["segments_todo"],
                   "estimate_s": round(est["wall_s"], 1), "startup_s": round(est["startup_s"], 1),
                   "s_per_segment_measured_on_client": est["s_per_segment"], "embedding_s": round(measured, 1),
                   "estimate_error": round(est["wall_s"] / measured - 1, 3), "segments_per_s": round(est["segments_todo"] / measured, 2),
                   "sweep_wall_s": round(wall, 1)}
            print(json.dumps(row), flush=True)
            return row

        rows.append(one("inprocess", cfg, None))
        for n in [int(w) for w in args.workers.split(",")]:
            t0 = time.monotonic()
            with make_executor("local", n) as ex:
                started = time.monotonic() - t0
                t1 = time.monotonic()
                ex.client.run(warm_worker, cfg.parameters())  # import, backbone load, first call: apart
                warm = time.monotonic() - t1
                row = one(f"dask{n}", replace(cfg, scheduler="local", workers=n), ex)
                rows.append({**row, "cluster_start_s": round(started, 1), "worker_warmup_s": round(warm, 1)})
    by = {r["run"]: r for r in rows}
    result = {"backbone": args.backbone, "counts": args.counts, "lengths": args.lengths, "rows": rows,
              "load_average": os.getloadavg()}
    if "dask1" in by:
        result["ratios_to_1_worker"] = {r["run"]: round(r["segments_per_s"] / by["dask1"]["segments_per_s"], 2)
                                        for r in rows if r["run"].startswith("dask")}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
