"""
Tests for L{jspsych_tobii.trackers.child.main}: the SDK process's side of
the pipes, driven without a process.  (The whole child runs in
L{tests.test_child}.)
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.interfaces import TrackerInfo, UserPosition
from jspsych_tobii.trackers.child import wire as childwire
from jspsych_tobii.trackers.child.main import SDKProcess

from . import fake_tobii_research as fake


class StubTracker:
    """Enough of an ITracker for L{SDKProcess}'s dispatch."""

    def __init__(self):
        self.info = None
        self.receiver = None

    def setNotificationReceiver(self, receiver):
        self.receiver = receiver

    def connect(self):
        self.info = TrackerInfo("stub://1", "Stub", "1", "0", frequencies=(60.0,), frequency=60.0)
        return defer.succeed(self.info)

    def collectCalibrationData(self, x, y):
        raise KeyError("boom")

    position = None

    def getUserPosition(self):
        return self.position

    def disconnect(self):
        return defer.succeed(None)


class SDKProcessTests(unittest.SynchronousTestCase):
    """The child's side of the pipes, without a process."""

    def process(self, sdk_error=None):
        self.frames = []
        self.stub = StubTracker()
        process = SDKProcess(
            Clock(),
            self.frames.append,
            lambda address, frequency: self.stub,
            sdk=None if sdk_error else fake.make_sdk(),
            sdk_error=sdk_error,
        )
        return process

    def sent(self):
        frames = childwire.FrameDecoder().feed(b"".join(self.frames))
        return [childwire.decode_message(payload) for kind, payload in frames]

    def request(self, process, op, **args):
        frame = childwire.encode_message({"type": "request", "id": 7, "op": op, "args": args})
        process.framesReceived(childwire.FrameDecoder().feed(frame))
        return [m for m in self.sent() if m["type"] == "reply"][-1]

    def test_hello(self):
        process = self.process()
        process.hello()
        [hello] = self.sent()
        self.assertEqual(hello["type"], "hello")
        self.assertTrue(childwire.same_dtype(hello["dtype"]))
        self.assertEqual(hello["sdk"], "2.1.0.1")
        self.assertIsNone(hello["sdkError"])

    def test_connect_sends_info_first(self):
        process = self.process()
        self.request(process, "connect", address=None, frequency=None)
        info, reply = self.sent()
        self.assertEqual(info["type"], "info")
        self.assertEqual(reply["id"], 7)
        self.assertEqual(reply["result"]["model"], "Stub")
        process.stop()

    def test_unknown_request(self):
        reply = self.request(self.process(), "warp")
        self.assertEqual(reply["error"]["kind"], "TrackerError")
        self.assertIn("unknown request 'warp'", reply["error"]["message"])

    def test_unexpected_error(self):
        process = self.process()
        self.request(process, "connect")
        reply = self.request(process, "collectCalibrationData", x=0.5, y=0.5)
        self.assertEqual(reply["error"]["kind"], "InternalError")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        process.stop()

    def test_not_connected(self):
        reply = self.request(self.process(), "startGaze")
        self.assertEqual(reply["error"]["message"], "the eye tracker is not connected")

    def test_no_sdk(self):
        process = self.process(sdk_error="tobii_research cannot be imported by X")
        reply = self.request(process, "connect")
        self.assertEqual(reply["error"]["message"], "tobii_research cannot be imported by X")
        reply = self.request(process, "clock")
        self.assertIn("cannot be imported", reply["error"]["message"])

    def test_stop_without_tracker(self):
        process = self.process()
        self.successResultOf(process.stop("end of file"))

    def test_position_polled_and_sent_on_change(self):
        clock = Clock()
        self.frames = []
        self.stub = StubTracker()
        process = SDKProcess(
            clock, self.frames.append, lambda address, frequency: self.stub, sdk=fake.make_sdk()
        )
        self.request(process, "connect", address=None, frequency=None)
        clock.advance(process.pollInterval)
        self.assertEqual([m for m in self.sent() if m["type"] == "position"], [])
        self.stub.position = UserPosition((0.5, 0.5, 0.5), None, 42)
        clock.advance(process.pollInterval)
        # the tracker makes a new position each time it is asked: an equal one is not sent again
        self.stub.position = UserPosition((0.5, 0.5, 0.5), None, 42)
        clock.advance(process.pollInterval)
        [sent] = [m for m in self.sent() if m["type"] == "position"]
        self.assertEqual(sent["position"]["left"], [0.5, 0.5, 0.5])
        self.assertIsNone(sent["position"]["right"])
        process.stop()
