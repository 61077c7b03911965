"""``clapnb segments``: recordings -> segments.parquet + dataset.json for one length."""

from __future__ import annotations

import argparse
import sys
import time

from clapnb import config
from clapnb.errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segments", help="cut recordings into L-second segments with leakage-free splits",
        description="Build DIR/segments.parquet and DIR/dataset.json: recordings are split by group "
                    "(train/validation/early_stop/test), cut into L-s segments, and each class and "
                    "split is subsampled or topped up with noise-augmented copies to the target counts.")
    config.add_options(p, "segments", required=("data",))
    p.add_argument("--group-column", default=None,
                   help="manifest column naming the source recording (default: group, else freesound_id, else the file)")
    p.add_argument("--group-pattern", default=None, metavar="REGEX",
                   help="regex searched in each file name (no suffix) whose (?P<group>...) or only group, else "
                        "whole match, names the source recording: files of one group never land in two splits. "
                        "Default: ESC-50 (fold-freesoundID-take-target) and UrbanSound8K "
                        "(fsID-classID-occurrenceID-sliceID) names give the freesound ID, other files are their own group")
    p.add_argument("--channel", default="mix", metavar="mix|left|right|N",
                   help="what a multi-channel file contributes: mix (average of the channels, default), left, "
                        "right or a 0-based channel number")
    p.add_argument("--silence-threshold", type=float, default=-60.0, metavar="DBFS",
                   help="recordings whose loudest sample is at or below this level (dB re full scale) are "
                        "near-silent and left out, as is digital silence (default -60)")
    p.add_argument("--keep-silent", action="store_true", help="keep silent and near-silent recordings")
    p.add_argument("--min-duration", type=float, default=0.05, metavar="S",
                   help="recordings shorter than this many seconds are left out (default 0.05)")
    p.add_argument("--strict", action="store_true",
                   help="fail on any file that would be left out (unreadable, empty, NaN, truncated, too short, "
                        "silent, duplicate) instead of skipping it")
    p.add_argument("--length", required=True, help="segment length L in whole seconds (e.g. 1..10)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--hop", type=float, default=None, help="hop between segment starts in s (default: L, no overlap)")
    p.add_argument("--cache-dir", default=None, help="where downloads and extracted archives go (default: $CLAPNB_CACHE or ~/.cache/clapnb)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import bandwidth as bw
    from clapnb import audio, datasets, inputs, io, segments

    t0 = time.perf_counter()
    # the one validation of the study parameters, before reading any file
    study = config.from_mapping({k: config.option_value(args, k) for k in (
        "data", "label_column", "path_column", "source_column", "mapping", "drop_unmapped", "harmonise_bandwidth",
        "drop_empty_classes", "counts", "snr_db", "seed", "background")}, what="the options",
        base=config.StudyConfig())
    args.length = config.check_length(args.length)
    args.counts = study.count_tuple
    harmonise = study.harmonise_bandwidth
    for name in ("data", "label_column", "path_column", "source_column", "mapping", "drop_unmapped",
                 "drop_empty_classes", "snr_db", "seed", "background"):
        setattr(args, name, getattr(study, name))
    inputs.check_inputs(data=args.data, label_column=args.label_column, path_column=args.path_column,
                        group_column=args.group_column, source_column=args.source_column,
                        cache_dir=args.cache_dir)
    audio.canonical_channel(args.channel)
    datasets.compile_group_pattern(args.group_pattern)
    io.writable_dir(args.out, "--out")
    recordings, report = datasets.load_recordings(
        args.data, label_column=args.label_column, mapping=args.mapping, drop_unmapped=args.drop_unmapped,
        strict=args.strict, group_column=args.group_column, cache_dir=args.cache_dir,
        source_column=args.source_column, path_column=args.path_column, group_pattern=args.group_pattern,
        channel=args.channel, silence_dbfs=args.silence_threshold, keep_silent=args.keep_silent,
        min_duration_s=args.min_duration)
    for e in report["excluded"][:5]:
        print(f"excluded: {e['reason']}")
    if len(report["excluded"]) > 5:
        print(f"excluded: ... {len(report['excluded']) - 5} more (listed in dataset.json)")
    for w in report["warnings"]:
        print(f"warning: {w['reason']}")
    grouping = report["grouping"]
    if grouping.get("unmatched"):
        print(f"warning: --group-pattern matched {grouping.get('pattern', 0)} file name(s), not "
              f"{grouping['unmatched']}: those are grouped by their dataset name or are their own group")
    elif any(k in grouping for k in ("ESC-50", "UrbanSound8K")):
        print("groups from file names: " + ", ".join(f"{grouping[k]} {k}" for k in ("ESC-50", "UrbanSound8K")
                                                     if k in grouping) + " (freesound recording)")
    if report["unmapped_labels"]:
        print(f"unmapped labels left out: {', '.join(report['unmapped_labels'])}")
    if args.background:
        import pandas as pd

        background, bg_report = datasets.load_background(args.background)
        for e in bg_report["excluded"][:5]:
            print(f"excluded (background): {e['reason']}")
        recordings = pd.concat([recordings, background], ignore_index=True)
        report["excluded"] = report["excluded"] + bg_report["excluded"]
        print(f"background: {len(background)} recording(s) from {args.background} (class 'background')")
    if recordings["class"].notna().sum() == 0:
        raise InputError(f"--data {args.data}: no readable recording has a class")

    bandwidth = bw.harmonisation(recordings, harmonise)
    seg = segments.build_segments(recordings, args.length, counts=args.counts, seed=args.seed, hop_s=args.hop,
                                  snr_db=args.snr_db, drop_empty_classes=args.drop_empty_classes,
                                  lowpass_hz=bandwidth["cutoff_hz"])
    classes_in = set(recordings["class"].dropna())
    dropped = sorted(classes_in - set(seg["class"]))
    assigned = segments.assign_splits(recordings, seed=args.seed, counts=args.counts)
    per_split = assigned.groupby(["class", "split"]).agg(recordings=("path", "size"), groups=("group", "nunique"))
    by_class: dict[str, dict[str, dict[str, int]]] = {}
    for (cls, split), r in per_split.iterrows():
        by_class.setdefault(cls, {})[split] = {"recordings": int(r.recordings), "groups": int(r.groups)}
    info = {
        "inputs": {k: report[k] for k in ("data", "kind", "root", "mapping", "n_listed", "n_recordings",
                                          "n_in_classes", "excluded", "ignored", "warnings", "grouping",
                                          "checks", "unmapped_labels", "excluded_labels")}
                  | {"label_column": args.label_column, "source_column": args.source_column,
                     "path_column": args.path_column},
        "parameters": {"length_s": args.length, "counts": dict(zip(segments.SPLITS, args.counts)),
                       "seed": args.seed, "hop_s": args.hop, "snr_db": args.snr_db,
                       "drop_empty_classes": args.drop_empty_classes, "strict": args.strict,
                       "drop_unmapped": args.drop_unmapped, "harmonise_bandwidth": harmonise,
                       "background": args.background},
        "harmonisation": bandwidth,
        "dropped_classes": dropped,
        "recordings_per_split": by_class,
        "data_fingerprint": segments.data_fingerprint(recordings),
    }
    path = segments.write_segments(seg, args.out, info)

    n_aug = int(seg["augmented"].sum())
    print(f"{len(recordings)} recordings read ({len(report['excluded'])} excluded), "
          f"{seg['class'].nunique()} classes, L = {args.length:g} s")
    for split in segments.SPLITS:
        s = seg[seg["split"] == split]
        print(f"  {split:<11} {len(s):>6} segments, {int(s['augmented'].sum()):>6} augmented")
    if dropped:
        print(f"dropped classes (no audio in some split): {', '.join(dropped)}")
    print(bw.describe_harmonisation(bandwidth))
    single = bw.single_source_classes(recordings)
    if single:
        print("classes from a single source (a classifier can recognise the source instead of the sound): "
              + ", ".join(f"{c} ({s})" for c, s in single.items()))
    for line in segments.notices(seg):
        print(line, file=sys.stderr)
    print(f"wrote {path} ({len(seg)} segments, {100 * n_aug / max(len(seg), 1):.1f} % augmented) "
          f"and dataset.json in {time.perf_counter() - t0:.1f} s")
    return 0
