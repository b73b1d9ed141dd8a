# -*- test-case-name: tests.test_calibration_quality -*-
"""
L{calibration_summary}: the quality of a tracker's computed calibration,
from the samples it kept per calibration point, in normalised units and (with
the display geometry and an eye position, measured or assumed) in degrees.
Plain numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jspsych_tobii.core.geometry import (
    DEFAULT_EYE_DISTANCE_MM,
    angular_offsets_deg,
    default_eye_position_mm,
    target_position_mm,
    targets_mm,
)
from jspsych_tobii.core.jsonsafe import finite, json_safe, mean_or_none, point_or_none
from jspsych_tobii.core.quality import check_target, rms
from jspsych_tobii.core.signals import EYES
from jspsych_tobii.interfaces import CalibrationResult, DisplayArea

_USED = "valid_and_used"
_NOT_USED = "valid_but_not_used"


def _calibration_eye(
    eye_samples: Sequence[Any],
    target_x: float,
    target_y: float,
    display_area: DisplayArea | None,
    eye_mm: np.ndarray | None,
) -> dict[str, Any]:
    used = []
    counts = {_USED: 0, _NOT_USED: 0, "invalid": 0}
    for sample in eye_samples:
        x, y = finite(getattr(sample, "x", None)), finite(getattr(sample, "y", None))
        validity = getattr(sample, "validity", "invalid")
        if validity in (_USED, _NOT_USED) and x is not None and y is not None:
            counts[validity] += 1
            if validity == _USED:
                used.append((x, y))
        else:
            counts["invalid"] += 1
    result: dict[str, Any] = {
        "meanGaze": None,
        "accuracyNorm": None,
        "precisionNorm": None,
        "accuracyDeg": None,
        "numValidAndUsed": counts[_USED],
        "numValidButNotUsed": counts[_NOT_USED],
        "numInvalid": counts["invalid"],
        "numSamplesTotal": len(eye_samples),
    }
    if not used:
        return result
    xy = np.asarray(used, dtype=float)
    mean = xy.mean(axis=0)
    result["meanGaze"] = point_or_none(mean[0], mean[1])
    result["accuracyNorm"] = finite(math.hypot(mean[0] - target_x, mean[1] - target_y))
    if len(xy) >= 2:
        result["precisionNorm"] = finite(rms(np.linalg.norm(xy - mean, axis=-1)))
    if display_area is not None and eye_mm is not None:
        gaze_mm = targets_mm(display_area, xy)
        target_mm = target_position_mm(display_area, target_x, target_y)
        result["accuracyDeg"] = finite(np.mean(angular_offsets_deg(eye_mm, gaze_mm, target_mm)))
    return result


def calibration_summary(
    result: CalibrationResult,
    display_area: DisplayArea | None = None,
    eye_position_mm: Sequence[float] | None = None,
    eye_distance_mm: float = DEFAULT_EYE_DISTANCE_MM,
) -> dict[str, Any]:
    """
    The quality of a computed calibration, from the samples the tracker kept
    for each calibration point (normalised positions after applying the new
    calibration, each marked used, valid but not used, or invalid).

    Metrics use the C{valid_and_used} samples only.  Calibration samples
    carry no eye position, so degrees need one assumed for all samples:
    C{eye_position_mm} when given (for example the mean gaze origin measured
    during calibration), else C{eye_distance_mm} in front of the display
    area's centre along its normal (L{default_eye_position_mm}).  Off-centre
    heads and other distances make the degree values approximate; they are
    None without C{display_area}.

    @return: a JSON-safe dict::

        {"success": result.success, "status": result.status,
         "averageAccuracyNorm", "averagePrecisionNorm", "averageAccuracyDeg":
             means over the points of the per-point values (None values left
             out),
         "left": {the same three averages for the left eye},
         "right": {the same for the right eye},
         "eyePositionMm": {"x", "y", "z"} used for degrees, or None,
         "eyePositionAssumed": True when it is the default position,
         "pointData": [
             {"point": {"x", "y"},
              "accuracyNorm", "precisionNorm", "accuracyDeg": the mean over
                  the eyes that have a value (the two eyes' samples are not
                  paired here, so their metrics are averaged),
              "left": eye, "right": eye}]}

        eye = {"meanGaze": {"x", "y"} or None,
               "accuracyNorm": |meanGaze - target|, "precisionNorm": RMS
               distance of the used samples from meanGaze, "accuracyDeg":
               mean angular offset of the used samples (None when unknown),
               "numValidAndUsed", "numValidButNotUsed", "numInvalid",
               "numSamplesTotal"}
    """
    eye_mm: np.ndarray | None = None
    assumed = False
    if eye_position_mm is not None:
        eye_mm = np.asarray(eye_position_mm, dtype=float).reshape(3)
        if not np.all(np.isfinite(eye_mm)):
            eye_mm = None
    if eye_mm is None and display_area is not None:
        eye_mm = default_eye_position_mm(display_area, eye_distance_mm)
        assumed = True

    point_data = []
    for point in result.points:
        x, y = check_target(point.x, point.y)
        eyes = {
            eye: _calibration_eye(getattr(point, eye), x, y, display_area, eye_mm) for eye in EYES
        }
        item: dict[str, Any] = {"point": {"x": x, "y": y}}
        for key in ("accuracyNorm", "precisionNorm", "accuracyDeg"):
            item[key] = mean_or_none(eyes[eye][key] for eye in EYES)
        item.update(eyes)
        point_data.append(item)

    def averages(items: Sequence[dict[str, Any]]) -> dict[str, float | None]:
        return {
            "averageAccuracyNorm": mean_or_none(i["accuracyNorm"] for i in items),
            "averagePrecisionNorm": mean_or_none(i["precisionNorm"] for i in items),
            "averageAccuracyDeg": mean_or_none(i["accuracyDeg"] for i in items),
        }

    summary: dict[str, Any] = {"success": bool(result.success), "status": str(result.status)}
    summary.update(averages(point_data))
    for eye in EYES:
        summary[eye] = averages([item[eye] for item in point_data])
    summary["eyePositionMm"] = (
        None if eye_mm is None else {"x": eye_mm[0], "y": eye_mm[1], "z": eye_mm[2]}
    )
    summary["eyePositionAssumed"] = assumed
    summary["pointData"] = point_data
    return json_safe(summary)
