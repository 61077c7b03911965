"""Throughput of CLAP audio embedding, four ways, on the same model and the same clips in one run.

    .venv/bin/python benchmarks/embed_throughput.py --n 32 [--batch-size 8] [--device cpu|cuda]
        [--workers N] [--repeat 2] [--standin DIR]

Model: the random-weights msclap 2023 stand-in (built into a temporary folder unless --standin is
given), loaded through msclap's unchanged ``CLAP(model_fp=...)``. Clips: the first N 5-s ESC-50
clips of ../shared/data/envsounds (44.1 kHz, so no path resamples), each repeated to 7 s.

(a) msclap's example path: one ``get_audio_embeddings([file])`` call per file (its
    ``torchaudio.load`` replaced by soundfile, which is all this machine can decode with);
(b) msclap's batched ``get_audio_embeddings(list)``, ``--batch-size`` files per call;
(c) clapnb's ``compute_embeddings`` on a segments table (cold cache in a temporary folder):
    decode, cut, policy, batch, forward, cache writes;
(d) forward only: ``audio_encoder(x)[0]`` on pre-made 7-s tensors, same batches (the ceiling).

The four are run in interleaved rounds (--repeat, default 2) and each keeps its best round, so a
burst of load from other processes does not decide the ratios. Prints clips/s and the ratios;
target (c) >= 0.9 x (d). Random weights: only speed is measured. The embedding modes (bf16,
torch.compile) and their agreement with fp32 are measured by benchmarks/precision.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLAPNB_SHARED", REPO.parent / "shared"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="number of clips (default 32)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--workers", type=int, default=None, help="clapnb decoding threads (default: clapnb's choice)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the best of each is kept")
    ap.add_argument("--standin", type=Path, default=None, help="existing stand-in folder (default: build one)")
    args = ap.parse_args()

    from clapnb import standin

    work = Path(tempfile.mkdtemp(prefix="clapnb-bench-"))
    sdir = args.standin or work / "standin"
    if args.standin is None:
        print(f"building the random-weights stand-in in {sdir} ...", flush=True)
        standin.build_standin(sdir)
    os.environ.update(standin.environment(sdir))  # before anything imports transformers

    import numpy as np
    import pandas as pd
    import soundfile as sf
    import torch

    from clapnb import audio, backbones, embeddings, io

    meta = pd.read_csv(SHARED / "data" / "envsounds" / "meta.csv")
    esc = meta[meta["source_dataset"] == "ESC-50"].sort_values("path")
    files = [str(SHARED / "data" / "envsounds" / p) for p in esc["path"].head(args.n)]
    bs = args.batch_size

    backbone = backbones.load_backbone("msclap-2023", device=args.device, batch_size=bs)
    wrapper = backbone.wrapper

    def soundfile_load(path):
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    sys.modules["msclap.CLAPWrapper"].torchaudio.load = soundfile_load  # msclap's reader, nothing else

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - t, out

    tensors = [backbone.prepare([audio.load(f)])[0] for f in files]
    backbone.forward(np.stack(tensors[:bs]))  # warm-up (first-call allocations), shared by all

    def forward_only():
        return np.concatenate([backbone.forward(np.stack(tensors[s:s + bs])) for s in range(0, len(files), bs)])

    def msclap_per_file():
        return np.concatenate([wrapper.get_audio_embeddings([f]).cpu().numpy() for f in files])

    def msclap_batched():
        return np.concatenate([wrapper.get_audio_embeddings(files[s:s + bs]).cpu().numpy()
                               for s in range(0, len(files), bs)])

    segs = pd.DataFrame({"path": files, "sha256": [io.file_sha256(f) for f in files],
                         "start_s": 0.0, "end_s": 5.0, "augmented": False, "snr_db": np.nan})

    def clapnb_extract(round_no):
        return embeddings.compute_embeddings(segs, backbone, cache_dir=work / f"cache{round_no}",
                                             batch_size=bs, progress=False, workers=args.workers).X

    paths = (("d", "forward only, pre-made tensors (ceiling)", forward_only),
             ("a", "msclap example: get_audio_embeddings([file]) per file", msclap_per_file),
             ("b", f"msclap batched get_audio_embeddings(list of {bs})", msclap_batched),
             ("c", f"clapnb compute_embeddings (cold cache, {args.workers or 'auto'} decoders)", clapnb_extract))
    results = {}
    for r in range(args.repeat):
        for key, label, fn in paths:
            seconds, X = timed(lambda: fn(r) if key == "c" else fn())
            if key not in results or len(files) / seconds > results[key][1]:
                results[key] = (label, len(files) / seconds, X)

    print(f"\n{args.n} clips (5 s -> 7 s), batch {bs}, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, best of "
          f"{args.repeat} rounds; RANDOM WEIGHTS")
    print(f"{'':4}{'path':58}{'clips/s':>9}{'vs (d)':>8}{'vs (a)':>8}")
    for key in "abcd":
        label, rate, _ = results[key]
        print(f"({key}) {label:58}{rate:9.2f}{rate / results['d'][1]:8.2f}{rate / results['a'][1]:8.2f}")
    agree = float(np.abs(results["c"][2] - results["b"][2]).max())
    print(f"max |(c) - (b)| over all embeddings: {agree:.2e} (same computation)")
    ok = results["c"][1] >= 0.9 * results["d"][1]
    print(f"target (c) >= 0.9 x (d): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
