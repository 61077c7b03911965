"""End-to-end check of the review widget as a person uses it: JupyterLab in a real browser.

    python scripts/review_browser_check.py [--out runs/review_browser] [--timeout 180]

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``) and
``selenium`` (``pip install selenium``); not part of the test suite (see the README). It builds a small
detect folder (two 20-s recordings, six events), writes ``notebooks/06_review.md`` as a notebook with
its parameters set, starts JupyterLab on it, runs every cell from the browser, clicks "accept" on the
first event and "reject" on the second, reads both answers back from ``reviewed.parquet`` and saves a
screenshot of the widget (``OUT/review_widget.png``). Exit status 0 when the answers are there.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def detect_folder(root: Path) -> Path:
    import soundfile as sf

    from clapnb import events, io

    rng = np.random.default_rng(0)
    files = []
    for k in range(2):
        x = 0.001 * rng.standard_normal(20 * 16000)
        for on in (2.0, 8.0, 14.0):
            a = int(on * 16000)
            x[a:a + 32000] += 0.3 * np.sin(2 * np.pi * (700 + 300 * k) * np.arange(32000) / 16000)
        p = root / f"rec_{k}.wav"
        sf.write(p, x, 16000)
        files.append(str(p))
    ev = pd.DataFrame({"file": [files[0]] * 3 + [files[1]] * 3, "onset_s": [2.0, 8.0, 14.0] * 2,
                       "offset_s": [4.0, 10.0, 16.0] * 2,
                       "class": ["sirens_alarms", "dogs", "sirens_alarms", "helicopter", "dogs", "sirens_alarms"],
                       "score": [0.95, 0.52, 0.70, 0.61, 0.88, 0.45]})
    d = root / "det"
    events.write_events(ev, d)
    io.atomic_write_json(d / "detect.json", {
        "probe": {"classes": ["dogs", "helicopter", "sirens_alarms", "background"]},
        "parameters": {"threshold": 0.5}, "files": [{"file": f, "duration_s": 20.0, "status": "done"} for f in files]})
    return d


def notebook(root: Path, det: Path) -> Path:
    import jupytext
    import nbformat

    nb = jupytext.read(REPO / "notebooks" / "06_review.md", fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = f'detect_dir = {str(det)!r}\nreviewer = "browser"\nsort = "score"\nlevels = None\n'
    out = root / "review.ipynb"
    nbformat.write(nb, out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/review_browser")
    ap.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from clapnb import review

    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "det" / "reviewed.parquet").unlink(missing_ok=True)
    det = detect_folder(root)
    nb = notebook(root, det)
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                            "--LabApp.expose_app_in_browser=True", "--allow-root"],
                           env=env, stdout=open(root / "lab.log", "w"), stderr=subprocess.STDOUT)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        opts.add_argument(a)
    driver = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if lab.poll() is not None:
                raise SystemExit(f"JupyterLab exited (status {lab.returncode}); see {root / 'lab.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{nb.name}?token={token}")
        wait = WebDriverWait(driver, args.timeout)
        wait.until(lambda d: d.execute_script("return !!(window.jupyterapp && document.querySelector('.jp-Notebook'))"))
        wait.until(lambda d: d.execute_script(
            "const w = window.jupyterapp.shell.currentWidget;"
            "const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            "return !!k && k.status === 'idle';"))
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        button = "//button[contains(@class,'widget-button') and normalize-space()='{}']"
        shown = "//*[contains(@class,'widget-label') and contains(normalize-space(), '{} / 6 reviewed')]"
        wait.until(EC.presence_of_element_located((By.XPATH, shown.format(0))))
        wait.until(EC.element_to_be_clickable((By.XPATH, button.format("accept")))).click()
        wait.until(EC.presence_of_element_located((By.XPATH, shown.format(1))))
        wait.until(EC.element_to_be_clickable((By.XPATH, button.format("reject")))).click()
        wait.until(EC.presence_of_element_located((By.XPATH, shown.format(2))))
        widget = driver.find_element(By.CSS_SELECTOR, ".widget-vbox")
        driver.execute_script("arguments[0].scrollIntoView();", widget)
        shot = root / "review_widget.png"
        widget.screenshot(str(shot))
    except Exception:
        if driver is not None:
            driver.save_screenshot(str(root / "failure.png"))
        raise
    finally:
        if driver is not None:
            driver.quit()
        lab.terminate()
        lab.wait(timeout=30)
    t = review.read_reviewed(det / "reviewed.parquet").set_index("event_id")
    answered = t[t["status"] != "pending"].sort_values("reviewed_at")
    got = [(r["status"], r["original_class"], float(r["score"]), r["reviewer"]) for _, r in answered.iterrows()]
    ok = got == [("accepted", "sirens_alarms", 0.95, "browser"), ("rejected", "dogs", 0.88, "browser")]
    print(json.dumps({"ok": ok, "answers": got, "screenshot": str(shot)}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
