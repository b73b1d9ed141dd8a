"""
Tests for L{jspsych_tobii.trackers.tobii_worker}.

L{SDKWorker} is blocking code: its tests call it directly on the test's
thread, with the fake SDK of L{tests.fake_tobii_research}, no reactor.
L{WorkerThread} is about threads: its tests run real threads on the real
reactor.
"""

from __future__ import annotations

import threading

from twisted.internet import defer, reactor
from twisted.trial import unittest

from jspsych_tobii.core.timesync import monotonic_us
from jspsych_tobii.interfaces import NoTrackerError, TrackerError
from jspsych_tobii.trackers.tobii_callbacks import GAZE_STREAM, POSITION_STREAM, StreamCallbacks
from jspsych_tobii.trackers.tobii_sdk import GUIDE, TRACK_BOX, sdk_errors
from jspsych_tobii.trackers.tobii_worker import SDKWorker, WorkerThread

from . import fake_tobii_research as fake


class NoReactor:
    """Where the callbacks' hand-offs go in these tests: nowhere."""

    def callFromThread(self, f, *args, **kwargs):
        pass


class WorkerTestCase(unittest.SynchronousTestCase):
    version = "2.x"

    def makeSDK(self, version=None, devices=1, **options):
        return fake.sdk_for(self, version or self.version, devices, **options)

    def makeWorker(self, sdk, address=None, frequency=None, clock_us=monotonic_us, closing=False):
        callbacks = StreamCallbacks(NoReactor(), sdk, clock_us, list, list)
        worker = SDKWorker(sdk, callbacks, clock_us, address, frequency, lambda: closing)
        self.addCleanup(worker.close)
        return worker, callbacks

    def opened(self, version=None, **options):
        sdk = self.makeSDK(version, **options)
        worker, callbacks = self.makeWorker(sdk)
        info, source = worker.open()
        return sdk, sdk.device(), worker, callbacks, info, source


class OpenTests(WorkerTestCase):
    def test_2x(self):
        """2.x: notifications, stream errors and the user position guide; no gaze yet."""
        sdk, device, worker, callbacks, info, source = self.opened()
        self.assertEqual(source, GUIDE)
        self.assertEqual(info.address, device.address)
        subscribed = device.subscriptions()
        self.assertIn(sdk.EYETRACKER_USER_POSITION_GUIDE, subscribed)
        self.assertIn(sdk.EYETRACKER_STREAM_ERRORS, subscribed)
        self.assertIn(sdk.EYETRACKER_NOTIFICATION_CONNECTION_LOST, subscribed)
        self.assertNotIn(sdk.EYETRACKER_GAZE_DATA, subscribed)
        self.assertFalse(callbacks.trackBoxFeed)

    def test_1x_track_box(self):
        """
        1.x with a tracker that does not deliver the guide (the SDK says so
        with a stream error, later): positions from the gaze stream instead.
        """
        sdk, device, worker, callbacks, info, source = self.opened("1.x")
        self.assertEqual(source, GUIDE)
        self.assertIn("track_box", info.capabilities)
        self.assertEqual(worker.positionFallback(), TRACK_BOX)
        self.assertTrue(callbacks.trackBoxFeed)
        subscribed = device.subscriptions()
        self.assertIn(sdk.EYETRACKER_GAZE_DATA, subscribed)
        self.assertNotIn(sdk.EYETRACKER_USER_POSITION_GUIDE, subscribed)

    def test_no_tracker(self):
        worker, callbacks = self.makeWorker(self.makeSDK(devices=0))
        with self.assertRaises(NoTrackerError) as caught:
            worker.open()
        self.assertEqual(str(caught.exception), "no eye tracker connected")

    def test_tracker_not_present(self):
        worker, callbacks = self.makeWorker(self.makeSDK(present=False))
        self.assertRaises(NoTrackerError, worker.open)

    def test_bad_address(self):
        sdk = self.makeSDK(devices=2)
        worker, callbacks = self.makeWorker(sdk, address="tobii-prp://TPSP1-999999999999")
        with self.assertRaises(NoTrackerError) as caught:
            worker.open()
        message = str(caught.exception)
        self.assertIn("tobii-prp://TPSP1-999999999999", message)
        for device in sdk._devices.values():
            self.assertIn(device.address, message)
        self.assertNotIn("\n", message)

    def test_address(self):
        sdk = self.makeSDK(devices=2)
        second = list(sdk._devices.values())[1]
        worker, callbacks = self.makeWorker(sdk, address=second.address)
        info, source = worker.open()
        self.assertEqual(info.address, second.address)
        self.assertEqual(sdk.calls_named("find_all_eyetrackers"), [])

    def test_serial_number_as_address(self):
        sdk = self.makeSDK(devices=2)
        second = list(sdk._devices.values())[1]
        worker, callbacks = self.makeWorker(sdk, address=second.serial_number)
        info, source = worker.open()
        self.assertEqual(info.address, second.address)

    def test_frequency(self):
        sdk = self.makeSDK(frequency=60)
        worker, callbacks = self.makeWorker(sdk, frequency=1200)
        info, source = worker.open()
        self.assertEqual(info.frequency, 1200.0)
        self.assertEqual(sdk.device().frequency, 1200.0)

    def test_bad_frequency(self):
        """A frequency the tracker does not offer: nothing set, nothing left subscribed."""
        sdk = self.makeSDK()
        worker, callbacks = self.makeWorker(sdk, frequency=100)
        with self.assertRaises(TrackerError) as caught:
            worker.open()
        self.assertNotIsInstance(caught.exception, NoTrackerError)
        self.assertIn("60, 120, 150, 300, 600, 1200", str(caught.exception))
        self.assertEqual(sdk.calls_named("set_gaze_output_frequency"), [])
        self.assertEqual(sdk.device().subscriptions(), {})

    def test_clock_offset(self):
        """The SDK clock's offset is measured against the clock given, not another."""
        sdk = self.makeSDK()
        sdk.clock_offset_us = 2_500_000_123
        worker, callbacks = self.makeWorker(sdk, clock_us=lambda: monotonic_us() - 7_000_000)
        info, source = worker.open()
        self.assertLess(abs(info.system_clock_offset_us - 2_507_000_123), 1_000)

    def test_closing(self):
        """Disconnected while opening: the tracker is described, nothing is subscribed."""
        sdk = self.makeSDK()
        worker, callbacks = self.makeWorker(sdk, closing=True)
        info, source = worker.open()
        self.assertIsNone(source)
        self.assertEqual(sdk.device().subscriptions(), {})


class StreamTests(WorkerTestCase):
    def test_gaze(self):
        sdk, device, worker, callbacks, info, source = self.opened()
        worker.subscribeGaze()
        worker.subscribeGaze()  # once only: the SDK refuses a second subscription
        self.assertEqual(device.subscriptions()[sdk.EYETRACKER_GAZE_DATA], 1)
        callbacks.gazeWanted = True  # wanted again meanwhile: stays
        worker.unsubscribeGaze()
        self.assertIn(sdk.EYETRACKER_GAZE_DATA, device.subscriptions())
        callbacks.gazeWanted = False
        worker.unsubscribeGaze()
        self.assertNotIn(sdk.EYETRACKER_GAZE_DATA, device.subscriptions())

    def test_gaze_kept_for_the_track_box(self):
        sdk, device, worker, callbacks, info, source = self.opened("1.x")
        worker.positionFallback()
        worker.subscribeGaze()
        worker.unsubscribeGaze()
        self.assertIn(sdk.EYETRACKER_GAZE_DATA, device.subscriptions())

    def test_resubscribe(self):
        sdk, device, worker, callbacks, info, source = self.opened()
        worker.subscribeGaze()
        before = len(sdk.calls_named("subscribe_to"))
        worker.resubscribe([GAZE_STREAM, POSITION_STREAM])
        self.assertEqual(len(sdk.calls_named("unsubscribe_from")), 2)
        self.assertEqual(len(sdk.calls_named("subscribe_to")), before + 2)
        self.assertEqual(device.subscriptions()[sdk.EYETRACKER_GAZE_DATA], 1)

    def test_position_fallback(self):
        """2.x SDK, a tracker without the guide: nothing to fall back on."""
        sdk, device, worker, callbacks, info, source = self.opened(user_position_guide=False)
        self.assertIsNone(worker.positionFallback())
        self.assertNotIn(sdk.EYETRACKER_USER_POSITION_GUIDE, device.subscriptions())

    def test_close(self):
        sdk, device, worker, callbacks, info, source = self.opened()
        worker.subscribeGaze()
        worker.enterCalibration()
        worker.close()
        self.assertEqual(device.subscriptions(), {})
        self.assertFalse(device.in_calibration)
        worker.close()  # twice is fine


class CalibrationTests(WorkerTestCase):
    def opened(self, **options):
        sdk, device, worker, callbacks, info, source = super().opened(**options)
        device.collect_seconds = 0.0
        return sdk, device, worker

    def test_collect_retries_once(self):
        sdk, device, worker = self.opened()
        tries = []

        def status(x, y):
            tries.append((x, y))
            if len(tries) % 2:
                return sdk.CALIBRATION_STATUS_FAILURE
            return sdk.CALIBRATION_STATUS_SUCCESS

        device.collect_status = status
        worker.enterCalibration()
        self.assertIs(worker.collect(0.5, 0.5), True)
        self.assertEqual(len(tries), 2)
        device.collect_status = sdk.CALIBRATION_STATUS_FAILURE
        self.assertIs(worker.collect(0.1, 0.1), False)

    def test_discard_and_compute(self):
        sdk, device, worker = self.opened()
        worker.enterCalibration()
        for x, y in ((0.1, 0.1), (0.5, 0.5), (0.9, 0.9)):
            worker.collect(x, y)
        worker.discard(0.9, 0.9)
        result = worker.compute()
        self.assertEqual([(p.x, p.y) for p in result.points], [(0.1, 0.1), (0.5, 0.5)])
        self.assertEqual(device.calibrations_applied, 1)

    def test_compute_without_data(self):
        sdk, device, worker = self.opened()
        worker.enterCalibration()
        result = worker.compute()
        self.assertFalse(result.success)
        self.assertEqual(result.status, "failure")
        self.assertEqual(result.points, ())

    def test_enter_twice_starts_over(self):
        sdk, device, worker = self.opened()
        worker.enterCalibration()
        worker.collect(0.5, 0.5)
        worker.enterCalibration()
        self.assertTrue(device.in_calibration)
        self.assertEqual(device.calibration_points, {})

    def test_enter_when_left_in_calibration_mode(self):
        """Another program left the tracker in calibration mode."""
        sdk, device, worker = self.opened()
        device.in_calibration = True
        worker.enterCalibration()
        self.assertTrue(device.in_calibration)

    def test_not_in_calibration_mode(self):
        sdk, device, worker = self.opened()
        with self.assertRaises(TrackerError) as caught:
            worker.collect(0.5, 0.5)
        self.assertIn("calibration mode", str(caught.exception))
        self.assertRaises(TrackerError, worker.compute)
        self.assertRaises(TrackerError, worker.discard, 0.5, 0.5)

    def test_leave_when_not_calibrating(self):
        sdk, device, worker = self.opened()
        worker.leaveCalibration()
        self.assertEqual(sdk.calls_named("leave_calibration_mode"), [])


def where(worker):
    """A stand-in for an SDKWorker method: the thread it runs on."""
    return threading.current_thread().name


class WorkerThreadTests(unittest.TestCase):
    """Real threads, on the real reactor."""

    def setUp(self):
        self.sdk = fake.make_sdk("2.x")
        self.addCleanup(self.sdk.shutdown)
        self.sdk.add_device()
        callbacks = StreamCallbacks(reactor, self.sdk, monotonic_us, list, list)
        worker = SDKWorker(self.sdk, callbacks, monotonic_us, None, None, lambda: False)
        self.thread = WorkerThread(reactor, worker, sdk_errors(self.sdk), name="tobii-sdk-test")
        self.addCleanup(self.thread.stop, 1.0)

    @defer.inlineCallbacks
    def test_one_thread_in_order(self):
        self.assertFalse(self.thread.started)
        names = yield defer.gatherResults([self.thread.call(where) for _ in range(5)])
        self.assertTrue(self.thread.started)
        self.assertEqual(set(names), {self.thread.threads[0].name})
        self.assertNotEqual(names[0], threading.current_thread().name)
        info, source = yield self.thread.call(SDKWorker.open)
        self.assertEqual({name for call, name in self.sdk.calls}, set(names))

    @defer.inlineCallbacks
    def test_sdk_errors_become_tracker_errors(self):
        def fails(worker):
            raise fake.EyeTrackerConnectionFailedError(
                "The connection failed. se_connection_failed"
            )

        error = yield self.assertFailure(self.thread.call(fails), TrackerError)
        self.assertIn("EyeTrackerConnectionFailedError", str(error))
        # other exceptions are not the SDK's: they stay what they are
        yield self.assertFailure(self.thread.call(lambda worker: 1 / 0), ZeroDivisionError)

    @defer.inlineCallbacks
    def test_stop(self):
        yield self.thread.call(SDKWorker.open)
        device = self.sdk.device()
        self.assertNotEqual(device.subscriptions(), {})
        yield self.thread.stop(1.0)
        self.assertEqual(device.subscriptions(), {})
        self.assertFalse(self.thread.started)
        self.assertFalse(any(thread.is_alive() for thread in self.thread.threads))
        yield self.assertFailure(self.thread.call(where), TrackerError)
        yield self.thread.stop(1.0)  # twice is fine

    def test_stop_before_start(self):
        self.assertIsNone(self.successResultOf(self.thread.stop(1.0)))
        self.assertFalse(self.thread.started)

    @defer.inlineCallbacks
    def test_stuck_worker_left_behind(self):
        """A worker stuck in an SDK call does not hold up the stop: it is a daemon."""
        release = threading.Event()
        stuck = self.thread.call(lambda worker: release.wait(10))
        [thread] = self.thread.threads
        self.assertTrue(thread.daemon)
        yield self.thread.stop(0.05)
        self.assertFalse(release.is_set())  # given up while the call was still stuck
        self.assertNoResult(stuck)
        release.set()
        yield stuck
        self.flushLoggedErrors()
