"""``clapnb probe``: train the paper's linear probe on a run's embeddings; writes probe.json/.pt."""

from __future__ import annotations

import argparse

from clapnb import config


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="train the linear probe (one linear layer, early stopping) on a run's embeddings",
        description="Train nn.Linear(dim, n_classes) with Adam on the train split, stop when "
                    "early_stop accuracy has not improved for --patience epochs (best weights kept), "
                    "pick hyper-parameters on validation if --grid is given; write DIR/probe.json, "
                    "DIR/probe.pt and DIR/probe_predictions.parquet.")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder holding segments.parquet and embeddings")
    # Unset options fall back to clapnb.probe.ProbeConfig's defaults (not imported here: it
    # pulls in torch/sklearn and would slow down 'clapnb --help').
    unset = argparse.SUPPRESS
    p.add_argument("--lr", type=float, default=unset, help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=unset, help="mini-batch size (default 32)")
    p.add_argument("--weight-decay", type=float, default=unset, help="Adam weight decay (default 0)")
    config.add_options(p, "probe")  # --seed, --probe-patience, --probe-max-epochs, --probe-grid: the study's
    p.add_argument("--no-standardize", dest="standardize", action="store_false", default=unset,
                   help="feed raw embeddings (default: z-score with train-split statistics)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    # the names before the study config (same fields, hidden from --help)
    p.add_argument("--grid", dest="probe_grid", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--max-epochs", dest="probe_max_epochs", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--patience", dest="probe_patience", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--extra-labels", metavar="REVIEWED", default=None,
                   help="reviewed.parquet of an operator review: its answered events (rejected ones as background) "
                        "join the train split, grouped by file; recorded in probe.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from dataclasses import fields, replace

    from clapnb import probe

    from clapnb.store import LengthFolder

    study = config.from_mapping({k: config.option_value(args, k) for k in
                                 ("seed", "probe_patience", "probe_max_epochs", "probe_grid")}, what="the options")
    given = {f.name: getattr(args, f.name) for f in fields(probe.ProbeConfig) if hasattr(args, f.name)}
    probe_config = replace(study.probe_config(), **given)
    grid = probe.parse_grid(study.probe_grid) if study.probe_grid else None
    progress = None if args.no_progress else (lambda line: print(f"probe: {line}", file=sys.stderr, flush=True))
    record = probe.run_probe(args.run, probe_config, grid, progress=progress, extra_labels=args.extra_labels)
    random = " [RANDOM WEIGHTS: NOT CLAP RESULTS]" if record["random_weights"] else ""
    if record["random_weights"]:
        print("WARNING: random-weights stand-in backbone: these numbers are a plumbing check, NOT CLAP results")
    b = record["backbone"]
    notice = f" ({b.get('display_name', b.get('name'))}; {b['notice']})" if b.get("notice") else ""
    print(f"linear probe on {b.get('name')}{notice}{random}: {record['head']}")
    if grid:
        chosen = {k: record["config"][k] for k in grid}
        print(f"  grid of {len(record['grid'])} configurations; chosen on validation: {chosen}")
    print(f"  {record['epochs_run']} epochs, best epoch {record['best_epoch']}"
          + (" (early stop)" if record["stopped_early"] else " (epoch limit reached)"))
    events = " (event segments only)" if record.get("background") else ""
    for split in ("validation", "test"):
        m = record["metrics"][split]
        ci = m["accuracy_ci"]
        print(f"  {split:<11} n={m['n']:<5} accuracy {100 * m['accuracy']:6.2f} % "
              f"[{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]  loss {m['loss']:.3f}{events}{random}")
    for split in ("validation", "test") if record.get("background") else ():
        b = record["background"][split]
        recall = "n/a" if b["background_recall"] is None else f"{100 * b['background_recall']:.1f} %"
        print(f"  {split:<11} background (reported apart): n={b['n_background']}, recall {recall}, "
              f"false events {b['false_events']} of {b['n_background']}, events called background "
              f"{b['events_called_background']} of {b['n_events']}")
    if record.get("extra_labels"):
        x = record["extra_labels"]
        print(f"  extra labels: {x['n_windows']} windows from {len(x['files'])} reviewed file(s) added to train "
              f"({', '.join(f'{c} {n}' for c, n in x['windows_per_class'].items())})")
        if x.get("dropped"):
            d = x["dropped"][0]
            print(f"  extra labels: {len(x['dropped'])} answer(s) dropped: their windows hold audio of a clip of this "
                  f"run's held-out splits mixed into a scene (e.g. {d['file']} at {d['onset_s']:g} s: "
                  f"{d['source_path']}, {d['split']}); listed in probe.json extra_labels.dropped")
    if record["classes_without_train_data"]:
        print(f"  note: no training segments for {', '.join(record['classes_without_train_data'])}")
    lf = LengthFolder(args.run)
    print(f"wrote {lf.probe}, {lf.probe_model} and {lf.probe_predictions}")
    return 0
