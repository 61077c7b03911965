"""``clapnb benchmark esc50``: the published ESC-50 anchors beside this install's numbers."""

from __future__ import annotations

import argparse

from clapnb import config

#: The study parameters this command takes (validated by clapnb.config.StudyConfig).
FIELDS = ("backbone", "weights", "policy", "device", "seed", "probe_patience", "probe_max_epochs")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _study_option(p: argparse.ArgumentParser, name: str) -> None:
    """One option with the study field's name, help and default (the other commands' spelling)."""
    f = config.field_named(name)
    kw = {"dest": name, "default": argparse.SUPPRESS, "help": f.metadata["help"]
          + ("" if f.default in (None, "") else f" (default: {f.default})")}
    if name == "backbone":
        kw["metavar"] = "{" + ",".join(config.backbone_names()) + "}"
    elif f.metadata["choices"]:
        kw["choices"] = f.metadata["choices"]
    if name in ("seed", "probe_patience", "probe_max_epochs"):
        kw["type"] = int
    p.add_argument(config.flag_of(f), **kw)


def register(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="sanity benchmarks against published figures (esc50)",
                              description="Sanity benchmarks: this install's numbers beside published ones.")
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    e = sub.add_parser(
        "esc50", help="ESC-50 zero-shot and linear probe (5 official folds) vs MS-CLAP 2023's published figures",
        description="ESC-50 with its 50 classes and 5 official folds: zero-shot with msclap's prompt 'this is the "
                    "sound of <label>' and the linear probe on frozen whole-clip embeddings (test fold i, early "
                    "stopping on fold i+1, training on the rest), mean +/- std over folds beside MS-CLAP 2023's "
                    "published 93.9 %% (microsoft/CLAP README) and 97.7 +/- 0.5 %% (EVAR). Writes OUT/benchmark.json, "
                    "OUT/benchmark.csv and OUT/predictions.parquet; embeddings come from the cache on a rerun.")
    e.add_argument("--data", default="esc50",
                   help="esc50 (the official archive, downloaded once into $CLAPNB_CACHE), esc50:PATH (the archive "
                        "or extracted ESC-50-master folder), an ESC-50 folder, or a manifest CSV whose ESC-50 rows "
                        "are used (e.g. ../shared/data/envsounds/meta.csv: a subset, flagged) (default: esc50)")
    e.add_argument("--label-column", default=None,
                   help="manifest column holding ESC-50's category (default: category, else original_label, else label)")
    e.add_argument("--source-column", default=None,
                   help="manifest column marking ESC-50 rows (default: source, else source_dataset; none: every row)")
    e.add_argument("--out", required=True, metavar="DIR", help="folder for benchmark.json, benchmark.csv, predictions")
    for name in FIELDS:
        _study_option(e, name)
    e.add_argument("--zeroshot-classes", choices=("all", "present"), default="all",
                   help="zero-shot candidates: ESC-50's 50 categories (default, the published task) or only the "
                        "classes in the data")
    e.add_argument("--batch-size", type=_positive, default=16)
    e.add_argument("--cache", default=None, help="embedding cache folder (default: $CLAPNB_CACHE or ~/.cache/clapnb)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import benchmark, inputs

    values = {k: config.option_value(args, k) for k in FIELDS}
    if "backbone" not in vars(args):
        values["backbone"] = benchmark.ANCHOR_BACKBONE
    study = config.from_mapping(values, what="the options")  # unknown backbone, policy, ...: one line
    spec = benchmark.resolve_data(args.data)
    inputs.check_inputs(data=spec if spec.lower().startswith("esc50") else None, backbone=study.backbone,
                        weights=study.weights, cache_dir=args.cache)
    record = benchmark.run_benchmark(
        args.data, args.out, backbone_name=study.backbone, weights=study.weights, policy=study.policy,
        device=study.device, batch_size=args.batch_size, seed=study.seed, probe_patience=study.probe_patience,
        probe_max_epochs=study.probe_max_epochs, zeroshot_classes=args.zeroshot_classes,
        label_column=args.label_column, source_column=args.source_column, cache_dir=args.cache,
        progress=not args.no_progress)
    print(benchmark.format_table(record))
    print(f"wrote {args.out}/{benchmark.RESULT_JSON}, {benchmark.RESULT_CSV} and {benchmark.PREDICTIONS}")
    return 0
