"""Build-if-missing stages of a study run, each recording what it was built with.

``recordings -> bandwidth -> segments(L) -> embeddings(L) -> zeroshot(L) / probe(L) -> shortcuts(L)``

A stage takes the study configuration and the run folder (paths, parameters: picklable, so a
stage runs in this process, in a worker process or on a Dask worker) and writes its outputs plus a
record (``stages/<stage>.json``): the parameters it read (:meth:`StudyConfig.stage_parameters`),
the fingerprints of the stages it read, and the sha256 of every output. On the next call a stage
is *current* only if that record matches the request and its outputs are untouched; otherwise it
is rebuilt, and the log says which parameter changed and from what to what. Nothing is silently
reused; nothing here is computed inside a notebook kernel (the notebooks only read the outputs).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clapnb import __version__, io
from clapnb.config import StudyConfig, from_mapping
from clapnb.errors import error_summary
from clapnb.store import LengthFolder, RunFolder

Log = Callable[[str], None]


def stderr_log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- records --------------------------------------------------------------------------------------

@dataclass
class StageResult:
    stage: str
    status: str  # 'current' | 'built' | 'rebuilt'
    record: dict
    reason: str = ""
    seconds: float = 0.0

    @property
    def fingerprint(self) -> str:
        return self.record["fingerprint"]


def _outputs(paths: Mapping[str, Path]) -> dict[str, str | None]:
    return {name: io.file_sha256(p) if p.is_file() else None for name, p in paths.items()}


def check_record(path: Path, params: Mapping, inputs: Mapping, outputs: Mapping[str, Path]) -> tuple[bool, str]:
    """``(current, why not)``: the record at ``path`` against the requested parameters and inputs."""
    if not path.is_file():
        present = [n for n, p in outputs.items() if p.is_file()]
        return False, ("no stage record (outputs of an older clapnb or made by hand)" if present else "")
    old = io.read_json(path)
    changed = [f"{k}: {old['params'].get(k)!r} -> {v!r}" for k, v in params.items() if old["params"].get(k) != v]
    if changed:
        return False, "; ".join(changed)
    inputs_changed = [k for k, v in inputs.items() if old["inputs"].get(k) != v]
    if inputs_changed:
        return False, f"its input(s) {', '.join(inputs_changed)} were rebuilt"
    now = _outputs(outputs)
    touched = [n for n, sha in now.items() if sha != old["outputs"].get(n)]
    if touched:
        return False, f"output(s) {', '.join(touched)} missing or changed on disk"
    return True, ""


def write_record(path: Path, stage: str, params: Mapping, inputs: Mapping, outputs: Mapping[str, Path],
                 seconds: float, extra: Mapping | None = None) -> dict:
    out = _outputs({n: p for n, p in outputs.items() if p.is_file()})
    record = {"stage": stage, "params": dict(params), "inputs": dict(inputs), "outputs": out,
              "fingerprint": io.fingerprint([stage, params, inputs, out]), "seconds": round(seconds, 2),
              "clapnb_version": __version__, **(extra or {})}
    io.atomic_write_json(path, record)
    return record


def run_stage(stage: str, record_path: Path, params: Mapping, inputs: Mapping, outputs: Mapping[str, Path],
              build: Callable[[], Mapping | None], *, log: Log, label: str) -> StageResult:
    """Build ``stage`` unless its record says it is current; log one line either way."""
    current, why = check_record(record_path, params, inputs, outputs)
    if current:
        return StageResult(stage, "current", io.read_json(record_path))
    status = "rebuilt" if why else "built"
    log(f"{label}{stage}: {'rebuilding (' + why + ')' if why else 'building'}")
    start = time.monotonic()
    extra = build() or {}
    seconds = time.monotonic() - start
    record = write_record(record_path, stage, params, inputs, outputs, seconds, extra)
    log(f"{label}{stage}: {status} in {seconds:.1f} s" + (f" ({extra['summary']})" if extra.get("summary") else ""))
    return StageResult(stage, status, record, why, seconds)


#: With a background class the zero-shot, probe and shortcut outputs are over event segments only
#: (background reported apart); recorded so that a run made before that rule rebuilds them once.
BACKGROUND_RULE = ("zeroshot", "probe", "shortcuts"), "event segments only; background reported apart"


def _length_params(config: StudyConfig, stage: str, length_s: int) -> dict:
    params = {**config.stage_parameters(stage), "length_s": int(length_s)}
    if config.background and stage in BACKGROUND_RULE[0]:
        params["background_rule"] = BACKGROUND_RULE[1]
    return params


# --- run-level stages -----------------------------------------------------------------------------

def recordings(run: RunFolder, config: StudyConfig, *, log: Log = stderr_log) -> StageResult:
    """The recordings table (``recordings.parquet`` + report) and every recording's band edge."""
    def build() -> dict:
        from clapnb import bandwidth, datasets  # soundfile/soxr/scipy: only when the stage runs

        table, report = datasets.load_recordings(
            config.data, label_column=config.label_column, mapping=config.mapping,
            drop_unmapped=config.drop_unmapped, source_column=config.source_column,
            path_column=config.path_column)
        if config.background:  # the site's residual sound: class 'background' (clapnb detect)
            background, bg_report = datasets.load_background(config.background)
            table = pd.concat([table, background], ignore_index=True)
            report = {**report, "excluded": report["excluded"] + bg_report["excluded"],
                      "n_background": int(len(background))}
        edges = bandwidth.measure_band_edges(table, progress=False)
        io.atomic_write_json(run.recordings_report, report)
        io.atomic_write_parquet(run.band_edges, edges)
        io.atomic_write_parquet(run.recordings, table)
        return {"summary": f"{report['n_recordings']} recordings, {report['n_in_classes']} in a class"}

    outputs = {"recordings": run.recordings, "report": run.recordings_report, "band_edges": run.band_edges}
    return run_stage("recordings", run.stage_record("recordings"), config.stage_parameters("recordings"), {},
                     outputs, build, log=log, label="")


def bandwidth(run: RunFolder, config: StudyConfig, upstream: StageResult, *, log: Log = stderr_log) -> StageResult:
    """The run's harmonisation record (``bandwidth.json``): one cutoff for every length."""
    def build() -> dict:
        from clapnb import bandwidth as bw

        record = bw.harmonisation(pd.read_parquet(run.recordings), config.harmonise_bandwidth,
                                  pd.read_parquet(run.band_edges))
        io.atomic_write_json(run.bandwidth, record)
        return {"summary": bw.describe_harmonisation(record)}

    return run_stage("bandwidth", run.stage_record("bandwidth"), config.stage_parameters("bandwidth"),
                     {"recordings": upstream.fingerprint}, {"bandwidth": run.bandwidth}, build, log=log, label="")


# --- per-length stages ----------------------------------------------------------------------------

def segments(run: RunFolder, config: StudyConfig, length_s: int, inputs: Mapping[str, str], *,
             log: Log = stderr_log) -> StageResult:
    lf = run.length(length_s)

    def build() -> dict:
        from clapnb import segments as seg

        recordings_table = pd.read_parquet(run.recordings)
        harmonisation = io.read_json(run.bandwidth)
        table = seg.build_segments(recordings_table, float(length_s), counts=config.count_tuple, seed=config.seed,
                                   snr_db=config.snr_db, drop_empty_classes=config.drop_empty_classes,
                                   lowpass_hz=harmonisation["cutoff_hz"],
                                   test_fold=config.test_fold if config.protocol == "folds" else None)
        seg.write_segments(table, lf.root, {
            "inputs": {"data": config.data, "label_column": config.label_column, "mapping": config.mapping,
                       "source_column": config.source_column},
            "parameters": {**config.results_parameters(), "length_s": int(length_s)},
            "harmonisation": harmonisation,
            "dropped_classes": sorted(set(recordings_table["class"].dropna()) - set(table["class"])),
            # of the recordings, not of this length's picks: every length of a run shares it
            "data_fingerprint": seg.data_fingerprint(recordings_table)})
        return {"summary": f"{len(table)} segments, {int(table['augmented'].sum())} augmented"}

    return run_stage("segments", lf.stage_record("segments"), _length_params(config, "segments", length_s),
                     inputs, {"segments": lf.segments, "dataset": lf.dataset}, build, log=log,
                     label=f"L{length_s:02d} ")


_BACKBONES: dict[tuple, Any] = {}


def cached_backbone(config: StudyConfig, *, batch_size: int = 16):
    """The configured backbone, loaded once per process (a worker keeps it for its next lengths)."""
    from clapnb import backbones  # torch/msclap: only when a stage needs the model

    key = (config.backbone, config.weights, config.device, config.policy, config.precision,
           config.torch_compile, batch_size)
    if key not in _BACKBONES:
        _BACKBONES[key] = backbones.load_backbone(config.backbone, weights=config.weights, device=config.device,
                                                  policy=config.policy, batch_size=batch_size,
                                                  precision=config.precision, compile=config.torch_compile)
    return _BACKBONES[key]


def embeddings(run: RunFolder, config: StudyConfig, length_s: int, inputs: Mapping[str, str], *,
               log: Log = stderr_log, progress: bool = True) -> StageResult:
    lf = run.length(length_s)

    def build() -> dict:
        from clapnb import agreement
        from clapnb import embeddings as emb_mod

        backbone = cached_backbone(config)
        if backbone.random_weights:
            log(f"L{length_s:02d} embeddings: WARNING: {emb_mod.RANDOM_WEIGHTS_WARNING}")
        # a fast mode is measured against fp32 on this length's clips first (recorded in embeddings.json)
        agreement.check_agreement(backbone, pd.read_parquet(lf.segments), threshold=config.agreement_threshold,
                                  warn_only=config.warn_low_agreement, seed=config.seed)
        emb = emb_mod.embed_run(lf.root, backbone, batch_size=16, progress=progress)
        m = emb.meta
        return {"summary": f"{m['n_rows']} x {emb.X.shape[1]}, {m['n_computed']} computed, {m['n_cached']} cached"}

    return run_stage("embeddings", lf.stage_record("embeddings"), _length_params(config, "embeddings", length_s),
                     inputs, {"embeddings": lf.embeddings}, build, log=log, label=f"L{length_s:02d} ")


def zeroshot(run: RunFolder, config: StudyConfig, length_s: int, inputs: Mapping[str, str], *,
             log: Log = stderr_log) -> StageResult:
    lf = run.length(length_s)

    def build() -> dict:
        import warnings

        from clapnb import zeroshot as zs_mod

        meta = io.read_json(lf.embeddings).get("backbone", {})
        model = cached_backbone(config) if meta.get("has_text") else None
        with warnings.catch_warnings():  # torch's tokenizer/attention notices are not results
            warnings.simplefilter("ignore", UserWarning)
            record = zs_mod.run_zeroshot(lf.root, if_no_text="record", backbone=model, device=config.device,
                                         seed=config.seed)
        if not record["applicable"]:
            return {"summary": "not applicable (no text encoder)"}
        acc = record["metrics"]["validation"]["accuracy"]
        return {"summary": f"validation accuracy {100 * acc:.1f} %"
                + (" RANDOM WEIGHTS" if record["random_weights"] else "")}

    outputs = {"zeroshot": lf.zeroshot, "predictions": lf.zeroshot_predictions}
    return run_stage("zeroshot", lf.stage_record("zeroshot"), _length_params(config, "zeroshot", length_s),
                     inputs, outputs, build, log=log, label=f"L{length_s:02d} ")


def probe(run: RunFolder, config: StudyConfig, length_s: int, inputs: Mapping[str, str], *,
          log: Log = stderr_log) -> StageResult:
    lf = run.length(length_s)
    label = f"L{length_s:02d} "

    def build() -> dict:
        from clapnb import probe as probe_mod

        grid = probe_mod.parse_grid(config.probe_grid) if config.probe_grid else None
        record = probe_mod.run_probe(lf.root, config.probe_config(), grid,
                                     progress=lambda line: log(f"{label}probe: {line}"))
        acc = record["metrics"]["validation"]["accuracy"]
        return {"summary": f"{record['epochs_run']} epochs, best {record['best_epoch']}, validation accuracy "
                           f"{100 * acc:.1f} %" + (" RANDOM WEIGHTS" if record["random_weights"] else "")}

    outputs = {"probe": lf.probe, "model": lf.probe_model, "predictions": lf.probe_predictions}
    return run_stage("probe", lf.stage_record("probe"), _length_params(config, "probe", length_s), inputs,
                     outputs, build, log=log, label=label)


def shortcuts(run: RunFolder, config: StudyConfig, length_s: int, inputs: Mapping[str, str], *,
              log: Log = stderr_log) -> StageResult:
    lf = run.length(length_s)

    def build() -> dict:
        from clapnb import shortcuts as sc_mod

        record = sc_mod.run_shortcuts(lf.root, seed=config.seed)  # the class probe's configuration
        if not record["applicable"]:
            return {"summary": "not applicable (one source)"}
        return {"summary": f"source-id test accuracy {100 * record['source_id']['test']['accuracy']:.1f} %"}

    return run_stage("shortcuts", lf.stage_record("shortcuts"), _length_params(config, "shortcuts", length_s),
                     inputs, {"shortcuts": lf.shortcuts}, build, log=log, label=f"L{length_s:02d} ")


# --- one length, as a job for an executor --------------------------------------------------------

@dataclass
class LengthBuild:
    """What building one length's stages did (picklable: it comes back from worker processes)."""

    length_s: int
    statuses: dict[str, str] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str = ""
    failed_stage: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def changed(self) -> bool:
        return any(s != "current" for s in self.statuses.values())


def build_length(run: RunFolder, config: StudyConfig, length_s: int, upstream: Mapping[str, str], *,
                 log: Log = stderr_log, progress: bool = True) -> LengthBuild:
    """segments -> embeddings -> zeroshot, probe -> shortcuts for one length; stops at the first failure."""
    out = LengthBuild(int(length_s))
    lf = run.length(length_s)
    lf.root.mkdir(parents=True, exist_ok=True)
    steps: list[tuple[str, Callable[..., StageResult], list[str]]] = [
        ("segments", segments, ["recordings", "bandwidth"]),
        ("embeddings", embeddings, ["segments"]),
        ("zeroshot", zeroshot, ["embeddings"]),
        ("probe", probe, ["embeddings"]),
        ("shortcuts", shortcuts, ["embeddings", "zeroshot", "probe"]),
    ]
    known = dict(upstream)
    for name, fn, needs in steps:
        kw = {"progress": progress} if name == "embeddings" else {}
        try:
            result = fn(run, config, length_s, {k: known[k] for k in needs}, log=log, **kw)
        except Exception as exc:  # recorded per length; the other lengths go on
            out.error, out.failed_stage = error_summary(exc), name
            log(f"L{length_s:02d} {name}: FAILED: {out.error}")
            return out
        known[name] = result.fingerprint
        out.statuses[name], out.fingerprints[name], out.seconds[name] = result.status, result.fingerprint, result.seconds
    return out


def build_length_job(job: tuple[str, dict, int, dict, bool]) -> LengthBuild:
    """:func:`build_length` from plain arguments (what an executor ships to a worker)."""
    run_dir, params, length_s, upstream, progress = job
    return build_length(RunFolder(run_dir), from_mapping(params), length_s, upstream, progress=progress)


def build_run(run: RunFolder, config: StudyConfig, *, log: Log = stderr_log) -> dict[str, str]:
    """The run-level stages; returns their fingerprints (the per-length stages' inputs)."""
    run.root.mkdir(parents=True, exist_ok=True)
    rec = recordings(run, config, log=log)
    bw = bandwidth(run, config, rec, log=log)
    return {"recordings": rec.fingerprint, "bandwidth": bw.fingerprint}
