# -*- test-case-name: tests.test_bids -*-
"""
The BIDS sidecars of an exported recording (L{physio_sidecar},
L{physioevents_sidecar}, L{events_sidecar}, L{dataset_description}): what
the recording's header and events say about the tracker, the screen, the
viewing distance and the calibration, in BIDS's fields.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jspsych_tobii.core.jsonsafe import json_safe
from jspsych_tobii.recording.bids_names import BidsNames
from jspsych_tobii.recording.columns import TimeBase

PHYSIO_COLUMNS = ["timestamp", "x_coordinate", "y_coordinate", "pupil_size", "unix_time", "sample"]
PHYSIOEVENTS_COLUMNS = ["onset", "duration", "trial_type", "message"]
EVENTS_COLUMNS = ["onset", "duration", "trial_type", "message", "unix_time"]


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
