# -*- test-case-name: tests.test_export -*-
"""
C{jspsych-tobii-export}: a recorded session to CSV or TSV.

    jspsych-tobii-export 20261124T081500.123Z-s1.gaze --format csv -o s1.csv

writes C{s1.csv}, one row per sample with every recorded field, and
C{s1.events.csv}, one row per event.  Column names say what each value is
and its unit; times are in milliseconds (three decimals: the recorded
microseconds exactly); a missing value (NaN) is an empty cell; validity
flags are 1 or 0.  Both files are written to a C{.part} name and renamed
when complete, so an interrupted export leaves no half file behind.

Text cells are safe to open in a spreadsheet: one that starts like a
formula (C{=}, C{+}, C{-}, C{@}, a tab or a carriage return, or their
full-width forms) gets a C{'} in front, so it stays text: a marker labelled
C{=HYPERLINK(...)} is exported as C{'=HYPERLINK(...)}.  Numbers, negative
ones too, are written as they are.

A recording cut off by a crash exports every whole sample, with a warning.
Input that is not a recording, or is damaged beyond that, gives a one-line
error and exit status 1 (2 for bad options); never a traceback.  Progress is
shown on stderr when stderr is a terminal (C{--progress}/C{--no-progress}
override that).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from contextlib import contextmanager
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jspsych_tobii.core.timesync import MicrosecondClock, monotonic_us
from jspsych_tobii.recording import columns
from jspsych_tobii.recording.columns import (
    TimeBase,
    event_keys,
    event_time_ms,
    format_unix_seconds,
)
from jspsych_tobii.recording.format import (
    RecordingFormatError,
    count_records,
    events_path_for,
    gaze_path_for,
    read_events,
    read_gaze,
    read_header,
)

PROG = "jspsych-tobii-export"
#: Samples formatted and written at a time.
CHUNK = 20_000
FORMATS = {"csv": ",", "tsv": "\t"}
#: The suffixes an output file of each format may have (or none at all).
OUTPUT_SUFFIXES = {
    "csv": (".csv", ".txt"),
    "tsv": (".tsv", ".tab", ".txt"),
    "parquet": (".parquet",),
}
#: Every output format: the text tables above, Parquet and a BIDS dataset.
ALL_FORMATS = ("bids", "csv", "parquet", "tsv")

__all__ = [
    "main",
    "export",
    "sample_columns",
    "events_output_path",
    "neutralise",
    "ExportError",
]


class ExportError(Exception):
    """A problem with the input or output, said in one line."""


# -- columns


def _column_for(name: str, kind: np.dtype) -> Tuple[str, str, Optional[str]]:
    """
    (column name, how to convert, format) for a record field.  Conversions:
    C{us_ms} µs to ms, C{bool} 1/0, C{int}, C{float} with the format.
    """
    if name == "seq":
        return "sample", "int", None
    if name == "system_time_us":
        return "time_ms", "us_ms", None
    if name.endswith("_time_us"):
        return name[: -len("_us")] + "_ms", "us_ms", None
    if kind == np.bool_:
        return name, "bool", None
    if kind.kind in "iu":
        return name, "int", None
    eye, _, rest = name.partition("_")
    if eye in ("left", "right") and kind.kind == "f":
        if rest in ("x", "y"):
            return f"{eye}_gaze_{rest}", "float", "%.6f"
        if rest.startswith("point_"):
            return f"{eye}_gaze_point_{rest[6:]}_mm", "float", "%.3f"
        if rest.startswith("origin_"):
            return f"{eye}_origin_{rest[7:]}_mm", "float", "%.3f"
        if rest == "pupil":
            return f"{eye}_pupil_mm", "float", "%.4f"
    return name, "float", "%r"


def sample_columns(dtype: np.dtype) -> List[str]:
    """The sample table's column names for records of C{dtype}, in order."""
    names = [_column_for(n, dtype[n])[0] for n in dtype.names or ()]
    extra = ["unix_time", "elapsed_ms"] if "system_time_us" in (dtype.names or ()) else []
    binocular = ["gaze_x", "gaze_y"] if _has_binocular(dtype) else []
    # sample, time_ms, unix_time, elapsed_ms, the other times, binocular gaze, per-eye fields
    head = [c for c in ("sample", "time_ms") if c in names]
    times = [c for c in names if c.endswith("_ms") and c not in head]
    rest = [c for c in names if c not in head and c not in times]
    return head + extra + times + binocular + rest


def _has_binocular(dtype: np.dtype) -> bool:
    needed = ("left_x", "left_y", "left_gaze_valid", "right_x", "right_y", "right_gaze_valid")
    return all(n in (dtype.names or ()) for n in needed)


def _format_floats(values: np.ndarray, fmt: str) -> List[str]:
    return [fmt % v if v == v else "" for v in values.tolist()]


def _format_us_ms(values: np.ndarray) -> List[str]:
    return [f"{v / 1000.0:.3f}" for v in values.tolist()]


class _SampleTable:
    """Formats chunks of records as lines of text."""

    def __init__(self, dtype: np.dtype, sep: str, timebase: TimeBase):
        self.dtype = dtype
        self.sep = sep
        self.timebase = timebase
        self.columns = sample_columns(dtype)
        self._formatters: Dict[str, Callable[[np.ndarray], List[str]]] = {}
        for name in dtype.names or ():
            column, how, fmt = _column_for(name, dtype[name])
            self._formatters[column] = self._formatter(name, how, fmt)

    @staticmethod
    def _formatter(field: str, how: str, fmt: Optional[str]):
        if how == "us_ms":
            return lambda chunk: _format_us_ms(chunk[field])
        if how == "bool":
            return lambda chunk: np.where(chunk[field], "1", "0").tolist()
        if how == "int":
            return lambda chunk: [str(v) for v in chunk[field].tolist()]
        return lambda chunk: _format_floats(chunk[field], fmt or "%r")

    def header_line(self) -> str:
        return self.sep.join(self.columns) + "\n"

    def lines(self, chunk: np.ndarray) -> str:
        cells = []
        binocular = None
        for column in self.columns:
            if column == "unix_time":
                unix_us = self.timebase.unix_us(chunk["system_time_us"])
                cells.append([""] * len(chunk) if unix_us is None else format_unix_seconds(unix_us))
            elif column == "elapsed_ms":
                cells.append(_format_us_ms(self.timebase.elapsed_us(chunk["system_time_us"])))
            elif column in ("gaze_x", "gaze_y"):
                if binocular is None:
                    binocular = columns.binocular(chunk)
                values = binocular[0] if column == "gaze_x" else binocular[1]
                cells.append(_format_floats(values, "%.6f"))
            else:
                cells.append(self._formatters[column](chunk))
        sep = self.sep
        return "".join(sep.join(row) + "\n" for row in zip(*cells))


# -- events

#: How a text cell that a spreadsheet would run as a formula begins.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(text: str) -> str:
    """A text cell, with a C{'} in front if a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _event_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return neutralise(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _write_events(
    out: IO[str], events: Sequence[Dict[str, Any]], sep: str, timebase: TimeBase
) -> None:
    keys = event_keys(events)
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    writer.writerow(
        ["time_ms", "unix_time", "elapsed_ms", "kind"] + [neutralise(key) for key in keys]
    )
    for event in events:
        t = event_time_ms(event)
        if t is not None:
            time_cell = f"{t:.3f}"
            elapsed_ms = timebase.elapsed_ms(t)
            elapsed = "" if elapsed_ms is None else f"{elapsed_ms:.3f}"
            unix_ms = timebase.unix_ms(t)
            unix = "" if unix_ms is None else f"{unix_ms / 1000.0:.6f}"
        else:
            time_cell = elapsed = unix = ""
        writer.writerow(
            [time_cell, unix, elapsed, _event_cell(event.get("kind"))]
            + [_event_cell(event.get(key)) for key in keys]
        )


# -- progress


class Progress:
    """A one-line progress bar on a terminal stream, redrawn at most 10 times a second."""

    def __init__(
        self,
        stream: IO[str],
        total: int,
        enabled: bool,
        label: str = "exporting",
        clock_us: MicrosecondClock = monotonic_us,
    ):
        self.stream = stream
        self.clock_us = clock_us
        self.total = max(0, total)
        self.enabled = enabled and total > 0
        self.label = label
        self._last = 0.0
        self._shown = -1

    def update(self, done: int, force: bool = False) -> None:
        if not self.enabled or done == self._shown:
            return
        now = self.clock_us() / 1e6
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self._shown = done
        fraction = min(1.0, done / self.total)
        width = 30
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r{self.label} {fraction * 100:5.1f}% [{bar}] {done:,}/{self.total:,} samples"
        )
        self.stream.flush()

    def finish(self, done: int) -> None:
        if self.enabled:
            self.update(done, force=True)
            self.stream.write("\n")
            self.stream.flush()


# -- the export


def events_output_path(out: str, fmt: str) -> str:
    """C{s1.csv} -> C{s1.events.csv}; C{s1} -> C{s1.events.csv}."""
    base, ext = os.path.splitext(out)
    if ext.lower() not in (".csv", ".tsv", ".txt", ".parquet"):
        base = out
    return f"{base}.events.{fmt}"


def export(
    path: str,
    out: str,
    fmt: str = "csv",
    warn: Callable[[str], Any] = lambda message: None,
    progress: Optional[Progress] = None,
    bids: Optional[Any] = None,
) -> Tuple[int, int, str]:
    """
    Export a recording to C{out} and its events beside it.

    @param fmt: C{csv}, C{tsv}, C{parquet} or C{bids} (then C{out} is the
        dataset folder and C{bids} the L{BidsNames<jspsych_tobii.recording.bids_names.BidsNames>}).
    @return: (samples, events, events file written).
    @raise ExportError: bad input or an output that cannot be written.
    """
    if fmt not in ALL_FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use {', '.join(ALL_FORMATS)}")
    gaze_path = gaze_path_for(path)
    events_path = events_path_for(path)
    try:
        header = read_header(gaze_path)
        samples = read_gaze(gaze_path)
        _, trailing = count_records(gaze_path, header)
    except RecordingFormatError as e:
        raise ExportError(str(e)) from None
    if trailing:
        warn(
            f"{gaze_path} ends with a partial sample ({trailing} bytes), left out: "
            "the recording was cut off while writing"
        )
    if not header.get("complete"):
        warn(
            f"{gaze_path} was not closed cleanly (the server stopped unexpectedly?); "
            f"exporting the {len(samples):,} samples written before that"
        )
    elif header.get("samples") not in (None, len(samples)):
        warn(
            f"{gaze_path}: the header says {header.get('samples')} samples but the file "
            f"holds {len(samples)}"
        )
    if os.path.exists(events_path):
        try:
            events = read_events(events_path)
        except RecordingFormatError as e:
            raise ExportError(str(e)) from None
    else:
        warn(f"{events_path} is missing; the events table will be empty")
        events = []
    timebase = TimeBase.from_header(header, samples)
    if timebase.started_unix_us is None:
        warn(f"{gaze_path}: the header has no wall-clock start; the unix_time column is empty")

    if fmt == "bids":
        from jspsych_tobii.recording import bids as bids_export

        if bids is None:
            raise ExportError("--format bids needs --subject")
        written = bids_export.write_dataset(
            out, bids, header, samples, events, timebase, warn=warn, progress=progress
        )
        return len(samples), len(events), written.events_path
    events_out = events_output_path(out, fmt)
    if os.path.abspath(events_out) == os.path.abspath(out):  # pragma: no cover - defensive
        raise ExportError(f"{out}: cannot tell the samples file from the events file")
    for target in (out, events_out):
        if os.path.abspath(target) in (os.path.abspath(gaze_path), os.path.abspath(events_path)):
            raise ExportError(f"{target}: would overwrite the recording itself")
    if fmt == "parquet":
        from jspsych_tobii.recording import parquet

        parquet.write_session(out, events_out, header, samples, events, timebase, progress)
        return len(samples), len(events), events_out
    sep = FORMATS[fmt]
    table = _SampleTable(samples.dtype, sep, timebase)
    parts = [out + ".part", events_out + ".part"]
    with writing(parts, out, progress, len(samples)):
        with open(parts[0], "w", encoding="utf-8", newline="") as f:
            f.write(table.header_line())
            total = len(samples)
            for start in range(0, total, CHUNK):
                f.write(table.lines(np.asarray(samples[start : start + CHUNK])))
                if progress is not None:
                    progress.update(min(total, start + CHUNK))
        with open(parts[1], "w", encoding="utf-8", newline="") as f:
            _write_events(f, events, sep, timebase)
        os.replace(parts[0], out)
        os.replace(parts[1], events_out)
    return len(samples), len(events), events_out


@contextmanager
def writing(parts: List[str], out: str, progress: Optional[Progress], total: int):
    """
    Around writing an export's C{.part} files (and renaming them): on any
    failure the parts written so far are removed, and an C{OSError} becomes a
    one-line L{ExportError} naming the file (C{out} when the error names
    none).  The progress bar, if any, is finished at C{total} either way.
    C{parts} may grow inside the block.
    """
    try:
        yield
    except OSError as e:
        _remove(parts)
        name = getattr(e, "filename", None) or out
        raise ExportError(f"{name}: cannot write: {getattr(e, 'strerror', None) or e}") from None
    except BaseException:
        _remove(parts)
        raise
    finally:
        if progress is not None:
            progress.finish(total)


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass  # already gone, or as unwritable as the failure being reported


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Export a jspsych-tobii session recording to CSV, TSV or Parquet (one row per "
            "gaze sample, and a second file with the session's events), or into a BIDS "
            "dataset (eye-tracking physio files)."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the session's .gaze (or .events.jsonl) file")
    parser.add_argument(
        "--format",
        "-f",
        choices=ALL_FORMATS,
        help="output format (default: from the -o suffix, else csv)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help=(
            "samples file to write (default: FILE with the format's suffix); the events "
            "go to OUT with .events.csv/.events.tsv/.events.parquet in place of its suffix; "
            "with --format bids, the dataset folder (required)"
        ),
    )
    bids = parser.add_argument_group("BIDS (--format bids)")
    bids.add_argument("--subject", metavar="LABEL", help="participant label (sub-LABEL), required")
    bids.add_argument("--session", metavar="LABEL", help="session label (ses-LABEL)")
    bids.add_argument("--task", metavar="LABEL", help="task label (task-LABEL; default: jspsych)")
    bids.add_argument("--run", metavar="N", help="run index (run-N)")
    bids.add_argument(
        "--screen-resolution",
        metavar="WxH",
        help="the display's resolution in pixels, e.g. 1920x1080 (BIDS requires it)",
    )
    show = parser.add_mutually_exclusive_group()
    show.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    show.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing but warnings and errors"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script: returns the exit status (0 done, 1 failed, 2 bad options)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage and the error
        return int(e.code or 0)
    fmt = args.format
    out = args.output
    if fmt is None:
        ext = os.path.splitext(out)[1].lower().lstrip(".") if out else ""
        fmt = ext if ext in FORMATS or ext == "parquet" else "csv"
    names = None
    try:
        names = _bids_names(args, fmt, out)
    except ExportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if not out:
        stem = gaze_path_for(args.file)[: -len(".gaze")]
        out = f"{stem}.{fmt}"
    suffix = os.path.splitext(out)[1]
    allowed = OUTPUT_SUFFIXES.get(fmt, ())
    if suffix and allowed and suffix.lower() not in allowed:
        chosen = "--format" if args.format else "the format (by default)"
        print(
            f"{PROG}: error: -o {out}: a {suffix} name does not match {chosen} {fmt}; "
            f"name it {' or '.join(allowed)}, or choose another --format",
            file=sys.stderr,
        )
        return 2

    def warn(message: str) -> None:
        print(f"{PROG}: warning: {message}", file=sys.stderr)

    show = args.progress
    if show is None:
        show = _isatty(sys.stderr)
    try:
        total, _ = _peek_count(args.file)
        progress = Progress(sys.stderr, total, bool(show))
        samples, events, events_out = export(args.file, out, fmt, warn, progress, names)
    except ExportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, with what it was
        print(f"{PROG}: error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.quiet:
        return 0
    if fmt == "bids":
        folder = os.path.dirname(events_out)
        print(
            f"wrote {samples:,} samples and {events:,} events to the BIDS dataset {out} ({folder})"
        )
    else:
        print(f"wrote {samples:,} samples to {out} and {events:,} events to {events_out}")
    return 0


BIDS_OPTIONS = ("subject", "session", "task", "run", "screen_resolution")


def _bids_names(args: argparse.Namespace, fmt: str, out: Optional[str]):
    """The BIDS entities from the options (None for other formats), checked."""
    given = [name for name in BIDS_OPTIONS if getattr(args, name) is not None]
    if fmt != "bids":
        if given:
            option = "--" + given[0].replace("_", "-")
            raise ExportError(f"{option} is for --format bids only")
        return None
    if not out:
        raise ExportError("--format bids needs -o DATASET_DIR (the BIDS dataset's folder)")
    if args.subject is None:
        raise ExportError("--format bids needs --subject LABEL")
    from jspsych_tobii.recording.bids_names import BidsNames

    return BidsNames.checked(
        subject=args.subject,
        session=args.session,
        task=args.task,
        run=args.run,
        screen_resolution=args.screen_resolution,
    )


def _peek_count(path: str) -> Tuple[int, int]:
    try:
        return count_records(gaze_path_for(path))
    except (RecordingFormatError, OSError):
        return 0, 0  # export() reports the problem


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
