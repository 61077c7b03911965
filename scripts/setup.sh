#!/usr/bin/env bash
# Create .venv with clapnb and its pinned dependencies, and register its Jupyter kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# the birdnet extra too, so the suite covers the BirdNET backbone
.venv/bin/python -m pip install -q -e ".[test,birdnet]"
# sed_eval -> dcase_util can drag in the ancient PySoundFile 0.9.0.post1, whose soundfile.py replaces
# the real one with a build that cannot find libsndfile: remove it and put the real soundfile back.
.venv/bin/python -m pip uninstall -q -y PySoundFile >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --force-reinstall --no-deps "soundfile>=0.12"
.venv/bin/python - <<'PY'
import io, numpy as np, soundfile as sf
buf = io.BytesIO()
sf.write(buf, np.zeros(100, dtype="float32"), 8000, format="WAV")
buf.seek(0)
assert sf.read(buf)[0].shape == (100,), "soundfile cannot round-trip a WAV"
print(f"soundfile {sf.__version__} with {sf.__libsndfile_version__}: ok")
PY
# The browser test (tests/test_review_browser.py) needs Debian's chromium and chromium-driver (a
# browser downloaded by an installer cannot be fetched here). As root with apt-get: install them
# (~1 min, ~112 MB download, 420 MB on disk); otherwise say what to install: the test then fails
# with one line naming the missing binary.
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "chromium and chromedriver: $(command -v chromium), $(command -v chromedriver)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver with apt-get (for tests/test_review_browser.py)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends chromium chromium-driver; } \
      >.venv/apt_chromium.log 2>&1; then
    tail -n 5 .venv/apt_chromium.log >&2
    echo "NOTE: apt-get could not install chromium chromium-driver (log: .venv/apt_chromium.log);" \
         "tests/test_review_browser.py will fail until they are installed" >&2
  fi
else
  echo "NOTE: chromium/chromedriver not found and apt-get cannot run here (not root or not Debian):" >&2
  echo "      install them (sudo apt-get install chromium chromium-driver) or tests/test_review_browser.py fails" >&2
fi
# papermill and jupyter-book run notebooks with the kernel named python3: make it this venv's.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (clapnb)" >/dev/null
echo "clapnb installed in .venv (activate with: source .venv/bin/activate)"
