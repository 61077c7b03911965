"""``clapnb book``: the Jupyter Book of one run (executed notebooks + Tables 2 and 3)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "book", help="build the Jupyter Book of a run and print the path of index.html",
        description="Assemble the run's executed notebooks and its results (Tables 2 and 3 next to the "
                    "paper's values, accuracy vs length) into a Jupyter Book and build it with warnings "
                    "as errors. Nothing is re-executed.")
    p.add_argument("--run", required=True, help="run folder written by 'clapnb sweep' (holds results.json)")
    p.add_argument("--out", default=None, help="build folder (default: RUN/book; the HTML goes to OUT/_build/html)")
    p.add_argument("--detect", default=None, metavar="DIR",
                   help="add the Detection page: notebook 05 executed on this 'clapnb detect' output folder")
    p.add_argument("--reference", default=None, metavar="REF",
                   help="with --detect: reference annotations to evaluate against (CSV, Audacity, Raven)")
    p.add_argument("--review", action="append", default=None, metavar="REVIEWED",
                   help="add the Review page: a reviewed.parquet (or the detect folder holding it); repeat it for "
                        "later rounds (e.g. the retrained probe's detection, reviewed) to show how each class's "
                        "precision changed")
    p.add_argument("--compare", default=None, metavar="RUN2[,RUN3...]",
                   help="runs of the same data with other backbones (e.g. a birdnet and an mfcc sweep): the "
                        "Results page shows them side by side with this one, per length, with CIs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from clapnb import book
    from clapnb.errors import InputError

    if args.reference and not args.detect:
        raise InputError("--reference applies to the Detection page: give --detect DIR too")
    compare = [c.strip() for c in args.compare.split(",") if c.strip()] if args.compare else None
    index = book.build(book.assemble(args.run, args.out, detect=args.detect, reference=args.reference,
                                     compare=compare, review=args.review))
    print(f"book: {book.size_bytes(index.parent) / 1e6:.1f} MB in {index.parent}", file=sys.stderr)
    print(index)
    return 0
