"""
Tests for L{jspsych_tobii.trackers.tobii_callbacks}: what the SDK's threads
run, and the reports of their failures.  The callbacks are called here on
the test's thread, with a L{task.Clock} whose C{callFromThread} runs the
hand-off at once; time passes only on the clock.
"""

from __future__ import annotations

import numpy as np
from twisted.internet import task
from twisted.python.failure import Failure
from twisted.trial import unittest

from jspsych_tobii.interfaces import GAZE_DTYPE, NotificationKind
from jspsych_tobii.trackers.tobii_callbacks import (
    CALLBACK_FAILED,
    FailureCounts,
    FailureReport,
    StreamCallbacks,
)
from jspsych_tobii.trackers.tobii_sdk import gaze_rows_to_records

from . import fake_tobii_research as fake
from .support import capture_log


class ClockReactor(task.Clock):
    """A L{task.Clock} whose C{callFromThread} runs the call at once (on the test's thread)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class CallbackTests(unittest.SynchronousTestCase):
    version = "2.x"

    def setUp(self):
        self.sdk = fake.make_sdk(self.version)
        self.addCleanup(self.sdk.shutdown)
        self.device = self.sdk.add_device(frequency=600)
        self.clock = ClockReactor()
        self.gaze, self.events = [], []
        self.callbacks = StreamCallbacks(
            self.clock, self.sdk, self.clock_us, self.gaze.extend, self.events.extend
        )

    def clock_us(self):
        return int(self.clock.seconds() * 1e6)

    def record(self, k=0):
        return self.device._gaze(k, 1_000_000, 1e6 / 600)

    def test_gaze_only_when_wanted(self):
        self.callbacks.gaze(self.record(0))
        self.assertEqual(self.gaze, [])
        self.callbacks.gazeWanted = True
        self.callbacks.gaze(self.record(1))
        self.callbacks.gaze(self.record(2))
        batch = np.frombuffer(gaze_rows_to_records(self.gaze), GAZE_DTYPE)
        self.assertEqual(len(batch), 2)
        self.assertEqual(self.callbacks.gazeHandoff.items, 2)
        self.assertIsNone(self.callbacks.position)

    def test_user_positions(self):
        """
        A user position is kept, the latest only, with when it arrived; it
        wakes nothing on the reactor.
        """
        self.clock.callFromThread = self.fail  # nothing is handed over
        self.clock.advance(2.5)
        self.callbacks.userPosition(self.device._guide())
        self.device.left_position = (0.25, 0.5, 0.75)
        self.clock.advance(0.5)
        self.callbacks.userPosition(self.device._guide())
        arrived, (stamp, left, left_valid, right, right_valid) = self.callbacks.position
        self.assertEqual(arrived, 3_000_000)
        self.assertIsNone(stamp)
        self.assertEqual(left, (0.25, 0.5, 0.75))

    def test_notifications(self):
        self.assertIn(
            fake.EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW, self.callbacks.notifications
        )
        callback = self.callbacks.notifications[fake.EYETRACKER_NOTIFICATION_CONNECTION_LOST]
        callback({"system_time_stamp": 7})
        self.callbacks.streamError({"source": "s", "error": "e", "message": "m"})
        self.assertEqual(
            self.events,
            [
                (NotificationKind.CONNECTION_LOST, {"system_time_stamp": 7}),
                (NotificationKind.STREAM_ERROR, {"source": "s", "error": "e", "message": "m"}),
            ],
        )

    def test_callbacks_never_raise(self):
        """Malformed data is counted, never raised into the SDK."""
        self.callbacks.gazeWanted = True
        self.callbacks.gaze({})
        self.callbacks.gaze(None)
        self.callbacks.userPosition({"left_user_position": (0, 0, 0)})
        self.callbacks.notification("connection_lost", 42)
        self.callbacks.streamError(None)
        self.assertEqual(self.callbacks.failures.total, 5)
        self.assertEqual(
            self.callbacks.failures.byStream(),
            {"gaze": 2, "user_position": 1, "notifications": 1, "stream_errors": 1},
        )
        # the first failure of each stream goes to the reactor, with its traceback
        failed = [data for kind, data in self.events if kind == CALLBACK_FAILED]
        self.assertEqual(
            [d["stream"] for d in failed],
            ["gaze", "user_position", "notifications", "stream_errors"],
        )
        self.assertIn("gaze_row", failed[0]["failure"].getTraceback())
        self.assertEqual(self.gaze, [])


class Callback1xTests(CallbackTests):
    version = "1.x"

    def test_notifications(self):
        self.assertNotIn(
            fake.EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW, self.callbacks.notifications
        )

    def test_track_box_feed(self):
        """SDK 1.x: gaze records also feed user positions, wanted or not."""
        self.callbacks.trackBoxFeed = True
        self.clock.advance(1.5)
        self.callbacks.gaze(self.record(0))
        self.assertEqual(self.gaze, [])
        arrived, (stamp, left, left_valid, right, right_valid) = self.callbacks.position
        self.assertEqual((arrived, stamp), (1_500_000, self.record(0)["system_time_stamp"]))


class FailureCountsTests(unittest.SynchronousTestCase):
    def test_one_report_at_a_time(self):
        counts = FailureCounts()
        self.assertTrue(counts.add("gaze"))
        self.assertFalse(counts.add("gaze", 3))
        self.assertTrue(counts.add("user_position"))
        self.assertEqual((counts.total, counts.count("gaze")), (5, 4))
        self.assertEqual(counts.endIfQuiet("gaze", 3), 4)  # more lost: the report goes on
        self.assertFalse(counts.add("gaze"))
        self.assertEqual(counts.endIfQuiet("gaze", 5), 5)  # quiet: it ends
        self.assertTrue(counts.add("gaze"))


class FailureReportTests(unittest.SynchronousTestCase):
    namespace = "jspsych_tobii.trackers.tobii_callbacks"

    def test_bounded_logging(self):
        """
        At 10 failures a second for 10 minutes: the traceback once, then a
        count a minute; once quiet, one line saying so; a new failure later
        is one line again.
        """
        clock = ClockReactor()
        sdk = fake.make_sdk("2.x")
        self.addCleanup(sdk.shutdown)
        device = sdk.add_device()
        notes = []

        def events(events):
            for _kind, data in events:  # as the tracker does with CALLBACK_FAILED
                report.start(data["stream"], data["failure"])

        callbacks = StreamCallbacks(clock, sdk, lambda: 0, lambda rows: None, events)
        report = FailureReport(
            clock, callbacks.failures, lambda message, data: notes.append(data), 60.0
        )
        lines = capture_log(self, self.namespace)
        record = device._gaze(0, 0, 1000.0)
        del record["right_pupil_validity"]
        callbacks.gazeWanted = True
        for _ in range(600):
            for _ in range(10):
                callbacks.gaze(record)
            clock.advance(1.0)
        self.assertEqual(callbacks.failures.byStream(), {"gaze": 6000})
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        levels = [event["log_level"].name for event in lines]
        self.assertEqual(levels, ["error"] + ["warn"] * 10)
        self.assertIn("599 more gaze records", lines[1]["log_format"].format(**lines[1]))
        self.assertEqual([n["count"] for n in notes], [1] + [600 * k for k in range(1, 11)])

        clock.advance(report.interval * 10)  # no more failures
        self.assertEqual([event["log_level"].name for event in lines[11:]], ["info"])
        callbacks.gaze(record)
        callbacks.gaze(record)
        self.assertEqual([event["log_level"].name for event in lines[12:]], ["error"])
        self.assertEqual(self.flushLoggedErrors(KeyError), [])  # no second traceback
        self.assertEqual(notes[-1]["count"], 6001)
        self.assertEqual(callbacks.failures.byStream(), {"gaze": 6002})

    def test_stop_cancels_the_counts(self):
        clock = task.Clock()
        counts = FailureCounts()
        notes = []
        report = FailureReport(clock, counts, lambda message, data: notes.append(message), 60.0)
        counts.add("gaze")
        report.start("gaze", Failure(KeyError("x")))
        self.flushLoggedErrors(KeyError)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        report.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(notes), 1)
