# -*- test-case-name: tests.test_signals -*-
"""
The gaze signals the quality metrics are computed on, taken from a
C{GAZE_DTYPE} array: each eye's (L{eye_signal}) and the binocular average
(L{binocular_signal}; L{gaze_signal} picks one), with which samples are usable for normalised
positions and which for degrees; and the measured eye position
(L{mean_eye_position}).  Plain numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EYES = ("left", "right")


class Signal:
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


def eye_signal(samples: np.ndarray, eye: str) -> Signal:
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
    return Signal(xy, xy_valid, origin, point, dir_valid)


def _average(values: Sequence[np.ndarray], valids: Sequence[np.ndarray]) -> np.ndarray:
    """Per row, the mean of C{values} over the arrays whose row is valid."""
    total = np.zeros_like(values[0])
    count = np.zeros(len(values[0]))
    for value, valid in zip(values, valids, strict=True):
        total[valid] += value[valid]
        count += valid
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count[:, None]


def binocular_signal(samples: np.ndarray) -> Signal:
    """
    The binocular ("average") signal: per sample, the mean of the eyes that
    are usable, or the one usable eye's data when only one is.  Normalised
    gaze averages the eyes whose normalised gaze is usable (as the gaze push
    does); degrees average the gaze points and the gaze origins of the eyes
    usable for degrees, giving a cyclopean eye looking at the mean point.
    """
    eyes = [eye_signal(samples, eye) for eye in EYES]
    xy_valid = eyes[0].xy_valid | eyes[1].xy_valid
    dir_valid = eyes[0].dir_valid | eyes[1].dir_valid
    xy = _average([e.xy for e in eyes], [e.xy_valid for e in eyes])
    dir_valids = [e.dir_valid for e in eyes]
    origin = _average([e.origin for e in eyes], dir_valids)
    point = _average([e.point for e in eyes], dir_valids)
    with np.errstate(invalid="ignore"):
        dir_valid &= np.linalg.norm(point - origin, axis=-1) > 0
    return Signal(xy, xy_valid, origin, point, dir_valid)


def gaze_signal(samples: np.ndarray | None, eye: str) -> Signal:
    """C{eye}'s signal (C{"left"}, C{"right"}, or C{"average"}: the binocular one)."""
    if samples is None or len(samples) == 0:
        empty2, empty3, none = np.empty((0, 2)), np.empty((0, 3)), np.zeros(0, dtype=bool)
        return Signal(empty2, none, empty3, empty3, none)
    if eye == "average":
        return binocular_signal(samples)
    if eye not in EYES:
        raise ValueError(f"eye must be 'left', 'right' or 'average', not {eye!r}")
    return eye_signal(samples, eye)


def mean_eye_position(samples: np.ndarray | None) -> np.ndarray | None:
    """
    The mean position (mm) of the valid gaze origins of both eyes in
    C{samples}: the measured eye position for calibration degrees.  None
    when there is none.
    """
    if samples is None or len(samples) == 0:
        return None
    per_eye = []
    for eye in EYES:
        origin = _stack(samples, (f"{eye}_origin_x", f"{eye}_origin_y", f"{eye}_origin_z"))
        valid = np.asarray(samples[f"{eye}_origin_valid"], dtype=bool)
        valid &= np.all(np.isfinite(origin), axis=-1)
        per_eye.append(origin[valid])
    points = np.concatenate(per_eye)
    if len(points) == 0:
        return None
    return points.mean(axis=0)
