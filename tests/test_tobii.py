"""
Tests for L{jspsych_tobii.trackers.tobii}, the reactor side of the Tobii
adapter, against the fake SDK in L{tests.fake_tobii_research} (real
threads, real reactor: what crosses threads is what is tested here), and
against the real C{tobii_research} where it is installed (no tracker
attached).  What happens on one thread alone is tested, without the
reactor, in L{tests.test_tobii_worker} (the SDK worker),
L{tests.test_tobii_callbacks} (the SDK's threads) and L{tests.test_tobii_sdk}
(the conversions).
"""

from __future__ import annotations

import math
import sys
import threading
import time
import unittest as pyunittest

import numpy as np
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jspsych_tobii.core.timesync import clock_from_seconds, monotonic_us
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    CalibrationResult,
    ITracker,
    NotificationKind,
    NoTrackerError,
    TrackerError,
    TrackerInfo,
    gaze_array,
)
from jspsych_tobii.trackers.tobii import TobiiTracker

from . import fake_tobii_research as fake
from .support import batches_into, capture_log, serve_tracker, wait, wait_for
from .tracker_contract import TrackerContractMixin

try:
    import tobii_research as real_sdk
except Exception:  # not installed (it has wheels for CPython 3.10 only)
    real_sdk = None


class TobiiTestCase(unittest.TestCase):
    version = "2.x"

    def makeSDK(self, version=None, devices=1, **options):
        return fake.sdk_for(self, version or self.version, devices, **options)

    def makeTracker(self, sdk, **kwargs):
        tracker = TobiiTracker(reactor, monotonic_us, sdk=sdk, **kwargs)
        self.addCleanup(tracker.disconnect)
        return tracker

    @defer.inlineCallbacks
    def connected(self, version=None, tracker_options=None, **options):
        sdk = self.makeSDK(version, **options)
        tracker = self.makeTracker(sdk, **(tracker_options or {}))
        notes = []
        tracker.setNotificationReceiver(notes.append)
        info = yield tracker.connect()
        return sdk, sdk.device(), tracker, info, notes

    def workerThreadNames(self, tracker):
        return {thread.name for thread in tracker._worker.threads}


class ContractTests(TrackerContractMixin, unittest.TestCase):
    """The ITracker contract, with the fake 2.x SDK."""

    version = "2.x"
    frequency = 600.0

    def makeTracker(self):
        sdk = fake.make_sdk(self.version)
        device = sdk.add_device(frequency=self.frequency)
        device.collect_seconds = 0.05
        return TobiiTracker(reactor, monotonic_us, sdk=sdk), sdk.shutdown


class Contract1xTests(ContractTests):
    """The ITracker contract, with the fake 1.x SDK (user positions from the track box)."""

    version = "1.x"
    frequency = 300.0


class ConnectTests(TobiiTestCase):
    @defer.inlineCallbacks
    def test_info(self):
        sdk, device, tracker, info, notes = yield self.connected(frequency=600)
        self.assertTrue(verifyObject(ITracker, tracker))
        self.assertIsInstance(info, TrackerInfo)
        self.assertIs(tracker.info, info)
        self.assertEqual(info.address, device.address)
        self.assertTrue(info.address.startswith("tobii-prp://"))
        self.assertEqual(info.model, "Tobii Pro Spectrum")
        self.assertEqual(info.serial_number, device.serial_number)
        self.assertEqual(info.firmware_version, device.firmware_version)
        self.assertEqual(info.device_name, device.device_name)
        self.assertEqual(info.frequencies, fake.SPECTRUM_FREQUENCIES)
        self.assertEqual(info.frequency, 600.0)
        self.assertEqual(
            info.capabilities,
            {
                "gaze",
                "calibration",
                "monocular_calibration",
                "set_display_area",
                "external_signal",
                "user_position_guide",
            },
        )
        area = fake.DEFAULT_DISPLAY_AREA
        self.assertEqual(info.display_area.top_left, area["top_left"])
        self.assertEqual(info.display_area.top_right, area["top_right"])
        self.assertEqual(info.display_area.bottom_left, area["bottom_left"])
        self.assertEqual(info.sdk_version, sdk.__version__)
        # the fake's system clock is the monotonic clock, as on Linux
        self.assertEqual(info.system_clock_offset_us, 0)

    @defer.inlineCallbacks
    def test_info_1x(self):
        sdk, device, tracker, info, notes = yield self.connected("1.x")
        self.assertTrue(info.address.startswith("tet-tcp://"))
        self.assertIn("track_box", info.capabilities)
        self.assertTrue(info.sdk_version.startswith("1."))

    @defer.inlineCallbacks
    def test_clock_offset(self):
        """A system clock on another base (as on Windows) is measured, to the µs."""
        sdk = self.makeSDK()
        sdk.clock_offset_us = 2_500_000_123
        tracker = self.makeTracker(sdk)
        info = yield tracker.connect()
        self.assertLess(abs(info.system_clock_offset_us - 2_500_000_123), 500)
        # measured on the worker thread, bracketing the SDK's clock
        threads = {name for call, name in sdk.calls_named("get_system_time_stamp")}
        self.assertEqual(threads, self.workerThreadNames(tracker))
        self.assertGreaterEqual(len(sdk.calls_named("get_system_time_stamp")), 10)

    @defer.inlineCallbacks
    def test_retry_after_no_tracker(self):
        """The service retries connect() on the same tracker until one appears."""
        sdk = self.makeSDK(devices=0)
        tracker = self.makeTracker(sdk)
        yield self.assertFailure(tracker.connect(), NoTrackerError)
        sdk.add_device()
        info = yield tracker.connect()
        self.assertEqual(info.model, "Tobii Pro Spectrum")

    @defer.inlineCallbacks
    def test_set_frequency(self):
        sdk, device, tracker, info, notes = yield self.connected(frequency=60)
        current = yield tracker.setGazeOutputFrequency(300)
        self.assertEqual(current, 300.0)
        self.assertEqual(tracker.info.frequency, 300.0)
        self.assertEqual(device.frequency, 300.0)
        yield wait_for(lambda: notes, what="the frequency notification")
        self.assertEqual(notes[0].kind, NotificationKind.FREQUENCY_CHANGED)
        self.assertEqual(notes[0].data, {"frequency": 300.0})

    @defer.inlineCallbacks
    def test_set_bad_frequency(self):
        sdk, device, tracker, info, notes = yield self.connected()
        error = yield self.assertFailure(tracker.setGazeOutputFrequency(100), TrackerError)
        self.assertIn("60, 120, 150, 300, 600, 1200", str(error))
        self.assertEqual(sdk.calls_named("set_gaze_output_frequency"), [])

    @defer.inlineCallbacks
    def test_connect_twice(self):
        sdk = self.makeSDK()
        tracker = self.makeTracker(sdk)
        first, second = tracker.connect(), tracker.connect()
        infos = yield defer.gatherResults([first, second])
        self.assertIs(infos[0], infos[1])
        self.assertEqual(len(sdk.calls_named("find_all_eyetrackers")), 1)
        third = yield tracker.connect()
        self.assertIs(third, infos[0])

    @defer.inlineCallbacks
    def test_every_sdk_call_on_one_worker_thread(self):
        sdk, device, tracker, info, notes = yield self.connected(frequency=600)
        yield tracker.startGaze(lambda batch: None)
        yield tracker.enterCalibration()
        yield tracker.collectCalibrationData(0.5, 0.5)
        yield tracker.computeCalibration()
        yield tracker.leaveCalibration()
        yield tracker.stopGaze()
        workers = self.workerThreadNames(tracker)
        self.assertEqual(len(workers), 1)
        yield tracker.disconnect()
        self.assertEqual({name for call, name in sdk.calls}, workers)
        self.assertNotIn(threading.current_thread().name, workers)

    def test_not_installed(self):
        saved = sys.modules.get("tobii_research", None)
        sys.modules["tobii_research"] = None  # makes the import fail
        try:
            with self.assertRaises(TrackerError) as caught:
                TobiiTracker(reactor, monotonic_us)
        finally:
            if saved is None:
                del sys.modules["tobii_research"]
            else:
                sys.modules["tobii_research"] = saved
        message = str(caught.exception)
        self.assertIn("tobii-research is not installed", message)
        self.assertIn("CPython 3.10", message)
        self.assertNotIn("\n", message)


class GazeTests(TobiiTestCase):
    @defer.inlineCallbacks
    def test_1200hz_none_lost(self):
        """
        Half a second at 1200 Hz arrives whole: every sample, in order, with the
        SDK's time stamps; bursts that pile up while the reactor is busy cost
        one hand-off each.
        """
        sdk, device, tracker, info, notes = yield self.connected(frequency=1200)
        batches, threads = [], set()

        def receive(batch):
            threads.add(threading.current_thread())
            batches.append(gaze_array(batch))

        # keep the reactor busy now and then, as a real server is
        busy = task.LoopingCall(time.sleep, 0.004)
        busy.start(0.02)
        yield tracker.startGaze(receive)
        yield wait(0.5)
        busy.stop()
        yield tracker.stopGaze()

        self.assertEqual(threads, {threading.current_thread()})
        for batch in batches:
            self.assertEqual(batch.dtype, GAZE_DTYPE)
        rows = np.concatenate(batches)
        self.assertGreater(len(rows), 450)
        stamps = rows["system_time_us"]
        steps = np.diff(stamps)
        self.assertTrue(np.all(steps > 0), "system time stamps must strictly increase")
        # one sample every 833.3 µs, none missing
        self.assertLessEqual(steps.max(), 834)
        self.assertGreaterEqual(steps.min(), 833)
        self.assertEqual(len(rows), round((stamps[-1] - stamps[0]) / (1e6 / 1200)) + 1)
        # the SDK's own time stamps, untouched
        np.testing.assert_array_equal(rows["device_time_us"] - stamps, fake.DEVICE_CLOCK_OFFSET_US)
        self.assertTrue(np.all(rows["seq"] == 0))
        self.assertTrue(np.all(rows["left_gaze_valid"] & rows["right_gaze_valid"]))
        self.assertTrue(np.all(np.isfinite(rows["left_x"])))
        np.testing.assert_allclose(rows["left_pupil"], 3.0)
        np.testing.assert_allclose(rows["right_pupil"], 3.1)
        # coalesced: fewer hand-offs (and receiver calls) than samples
        handoff = tracker._callbacks.gazeHandoff
        self.assertLess(handoff.handoffs, handoff.items)
        self.assertLess(len(batches), len(rows))
        self.assertEqual(sdk.calls_from_callback, [])
        self.assertEqual(sdk.callback_errors, 0)
        self.assertEqual(tracker.callbackErrors, 0)

    @defer.inlineCallbacks
    def test_invalid_eyes(self):
        sdk, device, tracker, info, notes = yield self.connected(frequency=600)
        device.left_position = None
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait_for(lambda: batches, what="gaze")
        yield tracker.stopGaze()
        rows = np.concatenate(batches)
        self.assertFalse(np.any(rows["left_gaze_valid"] | rows["left_pupil_valid"]))
        self.assertTrue(np.all(np.isnan(rows["left_x"])))
        self.assertTrue(np.all(rows["right_gaze_valid"]))

    @defer.inlineCallbacks
    def test_stop_unsubscribes(self):
        sdk, device, tracker, info, notes = yield self.connected(frequency=600)
        batches = []
        yield tracker.startGaze(batches_into(batches))
        self.assertEqual(device.subscriptions()[sdk.EYETRACKER_GAZE_DATA], 1)
        yield tracker.stopGaze()
        self.assertNotIn(sdk.EYETRACKER_GAZE_DATA, device.subscriptions())
        count = len(batches)
        yield wait(0.05)
        self.assertEqual(len(batches), count)

    @defer.inlineCallbacks
    def test_no_sdk_call_from_callbacks(self):
        """Whatever happens, no callback calls into the SDK (the fake records it)."""
        sdk, device, tracker, info, notes = yield self.connected(frequency=1200)
        tracker.resumeCheckDelay = 0.05
        yield tracker.startGaze(lambda batch: None)
        device.overflow()
        device.change_display_area((-200, 300, 40), (200, 300, 40), (-200, 0, -10))
        device.stream_error("stream_error_source_stream_pump", "stream_error_internal_error", "x")
        device.lose_connection()
        device.restore_connection()
        yield tracker.enterCalibration()
        yield tracker.collectCalibrationData(0.5, 0.5)
        yield tracker.computeCalibration()
        yield tracker.leaveCalibration()
        yield wait(0.2)
        self.assertEqual(sdk.calls_from_callback, [])
        self.assertEqual(sdk.callback_errors, 0)
        self.assertEqual(tracker.callbackErrors, 0)


class NotificationTests(TobiiTestCase):
    @defer.inlineCallbacks
    def checkLostAndRestored(self, resume):
        sdk, device, tracker, info, notes = yield self.connected(
            frequency=600, resume_streams_on_restore=resume
        )
        tracker.resumeCheckDelay = 0.2
        threads = set()
        tracker.setNotificationReceiver(
            lambda note: (threads.add(threading.current_thread()), notes.append(note))
        )
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait_for(lambda: batches, what="gaze")
        subscribes = len(sdk.calls_named("subscribe_to"))

        device.lose_connection()
        yield wait_for(
            lambda: NotificationKind.CONNECTION_LOST in [n.kind for n in notes], what="lost"
        )
        yield wait(0.05)
        before = len(batches)
        yield wait(0.05)
        self.assertEqual(len(batches), before, "no gaze while the tracker is away")

        device.restore_connection()
        yield wait_for(
            lambda: NotificationKind.CONNECTION_RESTORED in [n.kind for n in notes],
            what="restored",
        )
        yield wait_for(lambda: len(batches) > before, what="gaze after the restore")
        self.assertEqual(threads, {threading.current_thread()})
        lost = [n for n in notes if n.kind == NotificationKind.CONNECTION_LOST][0]
        self.assertTrue(lost.message)
        self.assertLess(abs(lost.system_time_us - tracker._nowUs()), 2_000_000)
        return sdk, tracker, subscribes

    @defer.inlineCallbacks
    def test_gaze_resumes_after_restore(self):
        """A stream the SDK does not revive is subscribed again, on the worker."""
        sdk, tracker, subscribes = yield self.checkLostAndRestored(resume=False)
        resubscribes = sdk.calls[-10:]
        self.assertGreater(len(sdk.calls_named("subscribe_to")), subscribes)
        self.assertEqual({name for call, name in resubscribes}, self.workerThreadNames(tracker))

    @defer.inlineCallbacks
    def test_gaze_resumes_by_itself(self):
        """A stream the SDK revives is left alone."""
        sdk, tracker, subscribes = yield self.checkLostAndRestored(resume=True)
        yield wait(tracker.resumeCheckDelay + 0.1)
        self.assertEqual(len(sdk.calls_named("subscribe_to")), subscribes)

    @defer.inlineCallbacks
    def test_overflow(self):
        sdk, device, tracker, info, notes = yield self.connected()
        device.overflow()
        device.overflow()
        yield wait_for(lambda: tracker.overflows == 2, what="two overflows")
        kinds = [n.kind for n in notes]
        self.assertEqual(kinds.count(NotificationKind.STREAM_BUFFER_OVERFLOW), 2)
        note = [n for n in notes if n.kind == NotificationKind.STREAM_BUFFER_OVERFLOW][0]
        self.assertEqual(note.data["stream"], sdk.EYETRACKER_GAZE_DATA)
        self.assertIn("lost", note.message)

    @defer.inlineCallbacks
    def test_no_overflow_notification_in_1x(self):
        sdk, device, tracker, info, notes = yield self.connected("1.x")
        self.assertFalse(hasattr(sdk, "EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW"))
        self.assertNotIn(
            fake.EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW, device.subscriptions()
        )

    @defer.inlineCallbacks
    def test_display_area_changed(self):
        sdk, device, tracker, info, notes = yield self.connected()
        device.change_display_area((-250, 300, 40), (250, 300, 40), (-250, 10, -5))
        yield wait_for(lambda: notes, what="the notification")
        self.assertEqual(notes[0].kind, NotificationKind.DISPLAY_AREA_CHANGED)
        self.assertEqual(tracker.info.display_area.top_left, (-250.0, 300.0, 40.0))
        self.assertEqual(tracker.info.display_area.bottom_left, (-250.0, 10.0, -5.0))
        self.assertEqual(notes[0].data["displayArea"]["top_right"], [250.0, 300.0, 40.0])

    @defer.inlineCallbacks
    def test_stream_error(self):
        sdk, device, tracker, info, notes = yield self.connected()
        device.stream_error(
            sdk.STREAM_ERROR_SOURCE_STREAM_PUMP, sdk.STREAM_ERROR_INTERNAL_ERROR, "pump broke"
        )
        yield wait_for(lambda: notes, what="the notification")
        self.assertEqual(notes[0].kind, NotificationKind.STREAM_ERROR)
        self.assertIn("pump broke", notes[0].message)
        self.assertEqual(notes[0].data["error"], sdk.STREAM_ERROR_INTERNAL_ERROR)

    @defer.inlineCallbacks
    def test_no_receiver(self):
        sdk, device, tracker, info, notes = yield self.connected()
        tracker.setNotificationReceiver(None)
        device.overflow()
        yield wait_for(lambda: tracker.overflows == 1, what="the overflow")
        self.assertEqual(notes, [])


class ClockReactor(task.Clock):
    """A L{task.Clock} whose C{callFromThread} runs the call at once (on the test's thread)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class StreamFailureTests(TobiiTestCase):
    """
    A record the adapter cannot read (an SDK that renamed a field) is lost,
    but never silently: logged with its traceback, told to the receiver of
    notifications (the clients), counted, and logged at a bounded rate.
    """

    namespace = "jspsych_tobii.trackers.tobii_callbacks"

    @defer.inlineCallbacks
    def test_a_record_missing_a_field(self):
        sdk, device, tracker, info, notes = yield self.connected(frequency=600)
        lines = capture_log(self, self.namespace)
        device.missing_fields[sdk.EYETRACKER_GAZE_DATA] = ("left_pupil_diameter",)
        batches = []
        yield tracker.startGaze(batches_into(batches))

        def errors():
            return [n for n in notes if n.kind == NotificationKind.STREAM_ERROR]

        yield wait_for(errors, what="the stream error")
        yield wait(0.2)  # 120 more records fail meanwhile
        self.assertEqual(batches, [])
        [note] = errors()
        self.assertEqual(note.data["source"], "callback")
        self.assertEqual(note.data["stream"], "gaze")
        self.assertEqual(note.data["error"], "KeyError: 'left_pupil_diameter'")
        self.assertIn("gaze", note.message)
        self.assertGreaterEqual(note.data["count"], 1)
        self.assertGreater(tracker.streamErrors["gaze"], 60)
        self.assertEqual(tracker.callbackErrors, tracker.streamErrors["gaze"])
        # logged once, with the traceback; nothing raised into the SDK
        [failure] = self.flushLoggedErrors(KeyError)
        self.assertIn("gaze_row", failure.getTraceback())
        self.assertEqual(len(lines), 1)
        self.assertIn("gaze", lines[0]["log_format"].format(**lines[0]))
        self.assertEqual(sdk.callback_errors, 0)

        device.missing_fields.clear()
        yield wait_for(lambda: batches, what="gaze once the records are whole again")

    @defer.inlineCallbacks
    def test_clients_are_told_and_get_status_counts(self):
        """
        Through the whole server: a tracking client gets a tracker_status
        "stream_error" naming the stream, and get_status counts the loss.
        """
        sdk = self.makeSDK(frequency=600)
        device = sdk.device()
        device.missing_fields[sdk.EYETRACKER_GAZE_DATA] = ("right_gaze_point_on_display_area",)
        tracker = self.makeTracker(sdk)
        _, client = yield serve_tracker(self, tracker)
        status = yield client.request("get_status")
        self.assertEqual(status["streamErrors"], {})
        reply = yield client.request("start_tracking")
        self.assertIs(reply["success"], True)

        def told():
            return [
                m
                for m in client.other
                if m.get("type") == "tracker_status" and m.get("status") == "stream_error"
            ]

        yield wait_for(told, what="the stream_error status")
        [message] = told()
        self.assertEqual(message["data"]["stream"], "gaze")
        self.assertEqual(message["data"]["error"], "KeyError: 'right_gaze_point_on_display_area'")
        status = yield client.request("get_status")
        self.assertGreaterEqual(status["streamErrors"]["gaze"], 1)
        self.assertEqual(client.gaze, [])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_a_record_of_the_wrong_shape(self):
        """What the callback copied but the reactor cannot convert is counted the same way."""
        clock = ClockReactor()
        sdk = self.makeSDK()
        tracker = TobiiTracker(clock, clock_from_seconds(clock.seconds), sdk=sdk)
        self.addCleanup(tracker.disconnect)
        notes = []
        tracker.setNotificationReceiver(notes.append)
        batches = []
        tracker._callbacks.gazeWanted = True
        tracker._gazeReceiver = batches.append
        record = sdk.device()._gaze(0, 0, 1000.0)
        record["left_gaze_point_on_display_area"] = (0.5, 0.5, 0.0)
        tracker._callbacks.gaze(record)
        self.assertEqual(batches, [])
        self.assertEqual(tracker.streamErrors, {"gaze": 1})
        self.assertEqual([n.data["stream"] for n in notes], ["gaze"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class CalibrationTests(TobiiTestCase):
    @defer.inlineCallbacks
    def test_flow(self):
        sdk, device, tracker, info, notes = yield self.connected()
        yield tracker.enterCalibration()
        self.assertTrue(device.in_calibration)
        for x, y in ((0.1, 0.1), (0.5, 0.5), (0.9, 0.9)):
            collected = yield tracker.collectCalibrationData(x, y)
            self.assertIs(collected, True)
        yield tracker.discardCalibrationData(0.9, 0.9)
        result = yield tracker.computeCalibration()
        self.assertIsInstance(result, CalibrationResult)
        self.assertTrue(result.success)
        self.assertEqual(result.status, "success")
        self.assertEqual([(p.x, p.y) for p in result.points], [(0.1, 0.1), (0.5, 0.5)])
        validities = set()
        for point in result.points:
            self.assertEqual(len(point.left), 8)
            self.assertEqual(len(point.right), 8)
            for sample in point.left + point.right:
                validities.add(sample.validity)
                if sample.validity != "invalid":
                    self.assertLess(math.hypot(sample.x - point.x, sample.y - point.y), 0.01)
        self.assertEqual(validities, {"valid_and_used", "valid_but_not_used", "invalid"})
        yield tracker.leaveCalibration()
        self.assertFalse(device.in_calibration)
        yield tracker.leaveCalibration()  # twice is fine
        yield wait_for(
            lambda: NotificationKind.CALIBRATION_CHANGED in [n.kind for n in notes],
            what="the calibration notification",
        )
        self.assertEqual(device.calibrations_applied, 1)

    @defer.inlineCallbacks
    def test_leave_when_not_calibrating(self):
        sdk = self.makeSDK()
        tracker = self.makeTracker(sdk)
        yield tracker.leaveCalibration()  # not even connected
        yield tracker.connect()
        yield tracker.leaveCalibration()
        self.assertEqual(sdk.calls_named("leave_calibration_mode"), [])

    @defer.inlineCallbacks
    def test_no_calibration_capability(self):
        sdk, device, tracker, info, notes = yield self.connected(
            capabilities=(fake.CAPABILITY_HAS_GAZE_DATA,)
        )
        yield self.assertFailure(tracker.enterCalibration(), TrackerError)

    @defer.inlineCallbacks
    def test_collect_off_the_reactor(self):
        """The reactor keeps turning while the tracker collects a point."""
        sdk, device, tracker, info, notes = yield self.connected()
        device.collect_seconds = 0.3
        yield tracker.enterCalibration()
        collecting = tracker.collectCalibrationData(0.5, 0.5)
        ticks = []
        loop = task.LoopingCall(lambda: ticks.append(collecting.called))
        loop.start(0.01)
        yield collecting
        loop.stop()
        self.assertGreaterEqual(ticks.count(False), 2)  # other work ran meanwhile

    @defer.inlineCallbacks
    def test_disconnect_leaves_calibration_mode(self):
        sdk, device, tracker, info, notes = yield self.connected()
        yield tracker.enterCalibration()
        yield tracker.disconnect()
        self.assertFalse(device.in_calibration)


class UserPositionTests(TobiiTestCase):
    @defer.inlineCallbacks
    def position(self, tracker, where=lambda position: True):
        """The first user position for which C{where} holds."""

        def found():
            position = tracker.getUserPosition()
            return position is not None and where(position)

        yield wait_for(found, what="a user position")
        return tracker.getUserPosition()

    @defer.inlineCallbacks
    def test_guide_2x(self):
        """
        2.x: from the user position guide stream, without gaze; track box
        coordinates (origin top right near the tracker) flipped to ours.
        """
        sdk, device, tracker, info, notes = yield self.connected()
        device.left_position = (0.2, 0.3, 0.4)
        device.right_position = None
        position = yield self.position(tracker, lambda p: p.right is None)
        for got, want in zip(position.left, (0.8, 0.7, 0.6), strict=True):
            self.assertAlmostEqual(got, want)
        self.assertEqual(position.to_dict()["rightValid"], False)
        subscriptions = device.subscriptions()
        self.assertIn(sdk.EYETRACKER_USER_POSITION_GUIDE, subscriptions)
        self.assertNotIn(sdk.EYETRACKER_GAZE_DATA, subscriptions)

    @defer.inlineCallbacks
    def test_ideal_position_is_centre(self):
        sdk, device, tracker, info, notes = yield self.connected()
        device.left_position = device.right_position = (0.5, 0.5, 0.5)
        position = yield self.position(tracker, lambda p: p.left == p.right)
        self.assertEqual(position.left, (0.5, 0.5, 0.5))
        self.assertEqual(position.right, (0.5, 0.5, 0.5))

    @defer.inlineCallbacks
    def test_left_eye_is_left(self):
        """The participant's left eye is further left (smaller x) than the right."""
        sdk, device, tracker, info, notes = yield self.connected()
        position = yield self.position(tracker)
        self.assertLess(position.left[0], position.right[0])

    @defer.inlineCallbacks
    def test_track_box_1x(self):
        """
        1.x with a tracker that has no user position guide: from the gaze
        origin in track box coordinates, gaze kept open for it.
        """
        sdk, device, tracker, info, notes = yield self.connected("1.x", frequency=120)
        device.left_position = (0.2, 0.3, 0.4)
        device.right_position = (1.3, -0.2, 0.5)  # outside the box: clipped
        position = yield self.position(tracker, lambda p: p.right == (0.0, 1.0, 0.5))
        for got, want in zip(position.left, (0.8, 0.7, 0.6), strict=True):
            self.assertAlmostEqual(got, want)
        self.assertGreater(position.system_time_us, 0)
        self.assertIn("track_box", tracker.info.capabilities)
        self.assertNotIn("user_position_guide", tracker.info.capabilities)
        subscriptions = device.subscriptions()
        self.assertNotIn(sdk.EYETRACKER_USER_POSITION_GUIDE, subscriptions)
        self.assertIn(sdk.EYETRACKER_GAZE_DATA, subscriptions)
        # gaze can still be started and stopped; the feed stays
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait_for(lambda: batches, what="gaze")
        yield tracker.stopGaze()
        self.assertIn(sdk.EYETRACKER_GAZE_DATA, device.subscriptions())
        count = len(batches)
        yield wait(0.05)
        self.assertEqual(len(batches), count)

    @defer.inlineCallbacks
    def test_guide_1x(self):
        """1.x with a tracker that delivers the guide uses it."""
        sdk, device, tracker, info, notes = yield self.connected("1.x", user_position_guide=True)
        device.left_position = (0.2, 0.3, 0.4)
        position = yield self.position(tracker, lambda p: p.left[0] > 0.7)
        for got, want in zip(position.left, (0.8, 0.7, 0.6), strict=True):
            self.assertAlmostEqual(got, want)
        self.assertNotIn(sdk.EYETRACKER_GAZE_DATA, device.subscriptions())

    @defer.inlineCallbacks
    def test_no_source(self):
        """2.x and a tracker without the guide: no positions, no error."""
        sdk, device, tracker, info, notes = yield self.connected(user_position_guide=False)
        yield wait_for(lambda: tracker._positionFallback, what="the fallback")
        yield wait(0.05)
        self.assertIsNone(tracker.getUserPosition())
        self.assertNotIn("user_position_guide", tracker.info.capabilities)

    @defer.inlineCallbacks
    def test_stale_after_connection_lost(self):
        sdk, device, tracker, info, notes = yield self.connected()
        yield self.position(tracker)
        device.lose_connection()
        yield wait_for(lambda: tracker.getUserPosition() is None, what="no position")

    @defer.inlineCallbacks
    def head_moving_closer(self, version):
        """
        A head moving from the back of the track box toward the tracker: as
        the SDK has it, its gaze origins come nearer (user coordinates: z is
        the distance from the tracker) while its track box z falls toward 0;
        the position the client reads rises toward 1 (close), live and as a
        replay computes it from the recorded origins.
        """
        from jspsych_tobii.trackers.replay import user_position_from_origins

        sdk, device, tracker, info, notes = yield self.connected(version, frequency=120)
        samples = []
        yield tracker.startGaze(lambda batch: samples.extend(gaze_array(batch)))
        # where the head starts (the middle of the box), then each step away from it
        start = yield self.position(tracker)
        yield wait_for(lambda: samples, what="gaze")
        distances, live, replayed = [], [], []
        last_z, last_distance = start.left[2], samples[-1]["left_origin_z"]
        for depth in (0.9, 0.6, 0.3, 0.1):  # track box z: from the back toward the front
            device.left_position = (0.6, 0.5, depth)
            device.right_position = (0.4, 0.5, depth)
            position = yield self.position(tracker, lambda p, z=last_z: p.left[2] != z)
            samples.clear()

            def moved(distance=last_distance):
                return samples and samples[-1]["left_origin_z"] != distance

            yield wait_for(moved, what="gaze from the new place")
            last_z, last_distance = position.left[2], samples[-1]["left_origin_z"]
            live.append(last_z)
            distances.append(float(last_distance))
            replayed.append(user_position_from_origins(samples[-1]).left[2])
        yield tracker.stopGaze()
        self.assertEqual(distances, sorted(distances, reverse=True), "origins come nearer")
        self.assertEqual(live, sorted(live), "z rises as the head comes closer")
        self.assertLess(live[0], 0.2)
        self.assertGreater(live[-1], 0.8)
        self.assertEqual(replayed, sorted(replayed), "the replay agrees")

    def test_head_moving_closer_2x(self):
        """2.x: positions from the user position guide."""
        return self.head_moving_closer("2.x")

    def test_head_moving_closer_1x(self):
        """1.x without the guide: positions from the gaze origins in the track box."""
        return self.head_moving_closer("1.x")

    def test_stale_after_max_age(self):
        """
        A guide position is stamped when it arrived; older than
        positionMaxAge on the server's clock, it is no position.
        """
        clock = ClockReactor()
        sdk = self.makeSDK()
        tracker = TobiiTracker(clock, clock_from_seconds(clock.seconds), sdk=sdk)
        self.addCleanup(tracker.disconnect)
        clock.advance(2.0)
        tracker._callbacks.userPosition(sdk.device()._guide())  # as the SDK's thread does
        self.assertEqual(tracker.getUserPosition().system_time_us, 2_000_000)
        clock.advance(tracker.positionMaxAge - 0.01)
        self.assertEqual(tracker.getUserPosition().system_time_us, 2_000_000)
        clock.advance(0.02)
        self.assertIsNone(tracker.getUserPosition())


class DisconnectTests(TobiiTestCase):
    @defer.inlineCallbacks
    def test_while_streaming(self):
        """
        Every stream is unsubscribed, on the worker, then the worker stops;
        all within the stop timeout even with a slow SDK.
        """
        sdk, device, tracker, info, notes = yield self.connected(frequency=1200)
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield tracker.enterCalibration()
        yield wait(0.1)
        sdk.call_delay = 0.03
        subscribed = device.subscriptions()
        self.assertGreaterEqual(len(subscribed), 8)
        workers = self.workerThreadNames(tracker)
        yield tracker.disconnect()
        self.assertEqual(device.subscriptions(), {})
        self.assertFalse(device.in_calibration)
        unsubscribed = sdk.calls_named("unsubscribe_from")
        self.assertEqual(len(unsubscribed), len(subscribed))
        # the worker did it, so the pool was still running; now it is stopped
        self.assertEqual({name for call, name in unsubscribed}, workers)
        self.assertFalse(tracker._worker.started)
        self.assertFalse(any(thread.is_alive() for thread in tracker._worker.threads))
        count = len(batches)
        yield wait(0.05)
        self.assertEqual(len(batches), count)
        yield self.assertFailure(tracker.startGaze(batches_into(batches)), TrackerError)

    @defer.inlineCallbacks
    def test_twice(self):
        sdk, device, tracker, info, notes = yield self.connected()
        first, second = tracker.disconnect(), tracker.disconnect()
        yield defer.gatherResults([first, second])
        yield tracker.disconnect()

    @defer.inlineCallbacks
    def test_never_connected(self):
        sdk = self.makeSDK()
        tracker = self.makeTracker(sdk)
        yield tracker.disconnect()
        yield self.assertFailure(tracker.connect(), TrackerError)

    @defer.inlineCallbacks
    def test_during_slow_discovery(self):
        """A worker stuck in the SDK does not hold up the shutdown."""
        sdk = self.makeSDK()
        sdk.discovery_seconds = 0.8
        tracker = self.makeTracker(sdk)
        tracker.stopTimeout = 0.2
        connecting = tracker.connect()
        yield wait(0.05)
        yield tracker.disconnect()
        self.assertNoResult(connecting)  # done while discovery still runs
        yield self.assertFailure(connecting, TrackerError)
        yield wait_for(
            lambda: not any(thread.is_alive() for thread in tracker._worker.threads),
            what="the worker to end",
        )
        self.assertEqual(sdk.device().subscriptions(), {})


class FakeSDKTests(unittest.TestCase):
    """The fake behaves like the SDK where the adapter depends on it."""

    def setUp(self):
        self.sdk = fake.make_sdk("2.x")
        self.addCleanup(self.sdk.shutdown)
        self.device = self.sdk.add_device(frequency=600)

    def test_double_subscribe_raises(self):
        eyetracker = self.sdk.EyeTracker(self.device.address)
        callback = lambda data: None  # noqa: E731
        eyetracker.subscribe_to(self.sdk.EYETRACKER_GAZE_DATA, callback)
        self.addCleanup(eyetracker.unsubscribe_from, self.sdk.EYETRACKER_GAZE_DATA)
        with self.assertRaises(self.sdk.EyeTrackerInvalidOperationError):
            eyetracker.subscribe_to(self.sdk.EYETRACKER_GAZE_DATA, callback)

    @defer.inlineCallbacks
    def test_records_calls_from_callbacks(self):
        eyetracker = self.sdk.EyeTracker(self.device.address)
        results = []

        def callback(data):
            results.append(self.sdk.get_system_time_stamp())

        eyetracker.subscribe_to(self.sdk.EYETRACKER_GAZE_DATA, callback, as_dictionary=True)
        yield wait_for(lambda: self.sdk.calls_from_callback, what="a recorded call")
        eyetracker.unsubscribe_from(self.sdk.EYETRACKER_GAZE_DATA, callback)
        self.assertEqual(results, [])
        self.assertGreater(self.sdk.callback_errors, 0)
        self.assertEqual(self.sdk.calls_from_callback[0][0], "get_system_time_stamp")

    @defer.inlineCallbacks
    def test_callback_errors_swallowed_and_reported(self):
        eyetracker = self.sdk.EyeTracker(self.device.address)
        errors = []
        eyetracker.subscribe_to(self.sdk.EYETRACKER_STREAM_ERRORS, errors.append, True)

        def broken(data):
            raise RuntimeError("boom")

        eyetracker.subscribe_to(self.sdk.EYETRACKER_GAZE_DATA, broken)
        yield wait_for(lambda: errors, what="a stream error")
        eyetracker.unsubscribe_from(self.sdk.EYETRACKER_GAZE_DATA)
        eyetracker.unsubscribe_from(self.sdk.EYETRACKER_STREAM_ERRORS)
        self.assertEqual(errors[0]["source"], self.sdk.STREAM_ERROR_SOURCE_USER)
        self.assertGreater(self.sdk.callback_errors, 0)

    @defer.inlineCallbacks
    def test_objects(self):
        """Without as_dictionary, callbacks get the SDK's object forms."""
        eyetracker = self.sdk.EyeTracker(self.device.address)
        samples = []
        eyetracker.subscribe_to(self.sdk.EYETRACKER_GAZE_DATA, samples.append)
        yield wait_for(lambda: samples, what="a sample")
        eyetracker.unsubscribe_from(self.sdk.EYETRACKER_GAZE_DATA)
        sample = samples[0]
        self.assertEqual(len(sample.left_eye.gaze_point.position_on_display_area), 2)
        self.assertEqual(len(sample.right_eye.gaze_origin.position_in_user_coordinates), 3)
        self.assertIs(sample.left_eye.pupil.validity, True)
        self.assertIsInstance(sample.system_time_stamp, int)
        self.assertFalse(hasattr(sample.left_eye.gaze_origin, "position_in_track_box_coordinates"))

    def test_versions(self):
        one = fake.make_sdk("1.x")
        self.assertTrue(hasattr(one.EyeTracker, "get_track_box"))
        self.assertTrue(hasattr(one, "EYETRACKER_NOTIFICATION_TRACK_BOX_CHANGED"))
        self.assertFalse(hasattr(one, "EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW"))
        self.assertFalse(hasattr(self.sdk.EyeTracker, "get_track_box"))
        self.assertFalse(hasattr(self.sdk, "EYETRACKER_NOTIFICATION_TRACK_BOX_CHANGED"))
        self.assertTrue(hasattr(self.sdk, "EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW"))
        self.assertTrue(hasattr(one, "EYETRACKER_USER_POSITION_GUIDE"))

    def test_calibration_needs_an_eyetracker(self):
        with self.assertRaises(ValueError):
            self.sdk.ScreenBasedCalibration(object())
        calibration = self.sdk.ScreenBasedCalibration(self.sdk.EyeTracker(self.device.address))
        with self.assertRaises(self.sdk.EyeTrackerInvalidOperationError):
            calibration.leave_calibration_mode()


@pyunittest.skipIf(
    real_sdk is None, "tobii-research is not installed (it has wheels for CPython 3.10)"
)
class RealSDKTests(unittest.TestCase):
    """The real C{tobii_research}, on a machine with no eye tracker attached."""

    timeout = 20

    @defer.inlineCallbacks
    def test_no_tracker(self):
        tracker = TobiiTracker(reactor, monotonic_us)
        self.addCleanup(tracker.disconnect)
        self.assertIs(tracker._sdk, real_sdk)
        error = yield self.assertFailure(tracker.connect(), NoTrackerError)
        self.assertEqual(str(error), "no eye tracker connected")

    @defer.inlineCallbacks
    def test_server_without_tracker_stays_up(self):
        """
        A server started without --mock, with the real SDK and no tracker,
        answers tracker requests with "no eye tracker connected", retries
        discovery, and keeps serving.
        """
        from jspsych_tobii.config import ServerConfig

        from .support import serve
        from .wsclient import connect

        config = ServerConfig(port="tcp:0:interface=127.0.0.1", retry_interval=1.0)
        service, port = serve(self, config)
        client = yield connect(port)
        self.addCleanup(client.dropConnection, abort=True)
        reply = yield client.request("start_tracking")
        self.assertEqual(reply["type"], "error")
        self.assertIn("no eye tracker connected", reply["error"])
        trackers = service.getServiceNamed("tracker")
        self.assertIs(trackers._candidate._sdk, real_sdk)
        yield wait(5.0)  # discovery (~2 s) is retried meanwhile
        self.assertGreaterEqual(trackers.attempts, 2)
        status = yield client.request("get_status")
        self.assertIs(status["trackerConnected"], False)
        reply = yield client.request("time_sync", clientTime=1.0)
        self.assertIs(reply["success"], True)
