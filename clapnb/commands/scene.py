"""``clapnb scene``: compose test scenes (events mixed into a background at chosen SNRs) + truth table."""

from __future__ import annotations

import argparse


def _snr(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--snr wants DB or LOW,HIGH in dB, got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"--snr wants DB or LOW,HIGH in dB, got {text!r}")
    return parts[0], parts[1]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scene", help="compose test scenes: event clips mixed into a background at chosen SNRs, with a truth table",
        description="Mix event clips (a class-folder tree or a manifest, as for 'clapnb segments') into a "
                    "background recording of your site, or generated noise, at SNRs drawn from a range "
                    "(local SNR: event power over background power during the event). Writes "
                    "OUT/scene_000.wav..., OUT/truth.csv (file, onset_s, offset_s, class, snr_db, source_path: "
                    "the reference format of 'clapnb score-events') and OUT/scene.json. Seeded.")
    p.add_argument("--events", required=True, metavar="DATA",
                   help="event clips: class folder or manifest CSV (as --data of 'clapnb segments')")
    p.add_argument("--label-column", default="label", help="label column of a manifest CSV (default: label)")
    p.add_argument("--mapping", default=None, help="label mapping (built-in name or YAML), as for 'clapnb segments'")
    p.add_argument("--drop-unmapped", action="store_true", help="leave out labels the mapping does not know")
    p.add_argument("--exclude-segments", default=None, metavar="SEGMENTS.parquet",
                   help="leave out every clip whose recording group (or file) is in this segments table, "
                        "e.g. the probe's training data: scenes then test held-out recordings only")
    p.add_argument("--background", default=None, metavar="AUDIO",
                   help="background recording (tiled or cut to --duration); default: generated noise")
    p.add_argument("--noise", default="pink", choices=["white", "pink", "brown"],
                   help="colour of the generated background (default pink)")
    p.add_argument("--noise-dbfs", type=float, default=-40.0, help="RMS of the generated background in dBFS (default -40)")
    p.add_argument("--duration", type=float, default=60.0, help="scene duration in s (default 60)")
    p.add_argument("--n-events", type=int, default=3, help="events per scene (default 3)")
    p.add_argument("--snr", type=_snr, default=(0.0, 20.0), metavar="LOW,HIGH",
                   help="SNR range in dB, drawn uniformly per event (default 0,20; one value: fixed)")
    p.add_argument("--event-duration", type=float, default=None, metavar="S",
                   help="tile each clip to this many seconds (long events); default: the trimmed clip")
    p.add_argument("--min-gap", type=float, default=2.0, help="minimum silence between events and at the ends (s)")
    p.add_argument("--n-scenes", type=int, default=1, help="how many scenes (scene k uses seed + k)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--start-time", default=None, metavar="ISO",
                   help="write this start time into each WAV's BWF bext chunk (scene k starts k x duration later)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from clapnb import datasets, scene
    from clapnb.errors import InputError

    recordings, _ = datasets.load_recordings(args.events, label_column=args.label_column, mapping=args.mapping,
                                             drop_unmapped=args.drop_unmapped)
    clips = recordings.dropna(subset=["class"])
    if args.exclude_segments:
        from clapnb.segments import read_segments

        used = read_segments(args.exclude_segments)
        keep = ~clips["group"].isin(set(used["group"])) & ~clips["sha256"].isin(set(used["sha256"]))
        print(f"left out {int((~keep).sum())} clip(s) whose recordings are in {args.exclude_segments}")
        clips = clips[keep]
    if not len(clips):
        raise InputError(f"--events {args.events}: no usable event clip with a class")
    start = None
    if args.start_time:
        try:
            start = pd.Timestamp(args.start_time)
        except ValueError:
            raise InputError(f"--start-time {args.start_time!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00)") from None
    config = scene.SceneConfig(duration_s=args.duration, n_events=args.n_events, snr_db=args.snr,
                               min_gap_s=args.min_gap, event_duration_s=args.event_duration, noise=args.noise,
                               noise_dbfs=args.noise_dbfs, seed=args.seed)
    if args.n_scenes < 1:
        raise InputError(f"--n-scenes must be >= 1, got {args.n_scenes}")
    truth = scene.compose_scenes(clips, args.out, config, n_scenes=args.n_scenes, background=args.background,
                                 start_time=start)
    print(f"wrote {args.n_scenes} scene(s) of {args.duration:g} s with {len(truth)} event(s) "
          f"(SNR {args.snr[0]:g}..{args.snr[1]:g} dB) to {args.out}; truth table {args.out}/truth.csv")
    return 0
