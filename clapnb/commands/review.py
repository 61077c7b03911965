"""``clapnb review``: the operator review without JupyterLab: progress, precision, Audacity/Raven round trip."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "review", help="review detected events outside JupyterLab: export to / import from Audacity or Raven, "
                       "progress and precision per class",
        description="Answers go to DIR/reviewed.parquet (clapnb.review; in JupyterLab: clapnb.review.open(DIR) or "
                    "notebooks/06_review.md). --export writes the queue as Audacity label files or one Raven "
                    "selection table; after editing them (change a label, delete a false alarm, move a boundary, "
                    "draw a missed event) --import turns the edits into answers. Without either: progress and "
                    "precision per class of the answers so far.")
    p.add_argument("--detect", required=True, metavar="DIR", help="output folder of `clapnb detect`")
    p.add_argument("--reviewer", default=None, help="name saved with the answers (default: the login name)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--export", metavar="OUT", help="write the queue for a desktop tool into OUT")
    act.add_argument("--import", dest="import_dir", metavar="OUT", help="read the edited files of an --export")
    p.add_argument("--format", default="audacity", choices=["audacity", "raven"], help="for --export (default audacity)")
    p.add_argument("--unchanged", default="accept", choices=["accept", "keep"],
                   help="with --import: a label left as it was is accepted (default) or left unanswered")
    p.add_argument("--sort", default="score", help="queue order: score, uncertainty, level, time (default score)")
    p.add_argument("--levels", metavar="EVENTS_LEVELS_CSV", help="events_levels.csv of `clapnb levels` (sort level)")
    p.add_argument("--class", dest="classes", action="append", metavar="CLASS", help="only this detected class (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import getpass

    from clapnb import review

    r = review.Review(args.detect, args.reviewer or getpass.getuser(), sort=args.sort, levels=args.levels,
                      classes=args.classes)
    if args.export:
        out = review.export_queue(r, args.export, args.format)
        print(f"wrote {len(review._exported_rows(r))} event(s) for {args.format} to {out} (+ {review.EXPORT_MANIFEST}); "
              f"edit them, then: clapnb review --detect {args.detect} --import {out}")
    elif args.import_dir:
        counts = review.import_edits(r, args.import_dir, unchanged=args.unchanged)
        print("imported: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; saved to {r.path}")
    print(r.progress_text())
    prec = review.precision_by_class(r.table)
    for row in prec.itertuples(index=False):
        print(f"  {row[0]}: precision {100 * row.precision:.0f} % ({row.confirmed} of {row.judged} answered detections)")
    return 0
