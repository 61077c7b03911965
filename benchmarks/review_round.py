"""One scripted review round on composed scenes: precision per class before/after, levels before/after.

    python benchmarks/review_round.py [--backbone mfcc] [--length 2] [--labels siren,dog,crickets,rooster]
                                      [--n-review 6] [--n-held 4] [--out runs/review_round]

The shared ESC-50 clips of ``--labels`` are split by freesound recording into three disjoint parts: the
probe's (``clapnb segments/embed/probe`` with a pink-noise ``background`` "site"), the reviewed scenes'
and the held-out scenes' (``clapnb scene``, 40 s, 4 events, SNR 10..25 dB). ``clapnb detect`` runs on
both scene sets; the reviewed set is answered from its truth (``review.answer_from_reference``: a
scripted operator), the probe is retrained with ``--extra-labels reviewed.parquet`` and detects the
held-out scenes again. Printed: precision per class of the detections (judged against the truth the
same way) before/after, segment F1, and the whole-measurement LAeq of the reviewed scenes with the
detected vs the reviewed events excluded (``clapnb levels``); the book's Review page of the held-out
detections before/after goes to ``OUT/review_page/`` (``clapnb.review_book``). Everything seeded and
through the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CLAPNB_SHARED", REPO.parent / "shared")) / "data" / "envsounds"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="mfcc")
    ap.add_argument("--length", default="2")
    ap.add_argument("--labels", default="siren,dog,crickets,rooster")
    ap.add_argument("--n-probe", type=int, default=8, help="recordings per class for the probe")
    ap.add_argument("--n-review", type=int, default=6, help="scenes reviewed")
    ap.add_argument("--n-held", type=int, default=4, help="held-out scenes")
    ap.add_argument("--threshold", default="0.3")
    ap.add_argument("--out", default="runs/review_round")
    args = ap.parse_args()
    import soundfile as sf

    from clapnb import event_metrics, events, review, scene
    from clapnb.cli import main as clapnb

    def run(*argv: str) -> None:
        if clapnb(list(argv)) != 0:
            raise SystemExit(f"clapnb {argv[0]} failed")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    labels = args.labels.split(",")
    meta = pd.read_csv(SHARED / "meta.csv")
    d = meta[meta["original_label"].isin(labels)].drop_duplicates(["original_label", "freesound_id"])
    d = d.sort_values("path").copy()
    d["path"] = [str(SHARED / p) for p in d["path"]]
    rank = d.groupby("original_label").cumcount()
    n = args.n_probe
    parts = {"probe": d[rank < n], "review": d[(rank >= n) & (rank % 2 == 0)], "held": d[(rank >= n) & (rank % 2 == 1)]}
    for k, v in parts.items():
        v.to_csv(out / f"{k}.csv", index=False)
    site = out / "site"
    site.mkdir(exist_ok=True)
    for k, db in enumerate(np.linspace(-50, -30, 6)):
        sf.write(site / f"site_{k}.wav", scene.noise(44100 * 10, "pink", float(db), 100 + k), 44100)
    L = f"L{int(float(args.length)):02d}"
    runs = out / L
    cache = str(out / "cache")
    det = ["--threshold", args.threshold, "--hop", str(float(args.length) / 2), "--merge-gap", "2", "--min-duration",
           "2", "--no-progress", "--cache", cache]
    if not (runs / "probe.pt").is_file():
        run("segments", "--data", str(out / "probe.csv"), "--label-column", "original_label", "--background", str(site),
            "--length", args.length, "--counts", "12,3,3,3", "--out", str(runs))
        run("embed", "--segments", str(runs / "segments.parquet"), "--backbone", args.backbone, "--cache", cache,
            "--no-progress")
        run("probe", "--run", str(runs), "--no-progress")
    for name, seed, k in (("review", 11, args.n_review), ("held", 22, args.n_held)):
        run("scene", "--events", str(out / f"{name}.csv"), "--label-column", "original_label", "--duration", "40",
            "--n-events", "4", "--snr", "10,25", "--noise-dbfs", "-40", "--n-scenes", str(k), "--seed", str(seed),
            "--out", str(out / f"scenes_{name}"))
        shutil.rmtree(out / f"det_{name}", ignore_errors=True)
        run("detect", "--probe", str(runs / "probe.pt"), *det, "--out", str(out / f"det_{name}"), str(out / f"scenes_{name}"))
    truth = pd.read_csv(out / "scenes_review" / "truth.csv")
    r = review.Review(out / "det_review", "script")
    counts = review.answer_from_reference(r, truth)
    run2 = out / f"{L}_reviewed"
    shutil.rmtree(run2, ignore_errors=True)
    shutil.copytree(runs, run2)
    run("probe", "--run", str(run2), "--no-progress", "--extra-labels", str(out / "det_review" / "reviewed.parquet"))
    shutil.rmtree(out / "det_held_after", ignore_errors=True)
    run("detect", "--probe", str(run2 / "probe.pt"), *det, "--out", str(out / "det_held_after"), str(out / "scenes_held"))
    held_truth = pd.read_csv(out / "scenes_held" / "truth.csv")
    classes = sorted(set(held_truth["class"]) | set(truth["class"]))

    def judged(det_dir: Path) -> tuple[pd.DataFrame, float | None]:
        rv = review.Review(det_dir, "script", path=det_dir / "reviewed_truth.parquet")
        review.answer_from_reference(rv, held_truth)
        ev = events.read_events(det_dir / "events.csv")
        durations = {f["file"]: f["duration_s"] for f in json.loads((det_dir / "detect.json").read_text())["files"]}
        f1 = event_metrics.segment_based(held_truth, ev, classes, durations)["micro"]["f_measure"]
        return review.precision_by_class(rv.table), f1

    p0, f0 = judged(out / "det_held")
    p1, f1 = judged(out / "det_held_after")
    files = sorted(truth["file"].unique())
    lv = {}
    for name, table in (("detected", out / "det_review" / "events.csv"),
                        ("reviewed", out / "det_review" / "reviewed.parquet"), ("truth", out / "scenes_review" / "truth.csv")):
        run("levels", "--audio", *files, "--events", str(table), "--exclude", "all", "--interval", "40s",
            "--out", str(out / f"levels_{name}"))
        t = pd.read_csv(out / f"levels_{name}" / "levels.csv").query("scope == 'total'").iloc[0]
        lv[name] = {"LAeq_dBFS": round(float(t["LAeq_dBFS"]), 2), "LAeq_excl_dBFS": round(float(t["LAeq_excl_dBFS"]), 2),
                    "LA90_excl_dBFS": round(float(t["LA90_excl_dBFS"]), 2), "excluded_pct": round(float(t["excluded_pct"]), 1)}
    # the book's Review page of this round (held-out detections judged from their truth, before/after)
    from clapnb import review_book

    rounds = review_book.read_rounds([out / "det_held" / "reviewed_truth.parquet",
                                      out / "det_held_after" / "reviewed_truth.parquet"])
    page_dir = out / "review_page"
    page_dir.mkdir(exist_ok=True)
    review_book.curves_figure(rounds).savefig(page_dir / review_book.FIGURE)
    (page_dir / "review.md").write_text(review_book.review_page(rounds))
    extra = json.loads((run2 / "probe.json").read_text())["extra_labels"]
    summary = {"backbone": args.backbone, "length_s": float(args.length), "labels": labels,
               "review_answers": counts, "review_round_precision": review.precision_by_class(r.table).to_dict("records"),
               "held_out_precision_before": p0.to_dict("records"), "held_out_precision_after": p1.to_dict("records"),
               "held_out_segment_f1": {"before": f0, "after": f1},
               "extra_labels": {k: extra[k] for k in ("n_windows", "windows_per_class", "n_answers")},
               "extra_labels_dropped_as_leaks": len(extra.get("dropped", [])),
               "review_page": str(page_dir / "review.md"),
               "levels_of_reviewed_scenes": lv}
    print(json.dumps(summary, indent=2, default=str))
    (out / "review_round.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
