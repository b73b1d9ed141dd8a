"""
L{TrackerContractMixin}: what every L{ITracker} implementation must do.

Mix it into a C{twisted.trial.unittest.TestCase} and define C{makeTracker}
returning C{(tracker, cleanup)} (cleanup: a callable or None).  Time passes
through two methods: L{TrackerContractMixin.sleep} and
L{TrackerContractMixin.settle}.  By default they wait on the real reactor,
for adapters that run real threads (the Tobii SDK, a child process);
L{ClockContractMixin} makes them advance a L{task.Clock}, for trackers that
run on the reactor alone (the mock, the replay): no real time passes.
"""

from __future__ import annotations

import numpy as np
from twisted.internet import defer, task
from zope.interface.verify import verifyObject

from jspsych_tobii.core.timesync import clock_from_seconds
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    CalibrationResult,
    ITracker,
    TrackerError,
    TrackerInfo,
    UserPosition,
)

from .support import batches_into, wait


class TrackerContractMixin:
    #: how long to stream in the gaze tests, seconds
    stream_seconds = 0.5

    def makeTracker(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def sleep(self, seconds: float) -> defer.Deferred:
        """Let C{seconds} pass (real time on the real reactor)."""
        return wait(seconds)

    def settle(self, d: defer.Deferred) -> defer.Deferred:
        """C{d}, once it can fire (the real reactor fires it in its time)."""
        return d

    @defer.inlineCallbacks
    def connected(self):
        tracker, cleanup = self.makeTracker()
        if cleanup is not None:
            self.addCleanup(cleanup)
        self.addCleanup(tracker.disconnect)
        info = yield self.settle(tracker.connect())
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
        yield self.settle(tracker.startGaze(batches_into(batches)))
        yield self.sleep(self.stream_seconds)
        yield self.settle(tracker.stopGaze())
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
        yield self.settle(tracker.startGaze(batches_into(batches)))
        yield self.sleep(0.1)
        yield self.settle(tracker.stopGaze())
        count = len(batches)
        yield self.sleep(0.1)
        self.assertEqual(len(batches), count)

    @defer.inlineCallbacks
    def test_restart_gaze(self):
        tracker, info = yield self.connected()
        first, second = [], []
        yield self.settle(tracker.startGaze(batches_into(first)))
        yield self.sleep(0.1)
        yield self.settle(tracker.stopGaze())
        yield self.settle(tracker.startGaze(batches_into(second)))
        yield self.sleep(0.1)
        yield self.settle(tracker.stopGaze())
        self.assertTrue(first)
        self.assertTrue(second)

    @defer.inlineCallbacks
    def test_user_position(self):
        tracker, info = yield self.connected()
        position = tracker.getUserPosition()
        for _ in range(20):
            if position is not None:
                break
            yield self.sleep(0.05)
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
            yield self.assertFailure(self.settle(tracker.enterCalibration()), TrackerError)
            return
        yield self.settle(tracker.enterCalibration())
        for x, y in ((0.5, 0.5), (0.1, 0.1), (0.9, 0.9)):
            collected = yield self.settle(tracker.collectCalibrationData(x, y))
            self.assertTrue(collected)
        yield self.settle(tracker.discardCalibrationData(0.9, 0.9))
        result = yield self.settle(tracker.computeCalibration())
        yield self.settle(tracker.leaveCalibration())
        self.assertIsInstance(result, CalibrationResult)
        self.assertTrue(result.success)
        positions = {(p.x, p.y) for p in result.points}
        self.assertIn((0.5, 0.5), positions)
        self.assertNotIn((0.9, 0.9), positions)

    @defer.inlineCallbacks
    def test_gaze_flows_during_calibration(self):
        tracker, info = yield self.connected()
        if "calibration" not in info.capabilities:
            yield self.assertFailure(self.settle(tracker.enterCalibration()), TrackerError)
            return
        batches = []
        yield self.settle(tracker.startGaze(batches_into(batches)))
        yield self.settle(tracker.enterCalibration())
        before = len(batches)
        yield self.settle(tracker.collectCalibrationData(0.5, 0.5))
        self.assertGreater(len(batches), before)
        yield self.settle(tracker.leaveCalibration())
        yield self.settle(tracker.stopGaze())

    @defer.inlineCallbacks
    def test_bad_frequency(self):
        tracker, info = yield self.connected()
        with self.assertRaises(TrackerError):
            yield self.settle(tracker.setGazeOutputFrequency(12345.0))

    @defer.inlineCallbacks
    def test_disconnect_twice(self):
        tracker, info = yield self.connected()
        yield self.settle(tracker.startGaze(lambda batch: None))
        yield self.settle(tracker.disconnect())
        yield self.settle(tracker.disconnect())

    def test_notification_receiver(self):
        tracker, cleanup = self.makeTracker()
        if cleanup is not None:
            self.addCleanup(cleanup)
        tracker.setNotificationReceiver(lambda note: None)
        tracker.setNotificationReceiver(None)


class ClockContractMixin(TrackerContractMixin):
    """
    The contract in simulated time, for a tracker that runs on the reactor
    alone: C{makeTracker} builds it on C{self.clock} with C{self.clock_us},
    and time passes only when a test sleeps or waits for a result.
    """

    #: simulated seconds per step of the clock
    step = 0.001
    #: the longest a tracker may take to answer, simulated seconds
    longest = 60.0

    def setUp(self):
        super().setUp()
        self.clock = task.Clock()
        self.clock_us = clock_from_seconds(self.clock.seconds)

    def sleep(self, seconds: float) -> defer.Deferred:
        for _ in range(int(round(seconds / self.step))):
            self.clock.advance(self.step)
        return defer.succeed(None)

    def settle(self, d: defer.Deferred) -> defer.Deferred:
        waited = 0.0
        while not d.called and waited < self.longest:
            self.clock.advance(self.step)
            waited += self.step
        if not d.called:
            self.fail(f"no result after {self.longest:g} simulated seconds")
        return d
