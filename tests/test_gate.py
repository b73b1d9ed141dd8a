"""
Tests for L{jspsych_tobii.server.gate.SendGate}.
"""

import json

from twisted.internet.interfaces import IPushProducer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jspsych_tobii.server.gate import MAX_REPLY_BACKLOG, SendGate


class Recorder:
    def __init__(self):
        self.sent = []
        self.aborted = False

    def gate(self, backlog=3):
        return SendGate(
            lambda p: self.sent.append(("gaze", p)),
            lambda b: self.sent.append(("bytes", b)),
            self.abort,
            peer="test",
            gaze_backlog=backlog,
        )

    def abort(self):
        self.aborted = True


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

        original = gate._send_prepared

        def send(p):
            original(p)
            if p == 1:
                gate.pauseProducing()

        gate._send_prepared = send
        gate.resumeProducing()
        self.assertEqual([p for _, p in r.sent], [0, 1])
        gate.send_gaze(5)  # still queued behind the backlog: order kept
        gate.resumeProducing()
        self.assertEqual([p for _, p in r.sent], [0, 1, 2, 3, 4, 5])

    def test_order_kept_after_resume(self):
        r = Recorder()
        gate = r.gate(backlog=10)
        gate.pauseProducing()
        gate.send_gaze(1)
        gate.resumeProducing()
        gate.send_gaze(2)
        self.assertEqual([p for _, p in r.sent], [1, 2])

    def test_client_not_reading_replies_is_dropped(self):
        r = Recorder()
        gate = r.gate()
        gate.pauseProducing()
        for _ in range(MAX_REPLY_BACKLOG + 1):
            gate.send_bytes(b"r")
        self.assertTrue(r.aborted)
        self.assertTrue(gate.closed)
        self.assertEqual(gate.backlog, 0)

    def test_closed_gate_sends_nothing(self):
        r = Recorder()
        gate = r.gate()
        gate.stopProducing()
        gate.send_gaze(1)
        gate.send_bytes(b"x")
        self.assertEqual(r.sent, [])
