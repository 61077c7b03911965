"""Figures of ``clapnb levels`` results: the LAF time history an acoustician inspects by eye."""

from __future__ import annotations

import numpy as np
import pandas as pd


def laf_history(m, file_index: int = 0, *, exclusion: str | None = None, events: pd.DataFrame | None = None,
                intervals: pd.DataFrame | None = None, max_s: float | None = None, ax=None, title: str | None = None):
    """LAF of one file over time, excluded spans shaded, event onsets marked, interval LAeq as steps.

    ``m``: a :class:`clapnb.levels.Measurement` (``run_levels(...)["measurement"]``); ``exclusion``:
    which of its exclusion sets to shade (``"excl"`` for ``clapnb levels --exclude``); ``events``:
    ``events_levels`` rows to mark (default: the measurement's events for that file); ``intervals``:
    ``levels`` rows whose LAeq (with and, when present, without exclusions) is drawn as steps;
    ``max_s``: draw only the first ``max_s`` seconds.
    """
    import matplotlib.pyplot as plt

    from clapnb.levels import db

    h = m.histories[file_index]
    unit, W = m.calibration.unit, m.weighting
    t = np.arange(h.n_steps) / h.rate
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 3.6), layout="constrained")
    ax.plot(t, db(h.f_end, m.calibration.offset_db), lw=0.6, color="0.25", label=f"L{W}F")
    if exclusion is not None and m.events is not None:
        ev = m.events[m.events["_file_index"] == file_index]
        rows = m.excluded_rows.get(exclusion, set())
        for i, r in ev.iterrows():
            if i in rows:
                ax.axvspan(r["onset_s"], r["offset_s"], color="tab:red", alpha=0.18, lw=0)
    marks = events
    if marks is None and m.events is not None:
        marks = m.events[m.events["_file_index"] == file_index]
    if marks is not None and len(marks):
        top = ax.get_ylim()[1]
        ax.plot(marks["onset_s"], np.full(len(marks), top), "v", color="tab:red", ms=5, label="event onset")
        for _, r in marks.iterrows():
            ax.annotate(str(r["class"]), (r["onset_s"], top), xytext=(2, 3), textcoords="offset points", fontsize=7,
                        rotation=30)
    if intervals is not None:
        iv = intervals[intervals["scope"] == "interval"]
        if m.clock and "start_time" in iv:  # clock intervals: place them on this file's own time axis
            end = h.start + pd.Timedelta(seconds=h.duration_s)
            iv = iv[(iv["end_time"] > h.start) & (iv["start_time"] < end)]
            x0 = (iv["start_time"] - h.start).dt.total_seconds().to_numpy()
            x1 = (iv["end_time"] - h.start).dt.total_seconds().to_numpy()
        else:
            iv = iv[iv["file"] == h.path]
            x0, x1 = iv["start_s"].to_numpy(), iv["end_s"].to_numpy()
        for col, style, lab in ((f"L{W}eq_{unit}", "tab:blue", f"L{W}eq"),
                                (f"L{W}eq_excl_{unit}", "tab:green", f"L{W}eq, excluded spans removed")):
            if col in iv and len(iv):
                ax.step(np.r_[x0, x1[-1]], np.r_[iv[col], iv[col].iloc[-1]], where="post", color=style, lw=1.4,
                        label=lab)
    ax.set_xlim(0, h.duration_s if max_s is None else min(max_s, h.duration_s))
    ax.set_xlabel("time from the file's start (s)")
    ax.set_ylabel(f"level ({unit}{'' if m.calibration.calibrated else ', not calibrated'})")
    ax.set_title(title or h.path.rsplit("/", 1)[-1])
    ax.legend(loc="upper right", fontsize=8)
    return ax.figure
