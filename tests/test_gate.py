"""
Tests for L{jspsych_tobii.server.gate.SendGate}.
"""

import json

from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jspsych_tobii.server.gate import (
    CLOSE_NOT_READING,
    MAX_REPLY_BACKLOG,
    MAX_REPLY_BACKLOG_BYTES,
    STREAM_LEAST_WAIT_S,
    SendGate,
)


class Turns:
    """
    A reactor stand-in where C{advance()} is one reactor turn: it runs the
    calls scheduled before it, not the ones they schedule (unlike
    L{task.Clock}, whose advance(0) would run a whole stream at once).
    """

    class Call:
        def __init__(self, f, args):
            self.f, self.args, self.done = f, args, False

        def active(self):
            return not self.done

        def cancel(self):
            self.done = True

    def __init__(self):
        self.calls = []
        self.now = 0.0

    def seconds(self):
        return self.now

    def callLater(self, delay, f, *args):
        call = self.Call(f, args)
        self.calls.append(call)
        return call

    def advance(self, seconds=0):
        self.now += seconds
        calls, self.calls = self.calls, []
        for call in calls:
            if not call.done:
                call.done = True
                call.f(*call.args)


class Recorder:
    """A channel that records what the gate sends through it."""

    def __init__(self):
        self.sent = []
        self.aborted = False
        self.closed_with = None
        self.clock = Turns()

    def gate(self, backlog=3):
        return SendGate(self, self.clock, peer="test", gaze_backlog=backlog)

    def send_prepared(self, prepared):
        self.sent.append(("gaze", prepared))

    def send_prepared_batch(self, frames):
        self.sent.append(("batch", list(frames)))

    def send_bytes(self, payload):
        self.sent.append(("bytes", payload))

    def send_now(self, payload):
        self.sent.append(("now", payload))

    def begin_message(self):
        self.sent.append(("begin", None))

    def send_fragment(self, data):
        self.sent.append(("fragment", data))

    def end_message(self):
        self.sent.append(("end", None))

    def abort(self):
        self.aborted = True

    def send_pong(self, payload):
        self.sent.append(("pong", payload))

    def send_close(self, code, reason):
        self.closed_with = (code, reason)


class SendGateTests(unittest.SynchronousTestCase):
    def test_is_push_producer(self):
        self.assertTrue(verifyObject(IPushProducer, Recorder().gate()))

    def test_passes_through_when_running(self):
        r = Recorder()
        gate = r.gate()
        gate.send_gaze(1)
        gate.send_bytes(b"x")
        self.assertEqual(r.sent, [("gaze", 1), ("bytes", b"x")])

    def test_bounded_backlog_while_paused(self):
        """A paused client keeps the newest frames only and is told what it missed."""
        r = Recorder()
        gate = r.gate(backlog=3)
        gate.pauseProducing()
        for i in range(10):
            gate.send_gaze(i)
        gate.send_bytes(b"reply")
        self.assertEqual(r.sent, [])
        self.assertEqual(gate.backlog, 4)
        self.assertEqual(gate.dropped, 7)
        gate.resumeProducing()
        self.assertEqual(r.sent[:4], [("bytes", b"reply"), ("gaze", 7), ("gaze", 8), ("gaze", 9)])
        status = json.loads(r.sent[4][1])
        self.assertEqual(status["type"], "stream_status")
        self.assertEqual(status["dropped"], 7)
        self.assertEqual(gate.backlog, 0)
        self.flushLoggedErrors()

    def test_pause_during_flush(self):
        """If the transport pauses the gate again mid-flush, the rest waits."""
        r = Recorder()
        gate = r.gate(backlog=10)
        gate.pauseProducing()
        for i in range(5):
            gate.send_gaze(i)

        original = r.send_prepared

        def send(p):
            original(p)
            if p == 1:
                gate.pauseProducing()

        r.send_prepared = send
        gate.resumeProducing()
        self.assertEqual([p for _, p in r.sent], [0, 1])
        gate.send_gaze(5)  # still queued behind the backlog: order kept
        gate.resumeProducing()
        self.assertEqual([p for _, p in r.sent], [0, 1, 2, 3, 4, 5])

    def test_batch_in_one_send_when_running(self):
        r = Recorder()
        gate = r.gate(backlog=10)
        gate.send_gaze_batch([1, 2, 3])
        self.assertEqual(r.sent, [("batch", [1, 2, 3])])
        self.assertEqual(gate.sent_gaze, 3)

    def test_batch_kept_frame_by_frame_while_paused(self):
        """A paused client keeps a batch's frames like single ones: the newest, in order."""
        r = Recorder()
        gate = r.gate(backlog=4)
        gate.pauseProducing()
        gate.send_gaze_batch([1, 2, 3])
        gate.send_gaze_batch([4, 5, 6])
        self.assertEqual((r.sent, gate.backlog, gate.dropped), ([], 4, 2))
        gate.resumeProducing()
        gate.send_gaze_batch([7, 8])  # after the backlog, in one send
        self.assertEqual(
            r.sent[:4] + r.sent[5:],
            [("gaze", 3), ("gaze", 4), ("gaze", 5), ("gaze", 6)] + [("batch", [7, 8])],
        )
        self.assertEqual(json.loads(r.sent[4][1])["dropped"], 2)
        self.assertEqual(gate.sent_gaze, 6)
        self.flushLoggedErrors()

    def test_batch_waits_behind_a_backlog(self):
        r = Recorder()
        gate = r.gate(backlog=10)
        gate.pauseProducing()
        gate.send_gaze(1)
        gate.paused = False  # resumed by hand: the backlog is still there
        gate.send_gaze_batch([2, 3])
        self.assertEqual(r.sent, [])
        gate.resumeProducing()
        self.assertEqual([p for _, p in r.sent], [1, 2, 3])

    def test_no_batch_once_closed(self):
        r = Recorder()
        gate = r.gate()
        gate.close()
        gate.send_gaze_batch([1, 2])
        self.assertEqual(r.sent, [])

    def test_order_kept_after_resume(self):
        r = Recorder()
        gate = r.gate(backlog=10)
        gate.pauseProducing()
        gate.send_gaze(1)
        gate.resumeProducing()
        gate.send_gaze(2)
        self.assertEqual([p for _, p in r.sent], [1, 2])

    def test_client_not_reading_replies_is_closed(self):
        """Past MAX_REPLY_BACKLOG replies: a close frame (1008), and the backlog let go."""
        r = Recorder()
        gate = r.gate()
        gate.pauseProducing()
        for _ in range(MAX_REPLY_BACKLOG):
            gate.send_bytes(b"r")
        self.assertIsNone(r.closed_with)
        gate.send_bytes(b"r")
        self.assertEqual(r.closed_with[0], CLOSE_NOT_READING)
        self.assertIn("not reading", r.closed_with[1])
        self.assertLessEqual(len(r.closed_with[1].encode()), 123)
        self.assertTrue(gate.closed)
        self.assertEqual(gate.backlog, 0)
        gate.resumeProducing()
        self.assertEqual(r.sent, [])
        self.flushLoggedErrors()

    def test_reply_backlog_bounded_in_bytes(self):
        """A few large replies a client does not read close it once they pass the byte budget."""
        r = Recorder()
        gate = r.gate()
        gate.pauseProducing()
        big = b"x" * (MAX_REPLY_BACKLOG_BYTES // 4)
        for _ in range(4):
            gate.send_bytes(big)
        self.assertIsNone(r.closed_with, "exactly at the budget is still allowed")
        gate.send_bytes(b"y")
        self.assertEqual(r.closed_with[0], CLOSE_NOT_READING)
        self.assertTrue(gate.closed)
        self.assertEqual(gate._reply_bytes, 0)

    def test_reply_bytes_counted_down_when_sent(self):
        """Replies that go out no longer count against the budget."""
        r = Recorder()
        gate = r.gate()
        big = b"x" * (MAX_REPLY_BACKLOG_BYTES // 2)
        for _ in range(10):
            gate.pauseProducing()
            gate.send_bytes(big)
            gate.send_bytes(big)
            gate.resumeProducing()
        self.assertIsNone(r.closed_with)
        self.assertEqual(len(r.sent), 20)
        self.assertEqual(gate._reply_bytes, 0)

    def test_pongs_while_paused_keep_only_the_newest(self):
        """A ping flood from a client that does not read leaves one pong, sent on resume."""
        r = Recorder()
        gate = r.gate()
        gate.send_pong(b"0")
        self.assertEqual(r.sent, [("pong", b"0")])
        gate.pauseProducing()
        for i in range(140_000):
            gate.send_pong(b"%d" % i)
        gate.send_bytes(b"reply")
        self.assertEqual(len(r.sent), 1)
        gate.resumeProducing()
        self.assertEqual(r.sent[1:], [("pong", b"139999"), ("bytes", b"reply")])

    def test_pong_goes_out_between_the_fragments_of_a_stream(self):
        r = Recorder()
        gate = r.gate()
        gate.send_stream(iter([b"a", b"b"]))
        r.clock.advance()
        gate.send_pong(b"p")
        r.clock.advance()
        r.clock.advance()
        self.assertEqual(
            r.sent,
            [
                ("begin", None),
                ("fragment", b"a"),
                ("pong", b"p"),
                ("fragment", b"b"),
                ("end", None),
            ],
        )

    def test_stream_a_piece_per_turn_nothing_interleaved(self):
        r = Recorder()
        gate = r.gate(backlog=10)
        done = []
        gate.send_stream(iter([b"[1", b",2", b"]"])).addCallback(done.append)
        gate.send_gaze("g")  # must wait: nothing interleaves with the message
        gate.send_bytes(b"reply")
        self.assertEqual(r.sent, [("begin", None)])
        for expected in (b"[1", b",2", b"]"):
            r.clock.advance(0)
            self.assertEqual(r.sent[-1], ("fragment", expected))
        r.clock.advance(0)
        self.assertEqual(r.sent[-3:], [("end", None), ("bytes", b"reply"), ("gaze", "g")])
        self.assertEqual(done, [None])

    def test_stream_waits_while_paused(self):
        r = Recorder()
        gate = r.gate()
        gate.send_stream(iter([b"a", b"b"]))
        r.clock.advance(0)
        gate.pauseProducing()
        r.clock.advance(0)
        r.clock.advance(0)
        self.assertEqual([k for k, _ in r.sent], ["begin", "fragment"])
        gate.resumeProducing()
        r.clock.advance(0)
        r.clock.advance(0)
        self.assertEqual([k for k, _ in r.sent], ["begin", "fragment", "fragment", "end"])

    def test_streams_one_after_another(self):
        r = Recorder()
        gate = r.gate()
        gate.send_stream(iter([b"1"]))
        gate.send_stream(iter([b"2"]))
        for _ in range(6):
            r.clock.advance(0)
        self.assertEqual(
            r.sent,
            [
                ("begin", None),
                ("fragment", b"1"),
                ("end", None),
                ("begin", None),
                ("fragment", b"2"),
                ("end", None),
            ],
        )

    def test_stream_waits_for_a_piece_made_elsewhere(self):
        """A Deferred piece: nothing is asked for until it fires, however the gate is woken."""
        r = Recorder()
        gate = r.gate()
        ready = defer.Deferred()
        asked = []

        def pieces():
            asked.append(1)
            yield b"a"
            asked.append(2)
            yield ready
            asked.append(3)
            yield b"b"

        gate.send_stream(pieces())
        r.clock.advance(0)
        r.clock.advance(0)
        self.assertEqual(asked, [1, 2])
        gate.pauseProducing()
        gate.resumeProducing()  # wakes the stream: still waiting
        for _ in range(3):
            r.clock.advance(0)
        self.assertEqual(asked, [1, 2])
        self.assertEqual(r.sent, [("begin", None), ("fragment", b"a")])
        ready.callback(None)
        self.assertEqual(asked, [1, 2])  # asked for at the next turn, not inside the callback
        r.clock.advance(0)
        r.clock.advance(0)
        self.assertEqual(asked, [1, 2, 3])
        self.assertEqual(r.sent[1:], [("fragment", b"a"), ("fragment", b"b"), ("end", None)])

    def test_failed_piece_aborts(self):
        """A piece that fails instead of coming (a bug) is logged and the connection aborted."""
        r = Recorder()
        gate = r.gate()
        ready = defer.Deferred()
        d = gate.send_stream(iter([b"a", ready, b"b"]))
        r.clock.advance(0)
        r.clock.advance(0)
        ready.errback(ValueError("broken encoder"))
        self.assertTrue(r.aborted)
        self.failureResultOf(d, ConnectionError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        r.clock.advance(0)
        self.assertEqual(r.sent, [("begin", None), ("fragment", b"a")])

    def test_piece_that_raises_aborts(self):
        """Making a piece raises (a bug): logged, aborted, this and the queued streams fail."""
        r = Recorder()
        gate = r.gate()

        def pieces():
            yield b"a"
            raise ValueError("broken encoder")

        d = gate.send_stream(pieces())
        queued = gate.send_stream(iter([b"b"]))
        for _ in range(3):
            r.clock.advance(0)
        self.assertTrue(r.aborted)
        self.failureResultOf(d, ConnectionError)
        self.failureResultOf(queued, ConnectionError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(r.sent, [("begin", None), ("fragment", b"a")])

    def test_piece_already_failed_aborts(self):
        r = Recorder()
        gate = r.gate()
        d = gate.send_stream(iter([defer.fail(ValueError("broken encoder")), b"b"]))
        r.clock.advance(0)
        self.assertTrue(r.aborted)
        self.failureResultOf(d, ConnectionError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        r.clock.advance(0)
        self.assertEqual(r.sent, [("begin", None)])

    def test_piece_failing_after_close_is_logged(self):
        """The connection closed while a piece was being made, which then failed."""
        r = Recorder()
        gate = r.gate()
        ready = defer.Deferred()
        d = gate.send_stream(iter([ready, b"b"]))
        r.clock.advance(0)
        gate.close()
        self.failureResultOf(d, ConnectionError)
        ready.errback(ValueError("broken encoder"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertIsNone(self.successResultOf(ready))
        self.assertFalse(r.aborted)  # (closed already)
        r.clock.advance(0)
        self.assertEqual(r.sent, [("begin", None)])

    def test_stream_fails_when_closed(self):
        r = Recorder()
        gate = r.gate()
        d = gate.send_stream(iter([b"1", b"2"]))
        gate.close()
        self.failureResultOf(d, ConnectionError)
        r.clock.advance(0)
        self.assertEqual(r.sent, [("begin", None)])

    def test_closed_gate_sends_nothing(self):
        r = Recorder()
        gate = r.gate()
        gate.stopProducing()
        gate.send_gaze(1)
        gate.send_bytes(b"x")
        self.assertEqual(r.sent, [])


class StreamPaceTests(unittest.SynchronousTestCase):
    """A streamed message leaves no faster than the gate's rate, on the reactor's clock."""

    def gate(self, rate):
        r = Recorder()
        r.clock = task.Clock()
        return r, SendGate(r, r.clock, peer="test", stream_rate=rate)

    def fragments(self, r):
        return [data for kind, data in r.sent if kind == "fragment"]

    def test_fragments_leave_at_the_rate(self):
        r, gate = self.gate(rate=40.0)  # 10 bytes: 0.25 s (times exact in binary)
        done = []
        gate.send_stream(iter([b"a" * 10, b"b" * 10, b"c" * 10])).addCallback(done.append)
        r.clock.advance(0)
        self.assertEqual(self.fragments(r), [b"a" * 10])  # the first at once
        r.clock.advance(0.125)
        self.assertEqual(len(self.fragments(r)), 1)
        r.clock.advance(0.125)
        self.assertEqual(len(self.fragments(r)), 2)
        r.clock.advance(0.25)
        self.assertEqual(self.fragments(r), [b"a" * 10, b"b" * 10, b"c" * 10])
        self.assertEqual(r.sent[-1], ("end", None))
        self.assertEqual(done, [None])
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_waits_shorter_than_a_timer_are_not_taken(self):
        # the last piece is due less than STREAM_LEAST_WAIT_S after the first
        r, gate = self.gate(rate=20 / (STREAM_LEAST_WAIT_S * 0.9))
        done = []
        gate.send_stream(iter([b"a" * 10, b"b" * 10, b"c" * 10])).addCallback(done.append)
        r.clock.advance(0)
        self.assertEqual(len(self.fragments(r)), 3)
        self.assertEqual(done, [None])

    def test_a_late_piece_is_made_up_by_the_ones_after_it(self):
        r, gate = self.gate(rate=40.0)
        late = defer.Deferred()
        gate.send_stream(iter([b"a" * 10, late, b"b" * 10, b"c" * 10, b"d" * 10]))
        r.clock.advance(0)
        r.clock.advance(0.625)  # the next piece is made 0.625 s later
        self.assertEqual(len(self.fragments(r)), 1)
        late.callback(None)
        r.clock.advance(0)
        # due at 0.25 and 0.5 s: both go at once; the fourth is due at 0.75 s
        self.assertEqual(self.fragments(r), [b"a" * 10, b"b" * 10, b"c" * 10])
        r.clock.advance(0.0625)
        self.assertEqual(len(self.fragments(r)), 3)
        r.clock.advance(0.0625)
        self.assertEqual(len(self.fragments(r)), 4)

    def test_closing_while_waiting_for_the_pace(self):
        r, gate = self.gate(rate=1000.0)
        d = gate.send_stream(iter([b"a" * 10, b"b" * 10]))
        r.clock.advance(0)
        gate.close()
        self.failureResultOf(d, ConnectionError)
        self.assertEqual(r.clock.getDelayedCalls(), [])  # the wait is cancelled
        r.clock.advance(1)
        self.assertEqual(self.fragments(r), [b"a" * 10])
        self.assertNotIn(("end", None), r.sent)

    def test_paused_while_waiting_for_the_pace(self):
        # the transport pauses the gate meanwhile: the piece waits for both
        r, gate = self.gate(rate=1000.0)
        gate.send_stream(iter([b"a" * 10, b"b" * 10]))
        r.clock.advance(0)
        gate.pauseProducing()
        r.clock.advance(0.05)
        self.assertEqual(len(self.fragments(r)), 1)
        gate.resumeProducing()
        r.clock.advance(0)
        self.assertEqual(len(self.fragments(r)), 2)
        self.assertEqual(r.sent[-1], ("end", None))


class ClockedReplyTests(unittest.SynchronousTestCase):
    """A time_sync reply: rendered at the last moment, ahead of waiting gaze frames."""

    def renderer(self, log):
        def render():
            log.append("rendered")
            return b"reply %d" % len(log)

        return render

    def test_sent_at_once(self):
        r, log = Recorder(), []
        gate = r.gate()
        gate.send_gaze(1)
        gate.send_clocked(self.renderer(log))
        self.assertEqual(r.sent, [("gaze", 1), ("now", b"reply 1")])

    def test_ahead_of_the_gaze_backlog_rendered_when_sent(self):
        r, log = Recorder(), []
        gate = r.gate(backlog=10)
        gate.pauseProducing()
        for i in range(3):
            gate.send_gaze(i)
        gate.send_clocked(self.renderer(log))
        gate.send_gaze(3)
        self.assertEqual((r.sent, log), ([], []), "nothing is rendered while it waits")
        log.append("resumed")
        gate.resumeProducing()
        self.assertEqual(r.sent[0], ("now", b"reply 2"))
        self.assertEqual(log, ["resumed", "rendered"])
        self.assertEqual([p for kind, p in r.sent[1:]], [0, 1, 2, 3])

    def test_after_earlier_replies(self):
        r, log = Recorder(), []
        gate = r.gate()
        gate.pauseProducing()
        gate.send_bytes(b"first")
        gate.send_clocked(self.renderer(log))
        gate.resumeProducing()
        self.assertEqual(r.sent, [("bytes", b"first"), ("now", b"reply 1")])

    def test_waits_for_a_streamed_message(self):
        r, log = Recorder(), []
        gate = r.gate()
        gate.send_stream(iter([b"a", b"b"]))
        gate.send_clocked(self.renderer(log))
        self.assertEqual(log, [])
        for _ in range(4):
            r.clock.advance()
        kinds = [kind for kind, _ in r.sent]
        self.assertEqual(kinds, ["begin", "fragment", "fragment", "end", "now"])

    def test_counts_toward_the_reply_limits(self):
        for count, size in ((MAX_REPLY_BACKLOG + 1, 10), (2, MAX_REPLY_BACKLOG_BYTES // 2 + 1)):
            r = Recorder()
            gate = r.gate()
            gate.pauseProducing()
            for _ in range(count):
                gate.send_clocked(lambda: b"r", size)
            self.assertTrue(gate.closed)
            self.assertEqual(r.closed_with[0], CLOSE_NOT_READING)
            self.assertEqual(gate.backlog, 0)
