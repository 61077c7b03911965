"""How much does automatic exclusion change the reported levels? Per-interval LAeq/LA90 errors on composed scenes.

Composes ``--n-scenes`` scenes of ``--minutes`` from the shared real clips over pink noise
(``clapnb.scene``; truth = the reference events), then measures each scene once with two exclusion
sets: the *detected* events and the *reference* events, and reports per interval
``LAeq(detected excluded) - LAeq(reference excluded)`` and the same for LA90 (``levels.exclusion_error``).

Detected events come from ``--detected EVENTS.csv`` (e.g. ``clapnb detect`` run on ``OUT/scenes``;
pass ``--scenes-only`` first to write the scenes), or else from a seeded perturbed copy of the truth
(``--perturb``: boundaries jittered, some events missed, false alarms added), which exercises the
measurement, not a detector: the output says which one was used.

    python benchmarks/levels_scenes.py --out /tmp/levels_scenes                       # perturbed truth
    python benchmarks/levels_scenes.py --out /tmp/ls --scenes-only                    # then clapnb detect ...
    python benchmarks/levels_scenes.py --out /tmp/ls --detected /tmp/ls/det/events.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "envsounds" / "meta.csv"


def perturbed(truth: pd.DataFrame, seed: int, jitter_s: float = 0.5, miss: float = 0.15,
              false_alarms: int = 2) -> pd.DataFrame:
    """A stand-in for a detector's output: jittered boundaries, missed events, false alarms (seeded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for f, g in truth.groupby("file"):
        keep = g[rng.random(len(g)) >= miss]
        on = np.maximum(keep["onset_s"] + rng.uniform(-jitter_s, jitter_s, len(keep)), 0)
        off = keep["offset_s"] + rng.uniform(-jitter_s, jitter_s, len(keep))
        rows.append(pd.DataFrame({"file": f, "onset_s": on, "offset_s": np.maximum(off, on + 0.1),
                                  "class": keep["class"], "score": 0.9}))
        dur = float(g["offset_s"].max())
        starts = rng.uniform(0, max(dur - 3, 1), false_alarms)
        rows.append(pd.DataFrame({"file": f, "onset_s": starts, "offset_s": starts + rng.uniform(0.5, 3, false_alarms),
                                  "class": "voices", "score": 0.6}))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    from clapnb import datasets, levels, scene

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the scenes and the tables (outside the repository)")
    ap.add_argument("--meta", default=str(SHARED), help="clips manifest (default: the shared envsounds meta.csv)")
    ap.add_argument("--n-scenes", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--n-events", type=int, default=12, help="events per scene")
    ap.add_argument("--snr", default="0,20", help="local SNR range in dB (default 0,20)")
    ap.add_argument("--interval", default="1min", help="reporting interval (default 1min)")
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detected", help="events table of a detector run on the scenes")
    ap.add_argument("--scenes-only", action="store_true", help="write the scenes and truth.csv, then stop")
    args = ap.parse_args()

    out = Path(args.out)
    scenes_dir = out / "scenes"
    lo, hi = (float(v) for v in args.snr.split(","))
    cfg = scene.SceneConfig(duration_s=args.minutes * 60, n_events=args.n_events, snr_db=(lo, hi), min_gap_s=5.0,
                            sample_rate=args.sample_rate, seed=args.seed)
    t0 = time.perf_counter()
    if not (scenes_dir / "truth.csv").is_file():
        clips, _ = datasets.load_recordings(args.meta, label_column="original_label")
        clips = clips[clips["class"].notna() & (clips["class"] != "")]
        scene.compose_scenes(clips, scenes_dir, cfg, n_scenes=args.n_scenes)
    truth = pd.read_csv(scenes_dir / "truth.csv")
    print(f"scenes: {args.n_scenes} x {args.minutes:g} min, {len(truth)} reference events "
          f"({time.perf_counter() - t0:.0f} s) in {scenes_dir}")
    if args.scenes_only:
        return
    if args.detected:
        detected, source = levels.read_events(args.detected), f"detector output {args.detected}"
    else:
        detected, source = perturbed(truth, args.seed), ("PERTURBED COPY OF THE REFERENCE (jitter +-0.5 s, 15 % "
                                                         "missed, 2 false alarms per scene): not a detector")
    interval = levels.parse_interval(args.interval)
    files = sorted(truth["file"].unique())
    m = levels.measure(files, exclusions={"detected": detected, "reference": truth})
    err = levels.exclusion_error(m, interval)
    err_scene = pd.concat([levels.exclusion_error(levels.Measurement([h], None, m.exclusion_names, m.weighting, m.rate,
                                                                     m.calibration, False), args.minutes * 60)
                           .query("scope == 'interval'") for h in m.histories], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    err.to_csv(out / "exclusion_error.csv", index=False, float_format="%.3f")
    iv = err[err["scope"] == "interval"]
    summary = {"detected_source": source, "n_scenes": args.n_scenes, "minutes": args.minutes, "interval_s": interval,
               "n_intervals": len(iv), "reference_events": len(truth), "detected_events": len(detected)}
    for metric in ("LAeq", "LA90"):
        e = iv[f"{metric}_error_dB"].to_numpy()
        summary[metric] = {"mean_dB": float(np.mean(e)), "mean_abs_dB": float(np.mean(np.abs(e))),
                           "max_abs_dB": float(np.max(np.abs(e))), "p95_abs_dB": float(np.percentile(np.abs(e), 95)),
                           "per_scene_10min_dB": [round(float(v), 3) for v in err_scene[f"{metric}_error_dB"]]}
    (out / "exclusion_error.json").write_text(json.dumps(summary, indent=2))
    pd.set_option("display.width", 200)
    cols = ["file", "start_s", "LAeq_detected_dBFS", "LAeq_reference_dBFS", "LAeq_error_dB", "LA90_error_dB",
            "excluded_pct_detected", "excluded_pct_reference"]
    shown = iv[cols].assign(file=iv["file"].map(lambda p: Path(p).name))
    print(f"detected events: {source}")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
