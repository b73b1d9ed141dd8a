"""
Tests for L{jspsych_tobii.core.signals}: the gaze signals and the measured eye position.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from jspsych_tobii.interfaces import empty_gaze


class MeanEyePositionTests(SynchronousTestCase):
    def test_mean_of_valid_origins_of_both_eyes(self):
        from jspsych_tobii.core.signals import mean_eye_position

        samples = empty_gaze(3)
        samples["left_origin_x"], samples["left_origin_y"], samples["left_origin_z"] = (
            [-30.0, -30.0, 999.0],
            [100.0, 100.0, 999.0],
            [600.0, 600.0, 999.0],
        )
        samples["right_origin_x"], samples["right_origin_y"], samples["right_origin_z"] = (
            [30.0, 30.0, 30.0],
            [100.0, 100.0, 100.0],
            [600.0, 600.0, 600.0],
        )
        samples["left_origin_valid"] = [True, True, False]
        samples["right_origin_valid"] = [True, True, True]
        self.assertEqual(mean_eye_position(samples).tolist(), [6.0, 100.0, 600.0])
        samples["left_origin_valid"] = samples["right_origin_valid"] = False
        self.assertIsNone(mean_eye_position(samples))
        self.assertIsNone(mean_eye_position(None))
