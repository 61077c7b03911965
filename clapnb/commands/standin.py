"""``clapnb standin``: build the random-weights msclap 2023 stand-in for offline plumbing checks."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "standin", help="build a random-weights msclap 2023 stand-in (offline; NOT a CLAP model)",
        description="Build the exact msclap 2023 architecture with random, seeded weights plus a tiny "
                    "random GPT-2 laid out as a local Hugging Face cache, so that the unchanged msclap "
                    "loading path runs offline. Its numbers are not CLAP results and are labelled so.")
    p.add_argument("--out", required=True, help="folder to build into")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import standin

    info = standin.build_standin(args.out, seed=args.seed)
    print(f"built the RANDOM-WEIGHTS stand-in in {info['dir']} (seed {info['seed']}): not a CLAP model")
    print("point the pipeline at it (before starting Python/Jupyter):")
    print(standin.export_lines(info["dir"]))
    return 0
