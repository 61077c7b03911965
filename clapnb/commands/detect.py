"""``clapnb detect``: find sound events (class, onset, offset) in long recordings with a trained probe."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "detect", help="find sound events in long recordings with a trained probe (events table + exports)",
        description="Stream each input in windows of the probe's segment length every --hop seconds, embed them "
                    "with the probe's backbone and mode (cached by file content: changing a threshold or "
                    "retraining the probe never re-embeds), average the window probabilities on a fixed grid "
                    "(the score timeline) and turn each class's timeline into events (threshold, median filter, "
                    "merge gap, minimum duration, padding). Writes DIR/events.csv + events.parquet, scores.parquet, "
                    "audacity/<file>.txt, raven_selections.txt and detect.json. A killed run resumes where it "
                    "stopped. Unreadable files are skipped with the reason (exit status 1 when any was skipped).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders (searched recursively) or manifest CSVs (path column)")
    p.add_argument("--probe", required=True, metavar="PROBE.pt", help="probe.pt written by 'clapnb probe'")
    p.add_argument("--out", default="detections", metavar="DIR", help="output folder (default: detections)")
    p.add_argument("--hop", type=float, default=None, metavar="S", help="hop between windows in s (default: half the window)")
    p.add_argument("--grid", type=float, default=None, metavar="S", help="timeline cell in s (default: min(hop, 1 s))")
    p.add_argument("--aggregate", choices=["mean", "max"], default="mean",
                   help="how overlapping windows make a cell's score (default mean)")
    p.add_argument("--threshold", type=float, default=0.5, help="class probability for an event (default 0.5)")
    p.add_argument("--class-threshold", action="append", default=[], metavar="CLASS=P",
                   help="per-class threshold (repeatable), e.g. dogs=0.7")
    p.add_argument("--median", type=float, default=0.0, metavar="S", help="median filter of the scores over S seconds (default 0: off)")
    p.add_argument("--min-duration", type=float, default=0.0, metavar="S", help="drop events shorter than S (default 0)")
    p.add_argument("--merge-gap", type=float, default=0.0, metavar="S", help="merge events of a class closer than S (default 0)")
    p.add_argument("--pad", type=float, default=0.0, metavar="S", help="extend each event by S on both sides (default 0)")
    p.add_argument("--open-set-threshold", type=float, default=0.5,
                   help="without a background class in the probe: no event where the best class's probability "
                        "is below this (default 0.5)")
    p.add_argument("--start-time-from-name", default=None, metavar="FORMAT",
                   help="read each file's start time from its name with this strptime format, e.g. %%Y%%m%%d_%%H%%M%%S "
                        "(default: WAV/BWF bext metadata when present)")
    p.add_argument("--cache", default=None, metavar="DIR", help="embedding cache (default $CLAPNB_CACHE or ~/.cache/clapnb)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (for the backbone)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--scheduler", default=None, metavar="local|tcp://HOST:PORT",
                   help="run the work units on Dask: 'local' starts a LocalCluster of --workers processes, "
                        "tcp://HOST:PORT uses a running Dask scheduler (default: this process)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (with --scheduler local, default 2; without --scheduler: N local processes)")
    p.add_argument("--chunk", default=None, metavar="DURATION",
                   help="split long files into work units of this duration, e.g. 1h or 30min (default: one unit per file); "
                        "results are identical with or without")
    p.add_argument("--dry-run", action="store_true",
                   help="only print the cost estimate (windows x measured s/window / workers, storage) and exit")
    p.add_argument("--no-estimate", action="store_true", help="do not measure and print the cost estimate first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import detect
    from clapnb.errors import InputError

    post = detect.PostConfig(grid_s=args.grid, aggregate=args.aggregate, threshold=args.threshold,
                             class_thresholds=detect.parse_class_thresholds(args.class_threshold),
                             median_s=args.median, min_duration_s=args.min_duration, merge_gap_s=args.merge_gap,
                             pad_s=args.pad, open_set_threshold=args.open_set_threshold)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    from clapnb import archive
    from clapnb.dask_executor import make_executor

    chunk_s = archive.parse_duration(args.chunk)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be 1 or more, got {args.workers}")
    workers = args.workers or (2 if args.scheduler == "local" else 1)
    executor = None if args.dry_run else make_executor(args.scheduler, workers)
    try:
        result = detect.detect_files(args.probe, args.inputs, args.out, hop_s=args.hop, post=post,
                                     name_format=args.start_time_from_name, device=args.device, cache_dir=args.cache,
                                     batch_size=args.batch_size, progress=not args.no_progress, executor=executor,
                                     chunk_s=chunk_s, estimate=not args.no_estimate, dry_run=args.dry_run,
                                     estimate_workers=workers)
    finally:
        if executor is not None:
            executor.close()
    if args.dry_run:
        print(archive.estimate_line(result.record["estimate"]) if result.record["estimate"] else "estimate: no input")
        return 0
    print(detect.summary(result))
    print(f"outputs in {args.out}: events.csv, events.parquet, scores.parquet, audacity/, raven_selections.txt, detect.json")
    if result.n_skipped == result.record["n_files"]:
        raise InputError(f"none of the {result.n_skipped} input file(s) could be analysed (reasons above and in "
                         f"{args.out}/detect.json)")
    return 1 if result.n_skipped else 0
