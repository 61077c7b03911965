"""Chunked decoding of a long resampled file: seek to each chunk's resampling segment vs decode from the start.

    python benchmarks/chunk_decode.py [--hours 2] [--rate 48000] [--chunk 10min] [--out results.json]

A generated ``--hours`` mono file at ``--rate`` (pink noise + tones, PCM_16) is cut into work
units of ``--chunk`` (4-s windows every 2 s at 44.1 kHz, the CLAP rate, so it must be resampled).
For every unit its windows are produced twice, in one run:

* ``seek``: ``archive.iter_window_range`` (what ``clapnb detect --chunk`` does now): the file is
  read from the unit's resampling segment (``stream.Segments``), so each unit decodes about its
  own length: linear in the file's duration;
* ``from_start``: ``stream.iter_windows(..., skip=first, seek=False)``: decoding and resampling
  from the file's start up to the unit (how resampled chunks were read before): quadratic.

Reported: seconds per way, their ratio, and whether both produced the same windows bit for bit
(a SHA-256 over every window's samples). Decoding only: no backbone runs here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_file(path: Path, hours: float, sr: int) -> None:
    import soundfile as sf

    from clapnb import scene

    n_total, piece = int(hours * 3600 * sr), 60 * sr
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as fh:
        for k, a in enumerate(range(0, n_total, piece)):
            n = min(piece, n_total - a)
            t = (a + np.arange(n)) / sr
            x = scene.noise(n, "pink", -35.0, k).astype(np.float32)
            x += (0.05 * np.sin(2 * np.pi * 600 * t) * (np.sin(2 * np.pi * t / 37) > 0.6)).astype(np.float32)
            fh.write(x)


def main(argv: list[str] | None = None) -> int:
    from clapnb import archive, audio, stream

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--chunk", default="10min")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    sr, length_s, hop_s = audio.TARGET_SR, 4.0, 2.0
    chunk_s = archive.parse_duration(a.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        t0 = time.perf_counter()
        make_file(path, a.hours, a.rate)
        print(f"generated {a.hours:g} h at {a.rate} Hz in {time.perf_counter() - t0:.0f} s", flush=True)
        info = audio.probe(path)
        starts = stream.window_starts(stream.output_frames(info.frames, info.sample_rate, sr), sr, length_s, hop_s)
        units = archive.chunk_ranges(np.array([s for s, _ in starts]) / sr, chunk_s)
        res: dict = {"hours": a.hours, "rate_in": a.rate, "rate_out": sr, "chunk_s": chunk_s, "units": len(units),
                     "windows": len(starts), "segment": str(stream.Segments.of(a.rate, sr)),
                     "resampler": stream.RESAMPLER}
        for way in ("seek", "from_start"):
            h = hashlib.sha256()
            per_unit = []
            t0 = time.perf_counter()
            for first, stop in units:
                t1 = time.perf_counter()
                if way == "seek":
                    wins = archive.iter_window_range(str(path), length_s, hop_s, sr, first, stop)
                else:
                    wins = stream.iter_windows(str(path), length_s, hop_s, sr, skip=first, seek=False)
                n = 0
                for w in wins:
                    if w.index >= stop:
                        break
                    h.update(w.wave.tobytes())
                    n += 1
                assert n == stop - first, (way, first, stop, n)
                per_unit.append(round(time.perf_counter() - t1, 3))
            res[way] = {"seconds": round(time.perf_counter() - t0, 2), "per_unit_s": per_unit,
                        "windows_sha256": h.hexdigest()}
            print(f"{way}: {res[way]['seconds']} s ({len(units)} units; first {per_unit[0]} s, last {per_unit[-1]} s)",
                  flush=True)
    res["ratio_from_start_over_seek"] = round(res["from_start"]["seconds"] / res["seek"]["seconds"], 2)
    res["bit_identical"] = res["seek"]["windows_sha256"] == res["from_start"]["windows_sha256"]
    res["audio_hours_per_hour_seek"] = round(a.hours * 3600 / res["seek"]["seconds"], 1)
    print(f"ratio from_start / seek = {res['ratio_from_start_over_seek']}x; same windows bit for bit: "
          f"{res['bit_identical']}; decode {res['audio_hours_per_hour_seek']} h audio / h (seek)")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0 if res["bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
