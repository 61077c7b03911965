"""``clapnb predict``: classify audio files with a trained probe (probe.pt)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="classify audio files with a trained linear probe",
        description="Cut each file into the probe's segment length, embed the segments with the "
                    "backbone the probe was trained on, and average the class probabilities.")
    p.add_argument("--probe", required=True, metavar="PATH", help="probe.pt written by 'clapnb probe'")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (anything libsndfile reads)")
    p.add_argument("--top", type=int, default=3, help="classes shown per file (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (for the backbone)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clapnb import probe

    table = probe.predict_files(args.probe, args.files, device=args.device)
    loaded = probe.load_probe(args.probe)
    classes = loaded.classes
    b = dict(loaded.backbone or {})
    if b.get("notice"):
        print(f"backbone {b.get('name')}: {b.get('display_name', '')}; {b['notice']}")
    if table.attrs.get("random_weights"):
        print("WARNING: random-weights stand-in backbone: predictions are meaningless")
    for row in table.itertuples(index=False):
        order = np.argsort(-row.probs, kind="stable")[:max(1, args.top)]
        ranked = "  ".join(f"{classes[i]} {100 * row.probs[i]:.1f} %" for i in order)
        print(f"{row.path}\t{row.n_segments} segment(s)\t{ranked}")
    return 0
