"""``clapnb sweep``: every segment length through the notebooks (papermill), then results.json."""

from __future__ import annotations

import argparse
import os
import sys

from clapnb import backbones
from clapnb.commands.embed import add_backbone_arguments, add_mode_arguments


def add_run_arguments(p: argparse.ArgumentParser, *, data_default: str | None, backbone: bool = True) -> None:
    """Options shared by ``sweep`` and ``reproduce`` (the parameters of a run)."""
    p.add_argument("--data", default=data_default, required=data_default is None,
                   help="class folder (one sub-folder per label), manifest CSV, 'esc50' (download), "
                        "'esc50:PATH', 'urbansound8k:PATH', or 'auto' (../shared/data/envsounds if present)")
    p.add_argument("--label-column", default="label", help="label column of a manifest CSV (default: label)")
    p.add_argument("--path-column", default="path",
                   help="column of a manifest CSV holding each file's path, absolute or relative to the "
                        "manifest (default: path). Comma-, semicolon-, tab- or pipe-separated manifests are "
                        "all read (the header decides)")
    p.add_argument("--source-column", default=None,
                   help="manifest column naming each file's source (default: source, else source_dataset)")
    p.add_argument("--harmonise-bandwidth", default="off", metavar="off|auto|HZ[,...]",
                   help="low-pass every recording to one common bandwidth before cutting: off (default), auto "
                        "(the lowest common effective bandwidth of the data) or a frequency in Hz. A list, e.g. "
                        "off,auto, runs the first setting in OUT and each other one in "
                        "OUT/variants/harmonise-SETTING; the book shows them side by side")
    p.add_argument("--mapping", default="default",
                   help="label mapping: built-in name (esc50, urbansound8k, default) or YAML file(s), comma-separated")
    p.add_argument("--drop-unmapped", action="store_true", help="leave out labels the mapping does not know")
    p.add_argument("--drop-empty-classes", action="store_true",
                   help="leave out classes without audio in some split instead of failing")
    if backbone:
        add_backbone_arguments(p)
    else:
        p.add_argument("--weights", default=None,
                       help="CLAP checkpoint path (default: $CLAPNB_WEIGHTS, else msclap's hub download)")
        p.add_argument("--policy", default=None, choices=backbones.spec(backbones.DEFAULT_BACKBONE).policies,
                       help="how segments other than the model's input length are fed (default: msclap)")
    p.add_argument("--counts", default="500,100,100,100",
                   help="segments per class for train,validation,early_stop,test (default 500,100,100,100)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--snr-db", type=float, default=20.0, help="SNR of the noise of augmented copies (default 20)")
    p.add_argument("--device", default="auto", choices=backbones.DEVICES, help="default: auto")
    p.add_argument("--probe-grid", default="",
                   help="probe hyper-parameter grid, e.g. 'lr=1e-3,1e-2;weight_decay=0,1e-4' (best on validation)")
    add_mode_arguments(p)
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="lengths run in parallel, each in its own process (default 1)")


def config_from_args(args: argparse.Namespace, **overrides):
    """The run's :class:`SweepConfig`; with a list of bandwidth settings, the first one's."""
    from clapnb.shortcuts import parse_harmonise_list
    from clapnb.sweep import SweepConfig

    backbone = overrides.get("backbone", getattr(args, "backbone", backbones.DEFAULT_BACKBONE))
    policy = args.policy or backbones.spec(backbone).default_policy  # None: the backbone's own
    values = {"data": args.data, "label_column": args.label_column, "mapping": args.mapping,
              "drop_unmapped": args.drop_unmapped, "drop_empty_classes": args.drop_empty_classes,
              "backbone": backbone, "weights": args.weights,
              "policy": policy, "counts": args.counts, "seed": args.seed, "snr_db": args.snr_db,
              "device": args.device, "probe_grid": args.probe_grid,
              "lengths": getattr(args, "lengths", "1-10"), "source_column": args.source_column,
              "path_column": args.path_column, "harmonise_bandwidth": parse_harmonise_list(args.harmonise_bandwidth)[0],
              "precision": args.precision, "torch_compile": args.compile,
              "agreement_threshold": args.agreement_threshold, "warn_low_agreement": args.warn_low_agreement}
    return SweepConfig(**{**values, **overrides})


def print_results(results) -> None:
    if results is None or results.empty:
        return
    from clapnb.sweep import RANDOM_WEIGHTS_SUMMARY

    cols = ["length_s", "zeroshot_accuracy", "probe_validation_accuracy", "probe_test_accuracy"]
    if "random_weights" in results and results["random_weights"].fillna(False).astype(bool).any():
        print(RANDOM_WEIGHTS_SUMMARY)
    print(results[cols].to_string(index=False, float_format=lambda v: f"{100 * v:.2f} %"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="run segments, embeddings, zero-shot and the probe for each length (notebooks)",
        description="For each length, execute the study notebooks with papermill into OUT/L01..L10 "
                    "(segments, embeddings, zero-shot, linear probe, confusion), then the dataset notebook, "
                    "and write OUT/results.json and results.csv. Rerunning skips completed lengths; a "
                    "failed length keeps its notebook with the error and the others still run.")
    add_run_arguments(p, data_default=None)
    p.add_argument("--lengths", default="1-10", help="segment lengths in s: 1-10, 4, 1,4,7 (default 1-10)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import inputs, sweep
    from clapnb.locks import run_lock

    config = config_from_args(args)
    inputs.check_run_inputs(config.resolved())  # data and weights together, before any work
    with run_lock(args.out, command="clapnb sweep"):  # a second sweep on this --out refuses, naming this one
        outcomes = sweep.run_variants(config, args.out, args.harmonise_bandwidth, jobs=args.jobs)
    for outcome in outcomes:
        print(outcome.summary(), file=sys.stderr)
        print_results(outcome.results)
        print(os.path.join(outcome.run_dir, "results.json"))
    return 0 if all(o.ok for o in outcomes) else 1
