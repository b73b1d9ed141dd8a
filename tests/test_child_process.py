"""
Tests for L{jspsych_tobii.trackers.child.process}: the server's end of the
pipes of one SDK process, driven without a process (an in-memory transport
and a L{task.Clock}).
"""

from __future__ import annotations

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jspsych_tobii.core.timesync import clock_from_seconds
from jspsych_tobii.interfaces import GAZE_DTYPE, NoTrackerError, TrackerError, empty_gaze
from jspsych_tobii.trackers.child import wire
from jspsych_tobii.trackers.child.process import IChildEvents, SDKProcessProtocol

from .support import capture_log


class FakeTransport:
    """The process transport: what was written, which signals were sent."""

    pid = 4242

    def __init__(self):
        self.signals = []
        self.written = []
        self.stdinClosed = False

    def signalProcess(self, name):
        self.signals.append(name)

    def write(self, data):
        self.written.append(data)

    def closeStdin(self):
        self.stdinClosed = True


@implementer(IChildEvents)
class Events:
    """Records what the pipes report."""

    def __init__(self):
        self.gaze = []
        self.messages = []
        self.ended = []

    def gazeReceived(self, process, payload):
        self.gaze.append(payload)

    def messageReceived(self, process, kind, message):
        self.messages.append((kind, message))

    def processEnded(self, process, reason):
        self.ended.append(reason)


def hello(**changes):
    message = {"type": "hello", "protocol": wire.PROTOCOL, "dtype": wire.dtype_descr()}
    message.update(changes)
    return wire.encode_message(message)


class ProtocolTests(unittest.SynchronousTestCase):
    startTimeout = 30.0

    def setUp(self):
        self.clock = Clock()
        self.events = Events()
        self.process = SDKProcessProtocol(
            self.clock, clock_from_seconds(self.clock.seconds), self.events, self.startTimeout
        )
        self.process.makeConnection(FakeTransport())

    def sent(self):
        frames = wire.FrameDecoder().feed(b"".join(self.process.transport.written))
        return [wire.decode_message(payload) for _, payload in frames]

    def test_events_interface(self):
        self.assertTrue(verifyObject(IChildEvents, self.events))

    def test_garbage_kills(self):
        self.process.outReceived(b"Segmentation fault\n")
        self.assertEqual(self.process.transport.signals, ["KILL"])
        self.assertIn("not a frame", self.process.brokenWire)
        self.flushLoggedErrors()

    def test_other_layout_refused(self):
        ready = self.process.whenReady()
        self.process.outReceived(hello(dtype=wire.dtype_descr()[:-1], package="0.1"))
        failure = self.failureResultOf(ready, TrackerError)
        self.assertIn("gaze record layout", failure.getErrorMessage())
        self.assertEqual(self.process.transport.signals, ["KILL"])
        self.failureResultOf(self.process.whenReady(), TrackerError)

    def test_ready_after_hello(self):
        ready = self.process.whenReady()
        self.assertNoResult(ready)
        self.process.outReceived(hello())
        self.assertIs(self.successResultOf(ready), self.process)
        self.assertIs(self.successResultOf(self.process.whenReady()), self.process)

    def test_hello_timeout(self):
        ready = self.process.whenReady()
        self.clock.advance(self.startTimeout - 0.1)
        self.assertNoResult(ready)
        self.clock.advance(0.2)
        failure = self.failureResultOf(ready, TrackerError)
        self.assertIn("did not start within 30 s", failure.getErrorMessage())
        self.assertEqual(self.process.transport.signals, ["KILL"])

    def test_replies_matched_by_id(self):
        self.process.outReceived(hello())
        first = self.process.request("collectCalibrationData", x=0.5, y=0.5)
        second = self.process.request("computeCalibration")
        ids = [message["id"] for message in self.sent()]
        self.assertEqual(len(set(ids)), 2)
        reply = {"type": "reply", "id": ids[1], "error": {"kind": "NoTrackerError", "message": "x"}}
        self.process.outReceived(wire.encode_message(reply))
        self.process.outReceived(
            wire.encode_message({"type": "reply", "id": ids[0], "result": True})
        )
        self.assertIs(self.successResultOf(first), True)
        self.failureResultOf(second, NoTrackerError)

    def test_gaze_and_messages_go_to_the_events_after_hello(self):
        batch = empty_gaze(3)
        self.process.outReceived(wire.encode_gaze(batch))
        self.process.outReceived(wire.encode_message({"type": "info", "info": {}}))
        self.assertEqual((self.events.gaze, self.events.messages), ([], []))
        self.process.outReceived(hello() + wire.encode_gaze(batch))
        self.process.outReceived(wire.encode_message({"type": "position", "position": None}))
        [payload] = self.events.gaze
        self.assertEqual(len(payload), 3 * GAZE_DTYPE.itemsize)
        self.assertEqual(
            self.events.messages, [("position", {"type": "position", "position": None})]
        )

    def test_end_fails_what_waits(self):
        self.process.outReceived(hello())
        pending = self.process.request("computeCalibration")
        ended = self.process.whenEnded()
        self.process.failAll(TrackerError("gone"))
        self.failureResultOf(pending, TrackerError)
        reason = Failure(error.ProcessTerminated(signal=9))
        self.process.processEnded(reason)
        self.assertEqual(self.events.ended, [reason])
        self.assertIsNone(self.successResultOf(ended))
        self.failureResultOf(self.process.request("clock"), TrackerError)

    def test_close_stdin(self):
        self.process.closeStdin()
        self.assertTrue(self.process.transport.stdinClosed)

    def test_stderr_lines(self):
        lines = capture_log(self, "jspsych_tobii.trackers.child.process")
        self.process.errReceived(b"info hello\nwarn par")
        self.assertEqual(self.process.lastLine(), "")
        self.process.errReceived(b"tial line\ninfo connected\n")
        self.assertEqual(self.process.lastLine(), "partial line")
        self.process.errReceived(b"Fatal Python error: Segmentation fault\n\n  File x\ninfo z\n")
        self.assertEqual(
            list(self.process.tail),
            [
                "hello",
                "partial line",
                "connected",
                "Fatal Python error: Segmentation fault",
                "  File x",
                "z",
            ],
        )
        self.assertEqual(self.process.lastLine(), "Fatal Python error: Segmentation fault")
        # relayed at their level, with the child's pid
        self.assertEqual(
            [(event["log_level"].name, event["text"]) for event in lines],
            [
                ("info", "hello"),
                ("warn", "partial line"),
                ("info", "connected"),
                ("warn", "Fatal Python error: Segmentation fault"),
                ("warn", "  File x"),
                ("info", "z"),
            ],
        )
        self.assertEqual({event["pid"] for event in lines}, {4242})
