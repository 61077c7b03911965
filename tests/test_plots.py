"""Figures: titles that fit, spectrograms with units and a colour scale, display names."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from clapnb import plots, report


def _inside(fig, artist) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the figures come closed (no pyplot canvas), as the book saves them
    canvas.draw()
    box = artist.get_window_extent(canvas.get_renderer())
    w, h = canvas.get_width_height()
    return box.x0 >= -1 and box.x1 <= w + 1 and box.y0 >= -1 and box.y1 <= h + 1


def test_a_long_model_title_is_wrapped_inside_the_figure():
    title = report.describe_model({"backbone": "msclap-2023", "weights": "/w/CLAP_weights_2023_random.pth",
                                   "weights_fingerprint": "8" * 64, "lowpass_hz": None, "random_weights": True})
    assert len(title) > 150
    results = pd.DataFrame({"length_s": [4, 7], **{f"{k}_{s}": [0.5, 0.6] for k in
                            ("zeroshot", "probe_validation", "probe_test") for s in ("accuracy", "ci_low", "ci_high")}})
    fig = plots.accuracy_vs_length(results, report.PAPER_TABLE2, report.PAPER_TABLE3, title=title)
    ax = fig.axes[0]
    assert "\n" in ax.get_title() and ax.get_title().replace("\n", " ") == title
    assert _inside(fig, ax.title)


def test_spectrograms_have_time_and_frequency_units_and_one_colour_bar():
    sr = 16000
    t = np.arange(2 * sr) / sr
    examples = [("Dogs", np.sin(2 * np.pi * 440 * t)), ("Thunder, fireworks and gunshot", np.random.default_rng(0).normal(size=sr))]
    fig = plots.spectrogram_grid(examples, sr)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["Dogs", "Thunder, fireworks and\ngunshot"] or \
        [ax.get_title().replace("\n", " ") for ax in panels] == ["Dogs", "Thunder, fireworks and gunshot"]
    assert all(ax.get_xlabel() == "time (s)" for ax in panels)
    assert panels[0].get_ylabel() == "frequency (Hz)"
    bars = [ax for ax in fig.axes if ax not in panels]
    assert len(bars) == 1 and "dB" in bars[0].get_ylabel()
    lo, hi = panels[0].collections[0].get_clim()
    assert (lo, hi) == (-80.0, 0.0)  # one scale for every panel, as the single bar says
    long = plots.spectrogram_grid([("Dogs", np.tile(examples[0][1], 30))], sr)  # a minute: 10 s drawn
    assert long.axes[0].get_xlim()[1] <= 10.1


def test_per_class_plots_show_display_names():
    table = pd.DataFrame({"class": ["thunder_fireworks_gunshot", "dogs"], "accuracy": [0.5, 1.0], "n": [4, 4]})
    fig = plots.per_class_accuracy(table, "zero-shot")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["Thunder, fireworks and gunshot", "Dogs"]
