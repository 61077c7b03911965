"""Time and peak memory of ``clapnb levels`` on a generated 10-minute vs 2-hour recording.

Memory must be flat in duration: the audio is streamed in blocks, only the 10-Hz step history grows.
Each duration runs in its own process (so ``ru_maxrss`` is that run's own peak), once timed and once
under tracemalloc (Python-level peak, numpy buffers included); the generated WAVs
go to a temporary folder (``--tmp``), never into the repository, and are deleted afterwards.

    python benchmarks/levels_throughput.py                 # 10 min and 2 h at 48 kHz
    python benchmarks/levels_throughput.py --minutes 1 10  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def make_recording(path: Path, seconds: float, sr: int, seed: int = 0) -> Path:
    """Noise with a loud 3-s burst every 60 s, written block by block (flat memory here too)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n_total = int(seconds * sr)
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as fh:
        for start in range(0, n_total, 60 * sr):
            n = min(60 * sr, n_total - start)
            x = 0.01 * rng.standard_normal(n)
            burst = slice(20 * sr, min(23 * sr, n))
            x[burst] += 0.1 * rng.standard_normal(len(x[burst]))
            fh.write(x.astype(np.float32))
    return path


def events_for(path: Path, seconds: float):
    import pandas as pd

    onsets = [60.0 * k + 20.0 for k in range(int(seconds // 60)) if 60.0 * k + 23.0 <= seconds]
    return pd.DataFrame({"file": str(path), "onset_s": onsets, "offset_s": [o + 3.0 for o in onsets],
                         "class": "dogs", "score": 0.9})


def one(minutes: float, sr: int, tmp: str) -> dict:
    import scipy.signal  # noqa: F401  (imports are not what is measured)

    from clapnb import levels

    seconds = minutes * 60
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        wav = make_recording(Path(d) / f"bench_{minutes:g}min.wav", seconds, sr)
        ev_path = Path(d) / "events.csv"
        events_for(wav, seconds).to_csv(ev_path, index=False)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def run(tag: str):
            return levels.run_levels([str(wav)], Path(d) / tag, events_path=str(ev_path), exclude="all",
                                     interval_s=min(600.0, seconds), interval_text=None, residual=90)

        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        res = run("timed")  # timed without tracemalloc (it slows every allocation)
        wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        run("traced")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = wav.stat().st_size
        n_int = res["n_intervals"]
    return {"minutes": minutes, "sample_rate": sr, "wav_mb": size / 2 ** 20, "seconds": wall, "cpu_seconds": cpu,
            "x_realtime": seconds / wall, "tracemalloc_peak_mb": peak / 2 ** 20,
            "maxrss_mb": rss_after / 1024, "maxrss_before_run_mb": rss_before / 1024, "intervals": n_int}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 120])
    ap.add_argument("--sr", type=int, default=48000)
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the generated WAVs go (deleted after)")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.sr, args.tmp)))
        return
    rows = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for minutes in args.minutes:
        out = subprocess.run([sys.executable, __file__, "--one", str(minutes), "--sr", str(args.sr), "--tmp", args.tmp],
                             capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['minutes']:g} min @ {r['sample_rate']} Hz ({r['wav_mb']:.0f} MB WAV): {r['seconds']:.1f} s wall, "
              f"{r['cpu_seconds']:.1f} s CPU ({r['x_realtime']:.0f}x real time), tracemalloc peak {r['tracemalloc_peak_mb']:.1f} MB, "
              f"max RSS {r['maxrss_mb']:.0f} MB (imports alone {r['maxrss_before_run_mb']:.0f} MB)", flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"ratio {b['minutes'] / a['minutes']:g}x the duration: time x{b['seconds'] / a['seconds']:.1f} "
              f"(CPU x{b['cpu_seconds'] / a['cpu_seconds']:.1f}), "
              f"tracemalloc peak x{b['tracemalloc_peak_mb'] / a['tracemalloc_peak_mb']:.2f}, "
              f"max RSS x{b['maxrss_mb'] / a['maxrss_mb']:.2f}")


if __name__ == "__main__":
    main()
