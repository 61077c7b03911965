#!/usr/bin/env bash
# One GPU check of the embedding modes (issue 5): fp32 vs bf16 vs bf16+compile, batch 32 and 128,
# on 16 real clips (tiled to 256 inputs), with the random-weights stand-in, in under 150 s.
#
# For a bare machine with python3 + torch (CUDA) and no internet. Run from the repository root
# with the ignored folders .whl/ (wheels: transformers 4.x, msclap, ...) and .gpuclips/ (16 clips
# copied from ../shared, see its ATTRIBUTION.csv) carried along. Wheels that made it run on the
# lent H100 image (Python 3.12, torch 2.11 cu130, transformers 5 preinstalled): msclap 1.3.4,
# transformers 4.57.6, tokenizers 0.22.2, huggingface-hub 0.36.2, torchlibrosa 0.1.0, librosa
# 0.10.2.post1, soxr, soundfile, cffi, pycparser, regex, audioread, pooch, platformdirs, decorator
# (pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl NAME==VERSION):
#
#     bash benchmarks/gpu_check.sh                              # CUDA; table in $OUT/gpu_precision.txt
#     DEVICE=cpu BATCHES=2 N=4 BUDGET=100 bash benchmarks/gpu_check.sh   # the same path on a CPU, tiny
#
# Then (issue 16) benchmarks/short_clips.py on a Dask LocalCluster: WORKERS (1,2,4; none skips it),
# CLIPS (512), E2E_BATCH (128), E2E_BUDGET (240 s): $OUT/gpu_short_clips.json, ratio to the forward-only ceiling.
#
# Environment knobs: OUT (default /tmp/clapnb-gpu), DEVICE (cuda), BATCHES (32,128), N (inputs per
# round, 256), VARIANTS (fp32,bf16,bf16+compile), PYTHON (python3), INSTALL_WHEELS (yes; no where
# the packages are installed already), BUDGET (seconds for everything, 140): compiled
# variants that would not fit are skipped and said so; every line of the table is written as soon
# as it is measured, so even a killed run leaves what it finished.
set -euo pipefail

OUT=${OUT:-/tmp/clapnb-gpu}
DEVICE=${DEVICE:-cuda}
BATCHES=${BATCHES:-32,128}
N=${N:-256}
VARIANTS=${VARIANTS:-fp32,bf16,bf16+compile}
BUDGET=${BUDGET:-140}
PYTHON=${PYTHON:-python3}
INSTALL_WHEELS=${INSTALL_WHEELS:-yes}
SITE=${SITE:-/tmp/site}
STANDIN=${STANDIN:-/tmp/clapnb-standin}
start=$SECONDS
mkdir -p "$OUT"
log() { echo "[gpu_check $((SECONDS - start)) s] $*" | tee -a "$OUT/gpu_check.log"; }

[ -d .gpuclips ] || { log "no .gpuclips/ here (carry it: 16 clips copied from ../shared)"; exit 2; }
if [ "$INSTALL_WHEELS" = yes ] && [ ! -f "$SITE/.clapnb-wheels" ]; then
    log "installing $(ls .whl/*.whl | wc -l) wheels from .whl into $SITE (no index, no deps)"
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl
    touch "$SITE/.clapnb-wheels"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/clapnb-inductor}

log "preflight: imports and the device"
"$PYTHON" - "$DEVICE" <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import importlib, sys
need = ["numpy", "pandas", "scipy", "yaml", "soundfile", "soxr", "librosa", "torchlibrosa", "transformers",
        "tokenizers", "huggingface_hub", "torchaudio", "msclap", "torch"]
missing = []
for name in need:
    try:
        mod = importlib.import_module(name)
        print(f"  {name} {getattr(mod, '__version__', '')}")
    except Exception as exc:  # report every missing module at once
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    missing.append("a CUDA device (torch.cuda.is_available() is False)")
if missing:
    sys.exit("MISSING: " + "; ".join(missing))
EOF

if [ ! -f "$STANDIN/standin.json" ]; then
    log "building the random-weights stand-in in $STANDIN"
    "$PYTHON" -c "from clapnb import standin; standin.build_standin('$STANDIN')"
fi

left=$((BUDGET - (SECONDS - start)))
log "benchmark on $DEVICE, batches $BATCHES, $N inputs, variants $VARIANTS, $left s of budget left"
"$PYTHON" benchmarks/precision.py --device "$DEVICE" --batch-sizes "$BATCHES" --n "$N" --variants "$VARIANTS" \
    --clips .gpuclips --standin "$STANDIN" --no-e2e --repeat 2 --budget-s "$left" \
    --out "$OUT/gpu_precision.txt" 2>>"$OUT/gpu_check.log"
log "done: $OUT/gpu_precision.txt"

# Issue 16: detection over many short clips on this GPU through a Dask LocalCluster (one device per
# worker, decoding in the workers, batches across files) against the forward-only ceiling of the same
# windows: the ratio grouped / forward_only is the goal (>= 0.8). WORKERS=1,2,4 (default) worker
# processes; CLIPS distinct copies of .gpuclips/ (default 512); E2E_BATCH (default 128).
if [ "${WORKERS:-1,2,4}" != none ]; then
    log "detect over ${CLIPS:-512} short clips: --scheduler local --workers ${WORKERS:-1,2,4}, batch ${E2E_BATCH:-128}"
    timeout "${E2E_BUDGET:-240}" "$PYTHON" benchmarks/short_clips.py --device "$DEVICE" --backbones msclap-2023 \
        --standin "$STANDIN" --clips-dir .gpuclips --clips "${CLIPS:-512}" --batch-size "${E2E_BATCH:-128}" \
        --scheduler local --workers "${WORKERS:-1,2,4}" --repeat 1 --out "$OUT/gpu_short_clips.json" \
        2>>"$OUT/gpu_check.log" | tee -a "$OUT/gpu_check.log" || log "short_clips stopped (exit $?): see the log"
    log "done: $OUT/gpu_short_clips.json"
fi
