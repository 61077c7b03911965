"""What detection over an archive and the sweep share in their cost estimates: the rule and its wording.

Both measure a few items (windows, segments) on this machine and scale: ``start-up + items x
seconds per item / workers``. Pure functions, no clapnb imports.
"""

from __future__ import annotations


def wall_seconds(n_todo: int, s_per_item: float | None, workers: int, startup_s: float = 0.0) -> float:
    """Expected wall time: what each fresh worker pays once, plus the items shared between the workers."""
    if s_per_item is None or not n_todo:
        return 0.0
    return float(startup_s) + int(n_todo) * float(s_per_item) / max(1, int(workers))


def human_s(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def human_b(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if b < 1000:
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} TB"
