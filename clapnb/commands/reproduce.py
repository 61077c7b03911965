"""``clapnb reproduce``: the paper's study end to end (CLAP 2023, lengths 1-10, the book)."""

from __future__ import annotations

import argparse
import sys

from clapnb import config
from clapnb.commands.sweep import add_jobs_argument, add_rebuild_argument, print_results, study_configs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="the main job: data, sweep over 1-10 s with msclap CLAP 2023, then the book",
        description="Check that the CLAP 2023 weights and text model are available (before any long "
                    "work), sweep segment lengths 1-10 s over the data (ESC-50 by default, mapped to the "
                    "paper's 21 classes), and build the book. Rerunning resumes.")
    config.add_options(p, "reproduce", defaults={"data": "esc50"}, config_file=True)
    add_jobs_argument(p)
    add_rebuild_argument(p)
    p.add_argument("--out", default="runs/reproduce", help="run folder (default runs/reproduce)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import book, inputs, sweep

    configs = study_configs(args, "reproduce", defaults={"data": "esc50"},
                            fixed={"backbone": "msclap-2023", "lengths": "1-10"})
    inputs.check_run_inputs(configs[0].resolved())  # data and weights together, before any work
    outcomes = sweep.run_variants(configs, args.out, jobs=args.jobs, rebuild=args.rebuild)
    for outcome in outcomes:
        print(outcome.summary(), file=sys.stderr)
        print_results(outcome.results)
    outcome = outcomes[0]
    if outcome.results is None or outcome.results.empty:
        return 1
    print(book.build(book.assemble(outcome.run_dir)))
    return 0 if all(o.ok for o in outcomes) else 1
