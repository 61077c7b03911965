"""``clapnb zeroshot``: classify a run's embeddings against text prompts; writes zeroshot.json."""

from __future__ import annotations

import argparse

from clapnb import config


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "zeroshot", help="zero-shot classification of a run's embeddings (CLAP backbones; birdnet: its own labels as-is)",
        description="Compare each segment's audio embedding with text embeddings of the class "
                    "prompts; write DIR/zeroshot.json (accuracy with bootstrap CI, paper-style and "
                    "calibrated loss per split) and DIR/zeroshot_predictions.parquet.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder holding segments.parquet and embeddings")
    p.add_argument("--template", default=argparse.SUPPRESS,
                   help="prompt template with one '{}' for the class description "
                        "(default: msclap's 'this is the sound of {}')")
    p.add_argument("--ensemble", action="store_true",
                   help="average the text embeddings of the class prompt and its synonyms")
    p.add_argument("--classes", choices=("all", "present"), default="all",
                   help="candidate classes: all 21 of the paper (default) or only those present in the data")
    config.add_options(p, "zeroshot")  # --seed (the bootstrap), --device (the text encoder)
    p.add_argument("--asis-mapping", default=None, metavar="YAML",
                   help="backbones without text but with their own labels (birdnet) are evaluated as-is: their "
                        "labels mapped to study classes by this YAML (default: the one shipped, "
                        "clapnb/mappings/birdnet_asis.yaml; copy and edit it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import zeroshot
    from clapnb.store import LengthFolder

    template = getattr(args, "template", zeroshot.DEFAULT_TEMPLATE)
    record = zeroshot.run_zeroshot(args.run, template=template, ensemble=args.ensemble,
                                   class_set=args.classes, device=config.option_value(args, "device"),
                                   seed=config.option_value(args, "seed"),
                                   if_no_text="record", asis_mapping=args.asis_mapping)
    lf = LengthFolder(args.run)
    out = lf.zeroshot
    if not record["applicable"]:
        raise zeroshot.ZeroShotNotApplicable(f"{record['reason']} (recorded in {out})")
    if record.get("method") == "as-is":
        b = record["backbone"]
        print(f"{record['label']} ({b.get('display_name', b.get('name'))}; {b.get('notice', '')}): its own labels "
              f"mapped by {record['mapping']}; left out (no label): {', '.join(record['classes_without_label']) or 'none'}")
    if record["random_weights"]:
        print("WARNING: random-weights stand-in backbone: these numbers are a plumbing check, NOT CLAP results")
    elif record.get("method") != "as-is":  # as-is has no template: its line is above
        print(f"zero-shot, {len(record['classes'])} classes, template {record['template']!r}"
              + (" + synonyms" if record["ensemble"] else ""))
    for split, m in record["metrics"].items():
        ci = m["accuracy_ci"]
        cal = "n/a" if m.get("loss_calibrated") is None else f"{m['loss_calibrated']:.3f}"
        print(f"  {split:<11} n={m['n']:<5} accuracy {100 * m['accuracy']:6.2f} % "
              f"[{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]  loss paper-style {m['loss_paper_style']:.3f}"
              f"  calibrated {cal}" + ("  [RANDOM WEIGHTS]" if record["random_weights"] else ""))
    if record.get("background_note"):
        print(f"  note: {record['background_note']}")
    print(f"wrote {out} and {lf.zeroshot_predictions}")
    return 0
