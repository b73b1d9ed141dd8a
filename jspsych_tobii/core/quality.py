# -*- test-case-name: tests.test_quality -*-
"""
Data-quality maths: how good is the gaze signal around a calibration or a
validation.

This module owns:
  - the geometry of targets on the display area (L{target_position_mm},
    L{display_normal}, L{default_eye_position_mm});
  - per-sample angular offsets (L{angles_between_deg}, L{angular_offsets_deg},
    L{offset_vectors_deg});
  - the metrics of one validation point, per eye and for the binocular signal
    (L{signal_metrics}, L{validation_point_metrics}), and of a whole validation
    in the shape the jsPsych validation plugin reads (L{validation_summary});
  - which samples belong to a point (L{window_bounds_us}, L{select_window},
    L{client_window_us});
  - the summary of a tracker's calibration result (L{calibration_summary});
  - making all of that JSON-safe (L{json_safe}).

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
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jspsych_tobii.interfaces import CalibrationResult, DisplayArea

__all__ = [
    "DEFAULT_EYE_DISTANCE_MM",
    "DEFAULT_SKIP_INITIAL_MS",
    "VALIDATION_DEFINITIONS",
    "angles_between_deg",
    "angular_offsets_deg",
    "calibration_summary",
    "client_window_us",
    "default_eye_position_mm",
    "display_normal",
    "json_safe",
    "mean_eye_position",
    "offset_vectors_deg",
    "select_window",
    "signal_metrics",
    "target_position_mm",
    "validation_point_metrics",
    "validation_summary",
    "window_bounds_us",
]

#: Assumed distance of the eyes from the display when only normalised data
#: are available (calibration results): a typical viewing distance for
#: screen-based Tobii trackers.
DEFAULT_EYE_DISTANCE_MM = 650.0

#: Samples dropped at the start of a validation point's window, while the
#: participant's eyes land on the target.
DEFAULT_SKIP_INITIAL_MS = 300.0

_EYES = ("left", "right")

Points = Iterable[tuple[float, float, np.ndarray | None]]


# --------------------------------------------------------------------------
# JSON safety


def _num(value: Any) -> float | None:
    """A finite value as a Python float, anything else as None."""
    if value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def json_safe(value: Any) -> Any:
    """
    A copy of C{value} that C{json.dumps(..., allow_nan=False)} accepts:
    numpy scalars and arrays become Python numbers and lists, non-finite
    floats become None, tuples become lists and dict keys become strings.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _num(value)
    return value


def _xy(x: Any, y: Any) -> dict[str, float | None] | None:
    if _num(x) is None or _num(y) is None:
        return None
    return {"x": _num(x), "y": _num(y)}


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return _num(math.fsum(present) / len(present))


# --------------------------------------------------------------------------
# Geometry


def _corners(display_area: DisplayArea) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    top_left = np.asarray(display_area.top_left, dtype=float)
    top_right = np.asarray(display_area.top_right, dtype=float)
    bottom_left = np.asarray(display_area.bottom_left, dtype=float)
    return top_left, top_right, bottom_left


def target_position_mm(display_area: DisplayArea, x: float, y: float) -> np.ndarray:
    """
    The 3D position, in the user coordinate system (mm), of the point at
    normalised C{(x, y)} on the display area (origin top-left, x to the
    right, y down).
    """
    top_left, top_right, bottom_left = _corners(display_area)
    return top_left + float(x) * (top_right - top_left) + float(y) * (bottom_left - top_left)


def _targets_mm(display_area: DisplayArea, xy: np.ndarray) -> np.ndarray:
    """Vectorised L{target_position_mm} for an (n, 2) array of points."""
    top_left, top_right, bottom_left = _corners(display_area)
    return top_left + xy[:, :1] * (top_right - top_left) + xy[:, 1:2] * (bottom_left - top_left)


def display_normal(display_area: DisplayArea) -> np.ndarray:
    """
    The unit normal of the display area pointing toward the user: the cross
    product of the display's downward edge and its rightward edge.
    """
    top_left, top_right, bottom_left = _corners(display_area)
    normal = np.cross(bottom_left - top_left, top_right - top_left)
    length = np.linalg.norm(normal)
    if not length > 0:
        raise ValueError("the display area's corners do not span a plane")
    return normal / length


def default_eye_position_mm(
    display_area: DisplayArea, distance_mm: float = DEFAULT_EYE_DISTANCE_MM
) -> np.ndarray:
    """
    An assumed eye position: C{distance_mm} in front of the display area's
    centre, along its normal.  Used when no measured eye position is known.
    """
    centre = target_position_mm(display_area, 0.5, 0.5)
    return centre + float(distance_mm) * display_normal(display_area)


def mean_eye_position(samples: np.ndarray | None) -> np.ndarray | None:
    """
    The mean position (mm) of the valid gaze origins of both eyes in
    C{samples}: the measured eye position for calibration degrees.  None
    when there is none.
    """
    if samples is None or len(samples) == 0:
        return None
    per_eye = []
    for eye in _EYES:
        origin = _stack(samples, (f"{eye}_origin_x", f"{eye}_origin_y", f"{eye}_origin_z"))
        valid = np.asarray(samples[f"{eye}_origin_valid"], dtype=bool)
        valid &= np.all(np.isfinite(origin), axis=-1)
        per_eye.append(origin[valid])
    points = np.concatenate(per_eye)
    if len(points) == 0:
        return None
    return points.mean(axis=0)


def angles_between_deg(a: Any, b: Any) -> np.ndarray:
    """
    The angles, in degrees, between 3-vectors C{a} and C{b} (arrays of shape
    (..., 3), broadcast against each other), as
    C{atan2(|a x b|, a . b)}: accurate for tiny and for large angles alike,
    unlike C{acos} of the normalised dot product.  A zero vector gives 0.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def angular_offsets_deg(origins: Any, gaze_points: Any, target_mm: Any) -> np.ndarray:
    """
    Per-sample angular offsets, in degrees: for each sample, the angle at the
    gaze origin between the gaze vector (origin to gaze point) and the vector
    from the origin to the target.  All positions in mm, shape (n, 3) or (3,).
    """
    origins = np.asarray(origins, dtype=float)
    gaze_points = np.asarray(gaze_points, dtype=float)
    target_mm = np.asarray(target_mm, dtype=float)
    return angles_between_deg(gaze_points - origins, target_mm - origins)


# --------------------------------------------------------------------------
# Gaze signals


class _Signal:
    """
    One gaze signal taken from a GAZE_DTYPE array: an eye's, or the
    binocular average.

      - C{xy} (n, 2): normalised gaze, meaningful where C{xy_valid};
      - C{origin}, C{point} (n, 3): gaze origin and gaze point in mm,
        meaningful where C{dir_valid}.
    """

    def __init__(
        self,
        xy: np.ndarray,
        xy_valid: np.ndarray,
        origin: np.ndarray,
        point: np.ndarray,
        dir_valid: np.ndarray,
    ):
        self.xy = xy
        self.xy_valid = xy_valid
        self.origin = origin
        self.point = point
        self.dir_valid = dir_valid

    def __len__(self) -> int:
        return len(self.xy_valid)


def _stack(samples: np.ndarray, names: Sequence[str]) -> np.ndarray:
    return np.stack([np.asarray(samples[name], dtype=float) for name in names], axis=-1)


def _eye_signal(samples: np.ndarray, eye: str) -> _Signal:
    """
    One eye's signal.  A sample's normalised gaze is usable when the eye's
    C{gaze_valid} flag is set and x, y are finite; it is usable for degrees
    when, in addition, C{origin_valid} is set, the gaze point and origin are
    finite and the gaze vector is not zero.
    """
    xy = _stack(samples, (f"{eye}_x", f"{eye}_y"))
    point = _stack(samples, (f"{eye}_point_x", f"{eye}_point_y", f"{eye}_point_z"))
    origin = _stack(samples, (f"{eye}_origin_x", f"{eye}_origin_y", f"{eye}_origin_z"))
    gaze_valid = np.asarray(samples[f"{eye}_gaze_valid"], dtype=bool)
    origin_valid = np.asarray(samples[f"{eye}_origin_valid"], dtype=bool)
    xy_valid = gaze_valid & np.all(np.isfinite(xy), axis=-1)
    with np.errstate(invalid="ignore"):
        length = np.linalg.norm(point - origin, axis=-1)
    dir_valid = (
        gaze_valid
        & origin_valid
        & np.all(np.isfinite(point), axis=-1)
        & np.all(np.isfinite(origin), axis=-1)
        & (length > 0)
    )
    return _Signal(xy, xy_valid, origin, point, dir_valid)


def _average(values: Sequence[np.ndarray], valids: Sequence[np.ndarray]) -> np.ndarray:
    """Per row, the mean of C{values} over the arrays whose row is valid."""
    total = np.zeros_like(values[0])
    count = np.zeros(len(values[0]))
    for value, valid in zip(values, valids, strict=True):
        total[valid] += value[valid]
        count += valid
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count[:, None]


def _binocular_signal(samples: np.ndarray) -> _Signal:
    """
    The binocular ("average") signal: per sample, the mean of the eyes that
    are usable, or the one usable eye's data when only one is.  Normalised
    gaze averages the eyes whose normalised gaze is usable (as the gaze push
    does); degrees average the gaze points and the gaze origins of the eyes
    usable for degrees, giving a cyclopean eye looking at the mean point.
    """
    eyes = [_eye_signal(samples, eye) for eye in _EYES]
    xy_valid = eyes[0].xy_valid | eyes[1].xy_valid
    dir_valid = eyes[0].dir_valid | eyes[1].dir_valid
    xy = _average([e.xy for e in eyes], [e.xy_valid for e in eyes])
    dir_valids = [e.dir_valid for e in eyes]
    origin = _average([e.origin for e in eyes], dir_valids)
    point = _average([e.point for e in eyes], dir_valids)
    with np.errstate(invalid="ignore"):
        dir_valid &= np.linalg.norm(point - origin, axis=-1) > 0
    return _Signal(xy, xy_valid, origin, point, dir_valid)


def _signal(samples: np.ndarray | None, eye: str) -> _Signal:
    if samples is None or len(samples) == 0:
        empty2, empty3, none = np.empty((0, 2)), np.empty((0, 3)), np.zeros(0, dtype=bool)
        return _Signal(empty2, none, empty3, empty3, none)
    if eye == "average":
        return _binocular_signal(samples)
    if eye not in _EYES:
        raise ValueError(f"eye must be 'left', 'right' or 'average', not {eye!r}")
    return _eye_signal(samples, eye)


# --------------------------------------------------------------------------
# Metrics of one validation point


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _screen_axes(display_area: DisplayArea) -> tuple[np.ndarray, np.ndarray]:
    """The unit vectors of the display area's x (rightward) and y (downward) edges."""
    top_left, top_right, bottom_left = _corners(display_area)
    x_axis, y_axis = top_right - top_left, bottom_left - top_left
    return x_axis / np.linalg.norm(x_axis), y_axis / np.linalg.norm(y_axis)


def offset_vectors_deg(
    origins: Any, gaze_points: Any, target_mm: Any, display_area: DisplayArea
) -> np.ndarray:
    """
    Per-sample angular offsets as 2D vectors, in degrees, shape (n, 2): each
    sample's angular offset (L{angular_offsets_deg}) pointing in the
    direction, on the display, from the target to the sample's gaze point
    (x to the right, y down).  The mean of these vectors is the systematic
    error; its length is the accuracy as MATLAB Titta computes it (the
    offset of the mean), and their spread its STD.
    """
    gaze_points = np.asarray(gaze_points, dtype=float)
    target_mm = np.asarray(target_mm, dtype=float)
    sizes = angular_offsets_deg(origins, gaze_points, target_mm)
    x_axis, y_axis = _screen_axes(display_area)
    on_screen = gaze_points - target_mm
    direction = np.arctan2(on_screen @ y_axis, on_screen @ x_axis)
    return sizes[..., None] * np.stack([np.cos(direction), np.sin(direction)], axis=-1)


def _degree_metrics(
    signal: _Signal, target_mm: np.ndarray, display_area: DisplayArea
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
    result["accuracyDeg"] = _num(np.mean(angular_offsets_deg(origins, points, target_mm)))

    # Accuracy, offset of the mean: the length of the mean of the per-sample
    # offset vectors (MATLAB Titta's acc1D).  Noise in every direction
    # cancels in the mean, so this is not inflated by precision.
    vectors = offset_vectors_deg(origins, points, target_mm, display_area)
    result["accuracyOffsetOfMeanDeg"] = _num(np.linalg.norm(vectors.mean(axis=0)))

    # RMS-S2S: over pairs of neighbouring samples in the array that are both
    # usable (a pair spanning an invalid sample is not used, since a blink or
    # a lost eye can hide a saccade), the angle between the two gaze points
    # seen from the mean of the two eye positions.
    pairs = valid[:-1] & valid[1:]
    if pairs.any():
        first, second = signal.point[:-1][pairs], signal.point[1:][pairs]
        eye = (signal.origin[:-1][pairs] + signal.origin[1:][pairs]) / 2.0
        steps = angles_between_deg(first - eye, second - eye)
        result["precisionRmsS2SDeg"] = _num(_rms(steps))

    # STD: the sample standard deviation (n - 1 in the denominator) of the
    # angles, at each sample's eye, between its gaze point and the mean
    # gaze point.
    if usable >= 2:
        spread = angular_offsets_deg(origins, points, points.mean(axis=0))
        result["precisionStdDeg"] = _num(math.sqrt(np.sum(np.square(spread)) / (usable - 1)))
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
        per sample, the mean of the usable eyes; see L{_binocular_signal}).

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
    signal = _signal(samples, eye)
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
        result["meanGaze"] = _xy(mean[0], mean[1])
        result["accuracyNorm"] = _num(math.hypot(mean[0] - target_x, mean[1] - target_y))
        if valid_count >= 2:
            result["precisionNorm"] = _num(_rms(np.linalg.norm(xy - mean, axis=-1)))
    if display_area is not None:
        target_mm = target_position_mm(display_area, target_x, target_y)
        result.update(_degree_metrics(signal, target_mm, display_area))
    return json_safe(result)


def _gaze_samples(samples: np.ndarray | None, limit: int) -> list[dict[str, Any]]:
    """Up to C{limit} binocular normalised samples, evenly spread in time."""
    signal = _signal(samples, "average")
    xy = signal.xy[signal.xy_valid]
    if limit <= 0 or len(xy) == 0:
        return []
    if len(xy) > limit:
        xy = xy[np.unique(np.linspace(0, len(xy) - 1, limit).round().astype(int))]
    return [{"x": float(x), "y": float(y)} for x, y in xy]


def _check_target(target_x: Any, target_y: Any) -> tuple[float, float]:
    x, y = _num(target_x), _num(target_y)
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
    x, y = _check_target(target_x, target_y)
    item: dict[str, Any] = {"point": {"x": x, "y": y}}
    item.update(signal_metrics(samples, x, y, display_area, "average"))
    item["accuracy"] = item["accuracyDeg"]
    item["precision"] = item["precisionRmsS2SDeg"]
    for eye in _EYES:
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
    return {name: _mean_or_none(item[key] for item in items) for name, key in _AVERAGED}


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
        windowed, see L{select_window}), empty or None.
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
    for eye in _EYES:
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


# --------------------------------------------------------------------------
# Which samples belong to a point


def window_bounds_us(
    start_us: int,
    end_us: int,
    skip_initial_ms: float = DEFAULT_SKIP_INITIAL_MS,
    last_ms: float = 0.0,
) -> tuple[int, int]:
    """
    The part of a point's time span C{[start_us, end_us]} whose samples are
    used: from C{skip_initial_ms} after its start (the saccade to the
    target) to its end; with C{last_ms} > 0, only the last C{last_ms} of the
    span (as Titta does: 500 ms in MATLAB, 300 ms in Python), still never
    reaching into the skipped start.  The first bound may exceed the second:
    then the window is empty.
    """
    first = int(start_us) + round(float(skip_initial_ms) * 1000.0)
    last = int(end_us)
    if last_ms > 0:
        first = max(first, last - round(float(last_ms) * 1000.0))
    return first, last


def select_window(
    samples: np.ndarray,
    start_us: int,
    end_us: int,
    skip_initial_ms: float = DEFAULT_SKIP_INITIAL_MS,
    last_ms: float = 0.0,
) -> np.ndarray:
    """
    The samples whose C{system_time_us} lies in the window
    L{window_bounds_us} gives (both ends included), from an array sorted by
    C{system_time_us}.  Returns a view (an empty one when the window is
    empty).
    """
    first, last = window_bounds_us(start_us, end_us, skip_initial_ms, last_ms)
    if len(samples) == 0 or first > last:
        return samples[:0]
    times = samples["system_time_us"]
    lo = int(np.searchsorted(times, first, side="left"))
    hi = int(np.searchsorted(times, last, side="right"))
    return samples[lo:hi]


def client_window_us(gaze_samples: Any, key: str = "timestamp") -> tuple[int, int] | None:
    """
    The time span, in µs on the sample clock, of the samples the client sent
    with a C{validation_point}: the smallest and the largest finite C{key}
    (ms on clock C, that is C{system_time_us / 1000}), each rounded to the
    nearest µs.  Entries that are not dicts, lack the key, or hold a
    non-number, a boolean or a non-finite number are ignored.

    @return: C{(start_us, end_us)}, or None when no entry has a usable time
        (or C{gaze_samples} is not a list or tuple).
    """
    if not isinstance(gaze_samples, (list, tuple)):
        return None
    times = []
    for entry in gaze_samples:
        if not isinstance(entry, dict):
            continue
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        value = float(value)
        if math.isfinite(value):
            times.append(value)
    if not times:
        return None
    return round(min(times) * 1000.0), round(max(times) * 1000.0)


# --------------------------------------------------------------------------
# Calibration results

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
        x, y = _num(getattr(sample, "x", None)), _num(getattr(sample, "y", None))
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
    result["meanGaze"] = _xy(mean[0], mean[1])
    result["accuracyNorm"] = _num(math.hypot(mean[0] - target_x, mean[1] - target_y))
    if len(xy) >= 2:
        result["precisionNorm"] = _num(_rms(np.linalg.norm(xy - mean, axis=-1)))
    if display_area is not None and eye_mm is not None:
        gaze_mm = _targets_mm(display_area, xy)
        target_mm = target_position_mm(display_area, target_x, target_y)
        result["accuracyDeg"] = _num(np.mean(angular_offsets_deg(eye_mm, gaze_mm, target_mm)))
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
        x, y = _check_target(point.x, point.y)
        eyes = {
            eye: _calibration_eye(getattr(point, eye), x, y, display_area, eye_mm) for eye in _EYES
        }
        item: dict[str, Any] = {"point": {"x": x, "y": y}}
        for key in ("accuracyNorm", "precisionNorm", "accuracyDeg"):
            item[key] = _mean_or_none(eyes[eye][key] for eye in _EYES)
        item.update(eyes)
        point_data.append(item)

    def averages(items: Sequence[dict[str, Any]]) -> dict[str, float | None]:
        return {
            "averageAccuracyNorm": _mean_or_none(i["accuracyNorm"] for i in items),
            "averagePrecisionNorm": _mean_or_none(i["precisionNorm"] for i in items),
            "averageAccuracyDeg": _mean_or_none(i["accuracyDeg"] for i in items),
        }

    summary: dict[str, Any] = {"success": bool(result.success), "status": str(result.status)}
    summary.update(averages(point_data))
    for eye in _EYES:
        summary[eye] = averages([item[eye] for item in point_data])
    summary["eyePositionMm"] = (
        None if eye_mm is None else {"x": eye_mm[0], "y": eye_mm[1], "z": eye_mm[2]}
    )
    summary["eyePositionAssumed"] = assumed
    summary["pointData"] = point_data
    return json_safe(summary)
