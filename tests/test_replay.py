"""
Tests for L{jspsych_tobii.trackers.replay}.
"""

from __future__ import annotations

import os

import numpy as np
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.core.timesync import clock_from_seconds
from jspsych_tobii.interfaces import GAZE_DTYPE, TrackerError
from jspsych_tobii.recording.format import write_recording
from jspsych_tobii.trackers.eyemodel import DEFAULT_DISPLAY, EyeModel
from jspsych_tobii.trackers.replay import REPLAY_FINISHED, ReplayTracker

from .test_recording import scratch, synthetic_samples, tracker_description
from .tracker_contract import ClockContractMixin

#: fields the replay hands over unchanged
KEPT = [
    name for name in GAZE_DTYPE.names if name not in ("system_time_us", "seq", "server_time_us")
]

_long = {}


def long_recording(directory: str) -> str:
    """20 s at 600 Hz, generated once per test run, copied into C{directory}."""
    if "samples" not in _long:
        _long["samples"] = synthetic_samples(12_000, rate=600)
    path = os.path.join(directory, "long.gaze")
    write_recording(path, _long["samples"], tracker=tracker_description())
    return path


class ReplayContractTests(ClockContractMixin, unittest.TestCase):
    def makeTracker(self):
        directory = scratch(self)
        os.makedirs(directory)
        return ReplayTracker(self.clock, self.clock_us, long_recording(directory)), None

    # A replay cannot calibrate: these two contract tests check, instead,
    # that it says so clearly.

    @defer.inlineCallbacks
    def test_calibration(self):
        tracker, info = yield self.connected()
        self.assertNotIn("calibration", info.capabilities)
        for call in (
            tracker.enterCalibration,
            lambda: tracker.collectCalibrationData(0.5, 0.5),
            lambda: tracker.discardCalibrationData(0.5, 0.5),
            tracker.computeCalibration,
        ):
            error = yield self.assertFailure(self.settle(call()), TrackerError)
            self.assertIn("cannot be calibrated", str(error))
        yield self.settle(tracker.leaveCalibration())

    @defer.inlineCallbacks
    def test_gaze_flows_during_calibration(self):
        tracker, info = yield self.connected()
        batches = []
        yield self.settle(tracker.startGaze(batches.append))
        yield self.assertFailure(self.settle(tracker.enterCalibration()), TrackerError)
        before = len(batches)
        yield self.sleep(0.1)
        self.assertGreater(len(batches), before)
        yield self.settle(tracker.stopGaze())


class ReplayTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = scratch(self)
        os.makedirs(self.dir)
        self.samples = synthetic_samples(1200, rate=1200)
        self.path = os.path.join(self.dir, "s.gaze")
        write_recording(self.path, self.samples, tracker=tracker_description())
        self.clock = Clock()
        self.clock.advance(500.0)

    def replay(self, path, **options):
        return ReplayTracker(self.clock, clock_from_seconds(self.clock.seconds), path, **options)

    def play(self, tracker, seconds, step=0.002, batches=None):
        batches = [] if batches is None else batches
        if tracker.info is None:
            tracker.connect()
        tracker.startGaze(batches.append)
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
        return batches

    def test_samples_equal_the_recording(self):
        """Every field is the recording's but the time stamp, restamped with the same spacing."""
        tracker = self.replay(self.path)
        start_us = int(self.clock.seconds() * 1e6)
        batches = self.play(tracker, 1.2)
        played = np.concatenate(batches)
        self.assertEqual(len(played), len(self.samples))
        self.assertEqual(played.dtype, GAZE_DTYPE)
        for name in KEPT:
            np.testing.assert_array_equal(played[name], self.samples[name], err_msg=name)
        recorded = self.samples["system_time_us"]
        stamps = played["system_time_us"]
        self.assertEqual(stamps[0], start_us)
        np.testing.assert_array_equal(stamps - stamps[0], recorded - recorded[0])
        # the server fills these in
        self.assertFalse(played["seq"].any())
        self.assertFalse(played["server_time_us"].any())
        # original times are recoverable
        self.assertEqual(tracker.original_time_us(int(stamps[77])), int(recorded[77]))

    def test_batches_follow_the_clock(self):
        """Batches come every 2 ms, each holding the samples due by then, none from the future."""
        tracker = self.replay(self.path)
        arrivals = []

        def receive(batch):
            arrivals.append((int(self.clock.seconds() * 1e6), batch))

        tracker.connect()
        tracker.startGaze(receive)
        for _ in range(250):
            self.clock.advance(0.002)
        self.assertGreater(len(arrivals), 200)
        for now, batch in arrivals:
            self.assertLessEqual(len(batch), 4)
            self.assertTrue(np.all(batch["system_time_us"] <= now))
            self.assertTrue(np.all(batch["system_time_us"] > now - 2_000 - 1))

    def test_speed(self):
        """At speed 2 the recording plays in half the time, with half the spacing."""
        tracker = self.replay(self.path, speed=2.0)
        played = np.concatenate(self.play(tracker, 0.6))
        self.assertEqual(len(played), len(self.samples))
        recorded = np.diff(self.samples["system_time_us"])
        stamps = np.diff(played["system_time_us"])
        self.assertTrue(np.all(np.abs(stamps - recorded / 2) <= 1))
        slow = self.replay(self.path, speed=0.5)
        played = np.concatenate(self.play(slow, 1.2))
        self.assertEqual(len(played), 721)  # 1.2 s plays 0.6 s of the recording

    def test_extreme_speed_keeps_time_increasing(self):
        tracker = self.replay(self.path, speed=1000.0)
        played = np.concatenate(self.play(tracker, 0.01))
        self.assertEqual(len(played), len(self.samples))
        self.assertTrue(np.all(np.diff(played["system_time_us"]) > 0))

    def test_end_of_recording(self):
        """Without loop the stream ends with a notification; starting again starts over."""
        tracker = self.replay(self.path)
        notes = []
        tracker.setNotificationReceiver(notes.append)
        first = self.play(tracker, 1.5)
        self.assertEqual(sum(len(b) for b in first), 1200)
        self.assertEqual([n.kind for n in notes], [REPLAY_FINISHED])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        tracker.stopGaze()
        again = np.concatenate(self.play(tracker, 0.1))
        np.testing.assert_array_equal(again["left_x"], self.samples["left_x"][: len(again)])

    def test_loop(self):
        """With loop the recording starts again one sample period after its end."""
        tracker = self.replay(self.path, loop=True)
        played = np.concatenate(self.play(tracker, 2.5))
        self.assertEqual(len(played), 3001)  # 0 to 2.5 s inclusive
        self.assertTrue(np.all(np.diff(played["system_time_us"]) > 0))
        self.assertTrue(np.all(np.diff(played["device_time_us"]) > 0))
        self.assertLessEqual(np.diff(played["system_time_us"]).max(), 834)
        np.testing.assert_array_equal(played["left_x"][1200:2400], self.samples["left_x"])
        tracker.stopGaze()

    def test_pause_and_resume(self):
        """Stopping and starting again continues with the next sample, stamped from now."""
        tracker = self.replay(self.path)
        first = np.concatenate(self.play(tracker, 0.2))
        tracker.stopGaze()
        self.clock.advance(5.0)
        resumed_at = int(self.clock.seconds() * 1e6)
        second = np.concatenate(self.play(tracker, 0.2))
        tracker.stopGaze()
        self.assertEqual(
            int(second["device_time_us"][0]), int(self.samples["device_time_us"][len(first)])
        )
        self.assertEqual(int(second["system_time_us"][0]), resumed_at)

    def test_no_batch_after_stop(self):
        tracker = self.replay(self.path)
        batches = self.play(tracker, 0.1)
        tracker.stopGaze()
        count = len(batches)
        self.clock.advance(1.0)
        self.assertEqual(len(batches), count)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_user_position(self):
        """The user position follows the latest sample's eyes, on the mock's scale."""
        tracker = self.replay(self.path)
        self.assertIsNone(tracker.getUserPosition())  # not connected
        tracker.connect()
        model = EyeModel()
        before = tracker.getUserPosition()  # before streaming: the first sample's
        expected = model.user_position(int(self.samples["system_time_us"][0]))
        np.testing.assert_allclose(before.left, expected.left, atol=1e-9)
        batches = self.play(tracker, 0.5)
        position = tracker.getUserPosition()
        latest = batches[-1][-1]
        original = tracker.original_time_us(int(latest["system_time_us"]))
        expected = model.user_position(original)
        for got, want in ((position.left, expected.left), (position.right, expected.right)):
            np.testing.assert_allclose(got, want, atol=1e-9)
        self.assertEqual(position.system_time_us, int(latest["system_time_us"]))

    def test_user_position_eyes_lost(self):
        samples = self.samples.copy()
        samples["left_origin_valid"] = False
        samples["right_origin_x"] = np.nan
        path = os.path.join(self.dir, "lost.gaze")
        write_recording(path, samples)
        tracker = self.replay(path)
        self.play(tracker, 0.05)
        position = tracker.getUserPosition()
        self.assertIsNone(position.left)
        self.assertIsNone(position.right)
        self.assertFalse(position.to_dict()["leftValid"])

    def test_info(self):
        """The tracker description comes from the recording, minus calibration."""
        tracker = self.replay(self.path, speed=2)
        info = self.successResultOf(tracker.connect())
        self.assertEqual(info.model, "Replay of Mock Tracker")
        self.assertEqual(info.serial_number, "MOCK-0001")
        self.assertTrue(info.address.startswith("replay://"))
        self.assertEqual(info.frequency, 600.0)  # what the header says
        self.assertEqual(info.frequencies, (600.0,))
        self.assertIn("gaze", info.capabilities)
        self.assertIn("user_position_guide", info.capabilities)
        self.assertNotIn("calibration", info.capabilities)
        self.assertAlmostEqual(info.display_area.width_mm, 531.0)
        self.assertEqual(self.successResultOf(tracker.setGazeOutputFrequency(600)), 600.0)
        self.failureResultOf(tracker.setGazeOutputFrequency(1200), TrackerError)

    def test_info_without_tracker_description(self):
        """A header without a tracker: the rate is measured, the display assumed."""
        path = os.path.join(self.dir, "bare.gaze")
        write_recording(path, self.samples)
        info = self.successResultOf(self.replay(path).connect())
        self.assertEqual(info.frequency, 1200.0)
        self.assertIsNotNone(info.display_area)
        self.flushLoggedErrors()

    def test_info_with_a_malformed_display_area(self):
        """A corner without three coordinates: the display is assumed, as without one."""
        tracker = tracker_description()
        tracker["displayArea"]["top_right"] = [265.5, 320.0]
        path = os.path.join(self.dir, "malformed.gaze")
        write_recording(path, self.samples, tracker=tracker)
        info = self.successResultOf(self.replay(path).connect())
        self.assertEqual(info.display_area, DEFAULT_DISPLAY)
        self.assertEqual(info.model, "Replay of Mock Tracker")

    def test_calibration_fails_clearly(self):
        tracker = self.replay(self.path)
        tracker.connect()
        failure = self.failureResultOf(tracker.enterCalibration(), TrackerError)
        self.assertIn("cannot be calibrated", failure.getErrorMessage())
        self.assertIsNone(self.successResultOf(tracker.leaveCalibration()))

    def test_bad_recordings(self):
        """Unusable files and settings fail at once with a TrackerError saying why."""
        cases = {
            os.path.join(self.dir, "missing.gaze"): "no such file",
        }
        empty = os.path.join(self.dir, "empty.gaze")
        write_recording(empty, self.samples[:0])
        cases[empty] = "holds no samples"
        junk = os.path.join(self.dir, "junk.gaze")
        with open(junk, "wb") as f:
            f.write(b"hello")
        cases[junk] = "not a jspsych-tobii"
        for path, words in cases.items():
            with self.assertRaises(TrackerError) as caught:
                self.replay(path)
            self.assertIn(words, str(caught.exception))
        self.assertRaises(TrackerError, self.replay, self.path, speed=0)
