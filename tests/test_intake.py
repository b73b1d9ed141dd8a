"""
Tests for L{jspsych_tobii.server.intake.Intake}: at most
L{MAX_STEPS_PER_TURN} parsing steps per reactor turn, the rest in later
turns, nothing lost, the socket not read while input waits or the session
holds it; and the protocol's use of it, on a connection in memory.
"""

import json

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from txaio.testutil import replace_loop

from jspsych_tobii.server.intake import MAX_STEPS_PER_TURN, Intake

from .rawws import frame, handshake_request
from .support import FakeServer, HeldWork, PauseRecorder


class Parser:
    """Stands for Autobahn: C{buffered} steps to take, each asking the intake first."""

    def __init__(self):
        self.buffered = 0
        self.taken = []  # steps taken, per call of consume
        self.intake = None

    def consume(self):
        taken = 0
        while self.buffered and self.intake.may_step():
            self.buffered -= 1
            taken += 1
        self.taken.append(taken)


class IntakeTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.transport = PauseRecorder()
        self.parser = Parser()
        self.intake = Intake(self.transport, self.parser.consume, self.clock)
        self.parser.intake = self.intake

    def receive(self, steps):
        self.parser.buffered += steps
        self.parser.consume()

    def test_a_turn_takes_at_most_its_steps_and_the_rest_follows(self):
        self.receive(MAX_STEPS_PER_TURN * 2 + 5)
        self.assertEqual(self.parser.taken, [MAX_STEPS_PER_TURN])
        self.assertEqual(self.intake.postponed, 1)
        self.assertEqual(self.transport.events, ["pause"])  # the socket waits too
        self.clock.advance(0)  # the next turns, one after the other
        self.assertEqual(self.parser.taken, [MAX_STEPS_PER_TURN] * 2 + [5])
        self.assertEqual(self.intake.postponed, 2)
        self.assertEqual(self.parser.buffered, 0)
        self.assertEqual(self.transport.events, ["pause", "resume"])

    def test_a_small_read_is_parsed_at_once_without_pausing(self):
        self.receive(MAX_STEPS_PER_TURN)
        self.assertEqual(self.parser.taken, [MAX_STEPS_PER_TURN])
        self.clock.advance(0)
        self.receive(MAX_STEPS_PER_TURN)  # a new turn: a new count
        self.assertEqual(self.parser.taken, [MAX_STEPS_PER_TURN] * 2)
        self.assertEqual(self.transport.events, [])

    def test_while_the_session_holds_nothing_is_parsed(self):
        self.intake.pauseProducing()
        self.assertEqual(self.transport.events, ["pause"])
        self.receive(3)
        self.clock.advance(0)
        self.assertEqual(self.parser.taken, [0])
        self.intake.resumeProducing()
        self.assertEqual(self.parser.taken, [0])  # from the next turn, not inside the session
        self.clock.advance(0)
        self.assertEqual(self.parser.taken, [0, 3])
        self.assertEqual(self.intake.postponed, 0)  # held, not over budget
        self.assertEqual(self.transport.events, ["pause", "resume"])

    def test_a_hold_without_waiting_input_resumes_reading_at_once(self):
        self.intake.pauseProducing()
        self.intake.resumeProducing()
        self.assertEqual(self.transport.events, ["pause", "resume"])
        self.intake.resumeProducing()  # not held: nothing to do
        self.assertEqual(self.transport.events, ["pause", "resume"])

    def test_stop_reads_again_and_paces_no_more(self):
        self.receive(MAX_STEPS_PER_TURN + 1)
        self.intake.stop()
        self.assertEqual(self.transport.events, ["pause", "resume"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.receive(MAX_STEPS_PER_TURN * 3)
        self.assertEqual(self.parser.buffered, 0)
        self.intake.pauseProducing()  # a session's hold no longer counts
        self.assertEqual(self.transport.events, ["pause", "resume"])

    def test_stop_without_resuming_a_closed_connection(self):
        self.receive(MAX_STEPS_PER_TURN + 1)
        self.intake.stopProducing()
        self.assertEqual(self.transport.events, ["pause"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ProtocolIntakeTests(unittest.SynchronousTestCase):
    """The server's protocol parses a read of many small frames over several turns."""

    def setUp(self):
        clock = Clock()
        loop = replace_loop(clock)  # Autobahn's handshake timer: on the clock, not the reactor
        loop.__enter__()
        self.addCleanup(loop.__exit__, None, None, None)
        self.server = FakeServer(clock=clock, ping_interval=0)
        factory = self.server.service.site.websocket_factory
        self.proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.proto.dataReceived(handshake_request(8080))
        self.assertEqual(self.proto.state, self.proto.STATE_OPEN)
        self.transport.clear()
        self.proto.session.requests.work_clock = lambda: 0.0  # its own budget is tested elsewhere
        self.per_turn = []
        turn = self.proto.intake._next_turn

        def counted():
            before = len(self.replies())
            turn()
            self.per_turn.append(len(self.replies()) - before)

        self.proto.intake._next_turn = counted

    def frames(self):
        """What the server wrote: C{(opcode, payload)} per frame."""
        data, out = self.transport.value(), []
        while data:
            n, at = data[1] & 0x7F, 2
            if n == 126:
                n, at = int.from_bytes(data[2:4], "big"), 4
            elif n == 127:
                n, at = int.from_bytes(data[2:10], "big"), 10
            out.append((data[0] & 0x0F, data[at : at + n]))
            data = data[at + n :]
        return out

    def replies(self):
        return [json.loads(payload) for opcode, payload in self.frames() if opcode == 1]

    def test_a_read_of_small_requests_is_answered_over_several_turns(self):
        count = 1500  # ~64 KiB: what one read of a flooding client holds
        read = b"".join(
            frame(1, json.dumps({"type": "get_status", "requestId": i}).encode())
            for i in range(count)
        )
        self.proto.dataReceived(read)
        first = len(self.replies())
        self.assertEqual(first, MAX_STEPS_PER_TURN // 2)  # two steps a frame
        self.assertEqual(self.transport.producerState, "paused")
        self.server.clock.advance(0)
        replies = self.replies()
        self.assertEqual([r["requestId"] for r in replies], list(range(count)))
        self.assertLessEqual(max(self.per_turn), MAX_STEPS_PER_TURN // 2)
        self.assertEqual(self.transport.producerState, "producing")

    def test_a_large_message_takes_a_step_per_read(self):
        pad = "p" * (1024 * 1024)
        message = frame(
            1, json.dumps({"type": "time_sync", "requestId": "big", "pad": pad}).encode()
        )
        for at in range(0, len(message), 65536):
            self.proto.dataReceived(message[at : at + 65536])
            self.assertFalse(self.proto.intake.waiting)
        self.assertEqual(self.transport.producerState, "producing")
        self.server.clock.advance(0)
        self.assertEqual([r["requestId"] for r in self.replies()], ["big"])

    def test_a_frame_being_decoded_holds_the_input(self):
        """The session holds the intake while a large frame is decoded: later frames wait."""
        self.server.state.work = work = HeldWork()
        samples = [{"x": 0.5, "y": 0.5, "pad": "p" * 100}] * 3000
        big = {"type": "validation_point", "requestId": "v", "point": {"x": 0.5, "y": 0.5}}
        read = frame(1, json.dumps(dict(big, gaze_samples=samples)).encode())
        read += frame(1, b'{"type":"get_status","requestId":"after"}')
        self.proto.dataReceived(read)
        self.server.clock.advance(0)
        self.assertEqual(self.replies(), [])
        self.assertTrue(self.proto.intake.held)
        self.assertEqual(self.transport.producerState, "paused")
        work.run_next()
        self.server.clock.advance(0)
        self.assertEqual([r["requestId"] for r in self.replies()], ["v", "after"])
        self.assertEqual(self.transport.producerState, "producing")

    def test_a_broken_rule_stops_the_pacing(self):
        read = frame(1, b'{"type":"get_status"}') * 200 + frame(9, b"x" * 126)  # too long a ping
        self.proto.dataReceived(read)
        self.server.clock.advance(0)
        self.assertTrue(self.proto.intake.stopped)
        self.assertEqual(self.transport.producerState, "producing")  # its close is read
        replies = self.replies()
        self.assertEqual(len(replies), 200)  # the frames before the broken one were answered
        opcode, payload = self.frames()[-1]
        self.assertEqual((opcode, int.from_bytes(payload[:2], "big")), (8, 1002))
