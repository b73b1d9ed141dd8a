"""
Fixtures shared by the data-quality tests (L{tests.test_quality},
L{tests.test_geometry}, L{tests.test_calibration_quality}, ...).

Geometry used throughout: a flat 400 x 300 mm display area in the plane
z = 0, centred on the origin of the user coordinate system, and an eye
600 mm in front of its centre.  A gaze point at horizontal angle a from the
eye's straight-ahead direction is then (600 tan a, 0, 0).
"""

from __future__ import annotations

import json
import math

import numpy as np

from jspsych_tobii.interfaces import DisplayArea, empty_gaze

DISPLAY = DisplayArea(
    top_left=(-200.0, 150.0, 0.0),
    top_right=(200.0, 150.0, 0.0),
    bottom_left=(-200.0, -150.0, 0.0),
)


EYE = (0.0, 0.0, 600.0)


DISTANCE = 600.0


def to_norm(point):
    """Normalised display coordinates of a point (mm) on L{DISPLAY}."""
    return (point[0] + 200.0) / 400.0, (150.0 - point[1]) / 300.0


def at_angle(h_deg=0.0, v_deg=0.0, eye=EYE):
    """
    The point on the display plane seen from C{eye} at C{h_deg} to the right
    and C{v_deg} up of straight ahead (the direction (tan h, tan v, -1)).
    """
    return (
        eye[0] + eye[2] * math.tan(math.radians(h_deg)),
        eye[1] + eye[2] * math.tan(math.radians(v_deg)),
        0.0,
    )


def make_samples(left, right=(), left_origin=EYE, right_origin=EYE, step_us=1000):
    """
    A GAZE_DTYPE array: C{left}/C{right} list each eye's gaze points (mm) on
    L{DISPLAY}, C{None} for an invalid sample; an empty C{right} means a
    right eye that is never valid.  Samples are C{step_us} apart.
    """
    n = max(len(left), len(right))
    samples = empty_gaze(n)
    samples["system_time_us"] = np.arange(n) * step_us
    samples["device_time_us"] = samples["system_time_us"]
    for eye, points, origin in (("left", left, left_origin), ("right", right, right_origin)):
        for i, point in enumerate(points):
            if point is None:
                continue
            samples[i][f"{eye}_x"], samples[i][f"{eye}_y"] = to_norm(point)
            for axis, value in zip("xyz", point, strict=True):
                samples[i][f"{eye}_point_{axis}"] = value
            for axis, value in zip("xyz", origin, strict=True):
                samples[i][f"{eye}_origin_{axis}"] = value
            samples[i][f"{eye}_gaze_valid"] = True
            samples[i][f"{eye}_origin_valid"] = True
            samples[i][f"{eye}_pupil"] = 3.0
            samples[i][f"{eye}_pupil_valid"] = True
    return samples


def binocular(points):
    """The same gaze points for both eyes, both eyes at L{EYE}."""
    return make_samples(points, points)


def walk_floats(value):
    """Every float anywhere inside C{value}."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_floats(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from walk_floats(item)


class AssertionsMixin:
    def assertJSONSafe(self, value):
        json.dumps(value, allow_nan=False)
        for number in walk_floats(value):
            self.assertTrue(math.isfinite(number), number)

    def assertClose(self, actual, expected, places=9):
        self.assertIsNotNone(actual)
        self.assertAlmostEqual(actual, expected, places=places)

    def assertWithin(self, actual, expected, delta):
        """trial's assertAlmostEqual has no C{delta}."""
        self.assertIsNotNone(actual)
        self.assertLessEqual(abs(actual - expected), delta, f"{actual!r} vs {expected!r}")
