"""Frequency weightings A, C, Z and time weightings F, S of IEC 61672-1, as streamable filters.

Why not simply acoustic-toolbox's (pyoctaveband's) A-weighting: it is the bilinear transform of the
analog weighting, whose frequency warping pulls the response down near the Nyquist frequency (at
44.1 kHz: -1.5 dB at 10 kHz, -3.5 dB at 12.5 kHz, -8.2 dB at 16 kHz below the standard's nominal
values). Here the low-frequency poles and the zeros go through the bilinear transform (exact at low
frequencies) and one of the two 12.2 kHz poles through the matched-z transform, whose error has the
opposite sign; the two nearly cancel (at 44.1 kHz within 0.12 dB up to 10 kHz, -0.7 dB at 12.5 kHz,
-2.5 dB at 16 kHz). Both designs stay inside the class 1 acceptance limits; ``response_db`` lets a
test and the docs compare them with :data:`IEC_TABLE`.

Filters carry their state across blocks, so a recording streamed in blocks of any size gives the
same output as the whole file filtered at once.
"""

from __future__ import annotations

import math

import numpy as np

#: Pole frequencies (Hz) of IEC 61672-1:2013 Annex E (f1..f4, from fr=1 kHz, fL=10^1.5 Hz, fH=10^3.9 Hz).
F1, F2, F3, F4 = 20.598997, 107.65265, 737.86223, 12194.217

#: IEC 61672-1:2013 Table 3 at the nominal 1/3-octave frequencies: nominal A and C weightings (dB) and the
#: class 1 acceptance limits (upper, lower; -inf = no lower limit). Z is 0 dB at every frequency.
IEC_TABLE: tuple[tuple[float, float, float, float, float], ...] = (
    # nominal Hz, A, C, class 1 upper, class 1 lower
    (10, -70.4, -14.3, 3.0, -math.inf), (12.5, -63.4, -11.2, 2.5, -math.inf), (16, -56.7, -8.5, 2.0, -4.0),
    (20, -50.5, -6.2, 2.0, -2.0), (25, -44.7, -4.4, 2.0, -1.5), (31.5, -39.4, -3.0, 1.5, -1.5),
    (40, -34.6, -2.0, 1.0, -1.0), (50, -30.2, -1.3, 1.0, -1.0), (63, -26.2, -0.8, 1.0, -1.0),
    (80, -22.5, -0.5, 1.0, -1.0), (100, -19.1, -0.3, 1.0, -1.0), (125, -16.1, -0.2, 1.0, -1.0),
    (160, -13.4, -0.1, 1.0, -1.0), (200, -10.9, 0.0, 1.0, -1.0), (250, -8.6, 0.0, 1.0, -1.0),
    (315, -6.6, 0.0, 1.0, -1.0), (400, -4.8, 0.0, 1.0, -1.0), (500, -3.2, 0.0, 1.0, -1.0),
    (630, -1.9, 0.0, 1.0, -1.0), (800, -0.8, 0.0, 1.0, -1.0), (1000, 0.0, 0.0, 0.7, -0.7),
    (1250, 0.6, 0.0, 1.0, -1.0), (1600, 1.0, -0.1, 1.0, -1.0), (2000, 1.2, -0.2, 1.0, -1.0),
    (2500, 1.3, -0.3, 1.0, -1.0), (3150, 1.2, -0.5, 1.0, -1.0), (4000, 1.0, -0.8, 1.0, -1.0),
    (5000, 0.5, -1.3, 1.5, -1.5), (6300, -0.1, -2.0, 1.5, -2.0), (8000, -1.1, -3.0, 1.5, -2.5),
    (10000, -2.5, -4.4, 2.0, -3.0), (12500, -4.3, -6.2, 2.0, -5.0), (16000, -6.6, -8.5, 2.5, -16.0),
    (20000, -9.3, -11.2, 3.0, -math.inf),
)

#: Exact base-10 frequencies behind the nominal ones (IEC 61672-1 Table 3: f = 1 kHz x 10^(n/10)).
IEC_EXACT_HZ = np.array([1000.0 * 10 ** (n / 10) for n in range(-20, 14)])

CURVES = ("A", "C", "Z")
#: Name of the digital design, recorded in levels.json.
DESIGN = "bilinear (zeros, f1-f3, one f4 pole) + matched-z (other f4 pole), 0 dB at 1 kHz"

#: Time constants (s) of the exponential time weightings.
TIME_CONSTANTS = {"F": 0.125, "S": 1.0}


def check_curve(curve: str) -> str:
    from clapnb.errors import InputError

    c = str(curve).upper()
    if c not in CURVES:
        raise InputError(f"--weighting {curve!r}: unknown frequency weighting; use A, C or Z")
    return c


def analog_db(curve: str, f) -> np.ndarray:
    """The standard's analog weighting (Annex E) in dB at frequencies ``f`` (0 dB at 1 kHz)."""
    curve = check_curve(curve)
    f = np.asarray(f, dtype=float)
    if curve == "Z":
        return np.zeros_like(f)

    def raw(x):
        x2 = x * x
        c = F4 ** 2 * x2 / ((x2 + F1 ** 2) * (x2 + F4 ** 2))
        if curve == "A":
            c = c * x2 / np.sqrt((x2 + F2 ** 2) * (x2 + F3 ** 2))
        return 20 * np.log10(c)

    return raw(f) - raw(np.array(1000.0))


def design_sos(curve: str, fs: float) -> np.ndarray | None:
    """Second-order sections of the digital weighting at ``fs`` (None for Z: no filter)."""
    from scipy import signal

    curve = check_curve(curve)
    if curve == "Z":
        return None
    two_pi = 2 * np.pi
    if curve == "A":
        zeros, poles = np.zeros(4), -two_pi * np.array([F1, F1, F2, F3, F4])
    else:
        zeros, poles = np.zeros(2), -two_pi * np.array([F1, F1, F4])
    zd, pd_, _ = signal.bilinear_zpk(zeros, poles, 1.0, fs)
    matched = np.exp(-two_pi * F4 / fs)
    sos = signal.zpk2sos(zd, np.concatenate([pd_, [matched]]), 1.0)
    _, h = signal.sosfreqz(sos, worN=[1000.0], fs=fs)
    sos[0, :3] /= abs(h[0])
    return sos


def response_db(curve: str, fs: float, f, design: str = "clapnb") -> np.ndarray:
    """Magnitude response (dB) at ``f`` of our design (``clapnb``) or acoustic-toolbox's (``bilinear``)."""
    from scipy import signal

    curve = check_curve(curve)
    f = np.asarray(f, dtype=float)
    if curve == "Z":
        return np.zeros_like(f)
    if design == "bilinear":
        from pyoctaveband import WeightingFilter  # what acoustic_toolbox.standards.iec_61672_1_2013 uses

        sos = WeightingFilter(fs=int(fs), curve=curve).sos
    else:
        sos = design_sos(curve, fs)
    _, h = signal.sosfreqz(sos, worN=f, fs=fs)
    return 20 * np.log10(np.maximum(np.abs(h), 1e-30))


def class1_check(curve: str, fs: float, design: str = "clapnb") -> list[dict]:
    """Per IEC table frequency below Nyquist: nominal, response, deviation, limits, pass."""
    curve = check_curve(curve)
    rows = []
    resp = response_db(curve, fs, IEC_EXACT_HZ, design)
    for (nominal, a, c, hi, lo), exact, r in zip(IEC_TABLE, IEC_EXACT_HZ, resp):
        if exact >= fs / 2:
            continue
        target = {"A": a, "C": c, "Z": 0.0}[curve]
        dev = float(r - target)
        rows.append({"hz": nominal, "nominal_db": target, "response_db": float(r), "deviation_db": dev,
                     "upper": hi, "lower": lo, "pass": lo <= dev <= hi})
    return rows


class FrequencyWeighting:
    """Stateful A/C/Z filter: call it on consecutive blocks of one recording."""

    def __init__(self, curve: str, fs: float):
        self.curve = check_curve(curve)
        self.fs = fs
        self.sos = design_sos(self.curve, fs)
        self.zi = None if self.sos is None else np.zeros((self.sos.shape[0], 2))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import sosfilt

        x = np.asarray(x, dtype=np.float64)
        if self.sos is None:
            return x
        y, self.zi = sosfilt(self.sos, x, zi=self.zi)
        return y


class TimeWeighting:
    """Exponential time weighting of a squared signal: ``tau dy/dt = x^2 - y`` (F: 125 ms, S: 1 s).

    ``initial`` is the mean square the detector starts from (a sound level meter that has been
    running); callers pass the mean square of the recording's first ``tau`` seconds so that the
    first second of a file does not read as a silent start.
    """

    def __init__(self, tau_s: float, fs: float, initial: float = 0.0):
        self.tau_s = float(tau_s)
        self.fs = fs
        self.a = math.exp(-1.0 / (self.tau_s * fs))
        self.zi = np.array([self.a * float(initial)])

    def __call__(self, sq: np.ndarray) -> np.ndarray:
        from scipy.signal import lfilter

        y, self.zi = lfilter([1.0 - self.a], [1.0, -self.a], np.asarray(sq, dtype=np.float64), zi=self.zi)
        return y
