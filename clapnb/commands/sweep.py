"""``clapnb sweep``: every segment length through the stages, then the notebooks as views, then results.json."""

from __future__ import annotations

import argparse
import sys

from clapnb import config
from clapnb.errors import InputError
from clapnb.store import RunFolder


def add_jobs_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="lengths built and rendered in parallel, each in its own process (default 1)")


def add_rebuild_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rebuild", action="store_true",
                   help="OUT was made with other parameters: rebuild the stages they feed (default: refuse, "
                        "naming each parameter)")


def study_configs(args: argparse.Namespace, command: str, **kw) -> list:
    """The run's configuration(s) from the study file and the flags (one per bandwidth setting)."""
    configs = config.from_args(args, **kw)
    if command == "sweep" and "data" not in config.given_options(args) and not (
            getattr(args, "config", None) and "data" in config.read_study_file(args.config)):
        raise InputError("--data is required (or 'data = ...' in the --config study file): a class folder, "
                         "a manifest CSV, esc50, urbansound8k:PATH or auto")
    return configs


def print_results(results) -> None:
    if results is None or results.empty:
        return
    from clapnb.sweep import RANDOM_WEIGHTS_SUMMARY  # pandas: only once results exist

    cols = ["length_s", "zeroshot_accuracy", "probe_validation_accuracy", "probe_test_accuracy"]
    if "random_weights" in results and results["random_weights"].fillna(False).astype(bool).any():
        print(RANDOM_WEIGHTS_SUMMARY)
    print(results[cols].to_string(index=False, float_format=lambda v: f"{100 * v:.2f} %"))
    if "background" in results and any(v is True or v == 1 for v in results["background"]):
        print("accuracies over event segments only; background class (reported apart):")
        bg = results[["length_s", "background_validation_recall", "background_validation_false_events",
                      "background_test_recall", "background_test_false_events"]]
        bg = bg.rename(columns=lambda c: c.replace("_", " ") if c != "length_s" else c)
        print(bg.to_string(index=False, formatters={
            c: (lambda v: "n/a" if v != v or v is None else f"{100 * v:.2f} %") for c in bg.columns if c.endswith("recall")}))


def print_repeats(run: RunFolder) -> None:
    """The spread over repeats and the paired comparisons, when ``run`` has repeats."""
    if not run.repeats_json.is_file():
        return
    import pandas as pd

    from clapnb import io, repeats

    doc = io.read_json(run.repeats_json)
    if doc.get("random_weights"):
        from clapnb.sweep import RANDOM_WEIGHTS_SUMMARY

        print(RANDOM_WEIGHTS_SUMMARY)
    print(f"over {len(doc['repeats'])} repeats ({', '.join(doc['repeats'])}), accuracy %, mean ± std (n):")
    table = repeats.format_spread(pd.DataFrame(doc["spread"]))
    print(table[[c for c in table.columns if "per repeat" not in c]].to_string(index=False))
    for c in doc["comparisons"]:
        print(f"  {c['comparison']}: {c['text']} points, {c['verdict']} ({c['method']}"
              + (f", p={c['p_value']:.3g})" if c.get("p_value") is not None else ")"))
    print(run.repeats_json)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="run segments, embeddings, zero-shot and the probe for each length, then the notebooks",
        description="For each length, build the stages (segments, embeddings, zero-shot, linear probe, "
                    "shortcut check) into OUT/L01..L10, execute the study notebooks on them as views, then "
                    "the dataset notebook, and write OUT/results.json and results.csv. Rerunning skips what is "
                    "built; a failed length keeps its error and the others still run. Parameters come from "
                    "--config STUDY.toml and the flags (flags win).")
    config.add_options(p, "sweep", config_file=True)
    add_jobs_argument(p)
    add_rebuild_argument(p)
    add_estimate_arguments(p)
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.set_defaults(func=run)


def add_estimate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="only print the cost estimate (segments to embed x measured s/segment / workers, storage) "
                        "and exit; nothing is written in OUT")
    p.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=None,
                   help="measure a few segments and print the cost estimate before the work (default: when "
                        "there are 1000 or more segments to embed, or --scheduler/--workers are given)")


def run(args: argparse.Namespace) -> int:
    from clapnb import sweep

    outcomes = sweep.run_variants(study_configs(args, "sweep"), args.out, jobs=args.jobs, rebuild=args.rebuild,
                                  estimate=args.estimate, dry_run=args.dry_run)
    if args.dry_run:
        from clapnb.embed_units import estimate_line

        print(estimate_line(outcomes[0].estimate))
        return 0
    for outcome in outcomes:
        print(outcome.summary(), file=sys.stderr)
        print_results(outcome.results)
        print(RunFolder(outcome.run_dir).results_json)
    for outcome in outcomes:
        print_repeats(RunFolder(outcome.run_dir))
    return 0 if all(o.ok for o in outcomes) else 1
