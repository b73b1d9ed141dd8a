"""
Tests for L{jspsych_tobii.server.frames} and the protocol's immediate send.
"""

import collections

from autobahn.websocket.protocol import PreparedMessage
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import deferLater
from twisted.trial import unittest

from jspsych_tobii.server.frames import TextFrame, text_header
from jspsych_tobii.server.protocol import TobiiServerProtocol


class TextFrameTests(unittest.SynchronousTestCase):
    def test_same_bytes_as_autobahn(self):
        """Each length class of header: what Autobahn's prepareMessage would send."""
        for n in (0, 1, 125, 126, 300, 65535, 65536, 200_000):
            payload = b"x" * n
            frame = TextFrame(payload)
            expected = PreparedMessage(payload, False, False, True).payloadHybi
            self.assertEqual(frame.payloadHybi, expected, n)
            self.assertIs(frame.payload, payload)
            self.assertEqual(len(text_header(n)), len(expected) - n)

    def test_prepared_message_attributes(self):
        frame = TextFrame(b"{}")
        self.assertEqual((frame.binary, frame.doNotCompress), (False, True))


class Transport:
    def __init__(self, flushable=True):
        self.connected = True
        self.disconnecting = False
        self.events = []
        if flushable:
            self.doWrite = lambda: self.events.append(("flush",))

    def write(self, data):
        self.events.append(("write", data))


class SendLimitTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_large_replies_leave_in_large_pieces(self):
        """Twisted's 128 KiB per reactor turn is raised for each client's socket."""
        from twisted.internet import tcp

        from jspsych_tobii.config import ServerConfig
        from jspsych_tobii.server.protocol import SEND_LIMIT

        from .support import serve
        from .wsclient import connect

        service, port = serve(self, ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True))
        client = yield connect(port)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.request("get_status")
        (gate,) = service.state.hub.gates
        self.assertEqual(gate._channel.transport.SEND_LIMIT, SEND_LIMIT)
        self.assertGreater(SEND_LIMIT, tcp.Server.SEND_LIMIT)


class SendNowTests(unittest.SynchronousTestCase):
    def protocol(self, transport):
        proto = TobiiServerProtocol()
        proto.state = proto.STATE_OPEN
        proto.send_queue = collections.deque()
        proto.transport = transport
        return proto

    def test_written_and_handed_to_the_socket(self):
        """A time_sync reply does not wait for the reactor's next turn."""
        transport = Transport()
        self.protocol(transport).send_now(b'{"serverTime":1.5}')
        self.assertEqual(
            transport.events,
            [("write", b"\x81\x12" + b'{"serverTime":1.5}'), ("flush",)],
        )

    def test_not_flushed_while_closing(self):
        transport = Transport()
        transport.disconnecting = True
        self.protocol(transport).send_now(b"{}")
        self.assertEqual(transport.events, [("write", b"\x81\x02{}")])

    def test_transport_without_a_socket(self):
        """TLS and other wrapping transports: written, sent on the reactor's turn."""
        transport = Transport(flushable=False)
        self.protocol(transport).send_now(b"{}")
        self.assertEqual(transport.events, [("write", b"\x81\x02{}")])


class SendPreparedTests(unittest.SynchronousTestCase):
    def protocol(self, transport):
        return SendNowTests.protocol(self, transport)

    def test_one_frame(self):
        """A gaze frame is handed to the socket at once, not on the next poll."""
        transport = Transport()
        self.protocol(transport).send_prepared(TextFrame(b"{}"))
        self.assertEqual(transport.events, [("write", b"\x81\x02{}"), ("flush",)])

    def test_a_batch_in_one_write(self):
        """Frames a tracker handed over together leave as one piece of data."""
        transport = Transport()
        frames = [TextFrame(b"[%d]" % i) for i in range(3)]
        self.protocol(transport).send_prepared_batch(frames)
        self.assertEqual(
            transport.events,
            [("write", b"\x81\x03[0]\x81\x03[1]\x81\x03[2]"), ("flush",)],
        )

    def test_gaze_not_flushed_while_closing(self):
        transport = Transport()
        transport.disconnecting = True
        self.protocol(transport).send_prepared(TextFrame(b"{}"))
        self.assertEqual(transport.events, [("write", b"\x81\x02{}")])

    def test_gaze_over_tls(self):
        """A wrapping transport (TLS) has no socket to hand to: the reactor sends."""
        transport = Transport(flushable=False)
        self.protocol(transport).send_prepared_batch([TextFrame(b"{}")])
        self.assertEqual(transport.events, [("write", b"\x81\x02{}")])

    def test_nothing_once_closing(self):
        transport = Transport()
        protocol = self.protocol(transport)
        protocol.state = protocol.STATE_CLOSING
        protocol.send_prepared(TextFrame(b"{}"))
        protocol.send_prepared_batch([TextFrame(b"{}")])
        self.assertEqual(transport.events, [])


class FlushOnABrokenSocketTests(unittest.TestCase):
    """
    Handing frames to a socket whose peer has gone raises nothing where the
    frames are sent; the loss reaches the connection through the reactor.
    """

    @defer.inlineCallbacks
    def test_peer_reset(self):
        import socket

        from twisted.internet import protocol, reactor

        accepted = defer.Deferred()
        lost = defer.Deferred()

        class Server(protocol.Protocol):
            def connectionMade(self):
                accepted.callback(self)

            def connectionLost(self, reason):
                lost.callback([reason])

        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        peer = socket.create_connection(("127.0.0.1", port.getHost().port))
        server = yield accepted
        server.transport.pauseProducing()  # only a write can find the loss
        # the peer resets the connection (a crashed browser tab)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        peer.close()
        sender = SendNowTests.protocol(self, server.transport)
        for _ in range(200):  # at least one send meets the reset
            sender.send_prepared(TextFrame(b"x" * 1000))
            sender.send_now(b"{}")
            if not server.transport.connected or server.transport.disconnecting:
                break
            yield deferLater(reactor, 0.001, lambda: None)
        [reason] = yield lost
        self.assertIsInstance(reason.value, ConnectionLost)


class MessageEndTests(unittest.SynchronousTestCase):
    """A whole message reaches the session joined, or in its pieces when large."""

    def handled(self, pieces):
        from jspsych_tobii.server.requests import LargeMessage

        proto = TobiiServerProtocol()
        seen = []

        class Session:
            def handle(self, payload, is_binary):
                seen.append((payload, is_binary))

        proto.session = Session()
        proto.failedByMe = False
        proto.message_is_binary = False
        proto.message_data = list(pieces)
        proto.message_data_total_length = sum(len(p) for p in pieces)
        proto.onMessageEnd()
        self.assertIsNone(proto.message_data)
        [(payload, is_binary)] = seen
        self.assertIs(is_binary, False)
        return payload, LargeMessage

    def test_small_joined(self):
        payload, _ = self.handled([b'{"type":', b'"get_status"}'])
        self.assertEqual(payload, b'{"type":"get_status"}')

    def test_large_in_pieces(self):
        from jspsych_tobii.server.requests import DECODE_INLINE_BYTES

        pieces = [b"x" * 65536] * (DECODE_INLINE_BYTES // 65536 + 1)
        payload, LargeMessage = self.handled(pieces)
        self.assertIsInstance(payload, LargeMessage)
        self.assertEqual(payload.pieces, pieces)
        self.assertEqual(payload.size, sum(map(len, pieces)))
        self.assertEqual(payload.join(), b"".join(pieces))
