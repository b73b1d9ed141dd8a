"""
Tests for L{jspsych_tobii.server.requests}: one reply per request whatever
the handler does, the server's own error sentences, and the bounds on what
one connection's frames make the server do (turn budget, large frames on a
worker, one worker job at a time, pending replies).
"""

import json

import numpy as np
from twisted.internet import defer
from twisted.trial import unittest

from jspsych_tobii.core import messages
from jspsych_tobii.core.validation import (
    MAX_SAMPLES_PER_POINT,
    ClientCopies,
)
from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.server.requests import (
    DECODE_INLINE_BYTES,
    MAX_PENDING_REPLIES,
    TURN_BUDGET_S,
    LargeMessage,
    decode_large,
)

from .support import FakeServer, HeldWork, PauseRecorder


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


class WorkAndLimitsTests(unittest.SynchronousTestCase):
    """Worker jobs, large frames and pending replies: one connection's bounds."""

    def setUp(self):
        self.server = FakeServer(rate=120)
        self.client = self.server.client()

    def samples(self, n, start_ms=1000.0):
        return [{"x": 0.5, "y": 0.5, "timestamp": start_ms + i} for i in range(n)]

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
        reader = PauseRecorder()
        self.client.session.requests.reader = reader
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

    def test_large_message_joined_where_decoded(self):
        """
        A large message handed over in the pieces it arrived in is joined on
        the worker, not on the reactor, and answered as the whole would be.
        """
        work = self.server.state.work = HeldWork()
        self.client.send({"type": "validation_start"})
        samples = [
            {"x": 0.5, "y": 0.5, "timestamp": 1.0 + i, "pad": "p" * 100} for i in range(3000)
        ]
        payload = json.dumps(
            {
                "type": "validation_point",
                "requestId": "m",
                "point": {"x": 0.5, "y": 0.5},
                "gaze_samples": samples,
            }
        ).encode()
        self.assertGreater(len(payload), DECODE_INLINE_BYTES)
        pieces = [payload[i : i + 65536] for i in range(0, len(payload), 65536)]
        self.client.session.handle(LargeMessage(pieces, len(payload)))
        [(_, job, args, _)] = work.queue
        self.assertIs(job, decode_large)
        self.assertIsInstance(args[0], LargeMessage)  # still in pieces
        self.assertIsNone(self.client.reply("m"))
        work.run_next()
        reply = self.client.reply("m")
        self.assertIs(reply["success"], True, reply)
        self.assertEqual(reply["pointIndex"], 0)

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
        self.assertEqual(self.client.session.requests.pending, MAX_PENDING_REPLIES)
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
        self.assertEqual(self.client.session.requests.pending, 0)
        # fast requests are never refused
        self.client.gate.pauseProducing()
        for i in range(20):
            self.client.send({"type": "get_data", "requestId": f"h{i}"})
        self.client.send({"type": "time_sync", "clientTime": 1, "requestId": "t"})
        self.client.gate.resumeProducing()
        self.assertIs(self.client.reply("t")["success"], True)


class TurnBudgetTests(unittest.SynchronousTestCase):
    """A connection's requests take at most TURN_BUDGET_S of a reactor turn."""

    def test_requests_past_the_budget_wait_for_the_next_turn(self):
        server = FakeServer()
        client = server.client()
        reader = PauseRecorder()
        client.session.requests.reader = reader
        ticks = iter(range(10**6))
        tick = TURN_BUDGET_S / 4.2  # five requests pass the budget
        client.session.requests.work_clock = lambda: next(ticks) * tick
        turns = []
        original = client.session.requests._next_turn
        client.session.requests._next_turn = (
            lambda: turns.append(len(client.messages)) or original()
        )
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
        greedy.session.requests.work_clock = lambda: next(ticks) * 0.0012
        for i in range(50):
            greedy.send({"type": "time_sync", "clientTime": i})
        self.assertIs(other.request("time_sync", clientTime=1)["success"], True)
