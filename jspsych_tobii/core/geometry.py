# -*- test-case-name: tests.test_geometry -*-
"""
Where things are in the tracker's user coordinate system (mm): targets on
the display area (L{target_position_mm}, L{display_normal},
L{default_eye_position_mm}), and the angles, seen from the eye, between
positions on the display (L{angles_between_deg}, L{angular_offsets_deg},
L{offset_vectors_deg}).  Plain numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jspsych_tobii.interfaces import DisplayArea

#: Assumed distance of the eyes from the display when only normalised data
#: are available (calibration results): a typical viewing distance for
#: screen-based Tobii trackers.
DEFAULT_EYE_DISTANCE_MM = 650.0


def corners(display_area: DisplayArea) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    top_left, top_right, bottom_left = corners(display_area)
    return top_left + float(x) * (top_right - top_left) + float(y) * (bottom_left - top_left)


def targets_mm(display_area: DisplayArea, xy: np.ndarray) -> np.ndarray:
    """Vectorised L{target_position_mm} for an (n, 2) array of points."""
    top_left, top_right, bottom_left = corners(display_area)
    return top_left + xy[:, :1] * (top_right - top_left) + xy[:, 1:2] * (bottom_left - top_left)


def display_normal(display_area: DisplayArea) -> np.ndarray:
    """
    The unit normal of the display area pointing toward the user: the cross
    product of the display's downward edge and its rightward edge.
    """
    top_left, top_right, bottom_left = corners(display_area)
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


def screen_axes(display_area: DisplayArea) -> tuple[np.ndarray, np.ndarray]:
    """The unit vectors of the display area's x (rightward) and y (downward) edges."""
    top_left, top_right, bottom_left = corners(display_area)
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
    x_axis, y_axis = screen_axes(display_area)
    on_screen = gaze_points - target_mm
    direction = np.arctan2(on_screen @ y_axis, on_screen @ x_axis)
    return sizes[..., None] * np.stack([np.cos(direction), np.sin(direction)], axis=-1)
