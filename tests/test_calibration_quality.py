"""
Tests for L{jspsych_tobii.core.calibration_quality}: a calibration result's quality.
"""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from jspsych_tobii.core import calibration_quality
from jspsych_tobii.interfaces import (
    CalibrationEyeSample,
    CalibrationPointResult,
    CalibrationResult,
)
from tests.quality_support import (
    DISPLAY,
    EYE,
    AssertionsMixin,
)


def calibration_point(x, y, left=(), right=()):
    return CalibrationPointResult(
        x,
        y,
        tuple(CalibrationEyeSample(*s) for s in left),
        tuple(CalibrationEyeSample(*s) for s in right),
    )


class CalibrationSummaryTests(SynchronousTestCase, AssertionsMixin):
    """The quality of a tracker's calibration result."""

    def result(self):
        """
        Point (0.5, 0.5): left has two used samples at x = 0.51 and 0.51,
        one invalid, one valid but not used far away (ignored); the right
        eye has none.  Point (0.25, 0.5): both eyes have used samples at
        x = 0.23 and 0.27 (mean on target, spread 0.02).
        """
        return CalibrationResult(
            success=True,
            status="success",
            points=(
                calibration_point(
                    0.5,
                    0.5,
                    left=[
                        (0.51, 0.5, "valid_and_used"),
                        (0.51, 0.5, "valid_and_used"),
                        (math.nan, math.nan, "invalid"),
                        (0.9, 0.9, "valid_but_not_used"),
                    ],
                ),
                calibration_point(
                    0.25,
                    0.5,
                    left=[(0.23, 0.5, "valid_and_used"), (0.27, 0.5, "valid_and_used")],
                    right=[(0.23, 0.5, "valid_and_used"), (0.27, 0.5, "valid_and_used")],
                ),
            ),
        )

    def test_default_eye_position(self):
        """
        With the assumed eye 650 mm in front of the centre, 0.01 normalised
        = 4 mm at the centre is atan(4 / 650).  At (0.25, 0.5) the target is
        (-100, 0, 0), the samples at (-108, 0, 0) and (-92, 0, 0): their
        angles from the target seen from (0, 0, 650) are
        atan(108 / 650) - atan(100 / 650) and atan(100 / 650) - atan(92 / 650).
        """
        summary = calibration_quality.calibration_summary(self.result(), DISPLAY)
        self.assertJSONSafe(summary)
        self.assertIs(summary["success"], True)
        self.assertEqual(summary["status"], "success")
        self.assertEqual(summary["eyePositionMm"], {"x": 0.0, "y": 0.0, "z": 650.0})
        self.assertIs(summary["eyePositionAssumed"], True)

        first, second = summary["pointData"]
        self.assertEqual(first["point"], {"x": 0.5, "y": 0.5})
        left = first["left"]
        self.assertClose(left["meanGaze"]["x"], 0.51)
        self.assertClose(left["accuracyNorm"], 0.01)
        self.assertClose(left["precisionNorm"], 0.0)
        self.assertClose(left["accuracyDeg"], math.degrees(math.atan(4.0 / 650.0)))
        self.assertEqual(
            (
                left["numValidAndUsed"],
                left["numValidButNotUsed"],
                left["numInvalid"],
                left["numSamplesTotal"],
            ),
            (2, 1, 1, 4),
        )
        right = first["right"]
        self.assertIsNone(right["meanGaze"])
        self.assertIsNone(right["accuracyDeg"])
        self.assertEqual(right["numSamplesTotal"], 0)
        # The point's values are those of the one eye with data.
        self.assertClose(first["accuracyNorm"], 0.01)
        self.assertClose(first["accuracyDeg"], left["accuracyDeg"])

        a = math.degrees(math.atan(108 / 650) - math.atan(100 / 650))
        b = math.degrees(math.atan(100 / 650) - math.atan(92 / 650))
        self.assertClose(second["left"]["accuracyDeg"], (a + b) / 2)
        self.assertClose(second["accuracyDeg"], (a + b) / 2)
        self.assertClose(second["accuracyNorm"], 0.0)
        self.assertClose(second["precisionNorm"], 0.02)

        self.assertClose(summary["averageAccuracyNorm"], 0.005)
        self.assertClose(summary["averagePrecisionNorm"], 0.01)
        self.assertClose(summary["left"]["averageAccuracyNorm"], 0.005)
        self.assertClose(summary["right"]["averageAccuracyNorm"], 0.0)
        self.assertClose(
            summary["averageAccuracyDeg"], (first["accuracyDeg"] + second["accuracyDeg"]) / 2
        )

    def test_given_eye_position(self):
        """A measured eye position replaces the assumed one."""
        summary = calibration_quality.calibration_summary(
            self.result(), DISPLAY, eye_position_mm=EYE
        )
        self.assertJSONSafe(summary)
        self.assertIs(summary["eyePositionAssumed"], False)
        self.assertEqual(summary["eyePositionMm"], {"x": 0.0, "y": 0.0, "z": 600.0})
        left = summary["pointData"][0]["left"]
        self.assertClose(left["accuracyDeg"], math.degrees(math.atan(4.0 / 600.0)))

    def test_eye_distance(self):
        summary = calibration_quality.calibration_summary(
            self.result(), DISPLAY, eye_distance_mm=600.0
        )
        self.assertEqual(summary["eyePositionMm"], {"x": 0.0, "y": 0.0, "z": 600.0})

    def test_without_display_area(self):
        """No geometry: normalised values only."""
        summary = calibration_quality.calibration_summary(self.result())
        self.assertJSONSafe(summary)
        self.assertIsNone(summary["eyePositionMm"])
        self.assertIsNone(summary["averageAccuracyDeg"])
        self.assertIsNone(summary["pointData"][0]["left"]["accuracyDeg"])
        self.assertClose(summary["pointData"][0]["left"]["accuracyNorm"], 0.01)

    def test_odd_samples(self):
        """
        Unknown validity strings and NaN positions count as invalid; a
        failed calibration with no points is still a well-formed reply.
        """
        result = CalibrationResult(
            success=False,
            status="failure",
            points=(
                calibration_point(
                    0.5,
                    0.5,
                    left=[(0.5, 0.5, "weird"), (math.nan, 0.5, "valid_and_used")],
                    right=[(0.5, 0.5, "valid_and_used")],
                ),
            ),
        )
        summary = calibration_quality.calibration_summary(result, DISPLAY)
        self.assertJSONSafe(summary)
        self.assertIs(summary["success"], False)
        left = summary["pointData"][0]["left"]
        self.assertEqual((left["numInvalid"], left["numValidAndUsed"]), (2, 0))
        self.assertIsNone(left["accuracyNorm"])
        right = summary["pointData"][0]["right"]
        self.assertClose(right["accuracyDeg"], 0.0)
        self.assertIsNone(right["precisionNorm"])

        empty = calibration_quality.calibration_summary(CalibrationResult(success=False), DISPLAY)
        self.assertJSONSafe(empty)
        self.assertEqual(empty["pointData"], [])
        self.assertIsNone(empty["averageAccuracyNorm"])
