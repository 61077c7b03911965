"""``clapnb levels``: LAeq/LAFmax/LA10/LA50/LA90 per interval with and without spurious events, per-event levels."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "levels", help="sound levels per interval with spurious events excluded (LAeq, LAFmax, LA90, per event)",
        description="Frequency- (A/C/Z) and time- (F/S) weighted levels per IEC 61672-1, streamed over long "
                    "recordings: LAeq, LAFmax, LA10/50/90 per interval and for the whole measurement, with and "
                    "without the spans of an events table; per event LAE, LAFmax and its contribution. Without "
                    "a calibration every level is in dB re full scale (dBFS), not dB SPL.")
    p.add_argument("--audio", nargs="+", required=True, metavar="INPUT", help="recordings of one measurement (files, or folders searched recursively)")
    p.add_argument("--out", required=True, help="output folder (levels.csv/.parquet, events_levels.csv, levels.json)")
    p.add_argument("--events", help="events table (csv/parquet: file, onset_s, offset_s, class[, score])")
    p.add_argument("--exclude", help="classes whose spans are excluded: 'all' or CLASS,CLASS (needs --events)")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="use only events with score >= this (default 0: all rows of the table)")
    p.add_argument("--interval", default="10min", help="reporting interval: seconds or 60s, 10min, 1h (1 s ... 1 h; "
                                                       "default 10min)")
    p.add_argument("--weighting", default="A", choices=["A", "C", "Z"], help="frequency weighting (default A)")
    p.add_argument("--rate", type=int, default=10, help="LAF samples per second for the percentiles (default 10)")
    p.add_argument("--min-valid", type=float, default=0.5,
                   help="an interval is valid when this fraction of it is left after exclusions (default 0.5)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--residual-percentile", type=int, choices=[10, 50, 90],
                     help="ISO 1996-2 residual correction with Lres = this percentile of the interval "
                          "(after exclusions); e.g. 90 for LA90")
    res.add_argument("--residual-db", type=float, help="ISO 1996-2 residual correction with this Lres (same unit)")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--calibration-tone", metavar="FILE", help="recording of a sound calibrator (same chain)")
    cal.add_argument("--sensitivity", type=float, help="sample value (full scale 1.0) per pascal")
    cal.add_argument("--offset-db", type=float, help="dB to add to dBFS to get dB SPL")
    p.add_argument("--tone-db", type=float, default=94.0, help="calibrator level, dB re 20 uPa (default 94)")
    p.add_argument("--tone-hz", type=float, default=1000.0, help="calibrator frequency (default 1000)")
    p.add_argument("--channel", type=int, default=0, help="channel to measure (default 0: the first)")
    p.add_argument("--start-time-from-name", metavar="FORMAT",
                   help="recordings' start from their names, e.g. %%Y%%m%%d_%%H%%M%%S (else BWF bext if present)")
    p.add_argument("--allow-clipping", action="store_true",
                   help="measure clipped recordings anyway (clipped samples are counted per interval)")
    p.add_argument("--percentiles-from", default="F", choices=["F", "S", "eq"],
                   help="samples of LA10/50/90: F (LAF, default) or S (LAS) at each step's end, or eq (each step's LAeq)")
    p.add_argument("--holdoff", type=float, default=None,
                   help="seconds after each excluded span also left out of the percentile samples and LAFmax (the "
                        "detector's decay; default 5 time constants: 0.625 for F, 5 for S, 0 for eq)")
    p.add_argument("--block-s", type=float, default=10.0, help="seconds of audio read at once (default 10)")
    p.add_argument("--scheduler", default=None, metavar="local|tcp://HOST:PORT",
                   help="measure the files on Dask, one file per work unit: 'local' starts a LocalCluster of "
                        "--workers processes, tcp://HOST:PORT uses a running Dask scheduler (default: this process)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (with --scheduler local, default 2; without --scheduler: N local processes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from clapnb import calibration, levels
    from clapnb.errors import InputError

    interval = levels.parse_interval(args.interval, args.rate)
    if not 0 <= args.min_valid <= 1:
        raise InputError(f"--min-valid {args.min_valid}: must lie between 0 and 1")
    if args.rate < 1 or args.rate > 100:
        raise InputError(f"--rate {args.rate}: give 1 ... 100 samples per second")
    if args.calibration_tone:
        cal = calibration.from_tone(args.calibration_tone, args.tone_db, args.tone_hz, channel=args.channel)
    elif args.sensitivity is not None:
        cal = calibration.from_sensitivity(args.sensitivity)
    elif args.offset_db is not None:
        cal = calibration.from_offset(args.offset_db)
    else:
        cal = calibration.NONE
    residual = args.residual_percentile if args.residual_percentile is not None else args.residual_db
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be 1 or more, got {args.workers}")
    executor = None
    if args.scheduler or (args.workers or 1) > 1:
        from clapnb.dask_executor import lazy_executor

        def dashboard(ex) -> None:
            link = getattr(ex, "dashboard_link", None)
            if link:
                print(f"Dask dashboard: {link}", file=sys.stderr, flush=True)

        # started when the inputs have been checked (bad input is refused before a cluster starts)
        executor = lazy_executor(args.scheduler, args.workers or (2 if args.scheduler == "local" else 1),
                                 on_start=dashboard)
    try:
        result = levels.run_levels(
            [os.path.abspath(a) for a in args.audio], args.out, events_path=args.events, exclude=args.exclude,
            interval_s=interval, interval_text=args.interval, weighting=args.weighting, rate=args.rate,
            min_valid=args.min_valid, residual=residual, calibration=cal, channel=args.channel,
            start_time_format=args.start_time_from_name, allow_clipping=args.allow_clipping, block_s=args.block_s,
            holdoff_s=args.holdoff, min_score=args.min_score, basis=args.percentiles_from,
            progress=lambda i, n, p: print(f"levels: {i}/{n} {p}", file=sys.stderr), executor=executor)
    finally:
        if executor is not None:
            executor.close()
    print(f"wrote {result['levels_csv']}, {result['events_csv']}, {result['json']} "
          f"({result['n_intervals']} intervals, unit {cal.unit}{'' if cal.calibrated else ': NOT calibrated'})")
    total = result["table"].query("scope == 'total'").iloc[0]
    W, u = args.weighting, cal.unit
    line = f"whole measurement: L{W}eq {total[f'L{W}eq_{u}']:.1f} {u}, L{W}90 {total[f'L{W}90_{u}']:.1f} {u}"
    if f"L{W}eq_excl_{u}" in total:
        line += (f"; with the excluded events removed ({total['excluded_pct']:.1f} % of the time): "
                 f"L{W}eq {total[f'L{W}eq_excl_{u}']:.1f} {u}, L{W}90 {total[f'L{W}90_excl_{u}']:.1f} {u}")
    print(line)
    return 0
