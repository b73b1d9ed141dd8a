# -*- test-case-name: tests.test_recording -*-
"""
The on-disk format of one recorded tracking session, and its readers.

A session is two files side by side, named by the session's UTC start time
and number (C{20261124T081500.123Z-s1}):

  - C{<stem>.gaze}: a header of exactly L{HEADER_SIZE} bytes (a JSON object
    padded with spaces, the last byte a newline), then the samples as raw
    L{GAZE_DTYPE} records, appended as they arrive.  Numpy reads it in one
    line::

        np.fromfile(path, dtype=GAZE_DTYPE, offset=4096)

    (C{np.fromfile} reads whole records only, so a record cut short by a
    crash is left out; L{read_gaze} does the same with a read-only memmap).
  - C{<stem>.events.jsonl}: one JSON object per line, each with
    C{t_server_ms} (the server clock, the clock of C{system_time_us}, in ms)
    and C{kind}, plus fields of that kind.

Both files are only ever appended to, except that the header is rewritten in
place once, when the session is closed cleanly (C{complete}, C{samples},
C{ended_*}).  A header that still says C{"complete": false} is the mark of a
session whose server died; everything written up to then is readable.

Nothing here imports Twisted: it is plain Python and numpy.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from jspsych_tobii.core.jsonsafe import json_safe
from jspsych_tobii.interfaces import GAZE_DTYPE

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "GAZE_SUFFIX",
    "EVENTS_SUFFIX",
    "RecordingFormatError",
    "session_stem",
    "utc_iso",
    "gaze_path_for",
    "events_path_for",
    "make_header",
    "encode_header",
    "read_header",
    "record_dtype",
    "count_records",
    "read_gaze",
    "read_range",
    "record_span",
    "encode_event",
    "read_events",
    "write_recording",
]

MAGIC = "jspsych-tobii-gaze"
FORMAT_VERSION = 1
#: Size of the header in bytes; the first record starts here.
HEADER_SIZE = 4096
GAZE_SUFFIX = ".gaze"
EVENTS_SUFFIX = ".events.jsonl"

CLOCKS = (
    "system_time_us and server_time_us: the server's monotonic clock (on Linux "
    "CLOCK_MONOTONIC), in microseconds; device_time_us: the eye tracker's own clock, "
    "in microseconds; t_server_ms in the events file: the server's monotonic clock, in ms"
)


class RecordingFormatError(ValueError):
    """A file is not a readable recording; the message says which file and why."""


# -- names


def utc_iso(unix_seconds: float) -> str:
    """C{2026-11-24T08:15:00.123Z}: a wall-clock time, UTC, to the millisecond."""
    ms = int(round(unix_seconds * 1000))
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def session_stem(started_unix: float, session: int) -> str:
    """C{20261124T081500.123Z-s1}: the common part of a session's file names."""
    ms = int(round(started_unix * 1000))
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{millis:03d}Z-s{session}"


def _stem_of(path: str) -> str:
    for suffix in (EVENTS_SUFFIX, GAZE_SUFFIX):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def gaze_path_for(path: str) -> str:
    """The C{.gaze} file of a session, given either of its files or their stem."""
    return _stem_of(os.fspath(path)) + GAZE_SUFFIX


def events_path_for(path: str) -> str:
    """The C{.events.jsonl} file of a session, given either of its files or their stem."""
    return _stem_of(os.fspath(path)) + EVENTS_SUFFIX


# -- the header


def make_header(
    *,
    session: int,
    started_unix: float,
    started_us: Optional[int],
    tracker: Optional[dict] = None,
    server_version: str = "",
    events_file: str = "",
) -> Dict[str, Any]:
    """The header of a session that has just started (C{complete} false)."""
    return {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "header_size": HEADER_SIZE,
        "record_size": GAZE_DTYPE.itemsize,
        "dtype": [list(field) for field in GAZE_DTYPE.descr],
        "clocks": CLOCKS,
        "session": session,
        "started_utc": utc_iso(started_unix),
        "started_unix": round(float(started_unix), 6),
        "started_us": None if started_us is None else int(started_us),
        "tracker": tracker,
        "server_version": server_version,
        "events_file": events_file,
        "complete": False,
        "samples": None,
        "ended_utc": None,
        "ended_us": None,
    }


def encode_header(header: Dict[str, Any]) -> bytes:
    """
    Exactly L{HEADER_SIZE} bytes: the JSON text, spaces, a newline.  A tracker
    description too large to fit is cut down to its scalar fields (then
    dropped) rather than spilling into the records.
    """
    text = _header_text(header)
    if len(text) >= HEADER_SIZE and isinstance(header.get("tracker"), dict):
        small = {k: v for k, v in header["tracker"].items() if isinstance(v, (str, int, float))}
        small["truncated"] = True
        text = _header_text(dict(header, tracker=small))
        if len(text) >= HEADER_SIZE:
            text = _header_text(dict(header, tracker={"truncated": True}))
    if len(text) >= HEADER_SIZE:
        raise ValueError(f"recording header is {len(text)} bytes; at most {HEADER_SIZE - 1} fit")
    return text + b" " * (HEADER_SIZE - 1 - len(text)) + b"\n"


def _header_text(header: Dict[str, Any]) -> bytes:
    return json.dumps(json_safe(header), indent=1, ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def read_header(path: str) -> Dict[str, Any]:
    """
    The header of a C{.gaze} file, checked.

    @raise RecordingFormatError: the file is missing, too short, not a
        recording, or of a format version this code does not know.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
    except FileNotFoundError:
        raise RecordingFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordingFormatError(f"{path}: is a directory, not a recording") from None
    except OSError as e:
        raise RecordingFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    if not raw:
        raise RecordingFormatError(f"{path}: empty file; the recording was cut off at its start")
    if not raw.lstrip().startswith(b"{"):
        raise RecordingFormatError(f"{path}: not a jspsych-tobii gaze recording")
    if len(raw) < HEADER_SIZE:
        raise RecordingFormatError(
            f"{path}: truncated header ({len(raw)} of {HEADER_SIZE} bytes); "
            "the recording was cut off before its first sample"
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RecordingFormatError(f"{path}: the header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise RecordingFormatError(f"{path}: not a jspsych-tobii gaze recording")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise RecordingFormatError(
            f"{path}: format version {version!r}; this program reads version {FORMAT_VERSION}"
        )
    if header.get("header_size") != HEADER_SIZE:
        raise RecordingFormatError(f"{path}: unexpected header size {header.get('header_size')!r}")
    record_dtype(header, path)  # checks the dtype description
    return header


def record_dtype(header: Dict[str, Any], path: str = "recording") -> np.dtype:
    """The record dtype a header describes (normally L{GAZE_DTYPE} itself)."""
    try:
        dtype = np.dtype([(str(name), str(kind)) for name, kind in header["dtype"]])
    except (KeyError, TypeError, ValueError):
        raise RecordingFormatError(f"{path}: the header's dtype description is invalid") from None
    if dtype.itemsize != header.get("record_size"):
        raise RecordingFormatError(
            f"{path}: records are {dtype.itemsize} bytes by the dtype but "
            f"{header.get('record_size')!r} by the header"
        )
    if "system_time_us" not in (dtype.names or ()):
        raise RecordingFormatError(f"{path}: the records have no system_time_us field")
    return GAZE_DTYPE if dtype == GAZE_DTYPE else dtype


# -- samples


def count_records(path: str, header: Optional[Dict[str, Any]] = None) -> Tuple[int, int]:
    """
    C{(records, trailing)}: how many whole records the file holds, and how
    many bytes of a cut-off last record follow them (nonzero only after a
    crash while writing).
    """
    header = read_header(path) if header is None else header
    size = os.path.getsize(path) - HEADER_SIZE
    itemsize = header["record_size"]
    return size // itemsize, size % itemsize


def read_gaze(path: str) -> np.ndarray:
    """
    Every whole record of a C{.gaze} file, as a read-only array backed by the
    file (a C{np.memmap}), so even a long session costs no memory until its
    samples are used.  A partial record at the end (a crash while writing) is
    left out.

    @raise RecordingFormatError: see L{read_header}.
    """
    path = os.fspath(path)
    header = read_header(path)
    dtype = record_dtype(header, path)
    count, _ = count_records(path, header)
    if count == 0:
        empty = np.zeros(0, dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_SIZE, shape=(count,))


# -- events


def read_range(
    path: str,
    count: int,
    start_us: Optional[int] = None,
    end_us: Optional[int] = None,
    chunk: int = 500,
    first: int = 0,
) -> Iterator[np.ndarray]:
    """
    The first C{count} records of a gaze file written as L{GAZE_DTYPE} (the
    recorder's own, possibly still being written) with C{start_us <=
    system_time_us <= end_us} (either bound may be None), in time order, as
    copies of at most C{chunk} records, leaving out the records before
    index C{first}.  Found by binary search over a read-only memmap, so a
    range costs only the pages it reads (taking a chunk of 500 costs ~10 µs).

    @raise OSError: the file cannot be read (deleted, say).
    """
    if count <= 0:
        return
    data = np.memmap(path, GAZE_DTYPE, "r", offset=HEADER_SIZE, shape=(count,))
    try:
        lo, hi = _span(data, start_us, end_us)
        step = max(1, int(chunk))
        for i in range(max(lo, first), hi, step):
            # a byte copy: several times faster than np.array of a structured memmap
            raw = bytearray(data[i : min(hi, i + step)].tobytes())
            yield np.frombuffer(raw, dtype=GAZE_DTYPE)
    finally:
        del data


def record_span(
    path: str, count: int, start_us: Optional[int] = None, end_us: Optional[int] = None
) -> Tuple[int, int]:
    """
    The indices C{lo, hi} of the records that L{read_range} would give:
    C{records[lo:hi]} of the first C{count}.

    @raise OSError: the file cannot be read.
    """
    if count <= 0:
        return 0, 0
    data = np.memmap(path, GAZE_DTYPE, "r", offset=HEADER_SIZE, shape=(count,))
    try:
        return _span(data, start_us, end_us)
    finally:
        del data


def _span(data: np.ndarray, start_us: Optional[int], end_us: Optional[int]) -> Tuple[int, int]:
    # bisect reads ~log2(n) records; np.searchsorted on the records' time
    # field would first copy every record's time out of the file (all its
    # pages: 0.47 s for a 10 s range of a 2 h recording)
    times = data["system_time_us"]
    lo = 0 if start_us is None else bisect.bisect_left(times, start_us)
    hi = len(data) if end_us is None else bisect.bisect_right(times, end_us)
    return lo, max(lo, hi)


def encode_event(event: Dict[str, Any]) -> bytes:
    """One line of an events file (UTF-8, ending in a newline, no NaN)."""
    try:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        text = json.dumps(json_safe(event), separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


def read_events(path: str) -> List[Dict[str, Any]]:
    """
    The events of a session, in the order written.  A last line cut short by
    a crash is left out; any other line that is not a JSON object raises.

    @param path: the C{.events.jsonl} file (or the session's C{.gaze} file).
    @raise RecordingFormatError: missing or damaged file.
    """
    path = events_path_for(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise RecordingFormatError(f"{path}: no such file") from None
    except OSError as e:
        raise RecordingFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    lines = data.split(b"\n")
    complete = data.endswith(b"\n") or not data
    if not complete:
        last, lines = lines[-1], lines[:-1]
        try:
            event = json.loads(last.decode("utf-8"))
            if isinstance(event, dict):
                lines.append(last)  # cut exactly at the end of a record
        except (UnicodeDecodeError, ValueError):
            pass  # a line cut short by a crash
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RecordingFormatError(f"{path}: line {number} is not valid JSON") from None
        if not isinstance(event, dict) or "kind" not in event:
            raise RecordingFormatError(f"{path}: line {number} is not an event object")
        events.append(event)
    return events


# -- writing a whole recording at once (tests and tools)


def write_recording(
    gaze_path: str,
    samples: np.ndarray,
    *,
    session: int = 1,
    started_unix: Optional[float] = None,
    started_us: Optional[int] = None,
    tracker: Optional[dict] = None,
    events: Iterable[Dict[str, Any]] = (),
    server_version: str = "",
) -> Dict[str, Any]:
    """
    Write a complete session in one go (for tests and conversion tools; the
    server uses L{jspsych_tobii.recording.writer.SessionRecorder}).

    @return: the header written.
    """
    samples = np.asarray(samples)
    if samples.dtype != GAZE_DTYPE:
        raise ValueError(f"samples must be of GAZE_DTYPE, not {samples.dtype}")
    gaze_path = os.fspath(gaze_path)
    events_path = events_path_for(gaze_path)
    if started_us is None and len(samples):
        started_us = int(samples["system_time_us"][0])
    header = make_header(
        session=session,
        started_unix=time.time() if started_unix is None else started_unix,
        started_us=started_us,
        tracker=tracker,
        server_version=server_version,
        events_file=os.path.basename(events_path),
    )
    header.update(complete=True, samples=int(len(samples)))
    if len(samples):
        header["ended_us"] = int(samples["system_time_us"][-1])
    with open(gaze_path, "wb") as f:
        f.write(encode_header(header))
        f.write(np.ascontiguousarray(samples).tobytes())
    with open(events_path, "wb") as f:
        for event in events:
            f.write(encode_event(event))
    return header
