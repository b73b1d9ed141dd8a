"""
Tests for L{jspsych_tobii.server.frames} and the protocol's immediate send.
"""

import collections

from autobahn.websocket.protocol import PreparedMessage
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from jspsych_tobii.server.frames import TextFrame, _plain_socket, text_header, write_frame
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
        transport = Transport()
        self.protocol(transport).send_prepared(TextFrame(b"{}"))
        self.assertEqual(transport.events, [("write", b"\x81\x02{}")])

    def test_a_batch_in_one_write(self):
        """Frames a tracker handed over together leave as one piece of data."""
        transport = Transport()
        frames = [TextFrame(b"[%d]" % i) for i in range(3)]
        self.protocol(transport).send_prepared_batch(frames)
        self.assertEqual(transport.events, [("write", b"\x81\x03[0]\x81\x03[1]\x81\x03[2]")])

    def test_nothing_once_closing(self):
        transport = Transport()
        protocol = self.protocol(transport)
        protocol.state = protocol.STATE_CLOSING
        protocol.send_prepared(TextFrame(b"{}"))
        protocol.send_prepared_batch([TextFrame(b"{}")])
        self.assertEqual(transport.events, [])


class _Keeper(protocol.Protocol):
    """The server's end of a real TCP connection: hands its transport over."""

    def connectionMade(self):
        self.factory.connected.callback(self.transport)


class _Reader(protocol.Protocol):
    """The client's end: reads everything, fires when C{expected} bytes came."""

    def __init__(self, expected):
        self.expected = expected
        self.received = []
        self.size = 0
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.received.append(data)
        self.size += len(data)
        if self.size >= self.expected and not self.done.called:
            self.done.callback(b"".join(self.received))


class WriteFrameTests(unittest.TestCase):
    """L{write_frame} on real sockets: straight to the socket, never out of order."""

    @defer.inlineCallbacks
    def connect(self, expected):
        from twisted.internet import reactor

        factory = protocol.Factory.forProtocol(_Keeper)
        factory.connected = defer.Deferred()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        reader = _Reader(expected)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = yield endpoint.connect(protocol.Factory.forProtocol(lambda: reader))
        self.addCleanup(client.transport.abortConnection)
        transport = yield factory.connected
        self.addCleanup(transport.abortConnection)
        return transport, reader

    @defer.inlineCallbacks
    def test_straight_to_the_socket(self):
        """Nothing waits: the frame is sent now, not buffered for the reactor's next turn."""
        transport, reader = yield self.connect(4)
        self.assertIs(write_frame(transport, b"\x81\x02{}"), True)
        self.assertEqual((transport._tempDataLen, transport.dataBuffer), (0, b""))
        self.assertEqual((yield reader.done), b"\x81\x02{}")

    @defer.inlineCallbacks
    def test_behind_data_the_transport_holds(self):
        """Data waiting in the transport goes first: the frame is written after it."""
        transport, reader = yield self.connect(11)
        transport.write(b"first")
        self.assertIs(write_frame(transport, b"second"), False)
        self.assertEqual((yield reader.done), b"firstsecond")

    @defer.inlineCallbacks
    def test_what_the_socket_does_not_take(self):
        """A write larger than the socket takes: the rest is buffered, and what follows too."""
        big = bytes(range(256)) * (32 * 1024 * 4)  # 32 MiB, far more than a socket buffer
        transport, reader = yield self.connect(len(big) + 4)
        self.assertIs(write_frame(transport, big), False)
        self.assertGreater(transport._tempDataLen, 0)
        self.assertLess(transport._tempDataLen, len(big), "the socket took some at once")
        self.assertIs(write_frame(transport, b"tail"), False)
        received = yield reader.done
        self.assertEqual(len(received), len(big) + 4)
        self.assertTrue(received == big + b"tail")

    @defer.inlineCallbacks
    def test_a_failing_send_is_left_to_the_transport(self):
        """The socket refuses: the data goes to the transport, which reports the loss itself."""
        transport, reader = yield self.connect(5)

        class Refusing:
            def send(self, data):
                raise ConnectionResetError(104, "Connection reset by peer")

        real, transport.socket = transport.socket, Refusing()
        try:
            self.assertIs(write_frame(transport, b"frame"), False)
            self.assertEqual(transport._tempDataLen, 5)
        finally:
            transport.socket = real
        self.assertEqual((yield reader.done), b"frame")

    @defer.inlineCallbacks
    def test_not_while_closing(self):
        transport, reader = yield self.connect(5)
        transport.loseConnection()
        self.assertIs(write_frame(transport, b"frame"), False)

    def test_other_transports_are_written_through(self):
        """A transport that is not a plain socket (TLS, in memory, sendmsg) only gets write()."""
        from twisted.internet import tcp, unix

        transport = StringTransport()
        self.assertIs(write_frame(transport, b"frame"), False)
        self.assertEqual(transport.value(), b"frame")

        class Wrapped(tcp.Server):
            def writeSomeData(self, data):
                return 0

        self.assertFalse(_plain_socket(Wrapped))
        self.assertFalse(_plain_socket(unix.Server))
        self.assertTrue(_plain_socket(tcp.Server))
