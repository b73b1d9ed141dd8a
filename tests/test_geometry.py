"""
Tests for L{jspsych_tobii.core.geometry}: target positions on the display
area and the angles between positions seen from the eye.
"""

from __future__ import annotations

import math

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from jspsych_tobii.core import geometry
from jspsych_tobii.interfaces import DisplayArea
from tests.quality_support import (
    DISPLAY,
    DISTANCE,
    EYE,
    AssertionsMixin,
)


class GeometryTests(SynchronousTestCase, AssertionsMixin):
    """Target positions, the display normal and the default eye position."""

    def test_corners_and_centre(self):
        """
        (0, 0) is the top-left corner, (1, 1) the bottom-right, and (0.5,
        0.5) the centre; x runs along the top edge, y down the left edge.
        """
        self.assertEqual(list(geometry.target_position_mm(DISPLAY, 0, 0)), [-200, 150, 0])
        self.assertEqual(list(geometry.target_position_mm(DISPLAY, 1, 0)), [200, 150, 0])
        self.assertEqual(list(geometry.target_position_mm(DISPLAY, 0, 1)), [-200, -150, 0])
        self.assertEqual(list(geometry.target_position_mm(DISPLAY, 1, 1)), [200, -150, 0])
        self.assertEqual(list(geometry.target_position_mm(DISPLAY, 0.5, 0.5)), [0, 0, 0])
        self.assertEqual(list(geometry.target_position_mm(DISPLAY, 0.25, 0.1)), [-100, 120, 0])

    def test_tilted_display(self):
        """
        On a display whose top leans 50 mm toward the user, the centre is
        halfway in depth too: top-left (-200, 300, 50), bottom-left
        (-200, 0, 0), so (0.5, 0.5) is (0, 150, 25).
        """
        tilted = DisplayArea((-200.0, 300.0, 50.0), (200.0, 300.0, 50.0), (-200.0, 0.0, 0.0))
        np.testing.assert_allclose(geometry.target_position_mm(tilted, 0.5, 0.5), [0, 150, 25])

    def test_normal_points_to_user(self):
        """
        The normal of a display in the plane z = 0 is +z, toward the user;
        for the tilted display it is (down-edge x right-edge) normalised:
        (0, -300, -50) x (400, 0, 0) = (0, -20000, 120000).
        """
        np.testing.assert_allclose(geometry.display_normal(DISPLAY), [0, 0, 1])
        tilted = DisplayArea((-200.0, 300.0, 50.0), (200.0, 300.0, 50.0), (-200.0, 0.0, 0.0))
        expected = np.array([0.0, -20000.0, 120000.0]) / math.hypot(20000.0, 120000.0)
        np.testing.assert_allclose(geometry.display_normal(tilted), expected)

    def test_degenerate_display(self):
        """Corners on one line span no plane: ValueError."""
        flat = DisplayArea((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (2.0, 0.0, 0.0))
        self.assertRaises(ValueError, geometry.display_normal, flat)

    def test_default_eye_position(self):
        """650 mm (or the given distance) along the normal from the centre."""
        np.testing.assert_allclose(geometry.default_eye_position_mm(DISPLAY), [0, 0, 650])
        np.testing.assert_allclose(geometry.default_eye_position_mm(DISPLAY, 600), [0, 0, 600])


class AngleTests(SynchronousTestCase, AssertionsMixin):
    """Angles between vectors and per-sample angular offsets."""

    def test_one_degree(self):
        """
        Eye at (0, 0, 600), target at (0, 0, 0), gaze point at
        (600 tan 1 deg, 0, 0): the offset is 1 degree.
        """
        gaze = (DISTANCE * math.tan(math.radians(1.0)), 0.0, 0.0)
        offset = geometry.angular_offsets_deg(EYE, gaze, (0.0, 0.0, 0.0))
        self.assertClose(float(offset), 1.0, places=12)

    def test_right_angle_and_opposite(self):
        """Orthogonal vectors are 90 degrees apart, opposite ones 180."""
        self.assertClose(float(geometry.angles_between_deg((1, 0, 0), (0, 5, 0))), 90.0)
        self.assertClose(float(geometry.angles_between_deg((1, 0, 0), (-2, 0, 0))), 180.0)

    def test_tiny_angle(self):
        """
        atan2 keeps tiny angles that acos of a dot product rounds to zero:
        vectors (1, 0, 0) and (1, 1e-9, 0) are 1e-9 rad apart.
        """
        angle = float(geometry.angles_between_deg((1.0, 0.0, 0.0), (1.0, 1e-9, 0.0)))
        self.assertWithin(angle / math.degrees(1e-9), 1.0, 1e-9)

    def test_zero_vector(self):
        """A zero vector makes an angle of 0 rather than NaN."""
        self.assertEqual(float(geometry.angles_between_deg((0, 0, 0), (1, 0, 0))), 0.0)

    def test_broadcast(self):
        """Rows of vectors broadcast against one vector."""
        angles = geometry.angles_between_deg([(1, 0, 0), (0, 1, 0), (1, 1, 0)], (1, 0, 0))
        np.testing.assert_allclose(angles, [0, 90, 45])
