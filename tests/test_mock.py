"""
Tests for L{jspsych_tobii.trackers.mock} and its L{EyeModel}.
"""

import numpy as np
from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.core import quality
from jspsych_tobii.interfaces import GAZE_DTYPE, NotificationKind, TrackerError
from jspsych_tobii.trackers.eyemodel import EyeModel
from jspsych_tobii.trackers.mock import MockTracker

from .support import assert_close, mock_tracker
from .tracker_contract import ClockContractMixin


class MockContractTests(ClockContractMixin, unittest.TestCase):
    def makeTracker(self):
        return MockTracker(self.clock, self.clock_us, rate=600), None


def stream(tracker, clock, seconds, step=0.002):
    batches = []
    tracker.connect()
    tracker.startGaze(batches.append)
    for _ in range(int(round(seconds / step))):
        clock.advance(step)
    tracker.stopGaze()
    return np.concatenate(batches) if batches else np.zeros(0, GAZE_DTYPE)


class MockTrackerTests(unittest.SynchronousTestCase):
    def test_rate_and_timing(self):
        """At 1200 Hz, 2 s of simulated time gives 2400 samples 833-834 µs apart."""
        clock = Clock()
        samples = stream(mock_tracker(clock, rate=1200), clock, 2.0)
        self.assertEqual(len(samples), 2400)
        gaps = np.diff(samples["system_time_us"])
        self.assertEqual(set(gaps.tolist()), {833, 834})
        # capture times are never in the future of delivery
        self.assertLessEqual(samples["system_time_us"][-1], clock.seconds() * 1e6)

    def test_deterministic(self):
        """The same seed and clock give the same samples; another seed does not."""
        runs = []
        for seed in (3, 3, 4):
            clock = Clock()
            runs.append(stream(mock_tracker(clock, rate=300, seed=seed), clock, 3.0))
        self.assertTrue(runs[0].tobytes() == runs[1].tobytes())
        self.assertFalse(runs[0].tobytes() == runs[2].tobytes())

    def test_plausible_behaviour(self):
        """Over a minute: saccades, blinks and one-eye losses happen, gaze stays on screen."""
        clock = Clock()
        samples = stream(mock_tracker(clock, rate=120, seed=1), clock, 60.0, step=0.05)
        left, right = samples["left_gaze_valid"], samples["right_gaze_valid"]
        self.assertTrue(np.any(~left & ~right), "no blink")
        self.assertTrue(np.any(left ^ right), "no one-eye track loss")
        self.assertGreater(np.mean(left & right), 0.8)
        both = left & right
        x = samples["left_x"][both]
        self.assertGreater(x.max() - x.min(), 0.4, "gaze never moved across the screen")
        speed = np.abs(np.diff(samples["left_x"])) * 120
        self.assertGreater(np.nanmax(speed), 3.0, "no saccade")
        # eyes ~65 cm away, pupils 2-5 mm
        self.assertTrue(550 < np.nanmean(samples["left_origin_z"]) < 750)
        self.assertTrue(2.0 < np.nanmean(samples["left_pupil"]) < 5.0)
        # the 3D gaze point lies on the display: consistent with normalised x, y
        model = EyeModel()
        on = samples[both][:50]
        expected = model.display_point(on["left_x"], on["left_y"])
        got = np.stack([on["left_point_x"], on["left_point_y"], on["left_point_z"]], axis=-1)
        self.assertTrue(np.allclose(expected, got, atol=1e-6))

    def test_look_at_and_known_offset(self):
        """A fixed target with a known offset and noise is measured back in degrees."""
        clock = Clock()
        tracker = mock_tracker(clock, rate=600, offset_deg=0.5, noise_deg=0.1, blinks=False)
        tracker.lookAt(0.3, 0.6)
        samples = stream(tracker, clock, 2.0)
        metrics = quality.validation_summary([(0.3, 0.6, samples)], tracker.info.display_area)
        assert_close(self, metrics["averageAccuracyDeg"], 0.5, 0.05)
        # each eye carries the noise put in; averaging two eyes divides it by ~sqrt(2)
        for eye in ("left", "right"):
            assert_close(self, metrics[eye]["averagePrecisionStdDeg"], 0.1, 0.02)

    def test_calibration_collects_at_target_with_delay(self):
        clock = Clock()
        tracker = mock_tracker(clock, rate=120)
        tracker.connect()
        results = []
        tracker.enterCalibration()
        clock.advance(0.1)
        d = tracker.collectCalibrationData(0.2, 0.8)
        d.addCallback(results.append)
        clock.advance(0.3)
        self.assertEqual(results, [], "collection should take a realistic time")
        clock.advance(0.5)
        self.assertEqual(results, [True])
        d = tracker.computeCalibration()
        clock.advance(0.5)
        result = self.successResultOf(d)
        point = result.points[0]
        mean_x = np.mean([s.x for s in point.left])
        assert_close(self, mean_x, 0.2, 0.01)

    def test_collect_outside_calibration_fails(self):
        clock = Clock()
        tracker = mock_tracker(clock)
        tracker.connect()
        self.failureResultOf(tracker.collectCalibrationData(0.5, 0.5), TrackerError)

    def test_fail_next(self):
        clock = Clock()
        tracker = mock_tracker(clock)
        tracker.failNext("connect", TrackerError("boom"))
        self.failureResultOf(tracker.connect(), TrackerError)
        self.successResultOf(tracker.connect())

    def test_frequency_change_notifies(self):
        clock = Clock()
        tracker = mock_tracker(clock, rate=120)
        notes = []
        tracker.setNotificationReceiver(notes.append)
        tracker.connect()
        self.assertEqual(self.successResultOf(tracker.setGazeOutputFrequency(600)), 600.0)
        self.assertEqual(notes[-1].kind, NotificationKind.FREQUENCY_CHANGED)
        samples = stream(tracker, clock, 1.0)
        self.assertEqual(len(samples), 600)

    def test_rejects_bad_rate(self):
        self.assertRaises(TrackerError, mock_tracker, Clock(), rate=0)

    def test_user_position_centered(self):
        """The synthetic head sits near the middle of the head box."""
        clock = Clock()
        position = mock_tracker(clock).getUserPosition()
        assert_close(self, position.left[2], 0.5, 0.15)
        self.assertLess(position.left[0], position.right[0])
