"""Hand-crafted feature baselines ``mfcc`` / ``gfcc`` (the authors' earlier comparison).

No text side, so zero-shot does not apply to them. They take the CLAP input policies so the
comparison sees the same audio: ``msclap`` fits every segment to 7 s (repeat / centre crop),
``native`` uses it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clapnb import io
from clapnb.audio import TARGET_SR
from clapnb.backbones.base import NoTextEncoderError, apply_policy
from clapnb.errors import InputError

NAMES = ("mfcc", "gfcc")


@dataclass(eq=False)
class FeatureBackbone:
    """MFCC or GFCC summary statistics: per coefficient and its delta, mean and std over time.

    * ``mfcc``: librosa, 20 MFCC from a 128-band mel spectrogram (n_fft 2048, hop 512 at 44.1 kHz)
      -> 80 dims.
    * ``gfcc``: spafe's GFCC (Jeevan et al.; gammatone filterbank on the ERB scale, Glasberg &
      Moore, cube-root compression, DCT), 64 filters from 50 Hz, 20 coefficients, same framing
      -> 80 dims. spafe is a maintained library, so no hand-written filterbank.
    """

    name: str
    policy: str = "msclap"
    duration_s: int = 7
    sample_rate: int = TARGET_SR
    n_coeffs: int = 20
    n_fft: int = 2048
    hop: int = 512
    has_text: bool = False
    random_weights: bool = False
    logit_scale: float | None = None
    dim: int = 0
    fingerprint: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dim = 4 * self.n_coeffs
        import librosa

        libs = {"librosa": librosa.__version__}
        if self.name == "gfcc":
            import spafe

            libs["spafe"] = getattr(spafe, "__version__", "0.3.3")
        config = {"name": self.name, "n_coeffs": self.n_coeffs, "n_fft": self.n_fft, "hop": self.hop,
                  "sample_rate": self.sample_rate, "libraries": libs}
        self.fingerprint = io.fingerprint([config])
        self.metadata = {**config, "dim": self.dim, "has_text": False, "policy": self.policy,
                         "input_duration_s": self.duration_s, "fingerprint": self.fingerprint,
                         "random_weights": False, "logit_scale": None, "weights_path": None}

    def _coefficients(self, x: np.ndarray) -> np.ndarray:
        """(n_coeffs, frames) for one waveform."""
        if self.name == "mfcc":
            import librosa

            return librosa.feature.mfcc(y=x, sr=self.sample_rate, n_mfcc=self.n_coeffs,
                                        n_fft=self.n_fft, hop_length=self.hop)
        from spafe.features.gfcc import gfcc
        from spafe.utils.preprocessing import SlidingWindow

        window = SlidingWindow(win_len=self.n_fft / self.sample_rate, win_hop=self.hop / self.sample_rate,
                               win_type="hamming")
        return gfcc(x.astype(np.float64), fs=self.sample_rate, num_ceps=self.n_coeffs, nfilts=64,
                    nfft=self.n_fft, window=window, low_freq=50).T

    def embed_audio(self, waves: list[np.ndarray]) -> np.ndarray:
        import librosa

        min_len = self.n_fft + 8 * self.hop  # the delta needs 9 frames
        rows = []
        for i, w in enumerate(waves):
            x = apply_policy(w, self.policy, self.duration_s * self.sample_rate)
            if len(x) < min_len:
                raise InputError(f"waveform {i} has {len(x)} samples; {self.name} needs at least {min_len} "
                                 f"({min_len / self.sample_rate:.2f} s): use longer segments or the 'msclap' policy")
            c = np.asarray(self._coefficients(x), dtype=np.float64)
            d = librosa.feature.delta(c, width=9, axis=-1)
            rows.append(np.concatenate([c.mean(1), c.std(1), d.mean(1), d.std(1)]))
        return np.asarray(rows, dtype=np.float32).reshape(len(waves), self.dim)

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        raise NoTextEncoderError(f"zero-shot needs a text encoder; {self.name} has none "
                                 "(use --backbone msclap-2023 for zero-shot, or train the linear probe on "
                                 f"{self.name} features)")



def load(name: str, *, weights=None, device: str = "auto", policy: str = "msclap", batch_size: int | None = None,
         precision: str = "fp32", compile: bool = False) -> FeatureBackbone:
    """The registry's factory (arguments already checked: no weights, no precision modes)."""
    return FeatureBackbone(name=name, policy=policy)
