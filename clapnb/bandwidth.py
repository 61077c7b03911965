"""Bandwidth of recordings: the band-edge measurement and the harmonisation rule (``--harmonise-bandwidth``).

When recordings are pooled from several sources (ESC-50 and UrbanSound8K, or public clips and
one's own recordings), a classifier can learn the recording chain instead of the sound: most
UrbanSound8K clips are 22.05 kHz (nothing above 11 kHz) while ESC-50 clips are 44.1 kHz.
:func:`harmonisation` chooses one low-pass frequency for the whole data set, the lowest common
effective bandwidth, so that every recording is band-limited the same way before it is cut into
segments (:func:`clapnb.audio.lowpass`). The diagnostic that measures what is left of such a
shortcut is :mod:`clapnb.shortcuts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from clapnb import io
from clapnb.config import HARMONISE_WORDS, canonical_harmonise, parse_harmonise_list
from clapnb.errors import InputError

__all__ = ["HARMONISE_WORDS", "canonical_harmonise", "parse_harmonise_list", "band_edge", "measure_band_edges",
           "bandwidth_by_source", "harmonisation", "describe_harmonisation", "describe_cutoff",
           "single_source_classes"]

#: Band-edge measurement (see :func:`band_edge`): a fall of CLIFF_DB from the median level of the
#: REF_HZ just below a frequency to *everything* from GUARD_HZ above it up to Nyquist.
CLIFF_DB = 40.0
GUARD_HZ = 250.0
REF_HZ = 1000.0
NPERSEG = 2048


def band_edge(x: np.ndarray, sr: int, *, cliff_db: float = CLIFF_DB, guard_hz: float = GUARD_HZ,
              ref_hz: float = REF_HZ, nperseg: int = NPERSEG) -> float:
    """Measured effective bandwidth of one recording (Hz): where its spectrum falls off a cliff.

    The long-term spectrum (Welch) is searched, from low to high, for the first frequency ``f``
    such that everything from ``f + guard_hz`` up to Nyquist lies at least ``cliff_db`` below the
    median level of ``[f - ref_hz, f)``. Resamplers and codecs leave such cliffs (a 22.05-kHz clip
    stored at 44.1 kHz drops by > 100 dB at ~10.5 kHz); natural spectra fall gradually. Without a
    cliff the edge is the Nyquist frequency. Single recordings can still show natural cliffs
    (thunder, a distant helicopter), which is why :func:`harmonisation` uses the median per source.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.signal import welch

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 16:
        return sr / 2
    f, p = welch(x, sr, nperseg=min(nperseg, len(x)))
    db = 10 * np.log10(np.maximum(p, 1e-20))
    df = f[1] - f[0]
    g, r = max(1, round(guard_hz / df)), max(1, round(ref_hz / df))
    if len(f) <= r + g:
        return sr / 2
    above = np.maximum.accumulate(db[::-1])[::-1]  # above[i] = max(db[i:])
    ref = np.median(sliding_window_view(db, r), axis=1)  # ref[j] = median(db[j:j + r])
    i = np.arange(r, len(f) - g)
    hit = np.flatnonzero(ref[i - r] - above[i + g] >= cliff_db)
    return float(f[i[hit[0]]]) if len(hit) else sr / 2


def measure_band_edges(recordings: pd.DataFrame, *, progress: bool = True) -> pd.DataFrame:
    """:func:`band_edge` of every recording with a class, decoded at its own sample rate."""
    from tqdm.auto import tqdm

    from clapnb import audio

    rec = recordings[recordings["class"].notna()]
    edges = []
    for path in tqdm(rec["path"], desc="measuring bandwidth", unit="file", disable=None if progress else True):
        x, sr = audio.decode(path)
        edges.append(band_edge(x, sr))
    return pd.DataFrame({"path": rec["path"].to_numpy(), "sha256": rec["sha256"].to_numpy(),
                         "source": rec["source"].to_numpy(), "sample_rate": rec["sample_rate"].to_numpy(),
                         "nyquist_hz": rec["sample_rate"].to_numpy() / 2, "band_edge_hz": edges})


def bandwidth_by_source(recordings: pd.DataFrame, edges: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per source: recordings, sample rates, lowest Nyquist and (when measured) band-edge quantiles."""
    rec = recordings[recordings["class"].notna()]
    t = rec.groupby("source").agg(
        recordings=("path", "size"),
        sample_rates=("sample_rate", lambda s: ", ".join(f"{v:g}" for v in sorted(set(s)))),
        lowest_nyquist_hz=("sample_rate", lambda s: float(s.min()) / 2))
    if edges is not None and len(edges):
        e = edges[["path", "band_edge_hz"]].merge(rec[["path", "source", "sample_rate"]], on="path")
        by = e.groupby("source")["band_edge_hz"]
        t["band_edge_median_hz"] = by.median()
        t["band_edge_p10_hz"] = by.quantile(0.1)
        t["below_nyquist_share"] = (e["band_edge_hz"] < 0.99 * e["sample_rate"] / 2).groupby(e["source"]).mean()
    return t.reset_index()


def harmonisation(recordings: pd.DataFrame, spec: str | float | None,
                  edges: pd.DataFrame | None = None, *, progress: bool = True) -> dict:
    """The low-pass frequency for ``--harmonise-bandwidth spec`` and how it was chosen.

    * ``off``: none (``cutoff_hz`` null).
    * a frequency: that frequency, whatever the data.
    * ``auto``: the lowest common effective bandwidth, ``floor(min(A, B))`` with
      A = the lowest Nyquist frequency (half the original sample rate) over all recordings, and
      B = the lowest, over sources, of the *median* measured band edge of a source's recordings
      (:func:`band_edge`). A catches recordings stored at a low rate, B a collection that was
      upsampled as a whole (e.g. 16-kHz recordings saved at 44.1 kHz); the median keeps a few
      naturally dull recordings (thunder) from dragging the whole data set down.

    Only recordings with a class count. ``edges`` (from :func:`measure_band_edges`) is measured
    here when ``auto`` needs it and it is not given. Returns a JSON-able provenance record.
    """
    spec = canonical_harmonise(spec)
    rec = recordings[recordings["class"].notna()]
    if rec.empty:
        raise InputError("no recording has a class: nothing to harmonise")
    nyq = rec["sample_rate"].astype(float) / 2
    out: dict = {"spec": spec, "cutoff_hz": None, "lowest_nyquist_hz": float(nyq.min()),
                 "filter": None, "rule": None}
    if spec == "off":
        out["rule"] = "off: every recording keeps its full bandwidth"
        return out
    from clapnb import audio

    out["filter"] = audio.LOWPASS_DESIGN
    if spec != "auto":
        out["cutoff_hz"] = float(spec)
        out["rule"] = "fixed: the given frequency"
        if float(spec) > out["lowest_nyquist_hz"]:
            low = rec.loc[nyq < float(spec)]
            out["warning"] = (f"{len(low)} recording(s) (sources {', '.join(sorted(set(low['source'])))}) have "
                              f"less bandwidth than {float(spec):g} Hz: the bandwidth is not fully harmonised")
        return out
    if edges is None:
        edges = measure_band_edges(rec, progress=progress)
    edges = edges[["path", "band_edge_hz"]].merge(rec[["path", "source"]], on="path")
    medians = edges.groupby("source")["band_edge_hz"].median()
    a, b = float(nyq.min()), float(medians.min())
    cutoff = math.floor(min(a, b))
    at_a = rec.loc[nyq == a]
    limited_by = ({"by": "sample rate", "sources": sorted(set(at_a["source"])), "n_recordings": int(len(at_a)),
                   "sample_rate": int(at_a["sample_rate"].iloc[0])} if a <= b else
                  {"by": "measured band edge", "sources": sorted(medians.index[medians == b]),
                   "median_band_edge_hz": b})
    out.update({
        "cutoff_hz": float(cutoff),
        "rule": "auto: floor(min(lowest Nyquist frequency over recordings, lowest per-source median "
                "of the measured band edge))",
        "limited_by": limited_by,
        "measurement": {"method": "Welch spectrum; first frequency with everything from +guard_hz up to "
                                  "Nyquist at least cliff_db below the median of the ref_hz below",
                        "cliff_db": CLIFF_DB, "guard_hz": GUARD_HZ, "ref_hz": REF_HZ, "nperseg": NPERSEG},
        "per_source": io.to_jsonable(bandwidth_by_source(rec, edges).to_dict(orient="records")),
    })
    return out


def describe_harmonisation(h: Mapping) -> str:
    """One sentence on a :func:`harmonisation` record: the cutoff and what set it."""
    text = describe_cutoff(h.get("cutoff_hz"))
    lim = h.get("limited_by") or {}
    if lim.get("by") == "sample rate":
        text += (f" (auto: the lowest sample rate, {lim['sample_rate']} Hz, of {lim['n_recordings']} recording(s) "
                 f"from {', '.join(lim['sources'])})")
    elif lim.get("by") == "measured band edge":
        text += (f" (auto: the median measured band edge, {lim['median_band_edge_hz']:.0f} Hz, of the recordings "
                 f"from {', '.join(lim['sources'])})")
    elif h.get("spec") not in (None, "off", "auto"):
        text += " (fixed)"
    if h.get("warning"):
        text += f"; WARNING: {h['warning']}"
    return text


def describe_cutoff(cutoff_hz: float | None) -> str:
    """Words for captions: which bandwidth the numbers were measured on."""
    if cutoff_hz is None or (isinstance(cutoff_hz, float) and math.isnan(cutoff_hz)):
        return "full bandwidth (no harmonisation)"
    return f"bandwidth harmonised: low-pass at {float(cutoff_hz):g} Hz"


# --- source mix --------------------------------------------------------------------------------

def single_source_classes(table: pd.DataFrame) -> dict[str, str]:
    """Classes whose recordings (or segments) all come from one source, pooled data only."""
    rows = table[table["class"].notna()]
    if rows["source"].nunique() < 2:
        return {}
    by = rows.groupby("class")["source"].agg(lambda s: sorted(set(s)))
    return {c: s[0] for c, s in by.items() if len(s) == 1}
