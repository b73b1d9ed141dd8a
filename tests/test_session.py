"""
Tests for L{jspsych_tobii.server.session}: every request of the client
contract against the mock tracker, on a fake clock, in memory.
"""

import json

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
)
from jspsych_tobii.interfaces import TrackerError

from .support import FakeServer


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
        # the windows are read a point per reactor turn
        report = self.client.request("validation_compute", advance=0.01)
        self.assertEqual(report["type"], "validation_compute")

    def test_long_validation_windows_are_read_over_several_turns(self):
        """validation_compute copies about one full point's samples per reactor turn."""
        server = FakeServer(rate=1200)
        client = server.client()
        client.request("start_tracking", advance=5.0)
        client.send({"type": "validation_start"})
        span = [client.gaze[-3000], client.gaze[-1]]  # 2.5 s: 3,000 samples of the server's
        for _ in range(3):
            client.send(
                {"type": "validation_point", "point": {"x": 0.5, "y": 0.5}, "gaze_samples": span}
            )
        clock, turns = server.clock, []
        schedule = clock.callLater

        def next_turn(delay, f, *args, **kwargs):
            if delay == 0:
                turns.append(f)
            return schedule(delay, f, *args, **kwargs)

        self.patch(clock, "callLater", next_turn)
        client.send({"type": "validation_compute", "requestId": "compute"})
        self.assertIsNone(client.reply("compute"))  # the third point waits for a turn
        self.assertEqual(len(turns), 1)
        clock.advance(0)
        report = client.reply("compute")
        self.assertEqual(report["type"], "validation_compute", report)
        points = report["pointData"]
        self.assertEqual([p["sampleSource"] for p in points], ["server"] * 3)
        self.assertEqual([p["numSamples"] > 2000 for p in points], [True] * 3)  # after the skip

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
