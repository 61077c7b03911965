"""Archive-scale detection on Dask: hours of audio per hour for 1 vs 2 workers, decode throughput, estimate error.

    python benchmarks/dask_scaling.py [--hours 2] [--file-minutes 15] [--chunk 10min] [--workers 1,2]
                                      [--backbones mfcc,birdnet] [--clips 100] [--out results.json]

* scaling: a generated archive of ``--hours`` of 44.1-kHz audio (pink noise + tones, files of
  ``--file-minutes``), 4-s windows every 2 s, an empty cache each run, through ``clapnb detect``'s
  ``detect_files`` on a Dask ``LocalCluster`` of N worker processes (one thread each), with
  ``--chunk`` work units. Reported: wall time of the work after a warm-up run on the same cluster
  (cluster start-up and each worker's import, backbone load and first-call JIT reported apart), hours of audio per hour, the ratio of 2 to 1
  worker, and the cost estimate printed before the work vs the measured time.
  The probe is a RANDOM linear head (throughput only: its events mean nothing).
  ``birdnet`` (BirdNET V2.4, not CLAP; CC BY-NC-SA 4.0) runs only when ``load_backbone('birdnet')`` works.
* decode: ``--clips`` real clips from ../shared (ESC-50/US8K, mostly 44.1 kHz) decoded, mixed to mono
  and resampled to 48 kHz (BirdNET) and 44.1 kHz (CLAP) in one process: clips/s per process, and the
  decode processes one GPU would need at the forward-only ceilings measured on an H100 before
  (819 clips/s CLAP fp32, about 2,300 bf16).
All numbers come from one run on this machine; compare ratios, not absolute times, across machines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GPU_CEILING = {"clap_fp32_h100": 819.0, "clap_bf16_h100": 2300.0}


def make_archive(folder: Path, hours: float, file_minutes: float, sr: int = 44100) -> float:
    import soundfile as sf

    from clapnb import scene

    folder.mkdir(parents=True, exist_ok=True)
    total = hours * 3600
    n_files = max(1, int(math.ceil(total / (file_minutes * 60))))
    per = total / n_files
    for k in range(n_files):
        n = int(per * sr)
        x = scene.noise(n, "pink", -35.0, 10 + k).astype(np.float32)
        t = np.arange(n) / sr
        x += (0.05 * np.sin(2 * np.pi * (600 + 50 * k) * t) * (np.sin(2 * np.pi * t / 37) > 0.6)).astype(np.float32)
        sf.write(folder / f"site_{k:03d}.wav", x, sr, subtype="PCM_16")
    return total


def random_probe(path: Path, backbone) -> None:
    from clapnb import probe as probe_mod
    from clapnb.embeddings import _backbone_meta

    rng = np.random.default_rng(0)
    K, d = 3, backbone.dim
    p = probe_mod.Probe(weight=rng.standard_normal((K, d)).astype(np.float32) * 0.01,
                        bias=np.zeros(K, np.float32), mean=np.zeros(d, np.float32), scale=np.ones(d, np.float32),
                        classes=["dogs", "sirens", "background"], config=probe_mod.ProbeConfig(),
                        backbone=_backbone_meta(backbone, None), length_s=4.0)
    probe_mod.save_probe(path, p)


def scaling(name: str, archive: Path, audio_s: float, workers: list[int], chunk_s: float | None, tmp: Path) -> list[dict]:
    import contextlib
    import io as _io

    from clapnb import detect
    from clapnb.backbones import load_backbone
    from clapnb.dask_executor import DaskExecutor

    bb = load_backbone(name, **({"policy": "native"} if name in ("mfcc", "gfcc") else {}))
    probe = tmp / f"probe-{name}.pt"
    random_probe(probe, bb)
    rows = []
    for n in workers:
        t0 = time.perf_counter()
        ex = DaskExecutor("local", n, dashboard=False)
        startup = time.perf_counter() - t0
        err = _io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                t1 = time.perf_counter()  # warm-up: every worker imports, loads the backbone and JITs once
                detect.detect_files(probe, [tmp / "warmup"], tmp / f"warm-{name}-{n}", hop_s=2.0, backbone=bb,
                                    cache_dir=tmp / f"warmcache-{name}-{n}", executor=ex, chunk_s=4.0)
                warmup = time.perf_counter() - t1
                res = detect.detect_files(probe, [archive], tmp / f"out-{name}-{n}", hop_s=2.0, backbone=bb,
                                          cache_dir=tmp / f"cache-{name}-{n}", executor=ex, chunk_s=chunk_s,
                                          estimate=True)
        finally:
            ex.close()
        rec = res.record
        work = rec["work_seconds"]
        est = rec["estimate"]["wall_s"]
        rows.append({"backbone": name, "workers": n, "cluster_startup_s": round(startup, 2),
                     "worker_warmup_s": round(warmup, 2), "work_s": round(work, 2),
                     "windows": rec["estimate"]["windows_todo"], "audio_h": round(audio_s / 3600, 3),
                     "audio_h_per_h": round(audio_s / work, 1), "estimate_s": round(est, 2),
                     "estimate_error": round((est - work) / work, 3),
                     "s_per_window_measured_on_client": rec["estimate"]["s_per_window"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def decode_throughput(n_clips: int) -> dict:
    import pandas as pd

    from clapnb import audio

    root = REPO.parent / "shared" / "data" / "envsounds"
    meta = pd.read_csv(root / "meta.csv").sort_values("path").head(n_clips)
    out = {}
    for sr in (48000, 44100):
        t0 = time.perf_counter()
        seconds = 0.0
        for p in meta["path"]:
            x = audio.load(root / p, sr=sr)
            seconds += len(x) / sr
        dt = time.perf_counter() - t0
        out[f"clips_per_s_to_{sr}"] = round(len(meta) / dt, 1)
        out[f"audio_s_per_s_to_{sr}"] = round(seconds / dt, 1)
    out["clips"] = len(meta)
    out["mean_clip_s"] = round(seconds / len(meta), 2)
    for k, v in GPU_CEILING.items():
        out[f"decode_processes_for_{k}"] = int(math.ceil(v / out["clips_per_s_to_44100"]))
    print(json.dumps({"decode": out}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--file-minutes", type=float, default=15.0)
    ap.add_argument("--chunk", default="10min")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--backbones", default="mfcc,birdnet")
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from clapnb import archive as arc

    tmp = Path(tempfile.mkdtemp(prefix="dask_scaling-"))
    audio_s = make_archive(tmp / "archive", args.hours, args.file_minutes)
    make_archive(tmp / "warmup", 16 * 4 / 3600, 8 * 4 / 60)  # 4 files of 16 s (a unit per worker, a few windows each)
    workers = [int(w) for w in args.workers.split(",")]
    result = {"hours": args.hours, "chunk": args.chunk, "rows": [], "machine_note": "shared 2-core machine"}
    for name in args.backbones.split(","):
        try:
            result["rows"] += scaling(name, tmp / "archive", audio_s, workers, arc.parse_duration(args.chunk), tmp)
        except Exception as exc:  # e.g. birdnet not installed: say so, go on
            print(f"{name}: not run ({type(exc).__name__}: {exc})", flush=True)
            result.setdefault("not_run", {})[name] = str(exc)
    for name in {r["backbone"] for r in result["rows"]}:
        by = {r["workers"]: r for r in result["rows"] if r["backbone"] == name}
        if 1 in by and 2 in by:
            result.setdefault("ratio_2_vs_1", {})[name] = round(by[1]["work_s"] / by[2]["work_s"], 2)
    result["decode"] = decode_throughput(args.clips)
    print(json.dumps({"ratio_2_vs_1": result.get("ratio_2_vs_1")}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
