#!/usr/bin/env bash
# Create .venv with clapnb and its pinned dependencies, and register its Jupyter kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# papermill and jupyter-book run notebooks with the kernel named python3: make it this venv's.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (clapnb)" >/dev/null
echo "clapnb installed in .venv (activate with: source .venv/bin/activate)"
