# -*- test-case-name: tests.test_export_bids -*-
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
schema (C{bidsschematools}, the C{bids} extra), which this module also uses
to check the labels and every name it writes.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from jspsych_tobii.core.jsonsafe import json_safe
from jspsych_tobii.recording.columns import TimeBase, event_time_ms, format_unix_seconds
from jspsych_tobii.recording.export import ExportError, writing

__all__ = ["BidsNames", "BidsFiles", "write_dataset", "load_schema", "EYES", "DATATYPE"]

#: The recording label and BIDS C{RecordedEye} of each eye's files.
EYES = (("eye1", "left"), ("eye2", "right"))
#: The data type folder: eye tracking alongside a behavioural experiment.
DATATYPE = "beh"
DEFAULT_TASK = "jspsych"
#: Rows formatted at a time.
CHUNK = 50_000

PHYSIO_COLUMNS = ["timestamp", "x_coordinate", "y_coordinate", "pupil_size", "unix_time", "sample"]
PHYSIOEVENTS_COLUMNS = ["onset", "duration", "trial_type", "message"]
EVENTS_COLUMNS = ["onset", "duration", "trial_type", "message", "unix_time"]


def load_schema():
    """The BIDS schema from bidsschematools, or a one-line L{ExportError} saying how to get it."""
    try:
        from bidsschematools import schema
    except ImportError:
        raise ExportError(
            '--format bids needs bidsschematools: pip install "jspsych-tobii[bids]"'
        ) from None
    return schema.load_schema()


def _entity_pattern(schema: Any, entity: str) -> str:
    format_name = schema.objects.entities[entity]["format"]
    return schema.objects.formats[format_name]["pattern"]


@dataclass(frozen=True)
class BidsNames:
    """The BIDS entities of one exported recording, and what the user told of the screen."""

    subject: str
    task: str = DEFAULT_TASK
    session: Optional[str] = None
    run: Optional[str] = None
    screen_resolution: Optional[Tuple[int, int]] = None

    @classmethod
    def checked(
        cls,
        subject: str,
        session: Optional[str] = None,
        task: Optional[str] = None,
        run: Optional[str] = None,
        screen_resolution: Optional[str] = None,
    ) -> "BidsNames":
        """
        Check each label against the schema's entity formats.

        @raise ExportError: a label BIDS does not allow, or a resolution
            that is not C{WIDTHxHEIGHT}.
        """
        schema = load_schema()
        values = {"subject": subject, "session": session, "task": task, "run": run}
        for entity, value in values.items():
            if value is None:
                continue
            pattern = _entity_pattern(schema, entity)
            if not re.fullmatch(pattern, value):
                option = "--" + entity
                raise ExportError(
                    f"{option}: {value!r} is not a BIDS {entity} "
                    f"{'index' if entity == 'run' else 'label'} (it must match {pattern}; "
                    f"give the label without the {schema.objects.entities[entity]['name']}- "
                    "prefix)"
                )
        resolution = None
        if screen_resolution is not None:
            found = re.fullmatch(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*", screen_resolution)
            if not found or not all(int(v) > 0 for v in found.groups()):
                raise ExportError(
                    f"--screen-resolution: expected WIDTHxHEIGHT in pixels such as 1920x1080, "
                    f"got {screen_resolution!r}"
                )
            resolution = (int(found.group(1)), int(found.group(2)))
        return cls(
            subject=subject,
            session=session,
            task=task or DEFAULT_TASK,
            run=run,
            screen_resolution=resolution,
        )

    @property
    def folder(self) -> str:
        """The data folder inside the dataset: C{sub-X[/ses-Y]/beh}."""
        parts = [f"sub-{self.subject}"]
        if self.session is not None:
            parts.append(f"ses-{self.session}")
        return os.path.join(*parts, DATATYPE)

    def name(self, suffix: str, extension: str, recording: Optional[str] = None) -> str:
        """A file name, its entities in the schema's order (sub, ses, task, run, recording)."""
        parts = [f"sub-{self.subject}"]
        if self.session is not None:
            parts.append(f"ses-{self.session}")
        parts.append(f"task-{self.task}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        if recording is not None:
            parts.append(f"recording-{recording}")
        return "_".join(parts) + f"_{suffix}{extension}"


@dataclass
class BidsFiles:
    """What L{write_dataset} wrote (paths relative to the dataset folder)."""

    dataset: str
    paths: List[str]
    events_path: str


# -- what the recording says about the setup


def _tracker(header: Dict[str, Any]) -> Dict[str, Any]:
    tracker = header.get("tracker")
    return tracker if isinstance(tracker, dict) else {}


def _display(header: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    display = _tracker(header).get("displayArea")
    if not isinstance(display, dict):
        return None
    try:
        corners = [np.asarray(display[k], dtype=float).reshape(3) for k in _CORNERS]
    except (KeyError, TypeError, ValueError):
        return None
    if not all(np.all(np.isfinite(c)) for c in corners):
        return None
    return dict(zip(_CORNERS, corners))


_CORNERS = ("top_left", "top_right", "bottom_left")


def _is_mock(tracker: Dict[str, Any]) -> bool:
    return str(tracker.get("address", "")).startswith("mock:")


def sampling_frequency(header: Dict[str, Any], samples: np.ndarray) -> float:
    """The tracker's gaze output frequency, else the median sample rate of the data."""
    frequency = _tracker(header).get("frequency")
    if isinstance(frequency, (int, float)) and not isinstance(frequency, bool) and frequency > 0:
        return float(frequency)
    if len(samples) > 1:
        steps = np.diff(np.asarray(samples["system_time_us"][:10_000], dtype=np.int64))
        steps = steps[steps > 0]
        if len(steps):
            return round(1e6 / float(np.median(steps)), 3)
    return 0.0


def _mean_origin_mm(samples: np.ndarray, eye: Optional[str]) -> Optional[np.ndarray]:
    """Mean gaze origin (mm, tracker coordinates) of one eye, or of both."""
    eyes = (eye,) if eye else ("left", "right")
    points = []
    for name in eyes:
        step = max(1, len(samples) // 100_000)  # a long session: every n-th sample is plenty
        part = samples[::step]
        valid = np.asarray(part[f"{name}_origin_valid"], dtype=bool)
        xyz = np.stack([np.asarray(part[f"{name}_origin_{a}"], dtype=float) for a in "xyz"], 1)
        xyz = xyz[valid & np.all(np.isfinite(xyz), axis=1)]
        if len(xyz):
            points.append(xyz)
    if not points:
        return None
    return np.concatenate(points).mean(axis=0)


def screen_distance_m(samples: np.ndarray, display: Optional[Dict[str, Any]]) -> Optional[float]:
    """Mean distance from the eyes to the display's plane, metres (None when unknown)."""
    eye = _mean_origin_mm(samples, None)
    if eye is None or display is None:
        return None
    tl, tr, bl = display["top_left"], display["top_right"], display["bottom_left"]
    normal = np.cross(tr - tl, bl - tl)
    length = float(np.linalg.norm(normal))
    if length == 0:
        return None
    return round(abs(float(np.dot(eye - tl, normal / length))) / 1000.0, 4)


def _screen_size_m(display: Optional[Dict[str, Any]]) -> Optional[List[float]]:
    if display is None:
        return None
    width = float(np.linalg.norm(display["top_right"] - display["top_left"]))
    height = float(np.linalg.norm(display["bottom_left"] - display["top_left"]))
    return [round(width / 1000.0, 5), round(height / 1000.0, 5)]


def _results(events: Sequence[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    found = []
    for event in events:
        result = event.get("result") if event.get("kind") == kind else None
        if isinstance(result, dict) and result.get("success"):
            found.append(result)
    return found


def _eye_errors(result: Dict[str, Any], eye: str) -> Tuple[Optional[float], Optional[float]]:
    """(average, maximum) accuracy in degrees of one eye in a calibration or validation result."""
    average = (result.get(eye) or {}).get("averageAccuracyDeg")
    per_point = []
    for item in result.get("pointData") or []:
        value = ((item or {}).get(eye) or {}).get("accuracyDeg")
        if isinstance(value, (int, float)) and math.isfinite(value):
            per_point.append(float(value))
    maximum = max(per_point) if per_point else None
    if not isinstance(average, (int, float)) or not math.isfinite(average):
        average = None
    return average, maximum


def _calibration_fields(
    events: Sequence[Dict[str, Any]], eye: str, display: Optional[Dict[str, Any]]
) -> Dict[str, Any]:
    fields: Dict[str, Any] = {}
    calibrations = _results(events, "calibration_result")
    validations = _results(events, "validation_result")
    fields["CalibrationCount"] = len(calibrations)
    if calibrations:
        last = calibrations[-1]
        points = [
            (item.get("point") or {}) for item in last.get("pointData") or [] if item is not None
        ]
        points = [p for p in points if isinstance(p.get("x"), (int, float))]
        if points:
            fields["CalibrationType"] = f"{len(points)}-point"
            size = _screen_size_m(display)
            if size is not None:
                fields["CalibrationUnit"] = "mm"
                fields["CalibrationPosition"] = [
                    [round(p["x"] * size[0] * 1000, 1), round(p["y"] * size[1] * 1000, 1)]
                    for p in points
                ]
    source = validations[-1] if validations else (calibrations[-1] if calibrations else None)
    if source is not None:
        average, maximum = _eye_errors(source, eye)
        if average is not None:
            fields["AverageCalibrationError"] = round(average, 4)
        if maximum is not None:
            fields["MaximalCalibrationError"] = round(maximum, 4)
        if average is not None or maximum is not None:
            fields["CalibrationErrorSource"] = (
                "the session's last validation (gaze measured on its targets)"
                if validations
                else "the session's last calibration (the tracker's calibration samples)"
            )
    return fields


def physio_sidecar(
    header: Dict[str, Any],
    samples: np.ndarray,
    events: Sequence[Dict[str, Any]],
    timebase: TimeBase,
    eye: str,
) -> Dict[str, Any]:
    """The C{_physio.json} of one eye."""
    tracker = _tracker(header)
    display = _display(header)
    first = int(samples["system_time_us"][0]) if len(samples) else timebase.started_us
    start = 0.0 if first is None or timebase.started_us is None else first - timebase.started_us
    sidecar: Dict[str, Any] = {
        "PhysioType": "eyetrack",
        "SamplingFrequency": sampling_frequency(header, samples),
        "StartTime": round(start / 1e6, 6),
        "Columns": list(PHYSIO_COLUMNS),
        "RecordedEye": eye,
        "SampleCoordinateSystem": "gaze-on-screen",
        "Manufacturer": (
            "jspsych-tobii mock tracker (synthetic data)" if _is_mock(tracker) else "Tobii"
        ),
    }
    for key, field in (("model", "ManufacturersModelName"), ("serialNumber", "DeviceSerialNumber")):
        if tracker.get(key):
            sidecar[field] = str(tracker[key])
    versions = [
        f"{label} {tracker[key]}"
        for key, label in (("firmwareVersion", "firmware"), ("sdkVersion", "SDK"))
        if tracker.get(key)
    ]
    if header.get("server_version"):
        versions.append(f"jspsych-tobii {header['server_version']}")
    if versions:
        sidecar["SoftwareVersions"] = "; ".join(versions)
    if not _is_mock(tracker):
        sidecar["EyeTrackingMethod"] = "P-CR"
    origin = _mean_origin_mm(samples, eye)
    if origin is not None:
        sidecar["EyeTrackerDistance"] = round(float(np.linalg.norm(origin)) / 1000.0, 4)
    sidecar.update(_calibration_fields(events, eye, display))
    sidecar["RecordingStartUTC"] = header.get("started_utc")
    sidecar["timestamp"] = {
        "Description": "Capture time of the sample on the server's monotonic clock (the "
        "Tobii SDK's system time stamp); the physioevents onsets are on the same clock.",
        "Units": "ms",
    }
    sidecar["x_coordinate"] = {
        "Description": f"Gaze position of the {eye} eye on the display, as a fraction of its "
        "width from the left edge (0 = left, 1 = right; the Tobii active display coordinate "
        "system, origin top-left).",
    }
    sidecar["y_coordinate"] = {
        "Description": f"Gaze position of the {eye} eye on the display, as a fraction of its "
        "height from the top edge (0 = top, 1 = bottom).",
    }
    sidecar["pupil_size"] = {
        "Description": f"Pupil diameter of the {eye} eye, as reported by the eye tracker.",
        "Units": "mm",
    }
    sidecar["unix_time"] = {
        "Description": "Capture time as Unix time (seconds since 1970-01-01 UTC): the "
        "session's wall-clock start plus the monotonic time since it.",
        "Units": "s",
    }
    sidecar["sample"] = {"Description": "The sample's number in the tracking session, from 0."}
    return json_safe(sidecar)


def physioevents_sidecar() -> Dict[str, Any]:
    return {
        "Columns": list(PHYSIOEVENTS_COLUMNS),
        "OnsetSource": "timestamp",
        "Description": "Events of the tracking session: experiment markers, calibrations, "
        "validations, tracker notifications, clients connecting and leaving.",
        "onset": {
            "Description": "When the event happened, on the clock of the physio "
            "file's timestamp column.",
            "Units": "ms",
        },
        "duration": {"Description": "Not measured (n/a).", "Units": "s"},
        "trial_type": {
            "Description": "The event's kind (marker, calibration_result, "
            "validation_result, session_started, ...)."
        },
        "message": {
            "Description": "A marker's label; for other kinds, the event's fields " "as JSON."
        },
    }


def events_sidecar(
    header: Dict[str, Any], samples: np.ndarray, names: BidsNames, warn: Callable[[str], Any]
) -> Dict[str, Any]:
    display = _display(header)
    size = _screen_size_m(display)
    distance = screen_distance_m(samples, display)
    if size is None:
        warn("the recording has no display area: StimulusPresentation.ScreenSize is n/a")
    if distance is None:
        warn("no eye position in the recording: StimulusPresentation.ScreenDistance is n/a")
    if names.screen_resolution is None:
        warn(
            "StimulusPresentation.ScreenResolution is n/a (BIDS requires it for gaze on a "
            "screen): give the display's resolution with --screen-resolution WIDTHxHEIGHT"
        )
    presentation = {
        "ScreenSize": size if size is not None else "n/a",
        "ScreenResolution": list(names.screen_resolution) if names.screen_resolution else "n/a",
        "ScreenDistance": distance if distance is not None else "n/a",
        "ScreenOrigin": ["top", "left"],
        "SoftwareName": "jsPsych with jspsych-tobii",
    }
    return {
        "StimulusPresentation": presentation,
        "onset": {"Description": "Seconds from the start of the tracking session.", "Units": "s"},
        "duration": {"Description": "Not measured (n/a).", "Units": "s"},
        "trial_type": {"Description": "The event's kind (marker, calibration_result, ...)."},
        "message": {
            "Description": "A marker's label; for other kinds, the event's fields " "as JSON."
        },
        "unix_time": {"Description": "When the event happened, as Unix time.", "Units": "s"},
    }


def dataset_description(schema: Any, header: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "Name": "jspsych-tobii eye-tracking recordings",
        "BIDSVersion": str(schema.bids_version),
        "DatasetType": "raw",
        "GeneratedBy": [
            {
                "Name": "jspsych-tobii",
                "Version": str(header.get("server_version") or ""),
                "Description": "jspsych-tobii-export --format bids",
            }
        ],
    }


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


def check_names(schema: Any, relative_paths: Iterable[str]) -> None:
    """
    Every path matches one of the schema's file rules (a guard against
    writing names the installed BIDS version does not define).

    @raise ExportError: one does not.
    """
    from bidsschematools import rules

    patterns: List[Any] = []
    for group in (schema.rules.files.common, schema.rules.files.raw):
        patterns.extend(r["regex"] for r in rules.regexify_filename_rules(group, schema, level=2))
    compiled = [re.compile(p) for p in patterns]
    for path in relative_paths:
        posix = path.replace(os.sep, "/")
        if not any(c.match(posix) for c in compiled):
            raise ExportError(f"{posix}: not a file name that BIDS {schema.bids_version} defines")


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
