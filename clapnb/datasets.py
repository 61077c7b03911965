"""Recordings in, one recordings table out (see docs/architecture.md, "Recordings table").

Four kinds of source give the same table: a folder with one sub-folder per label, a manifest CSV,
ESC-50 (official archive, downloaded once with pooch) and UrbanSound8K (an archive or folder the
user already has). Every file is probed, hashed and decoded once here, so that a broken file is
reported up front with its path instead of failing deep inside embedding extraction.
"""

from __future__ import annotations

import csv as csvlib
import os
import re
import shutil
import tarfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from clapnb import audio, io, taxonomy
from clapnb.errors import ClapnbError, InputError

COLUMNS = ["path", "source", "label", "class", "approximate", "group", "fold", "duration_s",
           "sample_rate", "channels", "sha256", "content_sha256", "channel", "peak_dbfs", "license",
           "attribution"]

#: A recording whose loudest sample is at or below this level (dB re full scale) is near-silent.
#: The quietest of the 1200 shared ESC-50/UrbanSound8K clips peaks at -51 dBFS.
SILENCE_DBFS = -60.0
#: Shorter recordings are refused: there is no sound event in a few milliseconds, and repeating
#: them to fill a segment makes a buzz at the repetition rate, not a recording of the class.
MIN_DURATION_S = 0.05
#: A stereo file whose channel mean keeps less than a quarter of the channels' energy (opposite
#: phase) is warned about: the mono mix is not what was recorded; ``channel`` picks one channel.
MIX_LOSS_WARN_DB = 6.0

#: File-name conventions of the public datasets (file stem, no suffix) -> freesound recording:
#: ESC-50 ``fold-freesoundID-take-target`` (e.g. 1-31482-A-0), UrbanSound8K
#: ``fsID-classID-occurrenceID-sliceID`` (e.g. 100032-3-0-0). Clips cut from one freesound
#: recording must share a group, else they leak between splits.
NAME_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("ESC-50", re.compile(r"^[1-5]-(?P<group>\d+)-[A-Z]-\d{1,2}$")),
    ("UrbanSound8K", re.compile(r"^(?P<group>\d+)-\d-\d+-\d+$")),
)

#: Official ESC-50 archive (K. J. Piczak). GitHub builds branch archives on the fly, so the bytes
#: can change when the repository or GitHub's archiver changes.
ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
#: sha256 of that archive (645,695,005 bytes) as recorded by two independent downloads published on
#: GitHub; it could not be re-measured here (no internet). If GitHub serves different bytes, pass
#: ``known_hash`` to :func:`fetch_esc50` or set ``CLAPNB_ESC50_SHA256`` (``none`` skips the check).
ESC50_SHA256 = "805afc618aff80eff0641d51311647871fead5807da68bb18e43a27db47a79ce"
ESC50_ZIP = "ESC-50-master.zip"
ESC50_LICENSE = "CC BY-NC 3.0 (ESC-50)"
ESC10_LICENSE = "CC BY 3.0 (ESC-10)"

US8K_PAGE = "https://urbansounddataset.weebly.com/urbansound8k.html"
US8K_ZENODO = "https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz"
US8K_LICENSE = "CC BY-NC 3.0 (UrbanSound8K)"

#: File name endings that libsndfile decodes; other files in a class folder are listed as ignored.
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                            ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"})
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def default_cache_dir() -> Path:
    """Downloads and extracted archives live in clapnb's cache: ``$CLAPNB_CACHE`` or ~/.cache/clapnb."""
    return io.cache_dir()


# --- sources: each returns listed rows (path, label, group, fold, source, license, attribution) ---

def _listed(paths, labels, groups, folds, source, license="", attribution="") -> pd.DataFrame:
    """The listed rows of a source; scalar arguments apply to every row."""
    n = len(paths)

    def as_list(v) -> list:
        return list(v) if isinstance(v, (list, pd.Series, np.ndarray)) else [v] * n

    return pd.DataFrame({
        "path": [os.path.normpath(os.path.abspath(p)) for p in paths],
        "label": [str(x) for x in labels],
        "group": [str(g) for g in as_list(groups)],
        "fold": pd.array(as_list(folds), dtype="Int64"),
        "source": [str(s) for s in as_list(source)],
        "license": ["" if pd.isna(x) else str(x) for x in as_list(license)],
        "attribution": ["" if pd.isna(x) else str(x) for x in as_list(attribution)],
    })


def compile_group_pattern(pattern: str | None) -> re.Pattern | None:
    """A user's ``--group-pattern``: a regex searched in each file's name (without suffix)."""
    if pattern is None or pattern == "":
        return None
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"--group-pattern {pattern!r} is not a valid regular expression ({exc})") from None
    if rx.groups == 0:
        return rx
    if rx.groups > 1 and "group" not in rx.groupindex:
        raise InputError(f"--group-pattern {pattern!r} has {rx.groups} groups; name the one that identifies "
                         "the source recording (?P<group>...), or use one group")
    return rx


def name_groups(paths: list, fallback: list[str], pattern: re.Pattern | None = None
                ) -> tuple[list[str], dict[str, int]]:
    """The group of each file from its name: ``pattern`` (the user's), else ESC-50/UrbanSound8K names.

    ``pattern`` is searched in the file's stem; its ``group`` (or only) capture group, else the
    whole match, is the group (``pattern:<value>``). Names it does not match (counted as
    ``unmatched``), and every name without a pattern, that follow the ESC-50 or UrbanSound8K
    conventions get ``freesound:<id>``; the others keep ``fallback`` (counted as ``file``).
    """
    groups, counts = [], Counter()
    for path, fb in zip(paths, fallback):
        stem = Path(path).stem
        if pattern is not None:
            m = pattern.search(stem)
            if m is not None:
                value = m.group("group") if "group" in pattern.groupindex else m.group(1 if pattern.groups else 0)
                groups.append(f"pattern:{value}")
                counts["pattern"] += 1
                continue
            counts["unmatched"] += 1
        for name, rx in NAME_PATTERNS:
            m = rx.match(stem)
            if m:
                groups.append(f"freesound:{int(m.group('group'))}")
                counts[name] += 1
                break
        else:
            groups.append(fb)
            counts["file"] += 1
    return groups, dict(sorted(counts.items()))


def _from_folder(root: Path, source: str | None) -> tuple[pd.DataFrame, list[dict]]:
    """One sub-folder per label; group = the file's path below ``root`` without its suffix
    (:func:`name_groups` then recognises dataset naming conventions or the user's pattern)."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise InputError(f"--data {root}: the folder has no sub-folders; put each label's recordings "
                         "in a sub-folder named after the label, or pass a manifest CSV")
    ignored = [{"path": str(p), "reason": "not inside a label sub-folder"}
               for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")]
    paths, labels, groups = [], [], []
    for sub in subdirs:
        for f in sorted(sub.rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.suffix.lower() not in AUDIO_SUFFIXES:
                ignored.append({"path": str(f), "reason": f"not an audio file (suffix {f.suffix or 'none'!r})"})
                continue
            paths.append(f)
            labels.append(sub.name)
            groups.append(f.relative_to(root).with_suffix("").as_posix())
    return _listed(paths, labels, groups, pd.NA, source or root.name), ignored


def _freesound_groups(ids: pd.Series, fallback: list[str]) -> list[str]:
    out = []
    for fid, fb in zip(ids, fallback):
        if pd.isna(fid) or str(fid).strip() == "":
            out.append(fb)
        else:
            out.append(f"freesound:{int(float(fid))}" if _is_number(fid) else f"freesound:{fid}")
    return out


def _is_number(x) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


#: Field separators a manifest may use: spreadsheets in locales with a decimal comma save ';'.
DELIMITERS = (",", ";", "\t", "|")


def _manifest_text(csv: Path) -> tuple[str, str]:
    """The manifest's text and encoding: UTF-8 (with or without Excel's BOM), else Windows-1252."""
    raw = csv.read_bytes()
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace"), "cp1252"


def detect_delimiter(text: str, expected: Sequence[str] = ("path",)) -> str:
    """The field separator of a manifest, judged on its header line first.

    The header must hold the expected column names, which settles ``path;label`` against
    ``path,label`` even when the data rows hold decimal commas (where :class:`csv.Sniffer` alone
    can pick the comma); without a decisive header the sniffer decides, then the comma.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ","
    header = lines[0]
    scored = []
    for d in DELIMITERS:
        names = [c.strip() for c in next(csvlib.reader([header], delimiter=d))]
        scored.append((sum(e in names for e in expected), len(names), d))
    best = max(scored, key=lambda t: (t[0], t[1]))
    if best[0] > 0 or best[1] > 1:
        return best[2]
    try:
        return csvlib.Sniffer().sniff("\n".join(lines[:50]), delimiters="".join(DELIMITERS)).delimiter
    except csvlib.Error:
        return ","


def read_manifest(csv: str | os.PathLike, expected: Sequence[str] = ("path",)) -> tuple[pd.DataFrame, str]:
    """A manifest CSV as strings (empty cells NA) and the delimiter it was read with."""
    csv = Path(csv)
    try:
        text, _ = _manifest_text(csv)
        delimiter = detect_delimiter(text, expected)
        df = pd.read_csv(StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:
        raise InputError(f"--data {csv}: cannot be read as a CSV manifest ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df, delimiter


def _describe_delimiter(d: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(d, repr(d))


def _from_manifest(csv: Path, label_column: str, group_column: str | None,
                   source: str | None, source_column: str | None = None,
                   path_column: str = "path") -> pd.DataFrame:
    df, delimiter = read_manifest(csv, [path_column, label_column])
    need = [path_column, label_column] + [c for c in (group_column, source_column) if c]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"manifest {csv} lacks the column(s) {', '.join(missing)}; it has "
                         f"{', '.join(df.columns)} (read as {_describe_delimiter(delimiter)}-separated). "
                         "Use --path-column, --label-column (and --group-column, --source-column) to name the columns")
    if path_column != "path":
        if "path" in df.columns:
            df = df.rename(columns={"path": "path (unused)"})
        df = df.rename(columns={path_column: "path"})
    checked = [label_column, "path"] + ([source_column] if source_column else [])
    for col, rows in ((c, df.index[df[c].isna()].tolist()) for c in checked):
        if rows:
            shown = ", ".join(str(r + 2) for r in rows[:10])
            name = path_column if col == "path" else col
            raise InputError(f"manifest {csv}: {len(rows)} row(s) have an empty '{name}' (CSV lines {shown}"
                             f"{', ...' if len(rows) > 10 else ''}); fill them in or remove the rows")
    base = csv.parent
    paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in df["path"]]
    dup = sorted(k for k, v in Counter(os.path.normpath(p) for p in paths).items() if v > 1)
    if dup:
        raise InputError(f"manifest {csv} lists {len(dup)} file(s) more than once, e.g. {dup[0]}; "
                         "keep one row per recording")
    fallback = [Path(p).with_suffix("").as_posix() for p in df["path"]]
    if group_column:
        groups = [fb if pd.isna(g) else str(g) for g, fb in zip(df[group_column], fallback)]
    elif "group" in df.columns:
        groups = [fb if pd.isna(g) else str(g) for g, fb in zip(df["group"], fallback)]
    elif "freesound_id" in df.columns:
        groups = _freesound_groups(df["freesound_id"], fallback)
    else:
        groups = fallback
    default_groups = not (group_column or "group" in df.columns or "freesound_id" in df.columns)
    folds = pd.NA
    if "fold" in df.columns:
        bad = [v for v in df["fold"].dropna() if not (_is_number(v) and float(v).is_integer())]
        if bad:
            raise InputError(f"manifest {csv}: column 'fold' must hold whole numbers, found {bad[0]!r}")
        folds = [pd.NA if pd.isna(v) else int(float(v)) for v in df["fold"]]
    if source_column:
        src = df[source_column]
    elif source:
        src = source
    elif "source" in df.columns or "source_dataset" in df.columns:
        col = "source" if "source" in df.columns else "source_dataset"
        src = [csv.parent.name if pd.isna(v) else v for v in df[col]]
    else:
        src = csv.parent.name
    lic_col = "license" if "license" in df.columns else "licence" if "licence" in df.columns else None
    listed = _listed(paths, df[label_column], groups, folds, src,
                     df[lic_col] if lic_col else "", df["attribution"] if "attribution" in df.columns else "")
    listed.attrs["default_groups"] = default_groups
    return listed


# --- archives ---

def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` once (a marker file makes later calls free).

    Extraction goes to a temporary sibling folder first, so an interrupted run never leaves a
    half-extracted folder that a later run would trust.
    """
    marker = dest / ".clapnb-extracted"
    if marker.is_file():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{archive}: cannot be extracted ({exc}); download it again") from exc
    (tmp / marker.name).write_text(str(archive) + "\n", encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _archive_dest(archive: Path, cache_dir: Path) -> Path:
    """A cache folder keyed by the archive's name, size and mtime (hashing GBs each run is slow)."""
    st = archive.stat()
    key = io.fingerprint([archive.name, st.st_size, st.st_mtime_ns])
    name = archive.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return cache_dir / "extracted" / f"{name}-{key[:12]}"


def _find(root: Path, relative: str, what: str, hint: str) -> Path:
    """``root/relative`` or ``root/*/relative`` (archives usually wrap everything in one folder)."""
    hits = [root / relative] + sorted(root.glob(f"*/{relative}"))
    for h in hits:
        if h.is_file():
            return h.parent.parent
    raise InputError(f"{root}: no {relative} found (neither there nor one folder down); "
                     f"this does not look like {what}. {hint}")


def fetch_esc50(cache_dir: str | os.PathLike | None = None, *, url: str = ESC50_URL,
                known_hash: str | None = ESC50_SHA256) -> Path:
    """Download (once) and extract the official ESC-50 archive; return the folder with meta/ and audio/."""
    import pooch

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / ESC50_ZIP
    try:
        zip_path = pooch.retrieve(url, known_hash=f"sha256:{known_hash}" if known_hash else None,
                                  fname=ESC50_ZIP, path=cache, progressbar=True)
    except ValueError as exc:
        raise ClapnbError(
            f"the ESC-50 archive from {url} (cached at {target}) does not have the pinned sha256 "
            f"{known_hash} ({exc}). GitHub regenerates branch archives; if you trust the file, set "
            "CLAPNB_ESC50_SHA256 to its sha256 (or to 'none' to skip the check)") from exc
    except Exception as exc:  # requests/pooch raise many types for a failed download
        raise ClapnbError(
            f"could not download ESC-50 from {url} ({type(exc).__name__}: {exc}). Without internet, "
            f"download that file on another machine and put it at {target} (it is used as is when its "
            f"sha256 is {known_hash}), or pass --data esc50:/path/to/{ESC50_ZIP} or "
            "esc50:/path/to/ESC-50-master (the extracted folder)") from exc
    return _find(extract_archive(Path(zip_path), cache / "ESC-50"), "meta/esc50.csv", "ESC-50", "")


def _esc50_root(location: str | None, cache: Path) -> Path:
    hint = f"Pass the official archive ({ESC50_URL}) or its extracted ESC-50-master folder."
    if not location:
        known = os.environ.get("CLAPNB_ESC50_SHA256", ESC50_SHA256)
        return fetch_esc50(cache, known_hash=None if known.lower() == "none" else known)
    path = Path(location).expanduser()
    if _is_archive(path):
        path = extract_archive(path, _archive_dest(path, cache))
    elif not path.is_dir():
        raise InputError(f"--data esc50:{location}: no such archive or folder. {hint}")
    return _find(path, "meta/esc50.csv", "ESC-50", hint)


def _from_esc50(root: Path) -> pd.DataFrame:
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    esc10 = meta["esc10"].astype(str).str.lower().eq("true")
    return _listed(
        [root / "audio" / f for f in meta["filename"]], meta["category"],
        [f"freesound:{s}" for s in meta["src_file"]], meta["fold"].astype(int).tolist(), "ESC-50",
        [ESC10_LICENSE if e else ESC50_LICENSE for e in esc10],
        [f"freesound.org sound {s}; clip from ESC-50 by K. J. Piczak" for s in meta["src_file"]],
    )


def _us8k_root(location: str | None, cache: Path) -> Path:
    hint = (f"UrbanSound8K is not downloaded automatically: get UrbanSound8K.tar.gz from {US8K_PAGE} "
            f"({US8K_ZENODO}) and pass --data urbansound8k:/path/to/UrbanSound8K.tar.gz or the extracted folder.")
    if not location:
        raise InputError(f"--data urbansound8k needs a path (urbansound8k:PATH). {hint}")
    path = Path(location).expanduser()
    if _is_archive(path):
        path = extract_archive(path, _archive_dest(path, cache))
    elif not path.is_dir():
        raise InputError(f"--data urbansound8k:{location}: no such archive or folder. {hint}")
    return _find(path, "metadata/UrbanSound8K.csv", "UrbanSound8K", hint)


def _from_us8k(root: Path) -> pd.DataFrame:
    meta = pd.read_csv(root / "metadata" / "UrbanSound8K.csv")
    return _listed(
        [root / "audio" / f"fold{int(k)}" / f for k, f in zip(meta["fold"], meta["slice_file_name"])],
        meta["class"], [f"freesound:{int(s)}" for s in meta["fsID"]], meta["fold"].astype(int).tolist(),
        "UrbanSound8K", US8K_LICENSE,
        [f"freesound.org sound {int(s)}; slice from UrbanSound8K by J. Salamon, C. Jacoby and J. P. Bello"
         for s in meta["fsID"]],
    )


# --- probing ---

_PROBED = ["duration_s", "sample_rate", "channels", "sha256", "content_sha256", "channel", "peak_dbfs"]


def inspect_file(path: str, *, channel: str = audio.MIX, silence_dbfs: float | None = SILENCE_DBFS,
                 min_duration_s: float = MIN_DURATION_S, warnings: list | None = None) -> dict:
    """Decode one file fully and decide whether it may enter a dataset; raise AudioError if not.

    Refused: missing, unreadable, empty or NaN-holding files; a body clearly shorter than the
    header promises (truncated: it would otherwise be used as a short recording repeated to
    fill every segment); fewer than ``min_duration_s`` seconds; digital silence or a peak at or
    below ``silence_dbfs`` (None keeps silent files). A stereo mix that loses more than
    :data:`MIX_LOSS_WARN_DB` of the channels' energy is appended to ``warnings``.
    """
    channel = audio.canonical_channel(channel)
    a = audio.analyse(path, channel)
    if a.truncated:
        raise audio.AudioError(
            f"{path}: truncated: the header promises {a.header_frames} samples ({a.header_frames / a.sample_rate:.3f} s) "
            f"but the file holds {a.frames} ({a.duration_s:.3f} s); copy or export it again")
    if a.duration_s < min_duration_s:
        raise audio.AudioError(
            f"{path}: too short: {a.frames} sample(s) ({a.duration_s * 1000:.1f} ms) at {a.sample_rate} Hz, under "
            f"the minimum of {min_duration_s:g} s (--min-duration); remove it or lower the minimum")
    cancel = (a.mix_loss_db is not None and a.mix_loss_db > MIX_LOSS_WARN_DB and channel == audio.MIX)
    hint = (f" The mono mix of its {a.channels} channels loses {a.mix_loss_db:.0f} dB of their energy (opposite "
            "phase?): choose a channel with --channel left|right|N." if cancel else "")
    if silence_dbfs is not None and a.peak_dbfs <= silence_dbfs:
        what = ("digital silence (every sample is 0)" if a.peak_dbfs == -np.inf else
                f"near-silent (loudest sample {a.peak_dbfs:.1f} dBFS, at or below the threshold "
                f"{silence_dbfs:g} dBFS of --silence-threshold)")
        raise audio.AudioError(f"{path}: {what}; left out (--keep-silent keeps such files).{hint}")
    if cancel and warnings is not None:
        warnings.append({"path": path, "reason": f"{path}: stereo mix loses {a.mix_loss_db:.1f} dB of the "
                                                 f"channels' energy (the channels largely cancel); choose a "
                                                 f"channel with --channel left|right|N"})
    return {"duration_s": a.duration_s, "sample_rate": a.sample_rate, "channels": a.channels,
            "sha256": io.file_sha256(path), "content_sha256": a.content_sha256, "channel": channel,
            "peak_dbfs": a.peak_dbfs}


def _inspect_all(listed: pd.DataFrame, **checks) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    from tqdm.auto import tqdm

    rows, excluded, warnings = [], [], []
    for path in tqdm(listed["path"], desc="reading recordings", unit="file", disable=None):
        try:
            rows.append(inspect_file(path, warnings=warnings, **checks))
        except audio.AudioError as exc:
            rows.append(None)
            excluded.append({"path": path, "reason": str(exc)})
    ok = [r is not None for r in rows]
    table = listed[ok].reset_index(drop=True)
    probed = pd.DataFrame([r for r in rows if r is not None], columns=_PROBED)
    table = pd.concat([table, probed.reset_index(drop=True)], axis=1)
    first_bytes: dict[str, str] = {}
    first_content: dict[str, str] = {}
    keep = []
    for path, digest, content in zip(table["path"], table["sha256"], table["content_sha256"]):
        if digest in first_bytes:
            reason = f"{path}: same bytes as {first_bytes[digest]}; a duplicate would leak between splits"
        elif content in first_content:
            reason = (f"{path}: same decoded audio as {first_content[content]} (other bytes: another format or "
                      "metadata); a duplicate would leak between splits")
        else:
            first_bytes[digest], first_content[content] = path, path
            keep.append(True)
            continue
        excluded.append({"path": path, "reason": reason})
        keep.append(False)
    return table[keep].reset_index(drop=True), excluded, warnings


def _parse_spec(data: str) -> tuple[str, str | None]:
    low = data.lower()
    for kind in ("esc50", "urbansound8k"):
        if low == kind:
            return kind, None
        if low.startswith(kind + ":"):
            return kind, data[len(kind) + 1:]
    return "path", data


def load_recordings(data: str, *, label_column: str = "label", mapping=None, drop_unmapped: bool = False,
                    strict: bool = False, group_column: str | None = None, source: str | None = None,
                    cache_dir: str | os.PathLike | None = None,
                    source_column: str | None = None, path_column: str = "path",
                    group_pattern: str | None = None,
                    channel: str = audio.MIX, silence_dbfs: float | None = SILENCE_DBFS,
                    keep_silent: bool = False,
                    min_duration_s: float = MIN_DURATION_S) -> tuple[pd.DataFrame, dict]:
    """Build the recordings table from ``data`` and report what was excluded and why.

    ``data``: a folder with one sub-folder per label, a manifest CSV, ``esc50`` (download),
    ``esc50:PATH`` or ``urbansound8k:PATH`` (archive or extracted folder). ``mapping``: a
    :class:`clapnb.taxonomy.Mapping`, a spec for :func:`clapnb.taxonomy.load_mapping`, or None for
    the built-in mappings. Unreadable, empty, NaN-holding, missing, truncated, too short
    (``min_duration_s``), silent (peak <= ``silence_dbfs`` dBFS, unless ``keep_silent``) and
    duplicate files (same bytes or same decoded audio) are excluded and listed in
    ``report["excluded"]``; with ``strict`` they raise instead. ``report["warnings"]``: stereo
    files whose mono mix cancels; ``channel`` (``mix``, ``left``, ``right``, N) chooses what is used.

    Groups: a class folder's (and a manifest without a group column's) group is the file, except
    that ESC-50 / UrbanSound8K file names give ``freesound:<id>``; ``group_pattern`` (a regex
    searched in each file's name, see :func:`name_groups`) overrides both.

    ``source`` of a row (dataset or collection: the unit of the source-shortcut check): a
    manifest's ``source_column``; else ``source`` for every row; else a manifest's ``source`` or
    ``source_dataset`` column, or its folder's name; a class folder's own name.
    """
    data = os.fspath(data)
    kind, location = _parse_spec(data)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    ignored: list[dict] = []
    if kind == "esc50":
        root = _esc50_root(location, cache)
        listed = _from_esc50(root)
    elif kind == "urbansound8k":
        root = _us8k_root(location, cache)
        listed = _from_us8k(root)
    else:
        root = Path(location).expanduser()
        if root.is_dir():
            kind = "folder"
            if group_column:
                raise InputError("group_column applies to manifest CSVs only; a class folder's group "
                                 "is each file's path below the folder")
            if path_column != "path":
                raise InputError(f"--path-column applies to manifest CSVs only; {root} is a class folder")
            if source_column:
                raise InputError(f"--source-column applies to manifest CSVs only; the source of the class "
                                 f"folder {root} is its name ({root.name!r}). To pool collections, list the "
                                 "files in a manifest CSV with a column naming each file's source")
            listed, ignored = _from_folder(root, source)
        elif root.is_file() and root.suffix.lower() in (".csv", ".tsv", ".txt"):
            kind = "manifest"
            listed = _from_manifest(root, label_column, group_column, source, source_column, path_column)
        elif root.is_file():
            raise InputError(f"--data {data}: a file that is not a CSV manifest; pass a folder with one "
                             "sub-folder per label, a manifest CSV, esc50 or urbansound8k:PATH")
        else:
            raise InputError(f"--data {data}: no such file or folder (expected a class folder, a manifest "
                             "CSV, 'esc50', 'esc50:PATH' or 'urbansound8k:PATH')")
    if source and kind in ("esc50", "urbansound8k"):
        listed["source"] = source
    if path_column != "path" and kind in ("esc50", "urbansound8k"):
        raise InputError(f"--path-column applies to manifest CSVs only; {kind} has its own metadata")
    if source_column and kind in ("esc50", "urbansound8k"):
        raise InputError(f"--source-column applies to manifest CSVs only; {kind} recordings have the "
                         f"source {listed['source'].iloc[0]!r}")
    if listed.empty:
        raise InputError(f"--data {data}: no recordings found")
    rx = compile_group_pattern(group_pattern)
    grouping: dict[str, int] = {}
    if kind == "folder" or (kind == "manifest" and listed.attrs.get("default_groups")):
        groups, grouping = name_groups(listed["path"].tolist(), listed["group"].tolist(), rx)
        listed["group"] = groups
    elif rx is not None:
        raise InputError(f"--group-pattern applies to class folders and manifests without a group column; "
                         f"{kind} recordings are grouped by their freesound recording already")

    if not isinstance(mapping, taxonomy.Mapping):
        mapping = taxonomy.load_mapping(mapping)
    classes = taxonomy.map_labels(listed["label"], mapping, drop_unmapped=drop_unmapped)
    listed["class"] = classes
    listed["approximate"] = [bool(c is not None and mapping.rules[lab].approximate)
                             for lab, c in zip(listed["label"], classes)]

    if silence_dbfs is not None and not (isinstance(silence_dbfs, (int, float)) and silence_dbfs < 0):
        raise InputError(f"--silence-threshold {silence_dbfs!r}: give a level in dBFS below 0, e.g. -60")
    if not (isinstance(min_duration_s, (int, float)) and min_duration_s >= 0):
        raise InputError(f"--min-duration {min_duration_s!r}: give a duration in seconds >= 0")
    table, excluded, warnings = _inspect_all(listed, channel=audio.canonical_channel(channel),
                                             silence_dbfs=None if keep_silent else silence_dbfs,
                                             min_duration_s=float(min_duration_s))
    if excluded and strict:
        lines = "\n  ".join(e["reason"] for e in excluded[:20])
        more = f"\n  ... and {len(excluded) - 20} more" if len(excluded) > 20 else ""
        raise audio.AudioError(f"{len(excluded)} file(s) cannot be used (strict mode):\n  {lines}{more}\n"
                               "Fix or remove them, or run without --strict to skip them")
    table = table[COLUMNS].sort_values("path", kind="mergesort").reset_index(drop=True)
    table["class"] = table["class"].astype(object).where(table["class"].notna(), None)

    unknown = Counter(lab for lab in listed["label"] if lab not in mapping.rules)
    nulled = Counter(lab for lab in listed["label"] if lab in mapping.rules and mapping.rules[lab].cls is None)
    report = {
        "data": data,
        "kind": kind,
        "root": str(root),
        "mapping": list(mapping.files),
        "n_listed": int(len(listed)),
        "n_recordings": int(len(table)),
        "n_in_classes": int(table["class"].notna().sum()),
        "excluded": sorted(excluded, key=lambda e: e["path"]),
        "ignored": ignored,
        "warnings": sorted(warnings, key=lambda e: e["path"]),
        "grouping": grouping,
        "checks": {"channel": audio.canonical_channel(channel), "silence_dbfs": silence_dbfs,
                   "keep_silent": bool(keep_silent), "min_duration_s": float(min_duration_s),
                   "group_pattern": group_pattern},
        "unmapped_labels": dict(sorted(unknown.items())),
        "excluded_labels": dict(sorted(nulled.items())),
    }
    return table, report


# --- cheap checks before any work ---

def _reachable(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def missing_data(data: str, *, label_column: str = "label", path_column: str = "path",
                 group_column: str | None = None, source_column: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> list[str]:
    """What is missing for :func:`load_recordings` to start, found without decoding any audio.

    One line per problem (empty: all there), so that a command can name every missing input at
    once, together with missing weights, before it starts work. Files that exist but cannot be
    decoded are not looked at here: they are excluded (and listed) later.
    """
    data = os.fspath(data)
    kind, location = _parse_spec(data)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if kind == "esc50":
        if location:
            path = Path(location).expanduser()
            return [] if path.exists() else [f"data: esc50:{location}: no such archive or folder (give the "
                                             f"official {ESC50_ZIP} or its extracted ESC-50-master folder)"]
        if (cache / ESC50_ZIP).is_file() or (cache / "ESC-50" / ".clapnb-extracted").is_file():
            return []
        host = ESC50_URL.split("/")[2]
        if _reachable(host):
            return []
        return [f"data: ESC-50 is not in the cache ({cache / ESC50_ZIP}) and {host} cannot be reached to "
                f"download it from {ESC50_URL}. Download it on another machine and put it at that path "
                f"(the cache follows $CLAPNB_CACHE), or pass --data esc50:/path/to/{ESC50_ZIP}"]
    if kind == "urbansound8k":
        if not location:
            return [f"data: urbansound8k needs a path (urbansound8k:PATH to UrbanSound8K.tar.gz or the "
                    f"extracted folder; get it from {US8K_PAGE})"]
        path = Path(location).expanduser()
        return [] if path.exists() else [f"data: urbansound8k:{location}: no such archive or folder"]
    root = Path(location).expanduser()
    if root.is_dir():
        return [] if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()) else [
            f"data: {root} has no label sub-folders (put each label's recordings in a sub-folder named "
            "after the label, or pass a manifest CSV)"]
    if not root.exists():
        return [f"data: {data}: no such file or folder (expected a class folder, a manifest CSV, 'esc50', "
                "'esc50:PATH' or 'urbansound8k:PATH')"]
    if root.suffix.lower() not in (".csv", ".tsv", ".txt"):
        return [f"data: {data} is a file but not a CSV manifest"]
    try:
        df, delimiter = read_manifest(root, [path_column, label_column])
    except InputError as exc:
        return [f"data: {exc}"]
    need = [path_column, label_column] + [c for c in (group_column, source_column) if c]
    lacking = [c for c in need if c not in df.columns]
    if lacking:
        return [f"data: manifest {root} lacks the column(s) {', '.join(lacking)}; it has "
                f"{', '.join(df.columns)} (read as {_describe_delimiter(delimiter)}-separated). Use "
                "--path-column, --label-column (and --group-column, --source-column) to name the columns"]
    paths = [p if os.path.isabs(p) else os.path.join(root.parent, p) for p in df[path_column].dropna()]
    absent = [p for p in paths if not os.path.isfile(p)]
    if paths and len(absent) == len(paths):
        return [f"data: none of the {len(paths)} files listed in {root} (column '{path_column}') exists, "
                f"e.g. {absent[0]}; relative paths are read from the manifest's folder"]
    return []


def load_background(spec: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Recordings of the ``background`` class: the site's residual sound (detection's non-event class).

    ``spec``: a folder (every audio file below it, recursively) or a manifest CSV (``path`` column,
    optional ``group``). Group = ``background:<file stem below the folder>`` (or the manifest's
    ``group``), so splits never share a background recording. Same columns as
    :func:`load_recordings`; unreadable files are excluded and listed in the report.
    """
    from clapnb.taxonomy import BACKGROUND

    root = Path(spec).expanduser()
    if root.is_dir():
        paths = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
                       and not f.name.startswith("."))
        groups = [f"{BACKGROUND}:{p.relative_to(root).with_suffix('').as_posix()}" for p in paths]
    elif root.is_file():
        df, _ = read_manifest(root, ["path"])
        if "path" not in df.columns:
            raise InputError(f"--background {spec}: the manifest needs a 'path' column (has {', '.join(df.columns)})")
        paths = [p if os.path.isabs(p) else os.path.join(root.parent, p) for p in df["path"].astype(str)]
        groups = ([f"{BACKGROUND}:{g}" for g in df["group"].astype(str)] if "group" in df.columns
                  else [f"{BACKGROUND}:{Path(p).with_suffix('').as_posix()}" for p in df["path"].astype(str)])
    else:
        raise InputError(f"--background {spec}: no such folder or manifest")
    if not paths:
        raise InputError(f"--background {spec}: no audio files found")
    listed = _listed(paths, [BACKGROUND] * len(paths), groups, pd.NA, BACKGROUND)
    listed["class"] = BACKGROUND
    listed["approximate"] = False
    table, excluded, warnings = _inspect_all(listed)  # the same checks as load_recordings' defaults
    table = table[COLUMNS].sort_values("path", kind="mergesort").reset_index(drop=True)
    return table, {"background": os.fspath(spec), "n_listed": len(listed), "n_recordings": len(table),
                   "excluded": excluded, "warnings": warnings}
