"""Detection quality on composed scenes: event-based and class-agnostic F1, PSDS, held-out recordings.

    python benchmarks/detect_scenes.py [--backbone mfcc] [--length 4] [--hop 2] [--snr 5,25]
                                       [--n-scenes 10] [--labels siren,dog,...] [--out DIR]

The shared clips of ``--labels`` (ESC-50) are split by freesound recording: the first half of each
label's recordings trains the probe (``clapnb segments/embed/probe``, with a ``background`` class of
generated pink noise at -50..-30 dBFS: the "site"), the other half is composed into ``--n-scenes``
60-s scenes (``clapnb scene``: 3 events each at SNRs drawn uniformly from ``--snr`` over pink noise
at -40 dBFS, other seeds than the site's). Then ``clapnb detect`` and ``clapnb score-events``.
Everything runs through the CLI, seeded; the JSON of ``score-events`` is printed in the end.

``--backbone msclap-2023`` without ``--weights`` uses the random-weights stand-in (built in the
output folder): plumbing only, its F1 is NOT a CLAP result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CLAPNB_SHARED", REPO.parent / "shared")) / "data" / "envsounds"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mfcc")
    ap.add_argument("--weights", default=None, help="CLAP checkpoint (default for msclap-2023: the random stand-in)")
    ap.add_argument("--length", default="4")
    ap.add_argument("--hop", default="2")
    ap.add_argument("--snr", default="5,25")
    ap.add_argument("--n-scenes", default="10")
    ap.add_argument("--labels", default="siren,dog,helicopter,crickets,church_bells,rooster")
    ap.add_argument("--counts", default="40,10,10,10")
    ap.add_argument("--threshold", default="0.5")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--out", default="runs/detect_scenes")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.backbone.startswith("msclap") and args.weights is None:
        from clapnb import standin

        info = standin.build_standin(out / "standin") if not (out / "standin" / "standin.json").is_file() \
            else standin.describe(out / "standin")
        os.environ.update(standin.environment(out / "standin"))
        args.weights = info["checkpoint"]
    from clapnb import scene
    from clapnb.cli import main as clapnb

    import soundfile as sf

    labels = args.labels.split(",")
    meta = pd.read_csv(SHARED / "meta.csv")
    d = meta[meta["original_label"].isin(labels)].drop_duplicates(["original_label", "freesound_id"])
    d = d.sort_values("path").copy()
    d["path"] = [str(SHARED / p) for p in d["path"]]
    half = d.groupby("original_label")["path"].transform("size") // 2
    probe_part = d[d.groupby("original_label").cumcount() < half]
    scene_part = d.drop(probe_part.index)
    assert set(probe_part["freesound_id"]).isdisjoint(scene_part["freesound_id"])
    probe_part.to_csv(out / "probe_clips.csv", index=False)
    scene_part.to_csv(out / "scene_clips.csv", index=False)
    site = out / "site"
    site.mkdir(exist_ok=True)
    for k, db in enumerate(np.linspace(-50, -30, 8)):
        sf.write(site / f"site_{k}.wav", scene.noise(44100 * 20, "pink", float(db), 100 + k), 44100)
    run = out / f"L{int(float(args.length)):02d}-{args.backbone}"
    t0 = time.perf_counter()
    steps = [
        ["segments", "--data", str(out / "probe_clips.csv"), "--label-column", "original_label", "--background",
         str(site), "--length", args.length, "--counts", args.counts, "--seed", args.seed, "--out", str(run)],
        ["embed", "--segments", str(run / "segments.parquet"), "--backbone", args.backbone, "--cache",
         str(out / "cache"), "--no-progress"] + (["--weights", args.weights] if args.weights else []),
        ["probe", "--run", str(run)],
        ["scene", "--events", str(out / "scene_clips.csv"), "--label-column", "original_label", "--duration", "60",
         "--n-events", "3", "--snr", args.snr, "--n-scenes", args.n_scenes, "--seed", "1000", "--out",
         str(out / f"scenes-{args.snr}")],
        ["detect", "--probe", str(run / "probe.pt"), "--hop", args.hop, "--threshold", args.threshold,
         "--merge-gap", args.hop, "--min-duration", args.hop, "--cache", str(out / "cache"), "--no-progress",
         "--out", str(out / f"det-{args.backbone}-{args.snr}"), str(out / f"scenes-{args.snr}")],
        ["score-events", "--events", str(out / f"det-{args.backbone}-{args.snr}"), "--reference",
         str(out / f"scenes-{args.snr}" / "truth.csv")],
    ]
    for step in steps:
        rc = clapnb(step)
        if rc not in (0,):
            raise SystemExit(f"clapnb {step[0]} failed with exit status {rc}")
    res = json.loads((out / f"det-{args.backbone}-{args.snr}" / "score_events.json").read_text())
    summary = {"backbone": args.backbone, "random_weights": res["random_weights"], "length_s": float(args.length),
               "hop_s": float(args.hop), "snr_db": args.snr, "n_scenes": int(args.n_scenes), "labels": labels,
               "event_f1_micro": res["event_based"]["micro"]["f_measure"],
               "event_f1_macro": res["event_based"]["macro"]["f_measure"],
               "segment_f1_micro": res["segment_based"]["micro"]["f_measure"],
               "class_agnostic_f1": res["class_agnostic"]["f_measure"],
               "psds": res["psds"]["psds"] if res["psds"] else None, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
