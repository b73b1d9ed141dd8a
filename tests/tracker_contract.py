"""
L{TrackerContractMixin}: what every L{ITracker} implementation must do.

Mix it into a C{twisted.trial.unittest.TestCase} and define C{makeTracker}
returning C{(tracker, cleanup)} (cleanup: a callable or None).  The tests use
the real reactor, since adapters may run real threads.
"""

from __future__ import annotations

import numpy as np
from twisted.internet import defer, reactor, task
from zope.interface.verify import verifyObject

from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    CalibrationResult,
    ITracker,
    TrackerError,
    TrackerInfo,
    UserPosition,
)


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class TrackerContractMixin:
    #: how long to stream in the gaze tests, seconds
    stream_seconds = 0.5

    def makeTracker(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    @defer.inlineCallbacks
    def connected(self):
        tracker, cleanup = self.makeTracker()
        if cleanup is not None:
            self.addCleanup(cleanup)
        self.addCleanup(tracker.disconnect)
        info = yield tracker.connect()
        return tracker, info

    def test_provides_interface(self):
        tracker, cleanup = self.makeTracker()
        if cleanup is not None:
            self.addCleanup(cleanup)
        self.assertTrue(verifyObject(ITracker, tracker))

    @defer.inlineCallbacks
    def test_connect_describes_tracker(self):
        tracker, info = yield self.connected()
        self.assertIsInstance(info, TrackerInfo)
        self.assertIs(tracker.info, info)
        self.assertTrue(info.address)
        self.assertTrue(info.model)
        self.assertIn(info.frequency, info.frequencies)
        self.assertIn("gaze", info.capabilities)
        self.assertIsNotNone(info.display_area)
        self.assertGreater(info.display_area.width_mm, 100)
        self.assertGreater(info.display_area.height_mm, 50)

    @defer.inlineCallbacks
    def test_gaze_batches_in_time_order(self):
        tracker, info = yield self.connected()
        batches = []
        yield tracker.startGaze(batches.append)
        yield sleep(self.stream_seconds)
        yield tracker.stopGaze()
        self.assertTrue(batches, "no gaze batch arrived")
        for batch in batches:
            self.assertEqual(batch.dtype, GAZE_DTYPE)
        samples = np.concatenate(batches)
        times = samples["system_time_us"]
        self.assertTrue(np.all(np.diff(times) > 0), "system time stamps must increase")
        # a plausible number of samples for the rate (generous: CI machines are slow)
        expected = info.frequency * self.stream_seconds
        self.assertGreater(len(samples), expected * 0.5)
        self.assertLess(len(samples), expected * 1.5 + 10)
        # gaze and validity agree: a valid eye has finite coordinates
        for eye in ("left", "right"):
            valid = samples[f"{eye}_gaze_valid"]
            self.assertTrue(np.all(np.isfinite(samples[f"{eye}_x"][valid])))
        self.assertTrue(np.any(samples["left_gaze_valid"] | samples["right_gaze_valid"]))

    @defer.inlineCallbacks
    def test_no_batch_after_stop(self):
        tracker, info = yield self.connected()
        batches = []
        yield tracker.startGaze(batches.append)
        yield sleep(0.1)
        yield tracker.stopGaze()
        count = len(batches)
        yield sleep(0.1)
        self.assertEqual(len(batches), count)

    @defer.inlineCallbacks
    def test_restart_gaze(self):
        tracker, info = yield self.connected()
        first, second = [], []
        yield tracker.startGaze(first.append)
        yield sleep(0.1)
        yield tracker.stopGaze()
        yield tracker.startGaze(second.append)
        yield sleep(0.1)
        yield tracker.stopGaze()
        self.assertTrue(first)
        self.assertTrue(second)

    @defer.inlineCallbacks
    def test_user_position(self):
        tracker, info = yield self.connected()
        position = tracker.getUserPosition()
        for _ in range(20):
            if position is not None:
                break
            yield sleep(0.05)
            position = tracker.getUserPosition()
        self.assertIsInstance(position, UserPosition)
        for eye in (position.left, position.right):
            if eye is not None:
                for value in eye:
                    self.assertTrue(0.0 <= value <= 1.0)
        as_dict = position.to_dict()
        for key in ("leftX", "leftY", "leftZ", "rightX", "rightY", "rightZ"):
            self.assertIn(key, as_dict)

    @defer.inlineCallbacks
    def test_calibration(self):
        tracker, info = yield self.connected()
        if "calibration" not in info.capabilities:
            yield self.assertFailure(tracker.enterCalibration(), TrackerError)
            return
        yield tracker.enterCalibration()
        for x, y in ((0.5, 0.5), (0.1, 0.1), (0.9, 0.9)):
            collected = yield tracker.collectCalibrationData(x, y)
            self.assertTrue(collected)
        yield tracker.discardCalibrationData(0.9, 0.9)
        result = yield tracker.computeCalibration()
        yield tracker.leaveCalibration()
        self.assertIsInstance(result, CalibrationResult)
        self.assertTrue(result.success)
        positions = {(p.x, p.y) for p in result.points}
        self.assertIn((0.5, 0.5), positions)
        self.assertNotIn((0.9, 0.9), positions)

    @defer.inlineCallbacks
    def test_gaze_flows_during_calibration(self):
        tracker, info = yield self.connected()
        if "calibration" not in info.capabilities:
            yield self.assertFailure(tracker.enterCalibration(), TrackerError)
            return
        batches = []
        yield tracker.startGaze(batches.append)
        yield tracker.enterCalibration()
        before = len(batches)
        yield tracker.collectCalibrationData(0.5, 0.5)
        self.assertGreater(len(batches), before)
        yield tracker.leaveCalibration()
        yield tracker.stopGaze()

    @defer.inlineCallbacks
    def test_bad_frequency(self):
        tracker, info = yield self.connected()
        with self.assertRaises(TrackerError):
            yield tracker.setGazeOutputFrequency(12345.0)

    @defer.inlineCallbacks
    def test_disconnect_twice(self):
        tracker, info = yield self.connected()
        yield tracker.startGaze(lambda batch: None)
        yield tracker.disconnect()
        yield tracker.disconnect()

    def test_notification_receiver(self):
        tracker, cleanup = self.makeTracker()
        if cleanup is not None:
            self.addCleanup(cleanup)
        tracker.setNotificationReceiver(lambda note: None)
        tracker.setNotificationReceiver(None)
