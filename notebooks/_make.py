"""Write the four study notebooks (without outputs) from the cell texts below.

Run ``python notebooks/_make.py`` after editing; commit the .ipynb files. Keeping the source here
makes the notebooks reviewable as text and keeps their shared parameters cell identical.
Conventions read by ``clapnb.sweep`` and ``clapnb.book``: the first cell, tagged ``parameters``,
holds every knob; the markdown cell tagged ``title`` is retitled per length in the book.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

COMMON = '''\
data = "auto"                     # auto: ../shared/data/envsounds when present, else the ESC-50 download;
                                  # or a class-folder tree, a manifest CSV, esc50[:PATH], urbansound8k:PATH
label_column = "label"            # label column of a manifest CSV (data auto sets it)
path_column = "path"              # path column of a manifest CSV (absolute or relative to the manifest)
mapping = "default"               # source label -> class: built-in names (esc50, urbansound8k) or YAML files
drop_unmapped = False             # skip labels the mapping does not know instead of stopping
drop_empty_classes = False        # leave out classes without a recording in every split
backbone = "msclap-2023"          # msclap-2023 | msclap-2022 | mfcc | gfcc
weights = None                    # CLAP_weights_2023.pth path; None downloads it (needs internet)
policy = "msclap"                 # how segments other than 7 s are fed to CLAP (see clapnb.backbones)
counts = "8,2,2,2"                # segments per class: train,validation,early_stop,test (paper: 500,100,100,100)
seed = 0                          # every random choice (splits, picks, noise, probe) derives from it
snr_db = 20.0                     # SNR of the Gaussian noise added to augmented segments
device = "auto"                   # auto | cpu | cuda
probe_grid = ""                   # probe hyper-parameter grid (syntax: clapnb.probe.parse_grid); best on validation
source_column = None              # manifest column naming each file's source (None: source, else source_dataset)
harmonise_bandwidth = "off"       # off | auto | a frequency in Hz: low-pass every recording to one bandwidth first
precision = "fp32"                # CLAP embedding precision: fp32 (the reference) | bf16 | auto (bf16 where native)
torch_compile = False             # torch.compile the audio encoder (a minute per process on a CPU, then faster)
agreement_threshold = 0.999       # a mode other than fp32 must reach this min cosine to fp32 on the run's clips
warn_low_agreement = False        # below it: warn loudly instead of refusing'''

PER_LENGTH = '''\
run_dir = "../runs/demo"          # the run folder; this notebook works in run_dir/L<length_s>
length_s = 4                      # segment length in seconds
''' + COMMON

SETUP = '''\
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from clapnb import io, metrics, plots, probe, report, shortcuts, sweep, zeroshot

cfg = sweep.config_from_parameters(globals())
ldir = sweep.length_dir(run_dir, length_s)'''


def md(text: str, *tags: str):
    cell = new_markdown_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def code(text: str, *tags: str):
    cell = new_code_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def notebook(title: str, cells: list, per_length: bool):
    """The parameters cell first (papermill injects its values right after it), then the title."""
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    rest = [c for c in cells if c not in params]
    nb = new_notebook(cells=[*params, md(f"# {title}", "title"), *rest])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["clapnb"] = {"title": title, "per_length": per_length}
    return nb


DATASET = notebook("The dataset", [
    md("The recordings of the run, how they map to the paper's 21 classes, and the *dataset "
       "versions* cut from them: one segments table per length, split by recording before cutting "
       "(no recording contributes to two splits), topped up with Gaussian-noise copies where a "
       "class has too little audio for the requested counts."),
    code('''\
run_dir = "../runs/demo"          # the run folder
lengths = "4"                     # the lengths whose segments to show (built if missing)
''' + COMMON, "parameters"),
    code('''\
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from clapnb import audio, io, plots, report, shortcuts, sweep

cfg = sweep.config_from_parameters(globals())
recordings = sweep.prepare_recordings(run_dir, cfg)
inventory = io.read_json(Path(run_dir) / "recordings.json")
print(f"{inventory['n_recordings']} usable recordings of {inventory['n_listed']} listed, "
      f"{inventory['n_in_classes']} in a class; data: {inventory['data']}")'''),
    md("## Recordings per class and source\n\n"
       "Counts and seconds of audio per class and source. A class whose recordings come from one "
       "source only can be recognised by the recording chain instead of the sound (e.g. "
       "UrbanSound8K clips are mostly 22.05 kHz, with nothing above 11 kHz); keep that in mind "
       "when reading per-class results."),
    code('''\
single = shortcuts.single_source_classes(recordings)
if recordings["source"].nunique() < 2:
    display(Markdown(f"All recordings come from one source ({recordings['source'].iloc[0]})."))
elif single:
    display(Markdown("**Classes from a single source** (a classifier can recognise the source instead of the "
                     "sound): " + ", ".join(f"{plots.class_name(c)} ({s})" for c, s in single.items())))
report.recordings_summary(recordings)'''),
    md("## Bandwidth per source\n\n"
       "Sample rates and the *measured* band edge of the recordings (where the spectrum falls by 40 dB "
       "or more all the way to the Nyquist frequency: resampled or codec-filtered audio has such a cliff, "
       "natural sounds rarely do). Sources with different bandwidths can be told apart by the treble "
       "alone; `harmonise_bandwidth` low-pass filters every recording to one common band before cutting."),
    code('''\
bandwidth = sweep.prepare_bandwidth(run_dir, cfg)
display(Markdown(f"This run: {shortcuts.describe_harmonisation(bandwidth)}."))
shortcuts.bandwidth_by_source(recordings, sweep.prepare_band_edges(run_dir, cfg)).round(1)'''),
    code('''\
excluded = pd.DataFrame(inventory["excluded"], columns=["path", "reason"])
print(f"excluded files: {len(excluded)}; labels mapped to no class: {inventory['excluded_labels']}; "
      f"unmapped labels: {inventory['unmapped_labels']}")
excluded.head(20)'''),
    md("## Durations and sample rates"),
    code("plots.duration_histogram(recordings)"),
    code('recordings.groupby(["source", "sample_rate"]).size().rename("recordings").reset_index()'),
    md("## Segments per split: real and augmented\n\n"
       "The paper asks for 500 / 100 / 100 / 100 segments per class (train / validation / "
       "early stop / test); a class with too little audio for a length is topped up with noisy "
       "copies. The share of augmented segments grows with the length."),
    code('''\
segments = sweep.load_segments(run_dir, cfg)
report.segment_summary(segments)'''),
    code("report.augmented_share(segments)"),
    md("## One example per class\n\nLog-mel spectrogram and player of the first recording of each "
       f"class (players at {16000 // 1000} kHz to keep the pages small)."),
    code('''\
examples = report.examples_per_class(recordings)
waves = [audio.load(p, report.PLAYER_SR) for p in examples["path"]]
plots.spectrogram_grid([(plots.class_name(c), x) for c, x in zip(examples["class"], waves)],
                       report.PLAYER_SR)'''),
    code('''\
for row, x in zip(examples.to_dict(orient="records"), waves):
    display(Markdown(f"**{plots.class_name(row['class'])}** ({row['source']}, {row['label']}): "
                     f"{row['attribution'] or 'no attribution recorded'}; licence {row['license'] or 'unknown'}"))
    display(report.player(x))'''),
    md("## Licences and attribution\n\nRecordings per source and licence. The attribution of every "
       "clip is in the run's `recordings.parquet` (column `attribution`) and, for the shared clips, "
       "in their `meta.csv`."),
    code("report.licence_summary(recordings)"),
], per_length=False)


ZERO_SHOT = notebook("Zero-shot classification", [
    md("CLAP as it comes: each segment's audio embedding is compared (cosine similarity) with the "
       "text embeddings of one prompt per class, and the most similar class wins. This is the "
       "paper's Table 2 for one segment length; the paper reports the **validation** set."),
    code(PER_LENGTH, "parameters"),
    code(SETUP + '''
model = sweep.prepare_length(run_dir, cfg, length_s)   # segments and embeddings, built if missing
zs = zeroshot.run_zeroshot(ldir, if_no_text="record", backbone=model, device=device, seed=seed)
report.show_banner(zs)
if not zs["applicable"]:
    display(Markdown(f"**Zero-shot: not applicable.** {zs['reason']}"))'''),
    md("## Accuracy and losses per split\n\n"
       "*Paper-style loss*: cross-entropy of a softmax over the unscaled cosine similarities, the "
       "only reading that gives the paper's ~2.83 for 21 classes (ln 21 = 3.04). *Calibrated "
       "loss*: the same with CLAP's learned logit scale, i.e. CLAP's own probabilities. The 95 % "
       "interval is a bootstrap over recordings."),
    code('''\
if zs["applicable"]:
    display(report.captioned(report.zeroshot_table(zs), f"Zero-shot, {length_s} s, per split", zs))'''),
    md("## Per-class accuracy on the validation set"),
    code('''\
if zs["applicable"]:
    predictions = pd.read_parquet(ldir / "zeroshot_predictions.parquet")
    display(plots.per_class_accuracy(report.per_class_accuracy(predictions, "validation"),
                                     f"zero-shot, {length_s} s, validation"))'''),
    md("## The prompts"),
    code('''\
if zs["applicable"]:
    display(report.captioned(report.prompts_table(zs), "Prompts per class", zs))'''),
], per_length=True)


LINEAR_PROBE = notebook("Linear probe", [
    md("The paper's transfer learning: one linear layer from the frozen embedding to the classes, "
       "trained on the train split with early stopping on the early-stopping split (patience 10, "
       "best weights restored). Validation is the paper's Table 3 set; test is the unbiased one."),
    code(PER_LENGTH, "parameters"),
    code(SETUP + '''
sweep.prepare_length(run_dir, cfg, length_s)   # nothing to do when the zero-shot notebook ran
grid = probe.parse_grid(probe_grid) if probe_grid else None
pr = probe.run_probe(ldir, probe.ProbeConfig(seed=seed), grid)
report.show_banner(pr)
print(f"{pr['head']}; {pr['epochs_run']} epochs, best epoch {pr['best_epoch']}, "
      f"stopped early: {pr['stopped_early']}")'''),
    md("## Training curves\n\nThe vertical line marks the epoch whose weights are kept."),
    code('plots.training_curves(pd.DataFrame(pr["history"]), pr["best_epoch"])'),
    md("## Accuracy and loss per split"),
    code('report.captioned(report.probe_table(pr), f"Linear probe, {length_s} s, per split", pr)'),
    md("## Hyper-parameters"),
    code('''\
display(pd.Series(pr["config"], name="value").to_frame())
pd.DataFrame(pr["grid"]) if pr["grid"] else None'''),
], per_length=True)


CONFUSION = notebook("Confusion analysis", [
    md("Which classes each method mixes up, on one split: confusion matrices (rows: true class, "
       "normalised per row), precision / recall / F1 per class, the most confused pairs, and a few "
       "misclassified segments to listen to."),
    code(PER_LENGTH + '''
split = "test"                    # the split to analyse
n_examples = 3                    # misclassified segments to play''', "parameters"),
    code(SETUP + '''
sweep.prepare_length(run_dir, cfg, length_s)
segments = pd.read_parquet(ldir / "segments.parquet")
recordings = pd.read_parquet(Path(run_dir) / "recordings.parquet")
zs = io.read_json(ldir / "zeroshot.json")
report.show_banner(zs)
methods = {"probe": pd.read_parquet(ldir / "probe_predictions.parquet")}
if zs["applicable"]:
    methods = {"zero-shot": pd.read_parquet(ldir / "zeroshot_predictions.parquet"), **methods}
classes = report.present_classes(segments)'''),
    md("## Confusion matrices"),
    code('''\
plots.confusion_heatmaps([(f"{name}, {length_s} s, {split}", report.confusion(p, split))
                          for name, p in methods.items()])'''),
    md("## Precision, recall and F1 per class"),
    code('''\
report.captioned(report.per_class_comparison(methods, split, classes),
                 f"Precision, recall and F1 per class, {length_s} s, {split}", zs, index=True)'''),
    md("## Most confused pairs"),
    code('''\
report.captioned(report.most_confused_table(methods, split, classes),
                 f"Most confused pairs, {length_s} s, {split}", zs)'''),
    md("## Misclassified segments (linear probe)"),
    code('''\
wrong = report.misclassified(methods["probe"], segments, split, n_examples, recordings=recordings, seed=seed)
for row, x in zip(wrong.to_dict(orient="records"), report.segment_audio(wrong)):
    display(Markdown(f"**true {plots.class_name(row['true'])}, predicted {plots.class_name(row['pred'])}**"
                     f" ({Path(row['path']).name}, {row['start_s']:g}-{row['end_s']:g} s"
                     f"{', augmented' if row['augmented'] else ''}): {row['attribution']}"))
    display(report.player(x))
if wrong.empty:
    print(f"no misclassified segment on the {split} split")'''),
    md("## Source shortcut check\n\n"
       "Can the embeddings tell *where a recording comes from* (its dataset or collection)? The same "
       "linear probe, on the same embeddings and recording-grouped splits, is trained to predict the "
       "source instead of the class. *Majority*: the best constant guess; *class-only*: the best guess "
       "from the true class alone (a class recorded by one source gives its source away). *Within "
       "classes*: a second source probe on the classes that have recordings from several sources, each "
       "source equally frequent per class, so that only the recording chain (bandwidth, level, noise "
       "floor) can tell the sources apart and chance is the baseline. Below it, the class accuracy per "
       "source: who pays when the class probe leans on the source."),
    code('''\
sc = shortcuts.run_shortcuts(ldir, seed=seed)   # the class probe's configuration; writes shortcuts.json
display(Markdown(shortcuts.summary_sentence(sc, split)))
if sc["applicable"]:
    display(report.captioned(shortcuts.source_id_table(sc),
                             f"Source identification beside class accuracy, {length_s} s", sc))
    display(report.captioned(shortcuts.by_source_table(sc, split),
                             f"Class accuracy per source, {length_s} s, {split}", sc))'''),
], per_length=True)


NOTEBOOKS = {"01_dataset.ipynb": DATASET, "02_zero_shot.ipynb": ZERO_SHOT,
             "03_linear_probe.ipynb": LINEAR_PROBE, "04_confusion.ipynb": CONFUSION}


def main() -> None:
    for name, nb in NOTEBOOKS.items():
        for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same bytes
            cell["id"] = f"{Path(name).stem}-{i:02d}"
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
