# -*- test-case-name: tests.test_bids -*-
"""
A recorded session into a BIDS dataset, as eye-tracking physiological
recordings (BIDS 1.10 and later: C{PhysioType} C{eyetrack})::

    jspsych-tobii-export FILE --format bids --subject 01 [--session S] [--task T] [--run N] -o DIR

writes, under C{DIR/sub-01[/ses-S]/beh/}, for C{<m>} =
C{sub-01[_ses-S]_task-T[_run-N]}:

  - C{<m>_recording-eye1_physio.tsv.gz} and C{.json}: the left eye;
    C{<m>_recording-eye2_physio.tsv.gz} and C{.json}: the right eye (the
    specification requires one file per eye).  Columns: C{timestamp} (capture
    time, ms, the server's monotonic clock), C{x_coordinate},
    C{y_coordinate} (gaze on the display, 0..1 from its top-left corner),
    C{pupil_size} (diameter, mm), C{unix_time} (s), C{sample}.  No header
    line (the sidecar's C{Columns} names them); a lost value is C{n/a}.
  - C{<m>_recording-eye1_physioevents.tsv.gz} and C{.json} (and eye2): the
    session's events on the same clock (C{OnsetSource} C{timestamp}).
  - C{<m>_events.tsv} and C{.json}: the same events in seconds from the
    session's start, with the C{StimulusPresentation} screen facts.
  - C{dataset_description.json}, unless the dataset already has one.

The file names and required sidecar fields follow the machine-readable BIDS
schema (C{bidsschematools}, the C{bids} extra): the names and their checks
are L{jspsych_tobii.recording.bids_names}, the sidecars
L{jspsych_tobii.recording.bids_sidecars}; this module writes the tables and
the dataset.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from jspsych_tobii.core.jsonsafe import json_safe
from jspsych_tobii.recording.bids_names import EYES, BidsNames, check_names, load_schema
from jspsych_tobii.recording.bids_sidecars import (
    EVENTS_COLUMNS,
    dataset_description,
    events_sidecar,
    physio_sidecar,
    physioevents_sidecar,
)
from jspsych_tobii.recording.columns import TimeBase, event_time_ms, format_unix_seconds
from jspsych_tobii.recording.export import ExportError, writing

__all__ = ["BidsNames", "BidsFiles", "write_dataset", "load_schema", "EYES"]

#: Rows formatted at a time.
CHUNK = 50_000


@dataclass
class BidsFiles:
    """What L{write_dataset} wrote (paths relative to the dataset folder)."""

    dataset: str
    paths: List[str]
    events_path: str


# -- rows


def _cells(values: np.ndarray, fmt: str) -> List[str]:
    return ["n/a" if v != v else fmt % v for v in values.tolist()]


def physio_lines(chunk: np.ndarray, eye: str, timebase: TimeBase) -> str:
    """Rows of one eye's physio file (no header line), tab-separated."""
    gaze_ok = np.asarray(chunk[f"{eye}_gaze_valid"], dtype=bool)
    pupil_ok = np.asarray(chunk[f"{eye}_pupil_valid"], dtype=bool)
    x = np.where(gaze_ok, chunk[f"{eye}_x"], np.nan)
    y = np.where(gaze_ok, chunk[f"{eye}_y"], np.nan)
    pupil = np.where(pupil_ok, chunk[f"{eye}_pupil"], np.nan)
    times = chunk["system_time_us"]
    unix_us = timebase.unix_us(times)
    columns = [
        [f"{t / 1000.0:.3f}" for t in times.tolist()],
        _cells(x, "%.6f"),
        _cells(y, "%.6f"),
        _cells(pupil, "%.4f"),
        ["n/a"] * len(chunk) if unix_us is None else format_unix_seconds(unix_us),
        [str(v) for v in chunk["seq"].tolist()],
    ]
    return "".join("\t".join(row) + "\n" for row in zip(*columns))


def _event_message(event: Dict[str, Any]) -> str:
    if event.get("kind") == "marker" and isinstance(event.get("label"), str):
        text = event["label"]
    else:
        rest = {k: v for k, v in event.items() if k not in ("t_server_ms", "kind")}
        text = json.dumps(json_safe(rest), separators=(",", ":"), ensure_ascii=False)
    # a TSV cell holds no tab or line break
    return re.sub(r"[\t\r\n]+", " ", text) or "n/a"


def _event_time(event: Dict[str, Any]) -> Optional[float]:
    t = event_time_ms(event)
    return t if t is not None and math.isfinite(t) else None


def physioevents_lines(events: Iterable[Dict[str, Any]]) -> str:
    rows = []
    for event in events:
        t = _event_time(event)
        if t is None:
            continue
        rows.append(f"{t:.3f}\tn/a\t{event.get('kind') or 'n/a'}\t{_event_message(event)}\n")
    return "".join(rows)


def events_lines(events: Iterable[Dict[str, Any]], timebase: TimeBase) -> str:
    rows = ["\t".join(EVENTS_COLUMNS) + "\n"]
    for event in events:
        t = _event_time(event)
        if t is None:
            continue
        elapsed_ms = timebase.elapsed_ms(t)
        if elapsed_ms is None:
            continue
        unix_ms = timebase.unix_ms(t)
        unix = "n/a" if unix_ms is None else f"{unix_ms / 1000.0:.6f}"
        onset = elapsed_ms / 1000.0
        kind = event.get("kind") or "n/a"
        rows.append(f"{onset:.6f}\tn/a\t{kind}\t{_event_message(event)}\t{unix}\n")
    return "".join(rows)


# -- writing


def write_dataset(
    dataset: str,
    names: BidsNames,
    header: Dict[str, Any],
    samples: np.ndarray,
    events: Sequence[Dict[str, Any]],
    timebase: TimeBase,
    warn: Callable[[str], Any] = lambda message: None,
    progress: Any = None,
) -> BidsFiles:
    """
    Write one recording into the BIDS dataset at C{dataset} (created if
    missing).  Every file is written under a C{.part} name and renamed when
    all are complete; existing data files are never overwritten.

    @raise ExportError: bidsschematools is missing, a file of this
        subject/session/task/run exists already, or a file cannot be written.
    """
    schema = load_schema()
    folder = names.folder
    files: Dict[str, Any] = {}
    for recording, eye in EYES:
        files[os.path.join(folder, names.name("physio", ".json", recording))] = physio_sidecar(
            header, samples, events, timebase, eye
        )
        files[os.path.join(folder, names.name("physio", ".tsv.gz", recording))] = ("physio", eye)
        files[os.path.join(folder, names.name("physioevents", ".json", recording))] = (
            physioevents_sidecar()
        )
        files[os.path.join(folder, names.name("physioevents", ".tsv.gz", recording))] = (
            physioevents_lines(events)
        )
    files[os.path.join(folder, names.name("events", ".tsv"))] = events_lines(events, timebase)
    files[os.path.join(folder, names.name("events", ".json"))] = events_sidecar(
        header, samples, names, warn
    )
    description = os.path.join(dataset, "dataset_description.json")
    if not os.path.exists(description):
        files["dataset_description.json"] = dataset_description(schema, header)
    check_names(schema, files)

    for relative in files:
        if relative != "dataset_description.json" and os.path.exists(
            os.path.join(dataset, relative)
        ):
            raise ExportError(
                f"{os.path.join(dataset, relative)} exists already; give another --run "
                "(or --session) or remove it"
            )
    parts: List[str] = []
    with writing(parts, dataset, progress, len(samples)):
        os.makedirs(os.path.join(dataset, folder), exist_ok=True)
        total = len(samples) * len(EYES)
        done = 0
        for relative, content in files.items():
            target = os.path.join(dataset, relative)
            part = target + ".part"
            parts.append(part)
            if isinstance(content, tuple):  # an eye's samples
                with _gzip_text(part, target) as f:
                    for start in range(0, len(samples), CHUNK):
                        chunk = np.asarray(samples[start : start + CHUNK])
                        f.write(physio_lines(chunk, content[1], timebase))
                        done += len(chunk)
                        if progress is not None:
                            progress.update(done * len(samples) // max(1, total))
            elif relative.endswith(".tsv.gz"):
                with _gzip_text(part, target) as f:
                    f.write(content)
            elif relative.endswith(".tsv"):
                with open(part, "w", encoding="utf-8", newline="") as f:
                    f.write(content)
            else:
                with open(part, "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2, ensure_ascii=False, allow_nan=False)
                    f.write("\n")
        for relative in files:
            target = os.path.join(dataset, relative)
            os.replace(target + ".part", target)
    events_path = os.path.join(dataset, folder, names.name("physioevents", ".tsv.gz", "eye1"))
    return BidsFiles(dataset=dataset, paths=list(files), events_path=events_path)


class _gzip_text:
    """A gzip text file written to C{part}, its header naming C{target} (and no time stamp)."""

    def __init__(self, part: str, target: str):
        self._raw = open(part, "wb")
        name = os.path.basename(target)[: -len(".gz")]
        self._gz = gzip.GzipFile(filename=name, mode="wb", fileobj=self._raw, mtime=0)

    def __enter__(self):
        return self

    def write(self, text: str) -> None:
        self._gz.write(text.encode("utf-8"))

    def __exit__(self, *exc_info):
        try:
            self._gz.close()
        finally:
            self._raw.close()
        return False
