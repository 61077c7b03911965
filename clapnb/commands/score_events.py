"""``clapnb score-events``: event-based, segment-based, class-agnostic F1 and PSDS against a reference."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score-events", help="score detected events against reference annotations (F1, PSDS)",
        description="Event-based F1 per class, micro and macro (sed_eval; onset collar and offset tolerance), "
                    "segment-based F1 (1-s segments), class-agnostic detection F1 and PSDS from the score "
                    "timeline (sed_scores_eval). The reference is a CSV (file, onset_s, offset_s, class), an "
                    "Audacity label file or a Raven selection table. Writes the numbers to --out (JSON).")
    p.add_argument("--events", required=True, help="events.csv/events.parquet, or the 'clapnb detect' output folder")
    p.add_argument("--reference", required=True, help="reference annotations: CSV, Audacity labels or Raven table")
    p.add_argument("--collar", type=float, default=1.0, metavar="S",
                   help="onset collar in s (default 1.0: suits multi-second windows on a 1-s grid)")
    p.add_argument("--offset-tolerance", type=float, default=0.5, metavar="FRACTION",
                   help="offset tolerance as a fraction of the reference event's length, at least the collar "
                        "(default 0.5)")
    p.add_argument("--segment", type=float, default=1.0, metavar="S", help="segment length of segment-based F1 (default 1)")
    p.add_argument("--scores", default=None, help="score timeline for PSDS (default: scores.parquet beside the events)")
    p.add_argument("--folder", default=None, help="where a Raven table's 'Begin File' names live")
    p.add_argument("--out", default=None, help="JSON file for the results (default: score_events.json beside the events)")
    p.set_defaults(func=run)


def _fmt(x) -> str:
    return "  n/a" if x is None else f"{x:5.3f}"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clapnb import io
    from clapnb.event_metrics import score_events

    res = score_events(args.events, args.reference, collar_s=args.collar, offset_tolerance=args.offset_tolerance,
                       segment_s=args.segment, scores_path=args.scores, folder=args.folder)
    out = Path(args.out) if args.out else Path(res["events"]).parent / "score_events.json"
    io.atomic_write_json(out, res)
    if res["random_weights"]:
        print("WARNING: RANDOM-WEIGHTS stand-in backbone: these scores are meaningless (plumbing only)")
    for note in res["notes"]:
        print(f"note: {note}")
    eb, sb, ca = res["event_based"], res["segment_based"], res["class_agnostic"]
    print(f"{res['n_files']} file(s), {eb['n_reference']} reference / {eb['n_estimated']} detected event(s); "
          f"collar {args.collar:g} s, offset tolerance {args.offset_tolerance:g}")
    print(f"event-based F1    micro {_fmt(eb['micro']['f_measure'])}  macro {_fmt(eb['macro']['f_measure'])}")
    print(f"segment-based F1  micro {_fmt(sb['micro']['f_measure'])}  macro {_fmt(sb['macro']['f_measure'])} "
          f"({args.segment:g}-s segments)")
    print(f"class-agnostic detection F1 {_fmt(ca['f_measure'])} (P {_fmt(ca['precision'])}, R {_fmt(ca['recall'])})")
    if res["psds"] is not None:
        print(f"PSDS {res['psds']['psds']:.3f} (DTC {res['psds']['dtc']}, GTC {res['psds']['gtc']}, "
              f"alpha_ST {res['psds']['alpha_st']})")
    for c, v in eb["per_class"].items():
        print(f"  {c:<28} F1 {_fmt(v['f_measure'])}  ({v['n_reference']} ref, {v['n_estimated']} detected)")
    print(f"wrote {out}")
    return 0
