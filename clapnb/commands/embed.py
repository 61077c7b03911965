"""``clapnb embed``: segments.parquet -> cached embeddings + DIR/embeddings.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clapnb import backbones


def _threshold(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a cosine in (0, 1], got {value}")
    return value


def add_mode_arguments(p: argparse.ArgumentParser) -> None:
    """--precision / --compile and the agreement options (shared with ``sweep`` and ``reproduce``)."""
    p.add_argument("--precision", default="fp32", choices=backbones.PRECISIONS,
                   help="CLAP audio-encoder precision: fp32 (default, the reference), bf16 (autocast; the "
                        "STFT/log-mel front-end and the projection stay fp32), auto (bf16 only where the "
                        "CPU/GPU computes it natively, else fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the audio encoder (about a minute per process on a CPU, then faster)")
    p.add_argument("--agreement-threshold", type=_threshold, default=0.999,
                   help="a mode other than fp32 is first checked against fp32 on a few clips of the run; "
                        "below this minimum cosine the run is refused (default 0.999)")
    p.add_argument("--warn-low-agreement", action="store_true",
                   help="go on (with a loud warning, recorded in every output) below the threshold")


def add_backbone_arguments(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--backbone (every registered one), --weights and --policy (shared with ``sweep``).

    The names are checked by :func:`clapnb.backbones.spec` (an InputError: one line, exit 2, naming
    the registered ones), not by argparse ``choices``, so every command refuses them the same way.
    """
    default = None if required else backbones.DEFAULT_BACKBONE
    p.add_argument("--backbone", required=required, default=default,
                   metavar="{" + ",".join(backbones.names()) + "}", help=backbones.choices_help(default))
    by_help: dict[str, list[str]] = {}
    for n, s in backbones.REGISTRY.items():
        if s.uses_weights:
            by_help.setdefault(s.weights_help, []).append(n)
    p.add_argument("--weights", default=None, help="weights file of the backbones that take one: "
                   + "; ".join(f"{', '.join(ns)}: {h}" for h, ns in by_help.items()))
    p.add_argument("--policy", default=None, choices=backbones.all_policies(), help=backbones.policy_help())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed", help="embed a segments table with a backbone (cached by content)",
        description="Embed every segment of DIR/segments.parquet and write DIR/embeddings.json. "
                    "Embeddings are cached by content ($CLAPNB_CACHE or ~/.cache/clapnb): a second run "
                    "computes nothing and an interrupted run resumes.")
    p.add_argument("--segments", required=True, help="DIR/segments.parquet (from `clapnb segments`)")
    add_backbone_arguments(p, required=True)
    p.add_argument("--device", default="auto", choices=backbones.DEVICES)
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--cache", default=None, help="embedding cache folder (default: $CLAPNB_CACHE or ~/.cache/clapnb)")
    p.add_argument("--lowpass-hz", type=float, default=None,
                   help="low-pass every recording at this frequency first (bandwidth harmonising)")
    add_mode_arguments(p)
    p.add_argument("--workers", type=_positive, default=None,
                   help="audio decoding threads (default: 1 on CPU, up to 8 with a GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import agreement, embeddings, inputs, io
    from clapnb.segments import read_segments

    backbones.spec(args.backbone)  # an unknown name: one line naming the registered ones
    seg_path = Path(args.segments)
    problems = inputs.backbone_problems(args.backbone, args.weights)
    if seg_path.name != "segments.parquet" or not seg_path.is_file():
        problems.append(f"segments: --segments {seg_path}: expected an existing DIR/segments.parquet "
                        "(build it with `clapnb segments`)")
    else:
        problems += inputs.audio_problems(read_segments(seg_path)["path"], str(seg_path))  # damaged: one line
    inputs.raise_if_missing(problems)  # weights, segments and their audio named together
    backbone = backbones.load_backbone(args.backbone, weights=args.weights, device=args.device,
                                       policy=args.policy, batch_size=args.batch_size,
                                       precision=args.precision, compile=args.compile)
    if backbone.random_weights:
        print(f"WARNING: {embeddings.RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    mode = backbone.metadata.get("precision", "fp32")
    if backbone.metadata.get("precision_reason"):
        print(f"embedding mode {mode}: {backbone.metadata['precision_reason']}", file=sys.stderr)
    if mode != "fp32":
        dataset = seg_path.parent / "dataset.json"
        params = io.read_json(dataset).get("parameters", {}) if dataset.is_file() else {}
        seed = int(params.get("seed") or 0)  # the run's seed picks the agreement clips
        record = agreement.check_agreement(backbone, read_segments(seg_path),
                                           threshold=args.agreement_threshold,
                                           warn_only=args.warn_low_agreement, seed=seed,
                                           lowpass_hz=args.lowpass_hz)
        print(f"agreement of {mode} with fp32: {agreement.describe(record)}", file=sys.stderr)
    emb = embeddings.embed_run(seg_path.parent, backbone, cache_dir=args.cache, batch_size=args.batch_size,
                               progress=not args.no_progress, lowpass_hz=args.lowpass_hz,
                               workers=args.workers)
    m = emb.meta
    speed = f", {m['clips_per_s']:.1f} clips/s" if m["clips_per_s"] else ""
    random = " [RANDOM WEIGHTS: NOT CLAP EMBEDDINGS]" if backbone.random_weights else ""
    print(f"{m['n_rows']} segments x {emb.X.shape[1]} dims ({backbone.name}, policy {backbone.metadata.get('policy')}, {mode}): "
          f"{m['n_computed']} computed, {m['n_cached']} from cache{speed}{random}")
    print(f"wrote {seg_path.parent / 'embeddings.json'} (cache: {m['cache_namespace']})")
    return 0
