# -*- test-case-name: tests.test_quality -*-
"""
Data-quality metrics: how good the gaze signal is around a validation's
points, per eye and for the binocular signal (L{signal_metrics},
L{validation_point_metrics}), and over a whole validation in the shape the
jsPsych validation plugin reads (L{validation_summary}).

The parts they are built from have modules of their own: the display
geometry and the angles (L{jspsych_tobii.core.geometry}), the gaze signals
(L{jspsych_tobii.core.signals}), which samples belong to a point
(L{jspsych_tobii.core.windows}); a calibration's quality is
L{jspsych_tobii.core.calibration_quality}.

It is plain numpy: no Twisted, no I/O, no clock.  docs/DATA_QUALITY.md says
what each metric means for a researcher; the choices a reader of the numbers
needs to know are repeated in the docstrings below.

Conventions:
  - I{Degrees} are computed in the tracker's user coordinate system (mm),
    as angles at the eye (a sample's gaze origin) between positions on the
    display: the sample's gaze point, the target's 3D position, the mean
    gaze point, a neighbouring sample's gaze point.  Angles between
    positions rather than between gaze directions keep head movement out of
    the metrics: a head that moves while the eye stays on the target turns
    the gaze direction, not the gaze point.
  - I{Normalised} units are the display-area coordinates the client uses
    (0..1 on each axis, origin top-left).  One unit of x is the display's
    width, one unit of y its height, so a normalised distance mixes two
    scales on a non-square display; it is what the plugin's C{tolerance} is
    expressed in.
  - A value that cannot be computed (no usable samples, no display geometry)
    is C{None}, never NaN: every dict returned here passes
    C{json.dumps(..., allow_nan=False)}.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jspsych_tobii.core.geometry import (
    angles_between_deg,
    angular_offsets_deg,
    offset_vectors_deg,
    target_position_mm,
)
from jspsych_tobii.core.jsonsafe import finite, json_safe, mean_or_none, point_or_none
from jspsych_tobii.core.signals import EYES, Signal, gaze_signal
from jspsych_tobii.interfaces import DisplayArea

__all__ = [
    "VALIDATION_DEFINITIONS",
    "check_target",
    "rms",
    "signal_metrics",
    "validation_point_metrics",
    "validation_summary",
]

Points = Iterable[tuple[float, float, np.ndarray | None]]


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _degree_metrics(
    signal: Signal, target_mm: np.ndarray, display_area: DisplayArea
) -> dict[str, Any]:
    """
    Accuracy, precision and the data loss for degrees.  The accuracies and
    precisions are angles between I{positions} (gaze points, the target) as
    seen from the eye, not between gaze directions: while the eye stays on a
    point the head may move, which turns the gaze direction but leaves the
    gaze point where it is, and that eye rotation is not an error of the
    tracker.
    """
    valid = signal.dir_valid
    usable = int(np.count_nonzero(valid))
    total = len(signal)
    result: dict[str, Any] = {
        "accuracyDeg": None,
        "accuracyOffsetOfMeanDeg": None,
        "precisionRmsS2SDeg": None,
        "precisionStdDeg": None,
        "dataLossDeg": (1.0 - usable / total) if total else 1.0,
        "numSamplesDeg": usable,
    }
    if not usable:
        return result
    points = signal.point[valid]
    origins = signal.origin[valid]

    # Accuracy, mean of offsets: the mean over samples of the angle, at that
    # sample's eye, between its gaze point and the target.
    result["accuracyDeg"] = finite(np.mean(angular_offsets_deg(origins, points, target_mm)))

    # Accuracy, offset of the mean: the length of the mean of the per-sample
    # offset vectors (MATLAB Titta's acc1D).  Noise in every direction
    # cancels in the mean, so this is not inflated by precision.
    vectors = offset_vectors_deg(origins, points, target_mm, display_area)
    result["accuracyOffsetOfMeanDeg"] = finite(np.linalg.norm(vectors.mean(axis=0)))

    # RMS-S2S: over pairs of neighbouring samples in the array that are both
    # usable (a pair spanning an invalid sample is not used, since a blink or
    # a lost eye can hide a saccade), the angle between the two gaze points
    # seen from the mean of the two eye positions.
    pairs = valid[:-1] & valid[1:]
    if pairs.any():
        first, second = signal.point[:-1][pairs], signal.point[1:][pairs]
        eye = (signal.origin[:-1][pairs] + signal.origin[1:][pairs]) / 2.0
        steps = angles_between_deg(first - eye, second - eye)
        result["precisionRmsS2SDeg"] = finite(rms(steps))

    # STD: the sample standard deviation (n - 1 in the denominator) of the
    # angles, at each sample's eye, between its gaze point and the mean
    # gaze point.
    if usable >= 2:
        spread = angular_offsets_deg(origins, points, points.mean(axis=0))
        result["precisionStdDeg"] = finite(math.sqrt(np.sum(np.square(spread)) / (usable - 1)))
    return result


def signal_metrics(
    samples: np.ndarray | None,
    target_x: float,
    target_y: float,
    display_area: DisplayArea | None = None,
    eye: str = "average",
) -> dict[str, Any]:
    """
    The data-quality metrics of one signal over one validation point.

    @param samples: a GAZE_DTYPE array, in time order (may be empty or None).
    @param target_x, target_y: the target, normalised on the display area.
    @param display_area: the display geometry; without it every degree
        metric is None.
    @param eye: C{"left"}, C{"right"} or C{"average"} (the binocular signal:
        per sample, the mean of the usable eyes; see
        L{jspsych_tobii.core.signals.binocular_signal}).

    @return: a JSON-safe dict::

        {"meanGaze": {"x", "y"} or None,   # mean normalised gaze
         "accuracyNorm": |meanGaze - target| (normalised units) or None,
         "precisionNorm": RMS distance of the samples from meanGaze or None,
         "accuracyDeg": mean of the per-sample angular offsets from the
                        target (deg) or None,
         "accuracyOffsetOfMeanDeg": length of the mean per-sample offset
                                    vector (deg; MATLAB Titta's accuracy)
                                    or None,
         "precisionRmsS2SDeg": RMS of the angles between successive gaze
                               points or None,
         "precisionStdDeg": standard deviation (n - 1) of the angles between
                            the gaze points and their mean or None,
         "dataLoss": fraction of samples with no usable gaze (1.0 when there
                     are no samples at all),
         "dataLossDeg": fraction of samples that cannot be placed in
                        degrees: no usable gaze, or no usable eye position
                        (Titta's data loss; None without display_area),
         "numSamples": samples with usable gaze,
         "numSamplesDeg": samples usable for degrees (None without
                          display_area),
         "numSamplesTotal": all samples}

    A metric needing two samples (C{precisionNorm}, C{precisionStdDeg}) or
    one pair of neighbours (C{precisionRmsS2SDeg}) is None without them.
    """
    signal = gaze_signal(samples, eye)
    total = len(signal)
    valid_count = int(np.count_nonzero(signal.xy_valid))
    result: dict[str, Any] = {
        "meanGaze": None,
        "accuracyNorm": None,
        "precisionNorm": None,
        "accuracyDeg": None,
        "accuracyOffsetOfMeanDeg": None,
        "precisionRmsS2SDeg": None,
        "precisionStdDeg": None,
        "dataLoss": (1.0 - valid_count / total) if total else 1.0,
        "dataLossDeg": None,
        "numSamples": valid_count,
        "numSamplesDeg": None,
        "numSamplesTotal": total,
    }
    if valid_count:
        xy = signal.xy[signal.xy_valid]
        mean = xy.mean(axis=0)
        result["meanGaze"] = point_or_none(mean[0], mean[1])
        result["accuracyNorm"] = finite(math.hypot(mean[0] - target_x, mean[1] - target_y))
        if valid_count >= 2:
            result["precisionNorm"] = finite(rms(np.linalg.norm(xy - mean, axis=-1)))
    if display_area is not None:
        target_mm = target_position_mm(display_area, target_x, target_y)
        result.update(_degree_metrics(signal, target_mm, display_area))
    return json_safe(result)


def _gaze_samples(samples: np.ndarray | None, limit: int) -> list[dict[str, Any]]:
    """Up to C{limit} binocular normalised samples, evenly spread in time."""
    signal = gaze_signal(samples, "average")
    xy = signal.xy[signal.xy_valid]
    if limit <= 0 or len(xy) == 0:
        return []
    if len(xy) > limit:
        xy = xy[np.unique(np.linspace(0, len(xy) - 1, limit).round().astype(int))]
    return [{"x": float(x), "y": float(y)} for x, y in xy]


def check_target(target_x: Any, target_y: Any) -> tuple[float, float]:
    x, y = finite(target_x), finite(target_y)
    if x is None or y is None:
        raise ValueError(f"a target needs finite x and y, not ({target_x!r}, {target_y!r})")
    return x, y


def validation_point_metrics(
    samples: np.ndarray | None,
    target_x: float,
    target_y: float,
    display_area: DisplayArea | None = None,
    max_gaze_samples: int = 0,
) -> dict[str, Any]:
    """
    One item of the validation reply's C{pointData}: the binocular signal's
    metrics (see L{signal_metrics}) at the top level, the target as
    C{point}, each eye's metrics under C{left} and C{right}, and
    C{accuracy}/C{precision}, the names the client extension's types give to
    the accuracy and the (RMS-S2S) precision in degrees.  With
    C{max_gaze_samples} > 0, C{gazeSamples} holds up to that many binocular
    samples C{{"x", "y"}} for the plugin's feedback screen.
    """
    x, y = check_target(target_x, target_y)
    item: dict[str, Any] = {"point": {"x": x, "y": y}}
    item.update(signal_metrics(samples, x, y, display_area, "average"))
    item["accuracy"] = item["accuracyDeg"]
    item["precision"] = item["precisionRmsS2SDeg"]
    for eye in EYES:
        item[eye] = signal_metrics(samples, x, y, display_area, eye)
    if max_gaze_samples > 0:
        item["gazeSamples"] = _gaze_samples(samples, max_gaze_samples)
    return item


_AVERAGED = (
    ("averageAccuracyNorm", "accuracyNorm"),
    ("averagePrecisionNorm", "precisionNorm"),
    ("averageAccuracyDeg", "accuracyDeg"),
    ("averageAccuracyOffsetOfMeanDeg", "accuracyOffsetOfMeanDeg"),
    ("averagePrecisionRmsS2SDeg", "precisionRmsS2SDeg"),
    ("averagePrecisionStdDeg", "precisionStdDeg"),
    ("averageDataLoss", "dataLoss"),
    ("averageDataLossDeg", "dataLossDeg"),
)

#: What each number of a validation reply is, in the reply itself (and so in
#: the recording): a reader holding them beside another tool's knows which
#: to compare.  docs/DATA_QUALITY.md has the formulas.
VALIDATION_DEFINITIONS = {
    "signals": "top level: the binocular signal (per sample, the mean of the valid eyes); "
    "left, right: each eye alone, as Titta reports",
    "accuracyDeg": "mean of offsets: the mean over samples of each sample's angle, at its "
    "eye, between its gaze point and the target",
    "accuracyOffsetOfMeanDeg": "offset of the mean: the length of the mean of the "
    "per-sample offset vectors (MATLAB Titta's accuracy)",
    "precisionRmsS2SDeg": "root mean square of the angles between successive gaze points "
    "(pairs spanning a lost sample left out)",
    "precisionStdDeg": "standard deviation, n - 1 denominator, of the angles between the "
    "gaze points and their mean",
    "dataLoss": "fraction of samples without valid gaze",
    "dataLossDeg": "fraction of samples that cannot be placed in degrees (no valid gaze "
    "point or no valid eye position): Titta's data loss",
    "averages": "average...: the mean over points of the per-point value (points without "
    "a value left out)",
}


def _averages(items: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    return {name: mean_or_none(item[key] for item in items) for name, key in _AVERAGED}


def validation_summary(
    points: Points,
    display_area: DisplayArea | None = None,
    max_gaze_samples: int = 0,
) -> dict[str, Any]:
    """
    The metrics of a whole validation, in the shape the jsPsych validation
    plugin reads, with the degree metrics beside the normalised ones.

    @param points: C{(target_x, target_y, samples)} per validation point, in
        the order shown; C{samples} is the point's GAZE_DTYPE array (already
        windowed, see L{jspsych_tobii.core.windows.select_window}), empty or None.
    @param display_area: the display geometry; without it the degree
        metrics are None.
    @param max_gaze_samples: see L{validation_point_metrics}.

    @return: a JSON-safe dict::

        {"success": True when at least one point has usable gaze, so that
                    averageAccuracyNorm is a number,
         "error": only when not success, a message saying why,
         "averageAccuracyNorm", "averagePrecisionNorm",
         "averageAccuracyDeg", "averageAccuracyOffsetOfMeanDeg",
         "averagePrecisionRmsS2SDeg", "averagePrecisionStdDeg",
         "averageDataLoss", "averageDataLossDeg":
             means over the points of the binocular metric of the same name
             (a point whose metric is None is left out, so None only when
             no point has it; every point counts in averageDataLoss),
         "averageAccuracy", "averagePrecision": averageAccuracyDeg and
             averagePrecisionRmsS2SDeg under the names the client
             extension's types use,
         "left": {the eight averages above, for the left eye},
         "right": {the same for the right eye},
         "numPoints": number of points,
         "numPointsWithData": points with at least one usable sample,
         "pointData": [validation_point_metrics(...) per point, in order],
         "definitions": VALIDATION_DEFINITIONS, what each value means}

    The client decides pass or fail as C{success and averageAccuracyNorm <=
    tolerance} (it reads None as 0), which is why C{success} is False when
    there is nothing to average.
    """
    point_data = [
        validation_point_metrics(samples, x, y, display_area, max_gaze_samples)
        for x, y, samples in points
    ]
    summary: dict[str, Any] = {"success": False}
    summary.update(_averages(point_data))
    summary["averageAccuracy"] = summary["averageAccuracyDeg"]
    summary["averagePrecision"] = summary["averagePrecisionRmsS2SDeg"]
    for eye in EYES:
        summary[eye] = _averages([item[eye] for item in point_data])
    summary["numPoints"] = len(point_data)
    summary["numPointsWithData"] = sum(1 for item in point_data if item["numSamples"])
    summary["pointData"] = point_data
    summary["definitions"] = dict(VALIDATION_DEFINITIONS)
    summary["success"] = summary["averageAccuracyNorm"] is not None
    if not summary["success"]:
        summary["error"] = (
            "no validation points were collected"
            if not point_data
            else "no valid gaze data at any validation point"
        )
    return json_safe(summary)
