"""The review widget as a person uses it: JupyterLab 4 in Debian's chromium, driven by selenium.

Shared by tests/test_review_browser.py and scripts/review_browser_check.py. :func:`missing` names
what is not installed (one line); :func:`review_in_browser` builds a small detect folder (two 20-s
recordings, six events), writes ``notebooks/06_review.md`` as a notebook with its parameters set,
starts one JupyterLab server on it, runs every cell from the browser, clicks "accept" on the first
event and "reject" on the second, types ``a`` in the widget's shortcut box (accepts the third), waits
for each answer's progress line, saves a screenshot of the widget and returns the answers read back
from ``reviewed.parquet``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
INSTALL = "apt-get install chromium chromium-driver (Debian; scripts/setup.sh does it as root)"
CLASSES = ["dogs", "helicopter", "sirens_alarms", "background"]


def binaries() -> dict[str, str | None]:
    """Paths of Debian's chromium and its chromedriver (None when not installed)."""
    def find(name: str) -> str | None:
        return shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)

    return {"chromium": find("chromium"), "chromedriver": find("chromedriver")}


def missing() -> str | None:
    """One line naming what the browser check lacks, or None when everything is there."""
    found = binaries()
    lacking = [name for name, path in found.items() if path is None]
    if lacking:
        return f"{' and '.join(lacking)} not found on PATH or in /usr/bin: {INSTALL}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in this Python: pip install -e '.[test]' (scripts/setup.sh does)"
    return None


def detect_folder(root: Path) -> Path:
    """A detect output folder by hand: tones in quiet noise where the six events are."""
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
    (d / "reviewed.parquet").unlink(missing_ok=True)
    events.write_events(ev, d)
    io.atomic_write_json(d / "detect.json", {
        "probe": {"classes": CLASSES}, "parameters": {"threshold": 0.5},
        "files": [{"file": f, "duration_s": 20.0, "status": "done"} for f in files]})
    return d


def notebook(root: Path, det: Path) -> Path:
    """notebooks/06_review.md as an .ipynb with its parameters cell set to ``det`` (sorted by score)."""
    import jupytext
    import nbformat

    nb = jupytext.read(REPO / "notebooks" / "06_review.md", fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = f'detect_dir = {str(det)!r}\nreviewer = "browser"\nsort = "score"\nlevels = None\n'
    out = root / "review.ipynb"
    nbformat.write(nb, out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab(root: Path, port: int, token: str) -> subprocess.Popen:
    """One JupyterLab server on ``root`` with its own config/runtime folders (no user settings)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    return subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                             "--LabApp.expose_app_in_browser=True", "--allow-root"],
                            env=env, stdout=open(root / "lab.log", "w"), stderr=subprocess.STDOUT)


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = binaries()
    opts = webdriver.ChromeOptions()
    opts.binary_location = found["chromium"]
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(found["chromedriver"]), options=opts)


def review_in_browser(root: str | os.PathLike, timeout_s: float = 120.0) -> dict:
    """Run the review notebook in JupyterLab in chromium; returns answers (status, class, score, reviewer,
    in answer order), the screenshot path and the seconds each phase took."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from clapnb import review
    from clapnb.review_widget import KEYS_PLACEHOLDER

    t0 = time.perf_counter()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    det = detect_folder(root)
    nb = notebook(root, det)
    port, token = _free_port(), secrets.token_hex(16)
    lab = _lab(root, port, token)
    driver = None
    shot = root / "review_widget.png"
    phases = {}
    try:
        driver = _driver()  # chromium starts while the server does
        deadline = time.time() + timeout_s
        while True:
            if lab.poll() is not None:
                raise RuntimeError(f"JupyterLab exited (status {lab.returncode}); see {root / 'lab.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not listen on port {port} in {timeout_s:g} s; see "
                                       f"{root / 'lab.log'}") from None
                time.sleep(0.3)
        phases["server_s"] = time.perf_counter() - t0
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{nb.name}?token={token}")
        wait = WebDriverWait(driver, timeout_s)
        wait.until(lambda d: d.execute_script(
            "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            "const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            "return !!k && k.status === 'idle' && !!document.querySelector('.jp-Notebook');"))
        phases["kernel_s"] = time.perf_counter() - t0
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        button = "//button[contains(@class,'widget-button') and normalize-space()='{}']"
        shown = "//*[contains(@class,'widget-label') and contains(normalize-space(), '{} / 6 reviewed')]"
        wait.until(EC.presence_of_element_located((By.XPATH, shown.format(0))))
        phases["widget_s"] = time.perf_counter() - t0
        wait.until(EC.element_to_be_clickable((By.XPATH, button.format("accept")))).click()
        wait.until(EC.presence_of_element_located((By.XPATH, shown.format(1))))
        wait.until(EC.element_to_be_clickable((By.XPATH, button.format("reject")))).click()
        wait.until(EC.presence_of_element_located((By.XPATH, shown.format(2))))
        keys = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"input[placeholder='{KEYS_PLACEHOLDER}']")))
        cells = len(driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        keys.click()
        keys.send_keys("a")
        wait.until(EC.presence_of_element_located((By.XPATH, shown.format(3))))
        # the key went to the widget only: JupyterLab's own "a" (insert a cell above) did not fire
        phases["cells_added_by_key"] = len(driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) - cells
        phases["answers_s"] = time.perf_counter() - t0
        widget = driver.find_element(By.CSS_SELECTOR, ".widget-vbox")
        driver.execute_script("arguments[0].scrollIntoView();", widget)
        widget.screenshot(str(shot))
    except Exception:
        if driver is not None:
            driver.save_screenshot(str(root / "failure.png"))
        raise
    finally:
        if driver is not None:
            driver.quit()
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
    t = review.read_reviewed(det / "reviewed.parquet")
    answered = t[t["status"] != "pending"].sort_values("reviewed_at")
    answers = [(r["status"], r["original_class"], float(r["score"]), r["reviewer"]) for _, r in answered.iterrows()]
    phases["total_s"] = time.perf_counter() - t0
    added = phases.pop("cells_added_by_key")
    return {"answers": answers, "screenshot": str(shot), "cells_added_by_key": added,
            "seconds": {k: round(v, 1) for k, v in phases.items()}}


#: What the clicks and the key must leave in reviewed.parquet (the queue is sorted by score).
EXPECTED = [("accepted", "sirens_alarms", 0.95, "browser"), ("rejected", "dogs", 0.88, "browser"),
            ("accepted", "sirens_alarms", 0.70, "browser")]
