"""``clapnb embed``: segments.parquet -> cached embeddings + DIR/embeddings.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clapnb import config
from clapnb.store import LengthFolder

#: The study parameters this command takes (from clapnb.config.StudyConfig).
FIELDS = ("backbone", "weights", "policy", "precision", "torch_compile", "agreement_threshold",
          "warn_low_agreement", "device")


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
    config.add_options(p, "embed", required=("backbone",))
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--cache", default=None, help="embedding cache folder (default: $CLAPNB_CACHE or ~/.cache/clapnb)")
    p.add_argument("--lowpass-hz", type=float, default=None,
                   help="low-pass every recording at this frequency first (bandwidth harmonising)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="audio decoding threads (default: 1 on CPU, up to 8 with a GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clapnb import agreement, backbones, embeddings, inputs, io
    from clapnb.segments import read_segments

    study = config.from_mapping({k: config.option_value(args, k) for k in FIELDS}, what="the options")
    seg_path = Path(args.segments)
    lf = LengthFolder(seg_path.parent)
    problems = inputs.backbone_problems(study.backbone, study.weights)
    if seg_path.name != lf.segments.name or not seg_path.is_file():
        problems.append(f"segments: --segments {seg_path}: expected an existing DIR/{lf.segments.name} "
                        "(build it with `clapnb segments`)")
    else:
        problems += inputs.audio_problems(read_segments(seg_path)["path"], str(seg_path))  # damaged: one line
    inputs.raise_if_missing(problems)  # weights, segments and their audio named together
    backbone = backbones.load_backbone(study.backbone, weights=study.weights, device=study.device,
                                       policy=study.policy, batch_size=args.batch_size,
                                       precision=study.precision, compile=study.torch_compile)
    if backbone.random_weights:
        print(f"WARNING: {embeddings.RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    mode = backbone.metadata.get("precision", "fp32")
    if backbone.metadata.get("precision_reason"):
        print(f"embedding mode {mode}: {backbone.metadata['precision_reason']}", file=sys.stderr)
    if mode != "fp32":
        dataset = lf.dataset
        params = io.read_json(dataset).get("parameters", {}) if dataset.is_file() else {}
        seed = int(params.get("seed") or 0)  # the run's seed picks the agreement clips
        record = agreement.check_agreement(backbone, read_segments(seg_path),
                                           threshold=study.agreement_threshold,
                                           warn_only=study.warn_low_agreement, seed=seed,
                                           lowpass_hz=args.lowpass_hz)
        print(f"agreement of {mode} with fp32: {agreement.describe(record)}", file=sys.stderr)
    emb = embeddings.embed_run(seg_path.parent, backbone, cache_dir=args.cache, batch_size=args.batch_size,
                               progress=not args.no_progress, lowpass_hz=args.lowpass_hz,
                               workers=args.workers)
    m = emb.meta
    speed = f", {m['clips_per_s']:.1f} clips/s" if m["clips_per_s"] else ""
    random = " [RANDOM WEIGHTS: NOT CLAP EMBEDDINGS]" if backbone.random_weights else ""
    print(f"{m['n_rows']} segments x {emb.X.shape[1]} dims ({backbone.name}, policy {backbone.metadata.get('policy')}, "
          f"{mode}): {m['n_computed']} computed, {m['n_cached']} from cache{speed}{random}")
    print(f"wrote {lf.embeddings} (cache: {m['cache_namespace']})")
    return 0
