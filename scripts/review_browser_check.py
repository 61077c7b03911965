"""End-to-end check of the review widget as a person uses it: JupyterLab in a real browser.

    python scripts/review_browser_check.py [--out runs/review_browser] [--timeout 180]

The same check as tests/test_review_browser.py (code in tests/labbrowser.py), writing to a folder you
keep: needs Debian's ``chromium`` and ``chromium-driver`` and ``selenium`` (the test extra; both
installed by scripts/setup.sh when it runs as root). It builds a small detect folder, opens
``notebooks/06_review.md`` in JupyterLab, runs it from the browser, clicks "accept" on the first
event and "reject" on the second, types ``a`` in the shortcut box, reads the three answers back
from ``OUT/det/reviewed.parquet`` and saves the widget's screenshot (``OUT/review_widget.png``).
Exit status 0 when the answers are there, 2 when something is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/review_browser")
    ap.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args()
    import labbrowser

    lacking = labbrowser.missing()
    if lacking:
        print(f"review_browser_check: {lacking}", file=sys.stderr)
        return 2
    got = labbrowser.review_in_browser(args.out, timeout_s=args.timeout)
    ok = got["answers"] == labbrowser.EXPECTED and got["cells_added_by_key"] == 0
    print(json.dumps({"ok": ok, **got}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
