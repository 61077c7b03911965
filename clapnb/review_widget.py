"""The review widget: one detected event at a time in JupyterLab (ipywidgets only, no server extension).

It shows a spectrogram of the event with context (PNG in an ``ipywidgets.Image``), an audio player
(``ipywidgets.Audio``, a WAV of the event plus context), the class, score, status and progress, and
buttons that call :class:`clapnb.review.Review` - the model saves every answer at once. The widget
keeps no state of its own besides what it displays, so a restarted kernel reopens where it stopped.
"""

from __future__ import annotations

import io as _io

import numpy as np

from clapnb import review as rv

CONTEXT_S = 2.0
MAX_S = 20.0
SR = 16000
ALL = "(all)"
KEYS_PLACEHOLDER = "click here, then type a key"  # the shortcut box (a browser test finds it by this)


def event_audio(event: dict, context_s: float = CONTEXT_S, sr: int = SR, max_s: float = MAX_S) -> tuple[np.ndarray, int, float]:
    """Mono audio of the event with ``context_s`` each side (at most ``max_s``) and where it starts in the file."""
    from clapnb import detect_plots

    start = max(0.0, float(event["onset_s"]) - context_s)
    x, sr = detect_plots.excerpt(event["file"], start, float(event["offset_s"]) + context_s, sr=sr, max_s=max_s)
    return x, sr, start


def wav_bytes(x: np.ndarray, sr: int) -> bytes:
    """16-bit WAV of ``x`` peak-normalised to -1 dBFS (quiet events become audible; levels come from clapnb levels)."""
    import soundfile as sf

    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    y = x * (10 ** (-1 / 20) / peak) if peak > 0 else x
    buf = _io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_png(x: np.ndarray, sr: int, start_s: float, event: dict) -> bytes:
    """Log-magnitude spectrogram (dB re full scale) with the event's bounds marked; PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.8), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    if len(x) >= 256:
        _, _, _, im = ax.specgram(x, NFFT=512, Fs=sr, noverlap=384, xextent=(start_s, start_s + len(x) / sr),
                                  scale="dB", cmap="magma", vmin=-120)
        fig.colorbar(im, ax=ax, label="dB re full scale")
    for t in (event["onset_s"], event["offset_s"]):
        ax.axvline(float(t), color="cyan", lw=1.5)
    if event.get("original_onset_s") is not None and np.isfinite(event.get("original_onset_s") or np.nan):
        for t in (event["original_onset_s"], event["original_offset_s"]):
            ax.axvline(float(t), color="white", lw=1, ls=":")
    ax.set_xlabel("time in the file (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(f"{event['class']} (score {event['score']:.2f}) in {str(event['file']).rsplit('/', 1)[-1]}", fontsize=9)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class ReviewWidget:
    """The widgets around one :class:`clapnb.review.Review`; ``.box`` is what a notebook displays."""

    def __init__(self, model: rv.Review) -> None:
        import ipywidgets as W

        self.model = model
        classes = [c for c in (model.classes or sorted(set(model.table["original_class"]) - {""})) if c != rv.BACKGROUND]
        files = list(dict.fromkeys(model.table["file"]))
        self.progress = W.IntProgress(min=0, max=max(1, len(model)), description="reviewed")
        self.progress_label = W.Label()
        self.info = W.HTML()
        self.image = W.Image(format="png")
        self.audio = W.Audio(format="wav", autoplay=False, loop=False)
        self.accept_button = W.Button(description="accept", button_style="success", tooltip="the detection is right")
        self.reject_button = W.Button(description="reject", button_style="danger", tooltip="a false alarm: background")
        self.relabel_choice = W.Dropdown(options=[*classes, rv.BACKGROUND], description="class")
        self.relabel_button = W.Button(description="relabel", button_style="warning")
        self.onset = W.BoundedFloatText(min=0, max=1e9, step=0.1, description="onset (s)")
        self.offset = W.BoundedFloatText(min=0, max=1e9, step=0.1, description="offset (s)")
        self.adjust_button = W.Button(description="adjust times", button_style="info")
        self.prev_button = W.Button(description="< previous")
        self.next_button = W.Button(description="next >")
        self.sort = W.Dropdown(options=list(rv.SORTS), value=model.sort, description="sort")
        self.class_filter = W.Dropdown(options=[ALL, *classes], value=ALL, description="class")
        self.file_filter = W.Dropdown(options=[(ALL, ALL)] + [(f.rsplit("/", 1)[-1], f) for f in files], value=ALL,
                                      description="file")
        keys = ", ".join(f"<b>{k}</b> {a}" + (" (to the class chosen above)" if a == "relabel" else "")
                         for k, a in rv.SHORTCUTS.items())
        self.keys = W.Text(value="", placeholder=KEYS_PLACEHOLDER, description="keys", continuous_update=True)
        self.keys_help = W.HTML(f"<small>shortcuts, typed in the keys box: {keys}</small>")
        self.message = W.HTML()
        self.accept_button.on_click(lambda _: self._do(self.model.accept))
        self.reject_button.on_click(lambda _: self._do(self.model.reject))
        self.relabel_button.on_click(lambda _: self._do(lambda: self.model.relabel(self.relabel_choice.value)))
        self.adjust_button.on_click(lambda _: self._do(lambda: self.model.adjust(self.onset.value, self.offset.value)))
        self.prev_button.on_click(lambda _: self._move(-1))
        self.next_button.on_click(lambda _: self._move(1))
        self.keys.observe(self._keys, names="value")
        for w in (self.sort, self.class_filter, self.file_filter):
            w.observe(lambda _: self._filters(), names="value")
        self.box = W.VBox([
            W.HBox([self.sort, self.class_filter, self.file_filter]),
            W.HBox([self.progress, self.progress_label]),
            self.info, self.image, self.audio,
            W.HBox([self.accept_button, self.reject_button, self.relabel_choice, self.relabel_button]),
            W.HBox([self.onset, self.offset, self.adjust_button]),
            W.HBox([self.prev_button, self.next_button, self.keys]), self.keys_help, self.message])
        self.show()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

    def _do(self, action) -> None:
        from clapnb.errors import InputError

        try:
            row = action()
            self.message.value = (f"saved: {row['status']} {row['class']} {row['onset_s']:.2f}-{row['offset_s']:.2f} s "
                                  f"to {self.model.path.name}")
        except InputError as exc:
            self.message.value = f"<b>not saved</b>: {exc}"
        self.show()

    def _keys(self, change) -> None:
        """Shortcuts: a text box, because ipywidgets has no key events and JupyterLab keeps its own
        shortcuts out of a focused input; every typed letter acts once, then the box is cleared."""
        typed = str(change["new"])
        if not typed:
            return
        self.keys.value = ""
        for key in typed.strip():
            move = rv.SHORTCUTS.get(key.lower())
            if move in ("next", "previous"):
                self._move(1 if move == "next" else -1)
            else:
                self._do(lambda: self.model.press(key, relabel_to=self.relabel_choice.value))

    def _move(self, step: int) -> None:
        self.model.goto(self.model.position + step)
        self.message.value = ""
        self.show()

    def _filters(self) -> None:
        c, f = self.class_filter.value, self.file_filter.value
        if self.sort.value != self.model.sort:
            self.model.sort = self.sort.value
        try:
            self.model.set_filter(classes=None if c == ALL else [c], files=None if f == ALL else [f])
        except Exception as exc:  # e.g. sort 'level' without a levels table: say it, keep the old order
            self.message.value = f"<b>{exc}</b>"
            self.model.sort = "score"
            self.sort.value = "score"
            return
        self.show()

    def show(self) -> None:
        """Redraw the current event, its status and, last (so a browser that sees the new progress
        has the rest), the progress."""
        self._show_event()
        done, total = self.model.progress()
        self.progress.max, self.progress.value = max(1, total), done
        self.progress_label.value = self.model.progress_text()

    def _show_event(self) -> None:
        ev = self.model.current()
        buttons = (self.accept_button, self.reject_button, self.relabel_button, self.adjust_button)
        for b in buttons:
            b.disabled = ev is None
        if ev is None:
            self.info.value = ("<b>No event in this queue</b> (no detection, or none passes the filters)." if not len(self.model)
                               else "<b>Every event of this queue is reviewed.</b> Answers are in " + str(self.model.path))
            self.image.value = b""
            self.audio.value = b""
            return
        x, sr, start = event_audio(ev)
        self.image.value = spectrogram_png(x, sr, start, ev)
        self.audio.value = wav_bytes(x, sr)
        self.onset.value, self.offset.value = float(ev["onset_s"]), float(ev["offset_s"])
        if ev["class"] in self.relabel_choice.options:
            self.relabel_choice.value = ev["class"]
        th = ev.get("threshold")
        self.info.value = (f"<b>{self.model.position + 1} / {len(self.model)}</b> &nbsp; class <b>{ev['class']}</b>, "
                           f"score <b>{ev['score']:.3f}</b>" + (f" (threshold {th:.2f})" if th == th and th is not None else "")
                           + f", {ev['onset_s']:.2f}-{ev['offset_s']:.2f} s of {ev['file']}, status <b>{ev['status']}</b>"
                           + (f" by {ev['reviewer']}" if ev.get("reviewer") else ""))


def open_widget(detect_dir, reviewer: str | None = None, **kw) -> ReviewWidget:
    """The widget on ``detect_dir`` (reviewer: default the login name)."""
    import getpass

    return ReviewWidget(rv.Review(detect_dir, reviewer or getpass.getuser(), **kw))
