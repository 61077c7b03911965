"""Detection throughput and memory: hours of audio per hour of compute, peak memory vs file duration.

    python benchmarks/detect_throughput.py [--seconds 60] [--backbones mfcc,mfcc-native,clap-fp32,clap-bf16,birdnet]
                                           [--memory 600,7200] [--out results.json]

* throughput: one generated recording of ``--seconds`` (pink noise + tones, 44.1 kHz) through
  ``clapnb.detect.embed_file_windows`` (streaming, 4-s windows, 2-s hop, an empty cache: every window
  is embedded) per backbone, after one warm-up window (librosa's numba JIT, LiteRT/torch lazy set-up:
  ``warmup_s``); ratio = audio duration / wall time, all in one run on this machine.
  ``clap-*`` is the random-weights msclap 2023 stand-in (``clapnb standin``): the architecture's
  cost, NOT a CLAP model. ``birdnet`` runs only when ``load_backbone('birdnet')`` exists.
* memory: the peak resident memory (``VmHWM`` of a fresh child process) of streaming every
  4-s window of a 16-kHz file (so the stream resampler runs) of each ``--memory`` duration, beside
  what decoding the whole file at 44.1 kHz would take. Flat means: the same for 10 min and 2 h.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_recording(path: Path, seconds: float, sr: int, seed: int = 0, block_s: float = 60.0) -> Path:
    """Pink noise with a few tones, written block by block (no whole-file array)."""
    import soundfile as sf

    from clapnb.scene import noise

    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as fh:
        done = 0
        k = 0
        while done < seconds * sr:
            n = int(min(block_s * sr, seconds * sr - done))
            t = (np.arange(n) + done) / sr
            x = noise(n, "pink", -30.0, seed + k) + 0.05 * np.sin(2 * np.pi * (300 + 50 * (k % 5)) * t)
            fh.write(x.astype(np.float32))
            done += n
            k += 1
    return path


def load(name: str, standin: Path | None):
    from clapnb.backbones import load_backbone

    if name in ("mfcc", "mfcc-native"):  # mfcc: the msclap policy (each window repeated to 7 s) like the study
        return load_backbone("mfcc", policy="native" if name == "mfcc-native" else "msclap")
    if name.startswith("clap-"):
        return load_backbone("msclap-2023", weights=str(standin), device="cpu", precision=name.split("-", 1)[1])
    return load_backbone(name)


def throughput(names: list[str], seconds: float, tmp: Path) -> list[dict]:
    from clapnb import detect

    rec = write_recording(tmp / "throughput.wav", seconds, 44100)
    standin = None
    if any(n.startswith("clap-") for n in names):
        from clapnb import standin as st

        info = st.build_standin(tmp / "standin")
        for k, v in st.environment(tmp / "standin").items():
            os.environ[k] = v
        standin = Path(info["checkpoint"]) if isinstance(info, dict) and "checkpoint" in info else next(
            (tmp / "standin").rglob("*.pth"))
    rows = []
    for name in names:
        try:
            bb = load(name, standin)
        except Exception as exc:  # e.g. birdnet not landed / not installed
            rows.append({"backbone": name, "skipped": f"{type(exc).__name__}: {exc}"})
            continue
        probe = SimpleNamespace(length_s=4.0, backbone=dict(bb.metadata))
        t0 = time.perf_counter()
        bb.embed_audio([np.zeros(4 * bb.sample_rate, dtype=np.float32) + 1e-3])  # warm-up (numba JIT, lazy init)
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        table, X, counts = detect.embed_file_windows(str(rec), f"bench-{name}-{time.time()}", bb, probe, 2.0,
                                                     cache_root=tmp / f"cache-{name}", batch_size=16)
        dt = time.perf_counter() - t0
        rows.append({"backbone": name, "random_weights": bool(bb.random_weights), "audio_s": seconds,
                     "warmup_s": round(warmup, 2),
                     "windows": counts["n_computed"], "seconds": round(dt, 3),
                     "hours_audio_per_hour": round(seconds / dt, 1), "windows_per_s": round(counts["n_computed"] / dt, 2)})
        print(rows[-1], flush=True)
    return rows


CHILD = """
import sys, time, tracemalloc
sys.path.insert(0, {repo!r})
from clapnb import stream

def hwm():  # peak resident set of this process (VmHWM is per address space: reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

base = hwm()
tracemalloc.start()
t0 = time.perf_counter()
n = sum(1 for _ in stream.iter_windows({path!r}, 4.0, 2.0, 44100))
print(n, time.perf_counter() - t0, hwm(), base, tracemalloc.get_traced_memory()[1])
"""


def memory(durations: list[float], tmp: Path) -> list[dict]:
    rows = []
    for d in durations:
        path = write_recording(tmp / f"mem_{int(d)}.wav", d, 16000)
        out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), path=str(path))],
                             capture_output=True, text=True, check=True).stdout.split()
        n, secs, hwm, base, traced = int(out[0]), float(out[1]), int(out[2]), int(out[3]), int(out[4])
        rows.append({"duration_s": d, "windows": n, "stream_seconds": round(secs, 2),
                     "peak_rss_mib": round(hwm / 1024, 1), "rss_after_imports_mib": round(base / 1024, 1),
                     "peak_python_allocations_mib": round(traced / 2 ** 20, 1),
                     "whole_file_float32_at_44k1_mib": round(d * 44100 * 4 / 2 ** 20, 1)})
        print(rows[-1], flush=True)
        path.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio per backbone for throughput (default 60)")
    ap.add_argument("--backbones", default="mfcc,mfcc-native,clap-fp32,clap-bf16,birdnet")
    ap.add_argument("--memory", default="600,7200", help="file durations in s for the memory check (default 600,7200)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="clapnb-bench-") as tmp:
        tmp = Path(tmp)
        result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                              "load_average_at_start": os.getloadavg()},
                  "window_s": 4.0, "hop_s": 2.0,
                  "throughput": throughput([b for b in args.backbones.split(",") if b], args.seconds, tmp),
                  "memory": memory([float(x) for x in args.memory.split(",") if x], tmp)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
