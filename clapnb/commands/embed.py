"""``clapnb embed``: segments.parquet -> cached embeddings + DIR/embeddings.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clapnb.errors import InputError

BACKBONES = ("msclap-2023", "msclap-2022", "mfcc", "gfcc")


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
    p.add_argument("--backbone", required=True, choices=BACKBONES)
    p.add_argument("--weights", default=None,
                   help="CLAP checkpoint (default: $CLAPNB_WEIGHTS, else msclap's hub download)")
    p.add_argument("--policy", default="msclap", choices=("msclap", "native"),
                   help="input policy: msclap = repeat/centre-crop to the model's 7 s (default); native = as is")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--cache", default=None, help="embedding cache folder (default: $CLAPNB_CACHE or ~/.cache/clapnb)")
    p.add_argument("--lowpass-hz", type=float, default=None,
                   help="low-pass every recording at this frequency first (bandwidth harmonising)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="audio decoding threads (default: 1 on CPU, up to 8 with a GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import backbones, embeddings

    seg_path = Path(args.segments)
    if seg_path.name != "segments.parquet" or not seg_path.is_file():
        raise InputError(f"--segments {seg_path}: expected an existing DIR/segments.parquet "
                         "(build it with `clapnb segments`)")
    backbones.check_backbone_available(args.backbone, args.weights)
    backbone = backbones.load_backbone(args.backbone, weights=args.weights, device=args.device,
                                       policy=args.policy, batch_size=args.batch_size)
    if backbone.random_weights:
        print(f"WARNING: {embeddings.RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    emb = embeddings.embed_run(seg_path.parent, backbone, cache_dir=args.cache, batch_size=args.batch_size,
                               progress=not args.no_progress, lowpass_hz=args.lowpass_hz,
                               workers=args.workers)
    m = emb.meta
    speed = f", {m['clips_per_s']:.1f} clips/s" if m["clips_per_s"] else ""
    print(f"{m['n_rows']} segments x {emb.X.shape[1]} dims ({backbone.name}, policy {args.policy}): "
          f"{m['n_computed']} computed, {m['n_cached']} from cache{speed}")
    print(f"wrote {seg_path.parent / 'embeddings.json'} (cache: {m['cache_namespace']})")
    return 0
