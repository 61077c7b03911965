"""The review widget end to end, as a person uses it: JupyterLab 4 in Debian's chromium (selenium).

Not skipped when something is missing: the test fails with one line naming it (scripts/setup.sh
installs selenium with the test extra, and chromium + chromium-driver with apt-get as root).
"""

from __future__ import annotations

import pytest

import labbrowser


def test_accept_reject_and_a_key_in_jupyterlab_reach_reviewed_parquet(tmp_path):
    lacking = labbrowser.missing()
    if lacking:
        pytest.fail(lacking, pytrace=False)
    got = labbrowser.review_in_browser(tmp_path / "lab", timeout_s=120)
    print(f"review widget screenshot: {got['screenshot']} ({got['seconds']})")
    assert got["answers"] == labbrowser.EXPECTED
    assert got["cells_added_by_key"] == 0  # JupyterLab's own shortcut "a" did not fire
    with open(got["screenshot"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
