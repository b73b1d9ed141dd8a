"""
Tests for L{jspsych_tobii.server.session}: every request of the client
contract against the mock tracker, on a fake clock, in memory.
"""

import json

import numpy as np
from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from jspsych_tobii.core import messages
from jspsych_tobii.core.markers import (
    MAX_MARKER_BYTES,
    MAX_MARKER_MEMORY_BYTES,
    MAX_MARKERS_IN_MEMORY,
)
from jspsych_tobii.core.validation import (
    MAX_SAMPLES_PER_POINT,
    MAX_VALIDATION_POINTS,
    ClientCopies,
)
from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.server.session import (
    DECODE_INLINE_BYTES,
    MAX_PENDING_REPLIES,
    TURN_BUDGET_S,
    decode_large,
)

from .support import FakeServer, HeldWork


class RequestTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.server = FakeServer(rate=120)
        self.client = self.server.client()

    def test_time_sync(self):
        self.server.clock.advance(12.5)
        reply = self.client.request("time_sync", clientTime=99.5)
        self.assertEqual(reply["type"], "time_sync")
        self.assertEqual(reply["serverTime"], 12500.0)
        self.assertEqual(reply["clientTime"], 99.5)

    def test_reply_type_is_the_request_type(self):
        """
        Every request type is answered with a message of its own type (as
        the original server did), so a client matching replies by type finds
        them; only errors are typed "error".
        """
        point = {"x": 0.5, "y": 0.5}
        flow = [
            ("time_sync", {"clientTime": 1.0}),
            ("start_tracking", {}),
            ("get_current_gaze", {}),
            ("get_data", {}),
            ("get_user_position", {}),
            ("get_device_clock_offset", {}),
            ("get_tracker_info", {}),
            ("get_status", {}),
            ("calibration_start", {}),
            ("calibration_point", {"point": point}),
            ("calibration_discard_point", {"point": point}),
            ("calibration_point", {"point": point}),
            ("calibration_compute", {}),
            ("get_calibration_data", {}),
            ("calibration_start", {}),
            ("calibration_stop", {}),
            ("validation_start", {}),
            ("mock_look_at", {"point": point}),
            ("validation_point", {"point": point, "gaze_samples": None}),
            ("validation_compute", {}),
            ("marker", {"label": "stimulus_on"}),
            ("get_markers", {}),
            ("stop_tracking", {}),
        ]
        self.assertEqual({kind for kind, _ in flow}, set(messages.SCHEMAS))
        for kind, fields in flow:
            if "gaze_samples" in fields:  # the client's copies of the last second
                fields = dict(fields, gaze_samples=self.client.gaze[-120:])
            reply = self.client.request(kind, advance=1.0, **fields)
            self.assertEqual(reply["type"], kind, reply)
            self.assertIsNot(reply.get("success"), False, reply)
        # a client that sends no requestId and waits for the type gets it
        self.client.messages.clear()
        self.client.send({"type": "get_status"})
        self.assertEqual([m["type"] for m in self.client.messages], ["get_status"])
        self.assertNotIn("requestId", self.client.messages[0])

    def test_time_sync_server_time_read_when_written(self):
        """serverTime is the time the reply goes out, not when the request was handled."""
        self.server.clock.advance(1.0)
        self.client.gate.pauseProducing()  # the client is not reading
        self.client.send({"type": "time_sync", "clientTime": 5.0, "requestId": "late"})
        self.server.clock.advance(0.25)
        self.client.gate.resumeProducing()
        reply = self.client.reply("late")
        self.assertEqual(reply["serverTime"], 1250.0)
        self.assertEqual((reply["clientTime"], reply["success"]), (5.0, True))

    def test_time_sync_request_id_like_the_placeholder(self):
        self.server.clock.advance(2.0)
        self.client.send({"type": "time_sync", "clientTime": 1.0, "requestId": "\x00clocked"})
        reply = self.client.reply("\x00clocked")
        self.assertEqual(reply["serverTime"], 2000.0)

    def test_every_error_echoes_request_id(self):
        for message in (
            {"type": "nope"},
            {"type": "calibration_point", "point": {"x": 3, "y": 0}},
            {"type": "get_data", "start_time": 2, "end_time": 1},
            {"type": "time_sync", "clientTime": "soon"},
            {"type": "calibration_compute"},
            {"type": "validation_compute"},
        ):
            message["requestId"] = "req_err"
            self.client.messages.clear()
            self.client.send(message)
            self.assertEqual(len(self.client.messages), 1, message)
            reply = self.client.messages[0]
            self.assertEqual(reply["requestId"], "req_err")
            self.assertEqual(reply["type"], "error")
            self.assertIs(reply["success"], False)
            self.assertTrue(reply["error"])

    def test_bad_input_leaves_session_usable(self):
        self.client.send(b"\x00garbage")
        self.client.send(b"[]")
        self.client.send(b'{"type": "time_sync", "clientTime": NaN, "requestId": "r1"}')
        self.assertEqual(self.client.messages[-1]["requestId"], "r1")
        reply = self.client.request("start_tracking")
        self.assertIs(reply["success"], True)
        self.server.advance(0.1)
        self.assertTrue(self.client.gaze)

    def test_tracking_streams_gaze_and_is_idempotent(self):
        first = self.client.request("start_tracking")
        second = self.client.request("start_tracking")
        self.assertIs(first["success"], True)
        self.assertIs(second["alreadyTracking"], True)
        self.server.advance(1.0)
        self.assertEqual(len(self.client.gaze), 120)
        seqs = [g["seq"] for g in self.client.gaze]
        self.assertEqual(seqs, list(range(120)))
        self.client.request("stop_tracking")
        count = len(self.client.gaze)
        self.server.advance(0.5)
        self.assertEqual(len(self.client.gaze), count)
        self.assertFalse(self.server.state.hub.running)

    def test_stop_tracking_when_not_tracking(self):
        reply = self.client.request("stop_tracking")
        self.assertIs(reply["success"], True)

    def test_current_gaze_only_from_current_session(self):
        self.assertIsNone(self.client.request("get_current_gaze")["gaze"])
        self.client.request("start_tracking")
        self.server.advance(0.5)
        gaze = self.client.request("get_current_gaze")["gaze"]
        self.assertEqual(gaze["seq"], self.client.gaze[-1]["seq"])
        self.client.request("stop_tracking")
        self.assertIsNone(self.client.request("get_current_gaze")["gaze"])
        self.client.request("start_tracking")
        self.assertIsNone(self.client.request("get_current_gaze")["gaze"])
        offset = self.client.request("get_device_clock_offset")
        self.assertEqual(offset["sample_count"], 0)
        self.server.advance(0.1)
        self.assertEqual(self.client.request("get_current_gaze")["gaze"]["seq"], 11)

    def test_get_data_time_range(self):
        self.client.request("start_tracking")
        self.server.advance(1.0)
        gaze = self.client.gaze
        start, end = gaze[10]["timestamp"], gaze[20]["timestamp"]
        reply = self.client.request("get_data", advance=0.01, start_time=start, end_time=end)
        self.assertEqual([s["seq"] for s in reply["samples"]], list(range(10, 21)))
        self.assertEqual(reply["samples"][0], gaze[10])
        everything = self.client.request("get_data", advance=0.01)
        # everything up to the request (the stream went on while it was encoded)
        count = everything["count"]
        self.assertGreaterEqual(count, 120)
        self.assertEqual(everything["samples"], self.client.gaze[:count])

    def test_connection_closed_during_a_streamed_reply(self):
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.client.request("start_tracking")
        self.server.advance(1.0)
        self.client.send({"type": "get_data", "requestId": "big"})
        self.client.close()
        self.server.advance(0.1)
        self.assertIsNone(self.client.reply("big"))
        said = [formatEvent(e) for e in seen if "reply was sent" in e.get("log_format", "")]
        self.assertEqual(
            said, ["127.0.0.1: the connection closed before its get_data reply was sent"]
        )

    def test_device_clock_offset(self):
        self.client.request("start_tracking")
        self.server.advance(0.5)
        reply = self.client.request("get_device_clock_offset")
        self.assertIs(reply["success"], True)
        self.assertEqual(reply["offset"], 0.0)
        self.assertEqual(reply["sample_count"], 60)
        # the mock delivers every 2 ms: a sample is at most that old on arrival
        self.assertTrue(0 <= reply["latest_delivery_latency_ms"] <= 8.4)

    def test_user_position(self):
        position = self.client.request("get_user_position")["position"]
        for key in ("leftX", "leftY", "leftZ", "rightX", "rightY", "rightZ"):
            self.assertTrue(0.0 <= position[key] <= 1.0)
        self.assertIs(position["leftValid"], True)

    def test_status_and_info(self):
        info = self.client.request("get_tracker_info")["tracker"]
        self.assertEqual(info["model"], "Mock Tracker")
        status = self.client.request("get_status")
        self.assertIs(status["trackerConnected"], True)

    def test_internal_error_is_reported_not_raised(self):
        def broken(request, received):
            raise KeyError("bug")

        self.client.session.do_get_status = broken
        reply = self.client.request("get_status")
        self.assertEqual(reply["type"], "error")
        self.assertIn("internal server error", reply["error"])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertIs(self.client.request("time_sync", clientTime=1)["success"], True)


class GetDataCompletenessTests(unittest.SynchronousTestCase):
    """Without --record-dir, get_data says when a range reaches past the memory buffer."""

    def setUp(self):
        self.server = FakeServer(rate=120, buffer_size=60)  # half a second in memory
        self.client = self.server.client()
        self.warnings = []

        def observe(event):
            if event.get("log_level") == LogLevel.warn and "get_data" in event["log_format"]:
                self.warnings.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def get_data(self, client=None, **fields):
        return (client or self.client).request("get_data", advance=0.01, **fields)

    def test_truncated_answer_says_so(self):
        self.client.request("start_tracking")
        self.server.advance(0.4)
        whole = self.get_data()
        self.assertEqual((whole["truncated"], whole["samples"][0]["seq"]), (False, 0))
        self.assertNotIn("availableFrom", whole)
        self.server.advance(1.0)  # the first samples of the session leave memory
        reply = self.get_data()
        self.assertIs(reply["success"], True)
        self.assertEqual(reply["count"], 60)
        self.assertGreater(reply["samples"][0]["seq"], 0)
        self.assertIs(reply["truncated"], True)
        self.assertEqual(reply["availableFrom"], reply["samples"][0]["timestamp"])
        # a range within memory is whole (the stream moves on 10 ms per request);
        # one before it is not
        available = reply["availableFrom"]
        self.assertIs(self.get_data(start_time=available + 100)["truncated"], False)
        early = self.get_data(start_time=0.0, end_time=available - 100)
        self.assertEqual((early["count"], early["truncated"]), (0, True))
        self.assertGreater(early["availableFrom"], available, "memory moved on meanwhile")

    def test_logged_once_per_tracking_session(self):
        other = self.server.client("10.0.0.9")
        self.client.request("start_tracking")
        self.server.advance(1.0)
        for client in (self.client, other, self.client):
            self.assertIs(self.get_data(client, start_time=0.0)["truncated"], True)
        self.assertEqual(len(self.warnings), 1, self.warnings)
        self.assertIn("tracking session 1", self.warnings[0])
        self.assertIn("--record-dir", self.warnings[0])
        self.client.request("stop_tracking")
        self.client.request("start_tracking")
        self.server.advance(1.0)
        self.assertIs(self.get_data(start_time=0.0)["truncated"], True)
        self.assertEqual(len(self.warnings), 2)
        self.assertIn("tracking session 2", self.warnings[1])


class ErrorTextTests(unittest.SynchronousTestCase):
    """What a client is told is the server's own sentence, never Python's."""

    INTERNAL = "internal server error while handling get_status; the server's log has the details"

    def setUp(self):
        self.server = FakeServer(rate=120)
        self.client = self.server.client()

    def failing_with(self, handler):
        self.client.session.do_get_status = handler
        return self.client.request("get_status")["error"]

    def test_python_exception_text_stays_in_the_log(self):
        def overflow(request, received):
            raise OverflowError("Python int too large to convert to C long")

        self.assertEqual(self.failing_with(overflow), self.INTERNAL)
        self.assertEqual(len(self.flushLoggedErrors(OverflowError)), 1)

    def test_library_value_error_is_internal(self):
        def reshape(request, received):
            return np.zeros(2).reshape(3)  # numpy raises ValueError

        self.assertEqual(self.failing_with(reshape), self.INTERNAL)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_our_value_error_is_shown(self):
        def ours(request, received):
            return messages._number("clientTime", "soon")

        self.assertEqual(self.failing_with(ours), "'clientTime' must be a number, got a string")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failed_deferred_without_traceback(self):
        def refused(request, received):
            return defer.fail(TrackerError("no eye tracker connected"))

        self.assertEqual(self.failing_with(refused), "no eye tracker connected")

    def test_huge_integers_in_validation_samples(self):
        """The client's copies with 27-digit integers: whatever happens, no Python text."""
        self.client.request("start_tracking")
        self.server.advance(0.5)
        self.client.request("validation_start")
        huge = "-1" + "0" * 25
        self.client.send(
            '{"type": "validation_point", "requestId": "v", "point": {"x": 0.5, "y": 0.5}, '
            f'"gaze_samples": [{{"x": {huge}, "y": 0.5, "timestamp": 1}}]}}'
        )
        reply = self.client.request("validation_compute")
        self.flushLoggedErrors()
        text = json.dumps(reply)
        for python in ("ufunc", "TypeError", "OverflowError", "casting rule", "Error("):
            self.assertNotIn(python, text)


class NoTrackerTests(unittest.SynchronousTestCase):
    """
    No tracker connected: what the client reads still answers (C{success:
    true}, C{null} for what only a tracker knows, C{trackerConnected:
    false} and why); what needs the tracker to act is an error.
    """

    def setUp(self):
        self.server = FakeServer(start=False)
        self.server.tracker.failNext("connect", TrackerError("no eye tracker connected"))
        self.server.trackers.startService()
        self.client = self.server.client()

    def answered(self, kind, **fields):
        reply = self.client.request(kind, advance=0.01, **fields)
        self.assertEqual(reply["type"], kind, reply)
        self.assertIs(reply["success"], True, reply)
        return reply

    def assert_not_connected(self, reply):
        self.assertIs(reply["trackerConnected"], False)
        self.assertIn("no eye tracker connected", reply["trackerError"])

    def test_polled_and_read_only_requests_answer(self):
        # the user-position plugin polls this every 100 ms
        reply = self.answered("get_user_position")
        self.assertIsNone(reply["position"])
        self.assert_not_connected(reply)
        reply = self.answered("get_current_gaze")
        self.assertIsNone(reply["gaze"])
        self.assert_not_connected(reply)
        # B and C are one clock whatever tracker connects: the offset stands
        reply = self.answered("get_device_clock_offset")
        self.assertEqual((reply["offset"], reply["sample_count"]), (0.0, 0))
        self.assert_not_connected(reply)
        reply = self.answered("get_tracker_info")
        self.assertIsNone(reply["tracker"])
        self.assert_not_connected(reply)
        reply = self.answered("get_status")
        self.assertIs(reply["trackerConnected"], False)
        self.assertIn("no eye tracker connected", reply["trackerError"])
        self.assertIs(reply["tracking"], False)
        reply = self.answered("get_data")
        self.assertEqual((reply["samples"], reply["count"]), ([], 0))
        self.assertEqual(self.answered("get_markers")["markers"], [])
        self.assertEqual(self.answered("marker", label="no tracker")["label"], "no tracker")
        self.assertIs(self.answered("stop_tracking")["tracking"], False)
        self.assertIsInstance(self.answered("time_sync", clientTime=0)["serverTime"], float)
        self.answered("validation_start")

    def test_requests_that_need_the_tracker_are_errors(self):
        for kind, fields in (
            ("start_tracking", {}),
            ("calibration_start", {}),
            ("calibration_point", {"point": {"x": 0.5, "y": 0.5}}),
            ("calibration_compute", {}),
            ("mock_look_at", {"point": {"x": 0.5, "y": 0.5}}),
        ):
            reply = self.client.request(kind, advance=1.0, **fields)
            self.assertEqual(reply["type"], "error", kind)
            self.assertEqual(reply["requestType"], kind)
            self.assertIn("no eye tracker connected", reply["error"])
        # no calibration was ever computed: said as before, not an error type
        reply = self.client.request("get_calibration_data")
        self.assertEqual((reply["type"], reply["success"]), ("get_calibration_data", False))

    def test_the_service_retries(self):
        self.server.clock.advance(self.server.config.retry_interval)
        self.assertIs(self.client.request("start_tracking")["success"], True)
        statuses = [m for m in self.client.messages if m.get("type") == "tracker_status"]
        self.assertEqual(statuses[-1]["status"], "connected")
        reply = self.answered("get_user_position")
        self.assertIsNotNone(reply["position"])
        self.assertIs(reply["trackerConnected"], True)
        self.assertNotIn("trackerError", reply)
        self.assertEqual(self.answered("get_tracker_info")["tracker"]["model"], "Mock Tracker")


class SeveralClientsTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.server = FakeServer(rate=120)
        self.a = self.server.client("10.0.0.1")
        self.b = self.server.client("10.0.0.2")

    def test_one_subscription_each_keeps_its_stream(self):
        self.a.request("start_tracking")
        self.b.request("start_tracking")
        self.server.advance(0.5)
        self.assertEqual(self.a.gaze, self.b.gaze)
        self.a.request("stop_tracking")
        before = len(self.b.gaze)
        self.server.advance(0.5)
        self.assertEqual(len(self.b.gaze), before + 60)
        self.assertEqual(self.server.state.hub.session, 1, "b's stream was restarted")

    def test_disconnect_stops_no_one_else(self):
        self.a.request("start_tracking")
        self.b.request("start_tracking")
        self.a.close()
        before = len(self.b.gaze)
        self.server.advance(0.5)
        self.assertEqual(len(self.b.gaze), before + 60)

    def test_bad_client_does_not_disturb_other(self):
        self.b.request("start_tracking")
        for junk in (b"{", b"null", b'{"type": "get_data", "start_time": 1e999}', b"\xff" * 100):
            self.a.send(junk)
        self.server.advance(0.5)
        self.assertEqual([g["seq"] for g in self.b.gaze], list(range(60)))
        self.assertTrue(all(m["type"] == "error" for m in self.a.messages))
        self.assertEqual([m for m in self.b.messages if m["type"] == "error"], [])

    def test_notifications_reach_every_client(self):
        self.server.tracker.notify("display_area_changed", "moved")
        for client in (self.a, self.b):
            self.assertEqual(client.messages[-1]["type"], "tracker_status")
            self.assertEqual(client.messages[-1]["status"], "display_area_changed")
            json.dumps(client.messages[-1])

    def test_connection_lost_and_restored(self):
        self.a.request("start_tracking")
        self.server.advance(0.1)
        self.server.tracker.notify("connection_lost", "cable")
        self.server.tracker.stopGaze()  # a real device stops delivering
        self.assertEqual(self.a.request("start_tracking")["alreadyTracking"], True)
        position = self.b.request("get_user_position")
        self.assertEqual((position["position"], position["trackerConnected"]), (None, False))
        info = self.b.request("get_tracker_info")
        self.assertEqual(info["tracker"]["model"], "Mock Tracker", "the lost tracker is described")
        self.assertIs(info["trackerConnected"], False)
        before = len(self.a.gaze)
        self.server.tracker.notify("connection_restored")
        self.server.advance(0.5)
        self.assertGreater(len(self.a.gaze), before + 50, "stream did not resume")
        # the same tracking session goes on: sample numbers continue, the
        # samples from before the loss are still there
        self.assertEqual(self.server.state.hub.session, 1)
        seqs = [g["seq"] for g in self.a.gaze]
        self.assertEqual(seqs, list(range(len(seqs))))
        self.assertEqual(self.server.state.hub.buffer.snapshot()["seq"][0], 0)


class LimitsTests(unittest.SynchronousTestCase):
    """What one connection may make the server hold or do (docs/PROTOCOL.md, Limits)."""

    def setUp(self):
        self.server = FakeServer(rate=120)
        self.client = self.server.client()

    def samples(self, n, start_ms=1000.0):
        return [{"x": 0.5, "y": 0.5, "timestamp": start_ms + i} for i in range(n)]

    def test_too_many_samples_in_a_validation_point(self):
        self.client.send({"type": "validation_start"})
        reply = self.client.request(
            "validation_point",
            point={"x": 0.5, "y": 0.5},
            gaze_samples=self.samples(MAX_SAMPLES_PER_POINT + 1),
        )
        self.assertEqual(reply["type"], "error")
        self.assertIn(f"at most {MAX_SAMPLES_PER_POINT} per point", reply["error"])
        self.assertIn(str(MAX_SAMPLES_PER_POINT + 1), reply["error"])
        ok = self.client.request(
            "validation_point",
            point={"x": 0.5, "y": 0.5},
            gaze_samples=self.samples(MAX_SAMPLES_PER_POINT),
        )
        self.assertIs(ok["success"], True)
        # the plugin sends points fire-and-forget: its awaited compute says why
        report = self.client.request("validation_compute")
        self.assertEqual(report["type"], "error")
        self.assertIn("validation_point 1 was refused", report["error"])
        self.assertIn(f"at most {MAX_SAMPLES_PER_POINT}", report["error"])
        # a new validation starts clean
        self.client.send({"type": "validation_start"})
        self.client.send(
            {"type": "validation_point", "point": {"x": 0.5, "y": 0.5}, "gaze_samples": []}
        )
        self.assertEqual(self.client.request("validation_compute")["type"], "validation_compute")

    def test_too_many_validation_points(self):
        self.client.send({"type": "validation_start"})
        for _ in range(MAX_VALIDATION_POINTS):
            self.client.send(
                {"type": "validation_point", "point": {"x": 0.5, "y": 0.5}, "gaze_samples": []}
            )
        reply = self.client.request("validation_point", point={"x": 0.5, "y": 0.5})
        self.assertEqual(reply["type"], "error")
        self.assertIn(f"at most {MAX_VALIDATION_POINTS} points", reply["error"])
        self.assertEqual(len(self.client.session.validation.points), MAX_VALIDATION_POINTS)
        report = self.client.request("validation_compute")
        self.assertIn(f"validation_point {MAX_VALIDATION_POINTS + 1} was refused", report["error"])

    def test_validation_compute_runs_as_a_worker_job(self):
        """
        The maths runs on the worker pool, on its own copy of the samples,
        while the other clients' gaze flows.
        """
        self.server = FakeServer(rate=120, buffer_size=200)
        self.client = self.server.client()
        work = self.server.state.work = HeldWork()
        watcher = self.server.client("10.0.0.9")
        watcher.request("start_tracking")
        self.client.request("start_tracking")
        self.server.advance(1.0)
        self.client.send({"type": "validation_start"})
        self.client.send(
            {
                "type": "validation_point",
                "point": {"x": 0.5, "y": 0.5},
                "gaze_samples": self.client.gaze[-100:],
            }
        )
        self.client.send({"type": "validation_compute", "requestId": "v"})
        self.assertEqual(len(work.queue), 1)
        before = len(watcher.gaze)
        self.server.advance(3.0)  # the job waits; the stream does not
        self.assertEqual(len(watcher.gaze), before + 360)
        self.assertIsNone(self.client.reply("v"))
        # the buffer (200 samples) has moved past the point's window meanwhile
        oldest = self.server.state.hub.buffer.oldest_time_us()
        self.assertGreater(oldest, self.client.gaze[-1 - 360]["timestamp"] * 1000)
        work.run_next()
        report = self.client.reply("v")
        self.assertIs(report["success"], True)
        item = report["pointData"][0]
        self.assertEqual(item["sampleSource"], "server")
        # 100 samples at 120 Hz, less the first 300 ms
        self.assertEqual(item["numSamples"], 100 - 36)

    def test_one_worker_job_per_connection_at_a_time(self):
        work = self.server.state.work = HeldWork()
        other = self.server.client("10.0.0.9")
        for client in (self.client, other):
            client.send({"type": "validation_start"})
            client.send(
                {"type": "validation_point", "point": {"x": 0.5, "y": 0.5}, "gaze_samples": []}
            )
        self.client.send({"type": "validation_compute", "requestId": "a1"})
        self.client.send({"type": "validation_compute", "requestId": "a2"})
        other.send({"type": "validation_compute", "requestId": "b1"})
        # a2 waits for a1: b1 is not queued behind both
        self.assertEqual(len(work.queue), 2)
        work.run_next()
        work.run_next()
        self.assertIsNotNone(self.client.reply("a1"))
        self.assertIsNotNone(other.reply("b1"))
        self.assertIsNone(self.client.reply("a2"))
        work.run_next()
        self.assertIsNotNone(self.client.reply("a2"))

    def test_large_frame_decoded_aside_and_order_kept(self):
        """
        A frame over DECODE_INLINE_BYTES is decoded on the worker pool; the
        frames after it wait (their socket is paused), and are answered in order.
        """
        work = self.server.state.work = HeldWork()
        reader = Reader()
        self.client.session.reader = reader
        self.client.send({"type": "validation_start"})
        big = {
            "type": "validation_point",
            "requestId": "big",
            "point": {"x": 0.5, "y": 0.5},
            "gaze_samples": [{"x": 0.5, "y": 0.5, "timestamp": 1.0, "pad": "p" * 100}] * 3000,
        }
        payload = json.dumps(big).encode()
        self.assertGreater(len(payload), DECODE_INLINE_BYTES)
        self.client.send(payload)
        self.client.send({"type": "time_sync", "clientTime": 1, "requestId": "after"})
        self.client.send({"type": "validation_compute", "requestId": "compute"})
        self.assertEqual(reader.events, ["pause"])
        self.assertEqual(len(work.queue), 1)
        self.assertIsNone(self.client.reply("after"))
        work.run_next()  # the decode
        self.assertEqual(reader.events, ["pause", "resume"])
        work.run_next()  # the compute, which saw the point
        ids = [m.get("requestId") for m in self.client.messages]
        self.assertEqual(ids[-3:], ["big", "after", "compute"])
        self.assertEqual(self.client.reply("compute")["numPoints"], 1)

    def test_large_point_reduced_where_decoded(self):
        """
        On the decoding thread a point's samples become ClientCopies and the
        decoded dicts are let go there (freeing them takes milliseconds).
        """
        for n in (3000, MAX_SAMPLES_PER_POINT + 1):
            samples = [{"x": 0.5, "y": 0.5, "timestamp": 1.0 + i} for i in range(n)]
            payload = json.dumps(
                {"type": "validation_point", "point": {"x": 0.5, "y": 0.5}, "gaze_samples": samples}
            ).encode()
            request = decode_large(payload, False)
            copies = request.params["gaze_samples"]
            self.assertIsInstance(copies, ClientCopies)
            self.assertEqual(copies.count, n)
            self.assertNotIn("gaze_samples", request.raw)
            self.assertEqual(len(copies.rows), n if n <= MAX_SAMPLES_PER_POINT else 0)

    def test_large_invalid_frame_gets_its_error(self):
        self.server.state.work = HeldWork()
        payload = b'{"requestId": "bad", "type": "marker", "data": [' + b"1," * 200_000 + b"]"
        self.client.send(payload)
        self.server.state.work.run_next()
        reply = self.client.reply("bad")
        self.assertIn("invalid JSON", reply["error"])
        self.assertIs(self.client.request("time_sync", clientTime=1)["success"], True)

    def test_pending_replies_bounded(self):
        """A client that does not read its get_data replies has at most 8 in flight."""
        self.client.request("start_tracking")
        self.server.advance(2.0)
        self.client.gate.pauseProducing()  # the client's socket is full
        for i in range(100):
            self.client.send({"type": "get_data", "requestId": f"g{i}"})
        self.assertEqual(self.client.session.pending, MAX_PENDING_REPLIES)
        self.client.gate.resumeProducing()
        self.server.clock.advance(0)
        for _ in range(200):
            self.server.clock.advance(0)
        replies = {m["requestId"]: m for m in self.client.messages if "requestId" in m}
        for i in range(MAX_PENDING_REPLIES):
            self.assertIs(replies[f"g{i}"]["success"], True)
            self.assertGreater(replies[f"g{i}"]["count"], 200)
        for i in range(MAX_PENDING_REPLIES, 100):
            self.assertEqual(replies[f"g{i}"]["type"], "error")
            self.assertIn(f"at most {MAX_PENDING_REPLIES}", replies[f"g{i}"]["error"])
        self.assertEqual(self.client.session.pending, 0)
        # fast requests are never refused
        self.client.gate.pauseProducing()
        for i in range(20):
            self.client.send({"type": "get_data", "requestId": f"h{i}"})
        self.client.send({"type": "time_sync", "clientTime": 1, "requestId": "t"})
        self.client.gate.resumeProducing()
        self.assertIs(self.client.reply("t")["success"], True)

    def test_marker_size(self):
        reply = self.client.request("marker", label="big", data={"text": "x" * MAX_MARKER_BYTES})
        self.assertEqual(reply["type"], "error")
        self.assertIn(f"more than {MAX_MARKER_BYTES} bytes", reply["error"])
        reply = self.client.request("marker", label="ok", data={"text": "x" * 60_000})
        self.assertIs(reply["success"], True)
        self.assertEqual(self.client.request("get_markers")["count"], 1)

    def test_markers_in_memory_bounded_in_bytes(self):
        data = {"text": "x" * 60_000}
        n = MAX_MARKER_MEMORY_BYTES // 60_000 + 10
        for i in range(n):
            self.assertIs(self.client.request("marker", label=f"m{i}", data=data)["success"], True)
        hub = self.server.state.hub
        self.assertLessEqual(hub.markers.bytes, MAX_MARKER_MEMORY_BYTES)
        reply = self.client.request("get_markers")
        self.assertEqual(reply["count"], len(reply["markers"]))
        self.assertEqual(reply["count"] + reply["evicted"], n)
        self.assertGreater(reply["evicted"], 0)
        self.assertEqual(reply["markers"][-1]["label"], f"m{n - 1}")
        self.assertEqual(reply["markers"][-1]["data"], data)

    def test_markers_in_memory_bounded_in_count(self):
        n = MAX_MARKERS_IN_MEMORY + 5
        for i in range(n):
            self.client.send({"type": "marker", "label": f"m{i}"})
        reply = self.client.request("get_markers")
        self.assertEqual(reply["count"], MAX_MARKERS_IN_MEMORY)
        self.assertEqual(reply["evicted"], 5)
        self.assertEqual(reply["markers"][0]["label"], "m5")

    def test_markers_of_a_client_that_left(self):
        """Markers are the session's, within the limits, whoever sent them."""
        for i in range(3):
            self.client.request("marker", label=f"m{i}")
        self.client.close()
        other = self.server.client("10.0.0.9")
        self.assertEqual(other.request("get_markers")["count"], 3)


class TurnBudgetTests(unittest.SynchronousTestCase):
    """A connection's requests take at most TURN_BUDGET_S of a reactor turn."""

    def test_requests_past_the_budget_wait_for_the_next_turn(self):
        server = FakeServer()
        client = server.client()
        reader = Reader()
        client.session.reader = reader
        ticks = iter(range(10**6))
        tick = TURN_BUDGET_S / 4.2  # five requests pass the budget
        client.session.work_clock = lambda: next(ticks) * tick
        turns = []
        original = client.session._next_turn
        client.session._next_turn = lambda: turns.append(len(client.messages)) or original()
        for i in range(12):
            client.send({"type": "time_sync", "clientTime": i, "requestId": f"t{i}"})
        answered = [m["requestId"] for m in client.messages]
        self.assertEqual(answered, [f"t{i}" for i in range(5)])
        self.assertEqual(reader.events, ["pause"])
        server.clock.advance(0)  # (a Clock runs the turns that follow at once)
        answered = [m["requestId"] for m in client.messages]
        self.assertEqual(answered, [f"t{i}" for i in range(12)])
        self.assertEqual(turns[:3], [5, 10, 12], "five requests per turn")
        self.assertEqual(reader.events, ["pause", "resume"])

    def test_other_clients_are_not_held_back(self):
        server = FakeServer()
        greedy, other = server.client(), server.client("10.0.0.9")
        ticks = iter(range(10**6))
        greedy.session.work_clock = lambda: next(ticks) * 0.0012
        for i in range(50):
            greedy.send({"type": "time_sync", "clientTime": i})
        self.assertIs(other.request("time_sync", clientTime=1)["success"], True)


class Reader:
    """A transport's incoming side: records pauses and resumes."""

    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")
