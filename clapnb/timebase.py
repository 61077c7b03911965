"""When a recording started: from its file name or its WAV/BWF metadata.

Monitoring recorders name files after their start (``SITE_20240501_120000.wav``) or write the
start into the Broadcast-WAV ``bext`` chunk. Events and levels are reported in clock time when it
is known, and in seconds from the file's start always. Times are naive (the recorder's clock, no
time zone) unless the name format carries ``%z``.

Shared by ``clapnb detect`` and ``clapnb levels``.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from clapnb.errors import InputError

#: strptime directives understood in a name format, with the text each matches.
_DIRECTIVES = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}",
               "S": r"\d{2}", "f": r"\d{1,6}", "j": r"\d{3}", "z": r"[+-]\d{4}", "b": r"[A-Za-z]{3}",
               "%": "%"}


@dataclass(frozen=True)
class StartTime:
    """``time`` (None when unknown) and where it came from: ``name``, ``bext`` or ``none`` (+ why)."""

    time: pd.Timestamp | None
    source: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {"start_time": None if self.time is None else self.time.isoformat(),
                "start_time_source": self.source, "start_time_detail": self.detail}


def format_regex(fmt: str) -> re.Pattern:
    """A regex matching what ``strptime(fmt)`` parses, to find the time anywhere in a file name."""
    out, i = [], 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%":
            if i + 1 >= len(fmt) or fmt[i + 1] not in _DIRECTIVES:
                raise InputError(f"--start-time-from-name {fmt!r}: unsupported directive "
                                 f"{fmt[i:i + 2]!r}; use %Y %y %m %d %H %M %S %f %j %z %b and literal text")
            out.append(_DIRECTIVES[fmt[i + 1]])
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


def from_name(path: str | os.PathLike, fmt: str) -> pd.Timestamp | None:
    """The first match of ``fmt`` in the file's name (without extension), or None."""
    stem = Path(path).stem
    pattern = format_regex(fmt)
    for m in pattern.finditer(stem):
        try:
            return pd.Timestamp(datetime.strptime(m.group(0), fmt))
        except ValueError:  # digits that look right but are no date (month 13...)
            continue
    return None


def _riff_chunks(fh, limit: int = 1 << 20):
    """(id, offset, size) of the top-level chunks of a RIFF/RF64 WAVE file (stops at ``data``)."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return
    pos = 12
    while pos < limit:
        fh.seek(pos)
        h = fh.read(8)
        if len(h) < 8:
            return
        cid, size = h[:4], struct.unpack("<I", h[4:])[0]
        yield cid, pos + 8, size
        if cid == b"data":
            return
        pos += 8 + size + (size & 1)


def from_bext(path: str | os.PathLike) -> pd.Timestamp | None:
    """Start time from a Broadcast-WAV ``bext`` chunk (EBU Tech 3285).

    ``OriginationDate`` + ``TimeReference`` (samples since midnight) when the time reference is set,
    else ``OriginationDate`` + ``OriginationTime``. None for other files or an empty chunk.
    """
    try:
        with open(path, "rb") as fh:
            sr = None
            bext = None
            for cid, off, size in _riff_chunks(fh):
                if cid == b"fmt " and size >= 8:
                    fh.seek(off)
                    sr = struct.unpack("<HHI", fh.read(8))[2]
                elif cid == b"bext" and size >= 346:
                    fh.seek(off)
                    bext = fh.read(346)
    except OSError:
        return None
    if bext is None:
        return None
    date = bext[320:330].decode("ascii", "replace").strip("\x00 ")
    clock = bext[330:338].decode("ascii", "replace").strip("\x00 ")
    ref = struct.unpack("<Q", bext[338:346])[0]
    if not date:
        return None
    date = re.sub(r"[^0-9]", "-", date)  # the spec allows any separator
    try:
        day = pd.Timestamp(datetime.strptime(date, "%Y-%m-%d"))
    except ValueError:
        return None
    if ref and sr:
        return day + pd.Timedelta(seconds=ref / sr)
    if clock:
        try:
            t = datetime.strptime(re.sub(r"[^0-9]", ":", clock), "%H:%M:%S")
        except ValueError:
            return None
        return day + pd.Timedelta(hours=t.hour, minutes=t.minute, seconds=t.second)
    return None


def start_time(path: str | os.PathLike, name_format: str | None = None, *, metadata: bool = True) -> StartTime:
    """When ``path`` started: the name (``name_format``) first, then the BWF metadata, else unknown."""
    if name_format:
        t = from_name(path, name_format)
        if t is not None:
            return StartTime(t, "name", name_format)
    if metadata:
        t = from_bext(path)
        if t is not None:
            return StartTime(t, "bext")
    why = (f"no match of {name_format!r} in the name" if name_format else "no name format given")
    return StartTime(None, "none", why + (" and no BWF bext start" if metadata else ""))


def absolute(start: pd.Timestamp | None, seconds) -> pd.Series | pd.Timestamp | None:
    """Clock time ``seconds`` after ``start`` (None when the start is unknown)."""
    if start is None:
        return None
    return start + pd.to_timedelta(seconds, unit="s")


def write_bext(path: str | os.PathLike, start: pd.Timestamp, sample_rate: int) -> None:
    """Insert a minimal ``bext`` chunk with ``start`` into a WAV file (tests, scene files).

    The chunk goes right after ``fmt ``; RIFF sizes are updated. Only for RIFF files < 4 GiB.
    """
    p = Path(path)
    raw = p.read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise InputError(f"{p}: not a RIFF WAVE file; cannot write a bext chunk")
    midnight = start.normalize()
    ref = int(round((start - midnight).total_seconds() * sample_rate))
    body = bytearray(602)
    body[320:330] = start.strftime("%Y-%m-%d").encode()
    body[330:338] = start.strftime("%H:%M:%S").encode()
    body[338:346] = struct.pack("<Q", ref)
    body[346:348] = struct.pack("<H", 1)  # BWF version 1
    chunk = b"bext" + struct.pack("<I", len(body)) + bytes(body)
    pos = 12
    while pos < len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        nxt = pos + 8 + size + (size & 1)
        if cid == b"fmt ":
            out = raw[:nxt] + chunk + raw[nxt:]
            out = out[:4] + struct.pack("<I", len(out) - 8) + out[8:]
            from clapnb import io

            io.atomic_write_bytes(p, out)
            return
        pos = nxt
    raise InputError(f"{p}: no fmt chunk; cannot write a bext chunk")
