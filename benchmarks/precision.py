"""Speed and agreement of the embedding modes (clapnb.fast), side by side, in one run.

    .venv/bin/python benchmarks/precision.py [--n 32] [--batch-sizes 8] [--device cpu|cuda]
        [--variants fp32,fft,bf16,fp32+compile,bf16+compile] [--repeat 2] [--clips DIR]
        [--standin DIR] [--no-e2e] [--budget-s S] [--out FILE]

Model: the random-weights msclap 2023 stand-in (built into a temporary folder unless --standin is
given), loaded through msclap's unchanged ``CLAP(model_fp=...)``; random weights may tolerate
reduced precision differently from trained ones, so rerun this with the real weights where they
exist (``--weights``). Clips: the first N 5-s ESC-50 clips of ../shared/data/envsounds, or every
audio file in ``--clips DIR``, each repeated to msclap's 7 s; tiled when fewer than N.

Variants (forward only, on pre-made tensors, ``--batch-sizes`` rows per call):

* ``fp32``         msclap's audio encoder untouched: the reference;
* ``fft``          fp32 with the torch.stft front-end and no attention-map averaging;
* ``bf16``         clapnb's bf16 mode (front-end and projection in fp32);
* ``fp32+compile`` / ``bf16+compile``  the same under ``torch.compile`` (freezing); the first
  call, which compiles, is timed separately.

Rounds are interleaved (``--repeat``) and each variant keeps its best round, so a burst of load
from other processes does not decide the ratios. Agreement: min / mean cosine of each variant's
embeddings to fp32's on the distinct clips. Unless ``--no-e2e``: clapnb's end-to-end
``compute_embeddings`` (decode, cut, batch, forward, cache writes; cold cache) in fp32 and bf16
against their forward-only rate (the ceiling). With ``--budget-s``, compiled variants that could
not finish in time are skipped (and said so). Prints the CPU flags / GPU of the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLAPNB_SHARED", REPO.parent / "shared"))
VARIANTS = ("fp32", "fft", "bf16", "fp32+compile", "bf16+compile")
LABELS = {"fp32": "fp32 eager (msclap's module: reference)", "fft": "fp32 + torch.stft front-end, no attn maps",
          "bf16": "bf16 autocast (front-end, projection fp32)", "fp32+compile": "fp32 + torch.compile",
          "bf16+compile": "bf16 + torch.compile (freezing)"}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
#: A compiled variant is skipped when less than this is left of --budget-s (compiling takes a while).
COMPILE_RESERVE_S = 45.0


class Report:
    """Print lines and keep them for --out (rewritten after every line: a killed run keeps its table)."""

    def __init__(self, out: Path | None):
        self.out, self.lines = out, []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text("\n".join(self.lines) + "\n")


def machine_lines(device: str) -> list[str]:
    import torch

    from clapnb import fast

    flags = fast.cpu_flags()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "bf16")
    lines = [f"CPU: {model}; {os.cpu_count()} logical CPUs, torch uses {torch.get_num_threads()} threads; "
             f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"CPU flags: {' '.join(f for f in wanted if f in flags) or '(none of ' + ', '.join(wanted) + ')'}; "
             f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"]
    if device == "cuda":
        cap = torch.cuda.get_device_capability()
        lines.append(f"GPU: {torch.cuda.get_device_name()} (capability {cap[0]}.{cap[1]}), CUDA {torch.version.cuda}, "
                     f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, TF32 cuDNN {torch.backends.cudnn.allow_tf32}")
    native, why = fast.bf16_native(device)
    lines.append(f"native bf16 on {device}: {'yes' if native else 'no'} ({why}); "
                 f"--precision auto would pick {fast.resolve_precision('auto', device)[0]}")
    lines.append(f"torch {torch.__version__}, Python {platform.python_version()}")
    return lines


def clip_files(args) -> list[str]:
    if args.clips:
        files = sorted(str(p) for p in Path(args.clips).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            sys.exit(f"--clips {args.clips}: no audio files ({', '.join(AUDIO_SUFFIXES)}) there")
        return files
    import pandas as pd

    meta = pd.read_csv(SHARED / "data" / "envsounds" / "meta.csv")
    esc = meta[meta["source_dataset"] == "ESC-50"].sort_values("path")
    return [str(SHARED / "data" / "envsounds" / p) for p in esc["path"].head(args.n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="inputs per round (clips tiled to it; default 32)")
    ap.add_argument("--batch-sizes", default="8", help="comma-separated batch sizes (default 8)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the best of each is kept")
    ap.add_argument("--clips", default=None, help="folder of audio files (default: ESC-50 clips of ../shared)")
    ap.add_argument("--standin", type=Path, default=None, help="existing stand-in folder (default: build one)")
    ap.add_argument("--weights", default=None, help="a real CLAP 2023 checkpoint instead of the stand-in")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end compute_embeddings rows")
    ap.add_argument("--budget-s", type=float, default=None, help="skip compiled variants that would not fit")
    ap.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = ap.parse_args()
    t_start = time.perf_counter()
    report = Report(args.out)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "fp32" not in variants:
        sys.exit(f"--variants: unknown {unknown} (choose from {', '.join(VARIANTS)}; fp32, the reference, is required)")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    from clapnb import standin

    work = Path(tempfile.mkdtemp(prefix="clapnb-precision-"))
    if args.weights is None:
        sdir = args.standin or work / "standin"
        if args.standin is None:
            print(f"building the random-weights stand-in in {sdir} ...", flush=True)
            standin.build_standin(sdir)
        os.environ.update(standin.environment(sdir))  # before anything imports transformers

    import numpy as np
    import torch

    from clapnb import audio, backbones, fast
    from clapnb.agreement import cosine_agreement

    files = clip_files(args)
    backbone = backbones.load_backbone("msclap-2023", weights=args.weights, device=args.device,
                                       batch_size=max(batch_sizes))
    reference = backbone.model.audio_encoder
    clips = backbone.prepare([audio.load(f) for f in files])
    n_distinct = len(clips)

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def forward_all(module, X: np.ndarray, bs: int) -> np.ndarray:
        with torch.inference_mode():
            out = [module(torch.from_numpy(X[s:s + bs]).to(args.device))[0].float().cpu().numpy()
                   for s in range(0, len(X), bs)]
        sync()
        return np.concatenate(out)

    def build(variant: str):
        if variant == "fp32":
            return reference
        if variant == "fft":
            m = fast.inference_copy(reference)
            fast.use_fft_frontend(m)
            fast.skip_attention_maps(m)
            return m
        return fast.fast_audio_encoder(reference, fast.Mode.parse(variant))

    weights = "REAL WEIGHTS " + str(args.weights) if args.weights else "RANDOM WEIGHTS (stand-in: only speed and agreement)"
    report(f"clapnb embedding modes: msclap 2023 audio encoder, {weights}")
    for line in machine_lines(args.device):
        report(line)
    report(f"clips: {n_distinct} distinct, from {os.path.commonpath(files) if len(files) > 1 else files[0]}, each repeated to {backbone.duration_s} s; "
           f"device {args.device}; best of {args.repeat} interleaved rounds; cosines over the distinct clips")

    modules = {v: build(v) for v in variants}
    eager = [v for v in variants if not v.endswith("+compile")]
    compiled = [v for v in variants if v.endswith("+compile")]
    rows: dict[int, dict[str, tuple[float, float, dict, float]]] = {bs: {} for bs in batch_sizes}
    rates: dict[tuple[str, int], float] = {}
    header = f"{'variant':46}{'clips/s':>9}{'vs fp32':>9}{'min cos':>11}{'mean cos':>11}{'1st call s':>12}"

    def inputs(bs: int) -> np.ndarray:
        n = -(-max(args.n, bs) // bs) * bs  # whole batches: a compiled variant sees one shape
        return np.stack([clips[i % n_distinct] for i in range(n)])

    def measure(group: list[str], bs: int) -> None:
        """Warm up, then interleaved rounds of ``group`` (fp32 first); one row per variant."""
        X = inputs(bs)
        first, best, outputs = {}, {}, {}
        for v in group:
            t = time.perf_counter()
            forward_all(modules[v], X[:bs], bs)  # compiles a compiled variant for this shape
            first[v] = time.perf_counter() - t
        for _ in range(args.repeat):
            for v in group:
                t = time.perf_counter()
                outputs[v] = forward_all(modules[v], X, bs)
                best[v] = max(best.get(v, 0.0), len(X) / (time.perf_counter() - t))
        for v in group:
            agree = cosine_agreement(outputs["fp32"][:n_distinct], outputs[v][:n_distinct])
            ratio = best[v] / best["fp32"]
            if v != "fp32" or v not in rows[bs]:
                rows[bs][v] = (best[v], ratio, agree, first[v])
                rates[(v, bs)] = best[v]
            if v != "fp32" or len(group) == len(eager):
                report(f"{LABELS[v]:46}{best[v]:9.2f}{ratio:9.2f}{agree['min_cosine']:11.6f}"
                       f"{agree['mean_cosine']:11.6f}{first[v]:12.1f}")

    for bs in batch_sizes:  # eager variants first: cheap, so a budget cut never loses them
        report("")
        report(f"batch {bs}, {len(inputs(bs))} inputs per round (forward only, pre-made tensors; "
               f"cosines over {min(n_distinct, len(inputs(bs)))} distinct clips)")
        report(header)
        measure(eager, bs)
    for bs in batch_sizes:
        for v in compiled:
            left = None if args.budget_s is None else args.budget_s - (time.perf_counter() - t_start)
            if left is not None and left < COMPILE_RESERVE_S:
                report(f"batch {bs}: {LABELS[v]} skipped, {left:.0f} s left of --budget-s {args.budget_s:g}")
                continue
            report(f"batch {bs}: {v} (compiles first; timed in rounds paired with a fresh fp32)")
            try:
                measure(["fp32", v], bs)
            except Exception as exc:  # one failed compilation must not cost the rest of the table
                report(f"{LABELS[v]:46}  FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    report("")
    report("summary (each ratio against fp32 measured in the same interleaved rounds)")
    for bs in batch_sizes:
        report(f"batch {bs}")
        report(header)
        for v in variants:
            if v in rows[bs]:
                rate, ratio, agree, first = rows[bs][v]
                report(f"{LABELS[v]:46}{rate:9.2f}{ratio:9.2f}{agree['min_cosine']:11.6f}"
                       f"{agree['mean_cosine']:11.6f}{first:12.1f}")
        met = [v for v, (_, ratio, agree, _) in rows[bs].items()
               if v.startswith("bf16") and ratio >= 2 and agree["min_cosine"] >= 0.999]
        report(f"target bf16 (+compile) >= 2x fp32 with min cosine >= 0.999: "
               f"{'met by ' + ', '.join(met) if met else 'NOT met'}")

    if not args.no_e2e:
        import pandas as pd

        from clapnb import embeddings, io

        bs = batch_sizes[0]
        segs = pd.DataFrame({"path": files, "sha256": [io.file_sha256(f) for f in files], "start_s": 0.0,
                             "end_s": 5.0, "augmented": False, "snr_db": np.nan})
        report("")
        report(f"end to end: clapnb compute_embeddings on the {len(files)} distinct clips (decode, cut, policy, "
               f"batch {bs}, forward, cache writes; cold cache) vs the forward-only rate above (the ceiling)")
        for v in [v for v in ("fp32", "bf16", "bf16+compile") if (v, bs) in rates]:
            mode = fast.Mode.parse(v)
            bb = dataclasses.replace(backbone, precision=mode.precision, compile=mode.compile, batch_size=bs)
            bb.encoder = modules[v]  # the module measured above (a compiled one is compiled already)
            best = 0.0
            for r in range(args.repeat):
                t = time.perf_counter()
                embeddings.compute_embeddings(segs, bb, cache_dir=work / f"cache-{v}-{r}", batch_size=bs,
                                              progress=False)
                best = max(best, len(files) / (time.perf_counter() - t))
            ratio = best / rates[(v, bs)]
            report(f"{v:14} {best:8.2f} clips/s end to end = {ratio:.2f} x forward only"
                   f"{'  (target >= 0.9: met)' if ratio >= 0.9 else '  (target >= 0.9: NOT met)'}")
    report("")
    report(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
           f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
