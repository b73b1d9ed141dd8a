"""
Loopback tests of the whole server: real sockets, the real reactor, the
mock tracker at high rates, and an Autobahn client speaking the extension's
protocol.
"""

import datetime
import ipaddress
import json
import os
import socket
import struct

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.test import iosim
from twisted.trial import unittest

from jspsych_tobii import logs
from jspsych_tobii.config import ServerConfig
from jspsych_tobii.core.validation import MAX_SAMPLES_PER_POINT
from jspsych_tobii.server.gate import DEFAULT_GAZE_BACKLOG
from jspsych_tobii.server.protocol import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_FRAGMENTS,
    PING_BURST,
    PINGS_PER_SECOND,
)
from jspsych_tobii.tap import Options

from .rawws import RawClient, close_code, frame
from .support import FakeServer, Lab, serve, temp_path, wait, wait_for
from .wsclient import connect


class LoopbackServerMixin:
    rate = 1200.0
    grace = 2.0

    def setUp(self):
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1",
            mock=True,
            mock_rate=self.rate,
            reconnect_grace=self.grace,
        )
        self.service, self.port = serve(self, config)
        self.state = self.service.state

    @defer.inlineCallbacks
    def client(self, **attributes):
        proto = yield connect(self.port, **attributes)
        self.addCleanup(self.close, proto)
        return proto

    def close(self, proto):
        if proto.state != proto.STATE_CLOSED:
            proto.dropConnection(abort=True)
            return proto.closed


class ProtocolTests(LoopbackServerMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_extension_session(self):
        """The extension's flow over a real socket at 1200 Hz: nothing lost, in order."""
        c = yield self.client()
        yield c.sync_time(rounds=3, interval=0.01)
        reply = yield c.request("start_tracking")
        self.assertIs(reply["success"], True)
        yield wait_for(lambda: len(c.gaze) > 400, what="400 samples")
        offset = yield c.request("get_device_clock_offset")
        self.assertIs(offset["success"], True)
        yield c.request("stop_tracking")
        seqs = [g["seq"] for g in c.gaze]
        self.assertGreater(len(seqs), 400)
        self.assertEqual(seqs, list(range(len(seqs))))
        for g in c.gaze:
            self.assertIsInstance(g["timestamp"], float)

    @defer.inlineCallbacks
    def test_error_replies_over_the_wire(self):
        c = yield self.client()
        c.sendMessage(b'{"type": "warp", "requestId": "req_w"}')
        c.sendMessage(b'{"type": "time_sync", "requestId": "req_n", "clientTime": NaN}')
        reply = yield c.request("get_data", start_time=5, end_time=1)
        self.assertEqual(reply["type"], "error")
        yield wait(0.05)
        errors = {m["requestId"]: m for m in c.other}
        self.assertIn("unknown message type", errors["req_w"]["error"])
        self.assertIn("invalid JSON", errors["req_n"]["error"])
        reply = yield c.request("time_sync", clientTime=1.0)
        self.assertIs(reply["success"], True)

    @defer.inlineCallbacks
    def test_invalid_utf8_gets_an_error_and_the_connection_stays(self):
        c = yield self.client()
        c.sendMessage(b'{"type": "time_sync", "requestId": "req_u", "x": "\xff\xfe"}')
        yield wait(0.1)
        errors = {m.get("requestId"): m for m in c.other}
        self.assertEqual(errors["req_u"]["type"], "error")
        self.assertIn("invalid JSON", errors["req_u"]["error"])
        reply = yield c.request("time_sync", clientTime=2.0)
        self.assertIs(reply["success"], True)

    @defer.inlineCallbacks
    def test_large_message_accepted(self):
        """A 15 MiB validation_point (the client's copies of many samples) is accepted."""
        c = yield self.client()
        sample = {"x": 0.5, "y": 0.5, "timestamp": 1.0, "leftValid": True, "pad": "p" * 3200}
        samples = [sample] * (15 * 1024 * 1024 // len(json.dumps(sample)))
        self.assertLessEqual(len(samples), MAX_SAMPLES_PER_POINT)
        c.send_only("validation_start")
        reply = yield c.request(
            "validation_point", timeout=30, point={"x": 0.5, "y": 0.5}, gaze_samples=samples
        )
        self.assertIs(reply["success"], True)

    @defer.inlineCallbacks
    def test_two_clients_keep_their_streams(self):
        a = yield self.client()
        b = yield self.client()
        yield a.request("start_tracking")
        yield b.request("start_tracking")
        yield wait(0.2)
        yield a.request("stop_tracking")
        count = len(b.gaze)
        # b's stream goes on (waited for, not timed: a loaded machine is slow)
        yield wait_for(lambda: len(b.gaze) > count + 150, what="b's gaze after a stopped")
        a_count = len(a.gaze)
        self.close(a)
        yield wait_for(lambda: len(b.gaze) > count + 300, what="b's gaze after a left")
        self.assertEqual(len(a.gaze), a_count)
        seqs = [g["seq"] for g in b.gaze]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))

    @defer.inlineCallbacks
    def test_reconnect_resumes_stream(self):
        """A tracking client that reconnects gets gaze without a new start_tracking."""
        a = yield self.client()
        yield a.request("start_tracking")
        yield wait(0.1)
        yield self.close(a)
        again = yield self.client()
        yield again.sync_time(rounds=2, interval=0.01)
        yield wait_for(lambda: len(again.gaze) > 150, what="the resumed stream")
        self.assertEqual(again.other[0]["type"], "tracking_resumed")
        self.assertEqual(self.state.hub.session, 1, "the stream was not kept running")
        status = yield again.request("get_status")
        self.assertIs(status["tracking"], True)

    @defer.inlineCallbacks
    def test_slow_client_is_bounded_and_harms_no_one(self):
        """A client that stops reading gets a bounded backlog; the others are unaffected."""
        slow = yield self.client()
        fast = yield self.client()
        yield slow.request("start_tracking")
        yield fast.request("start_tracking")
        # Small socket buffers on both ends, so the kernel does not absorb
        # megabytes first (loopback buffers autotune up to several MB).
        slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        for gate in self.state.hub.gates:
            server_side = gate._channel.transport.getHandle()
            if server_side.getpeername()[1] == slow.transport.getHost().port:
                server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        slow.transport.pauseProducing()  # stop reading from the socket
        # its backlog fills (2 s at 1200 Hz) and it starts to drop; a little
        # longer, so that a fast client harmed by it would drop too
        yield wait_for(lambda: any(g.dropped for g in self.state.hub.gates), what="a drop")
        yield wait(0.3)
        gates = [g for g in self.state.hub.gates if g.dropped]
        self.assertEqual(len(gates), 1, "exactly the slow client should drop frames")
        slow_gate = gates[0]
        self.assertLessEqual(slow_gate.backlog, DEFAULT_GAZE_BACKLOG)
        self.assertGreater(slow_gate.dropped, 0)
        seqs = [g["seq"] for g in fast.gaze]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))
        # the fast one got more than the slow one's whole backlog meanwhile
        self.assertGreater(len(seqs), DEFAULT_GAZE_BACKLOG)
        slow.transport.resumeProducing()

        def statuses():
            return [m for m in slow.other if m.get("type") == "stream_status"]

        yield wait_for(statuses, what="the slow client to be told what it missed")
        self.assertEqual(statuses()[0]["dropped"], slow_gate.dropped)
        self.flushLoggedErrors()


class TimingChainTests(LoopbackServerMixin, unittest.TestCase):
    rate = 600.0

    @defer.inlineCallbacks
    def test_browser_timestamp_is_capture_time(self):
        """
        The client's browserTimestamp = gaze.timestamp + offsetBC - offsetAB
        lands on the sample's true capture time on clock A, up to the time
        sync's own error: at most half a round trip (1 ms on a quiet loopback).
        """
        skew = -987654.321  # clock A: the monotonic clock shifted, like performance.now()
        c = yield self.client(clock_offset_ms=skew)
        offset_ab = yield c.sync_time(rounds=10, interval=0.02)
        yield c.request("start_tracking")
        yield wait(0.3)
        reply = yield c.request("get_device_clock_offset")
        offset_bc = reply["offset"]
        yield wait_for(lambda: len(c.gaze) > 200, what="200 samples")
        errors, latencies = [], []
        for g in c.gaze:
            browser = g["timestamp"] + offset_bc - offset_ab
            # the mock stamps the capture time on the monotonic clock: in A it is
            capture_a = g["timestamp"] + skew
            errors.append(abs(browser - capture_a))
            latencies.append(g["_received"] - browser)
        # each round's offset is wrong by at most half its round trip, so the
        # median is too; on a loaded machine round trips grow
        self.assertLess(max(errors), max(1.0, max(c.sync_rtts) / 2 + 0.05))
        self.assertGreater(min(latencies), -1.0, "a sample arrived before it was captured")
        # a clock or unit mistake is off by seconds; the latency itself is a
        # bench figure (bench/), so this bound only has to survive a loaded machine
        self.assertLess(sorted(latencies)[len(latencies) // 2], 1000.0)


class LogCapture:
    """Every log event while a test runs, formatted, with all its values."""

    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self):
        return [formatEvent(e) for e in self.events]

    def everything(self):
        """Each event's text and the repr of every value it carries."""
        return [formatEvent(e) + " " + " ".join(repr(v) for v in e.values()) for e in self.events]

    def lines_with(self, fragment):
        return [t for t in self.texts() if fragment in t]


def raw(port, act):
    """Run C{act(client)} with a L{RawClient} on C{port} in a thread; close it after."""

    def run():
        client = RawClient(port)
        try:
            return act(client)
        finally:
            client.close()

    return deferToThread(run)


class HandshakeMixin:
    def serve(self, **settings):
        settings.setdefault("port", "tcp:0:interface=127.0.0.1")
        settings.setdefault("mock", True)
        service, self.port = serve(self, ServerConfig(**settings))
        self.state = service.state
        return self.port

    def status(self, origin=None, path="/"):
        """
        The HTTP status of a WebSocket handshake with this Origin (None: no
        header); the connection is then closed cleanly.
        """

        def act(c):
            status = c.handshake(path, origin)[0]
            c.finish()
            return status

        return raw(self.port, act)


class OriginTests(HandshakeMixin, unittest.TestCase):
    """--allowed-origins: which pages may connect."""

    @defer.inlineCallbacks
    def test_default_admits_pages_of_this_machine_and_from_disk(self):
        self.serve()
        for origin in (
            "http://localhost:8000",
            "http://localhost",
            "https://localhost:8443",
            "http://127.0.0.1:5500",
            "http://[::1]:3000",
            "null",
            None,
        ):
            self.assertEqual((yield self.status(origin)), 101, origin)

    @defer.inlineCallbacks
    def test_default_refuses_other_pages_saying_which_option_admits_them(self):
        log = LogCapture(self)
        self.serve()
        self.assertEqual((yield self.status("http://lab.example.org:8000")), 403)
        self.assertEqual((yield self.status("http://localhost.evil.example")), 403)
        self.assertEqual((yield self.status("http://lab.example.org:8000")), 403)
        (line,) = log.lines_with("http://lab.example.org:8000 may not connect")
        self.assertIn("--allowed-origins 'local,http://lab.example.org:8000'", line)
        self.assertIn("--allowed-origins '*'", line)

    @defer.inlineCallbacks
    def test_star_admits_every_page(self):
        self.serve(allowed_origins="*")
        self.assertEqual((yield self.status("http://anywhere.example:81")), 101)
        self.assertEqual((yield self.status("null")), 101)

    @defer.inlineCallbacks
    def test_only_allowed_origins_connect(self):
        self.serve(allowed_origins="http://localhost:*, null")
        self.assertEqual((yield self.status("http://localhost:8000")), 101)
        self.assertEqual((yield self.status("null")), 101)
        self.assertEqual((yield self.status("http://127.0.0.1:8000")), 403)
        self.assertEqual((yield self.status("http://evil.example")), 403)

    @defer.inlineCallbacks
    def test_disk_pages_refused_unless_listed(self):
        self.serve(allowed_origins="http://localhost:*")
        self.assertEqual((yield self.status("null")), 403)

    @defer.inlineCallbacks
    def test_programs_without_origin_connect_whatever_the_list(self):
        """A script sends no Origin: it is not a web page, the list does not apply."""
        self.serve(allowed_origins="https://lab.example.org")
        self.assertEqual((yield self.status(None)), 101)
        c = yield connect(self.port)  # Autobahn's client sends no Origin either
        self.addCleanup(c.dropConnection, abort=True)
        reply = yield c.request("get_status")
        self.assertIs(reply["success"], True)


SECRET = "tobii-Secret_token.1~x"


class TokenTests(HandshakeMixin, unittest.TestCase):
    """--token: a connection must give the shared secret in its URL."""

    @defer.inlineCallbacks
    def test_right_token_connects_and_works(self):
        options = Options()
        options.parseOptions(["--mock", "--port", "tcp:0:interface=127.0.0.1", "--token", SECRET])
        self.port = serve(self, options)[1]
        self.assertEqual((yield self.status("http://localhost:8000", f"/?token={SECRET}")), 101)
        c = yield connect(self.port, path=f"/?token={SECRET}")
        self.addCleanup(c.dropConnection, abort=True)
        reply = yield c.request("time_sync", clientTime=1.0)
        self.assertIs(reply["success"], True)

    @defer.inlineCallbacks
    def test_missing_or_wrong_token_refused_with_403(self):
        log = LogCapture(self)
        self.serve(token=SECRET)
        for path in ("/", "/?token=", "/?token=wrong", f"/?token={SECRET}x", f"/?t={SECRET}"):
            self.assertEqual((yield self.status(None, path)), 403, path)
        # a warning each, once for this client; the repeats at DEBUG (not shown)
        self.assertEqual(len(log.lines_with("its URL has no token")), 1)
        self.assertEqual(len(log.lines_with("its URL has a wrong token")), 1)

    @defer.inlineCallbacks
    def test_token_never_logged(self):
        """Not at DEBUG either, where Autobahn logs the whole handshake request."""
        log = LogCapture(self)
        self.addCleanup(logs.set_level, "INFO")
        self.serve(token=SECRET, log_level="DEBUG")
        wrong = "wrongTOKENvalue123"
        self.assertEqual((yield self.status(None, f"/?token={wrong}")), 403)

        def session(c):
            c.handshake(f"/?token={SECRET}", "http://localhost:8000")
            c.send(frame(1, b'{"type": "get_status", "requestId": "s"}'))
            reply = json.loads(c.next_frame()[1])
            c.finish()
            return reply

        self.assertIs((yield raw(self.port, session))["success"], True)

        def bad_line(c):
            # a malformed request line carrying the token (Autobahn quotes the line)
            c.send(f"GET /?token={SECRET} HTTP/1.1 x\r\n\r\n".encode())
            return c.read_frames()

        yield raw(self.port, bad_line)
        self.assertTrue(any("received HTTP request" in t for t in log.texts()), "DEBUG is on")
        for text in log.everything():
            self.assertNotIn(SECRET, text)
            self.assertNotIn(wrong, text)

    @defer.inlineCallbacks
    def test_token_from_a_file(self):
        path = temp_path(self, "token")
        with open(path, "w") as f:
            f.write(SECRET + "\n")
        options = Options()
        options.parseOptions(
            ["--mock", "--port", "tcp:0:interface=127.0.0.1", "--token-file", path]
        )
        self.port = serve(self, options)[1]
        self.assertEqual((yield self.status(None, f"/?token={SECRET}")), 101)
        self.assertEqual((yield self.status(None, "/")), 403)

    @defer.inlineCallbacks
    def test_token_from_the_environment(self):
        self.patch(os, "environ", dict(os.environ, JSPSYCH_TOBII_TOKEN=SECRET))
        options = Options()
        options.parseOptions(["--mock", "--port", "tcp:0:interface=127.0.0.1"])
        self.port = serve(self, options)[1]
        self.assertEqual((yield self.status("null", f"/?token={SECRET}")), 101)
        self.assertEqual((yield self.status("null", "/?token=other")), 403)


class ExposureWarningTests(unittest.TestCase):
    """Listening beyond this machine with neither a token nor an origin list is called out."""

    def warnings(self, *argv):
        log = LogCapture(self)
        options = Options()
        options.parseOptions(["--mock", *argv])
        serve(self, options)
        return log.lines_with("can be reached from other machines")

    def test_all_interfaces_every_page_no_token(self):
        (line,) = self.warnings("--host", "0.0.0.0", "--port", "0", "--allowed-origins", "*")
        self.assertIn("ws://0.0.0.0:0", line)
        self.assertIn("any web page", line)
        self.assertIn("--token", line)
        (line,) = self.warnings("--port", "tcp:0:interface=0.0.0.0", "--allowed-origins", "*")
        self.assertIn("tcp:0:interface=0.0.0.0", line)

    def test_no_warning_when_protected_or_local(self):
        wide = ("--host", "0.0.0.0", "--port", "0")
        self.assertEqual(self.warnings(*wide, "--allowed-origins", "*", "--token", SECRET), [])
        self.assertEqual(self.warnings(*wide), [], "the default origin list restricts pages")
        self.assertEqual(self.warnings("--port", "0", "--allowed-origins", "*"), [])


class CloseCodeTests(HandshakeMixin, unittest.TestCase):
    """
    A client that breaks the rules gets a close frame with the status code,
    and the close frame arrives: the connection then ends with a FIN, not a
    reset that would destroy it unread.
    """

    def setUp(self):
        self.serve()

    @defer.inlineCallbacks
    def closing(self, *frames):
        """
        Handshake, send the frames, read to the end: (close code, reason,
        end), once the server has let go of the connection.
        """

        def act(c):
            c.handshake()
            for data in frames:
                c.send(data)
            received, end = c.read_frames()
            closes = [payload for opcode, payload in received if opcode == 8]
            reason = closes[0][2:].decode() if closes else None
            return close_code(received), reason, end

        before = len(self.state.hub.gates)
        outcome = yield raw(self.port, act)
        yield wait_for(lambda: len(self.state.hub.gates) == before, what="the connection to go")
        return outcome

    @defer.inlineCallbacks
    def test_too_big_declared_gets_1009(self):
        header_and_some = frame(1, b"x" * 1000, length=MAX_MESSAGE_BYTES + 1)[:1014]
        code, reason, end = yield self.closing(header_and_some)
        self.assertEqual((code, end), (CLOSE_TOO_BIG, "eof"))
        self.assertEqual(reason, "message too big: at most 16 MiB")

    @defer.inlineCallbacks
    def test_too_big_sent_whole_gets_1009(self):
        """The client sends all 17 MiB before it reads: the close frame still arrives."""
        code, reason, end = yield self.closing(frame(1, b" " * (17 * 1024 * 1024)))
        self.assertEqual((code, end), (CLOSE_TOO_BIG, "eof"))

    @defer.inlineCallbacks
    def test_protocol_errors_get_1002(self):
        for bad in (
            frame(1, b'{"type": "get_status"}', mask=False),  # clients must mask
            frame(3, b"abc"),  # reserved opcode
            frame(0, b"abc"),  # continuation without a message
            frame(9, b"p", fin=False),  # fragmented ping
        ):
            code, reason, end = yield self.closing(bad)
            self.assertEqual((code, end), (CLOSE_PROTOCOL_ERROR, "eof"), bad[:2])
            self.assertEqual(reason, "WebSocket protocol error")

    @defer.inlineCallbacks
    def test_invalid_close_reason_gets_1007(self):
        code, reason, end = yield self.closing(frame(8, struct.pack("!H", 1000) + b"\xff\xfe"))
        self.assertEqual((code, end), (CLOSE_INVALID_PAYLOAD, "eof"))

    @defer.inlineCallbacks
    def test_fragment_budget(self):
        """A message in more than MAX_MESSAGE_FRAGMENTS frames is closed with 1009."""
        other = yield connect(self.port)
        n = MAX_MESSAGE_FRAGMENTS + 1
        pieces = [frame(1 if i == 0 else 0, b" ", fin=False) for i in range(n)]
        code, reason, end = yield self.closing(b"".join(pieces))
        self.assertEqual((code, end), (CLOSE_TOO_BIG, "eof"))
        self.assertEqual(reason, f"message in too many fragments: at most {n - 1}")
        reply = yield other.request("get_status")
        self.assertIs(reply["success"], True, "another client is unaffected")
        other.sendClose(1000)
        yield other.closed
        yield wait_for(lambda: not self.state.hub.gates, what="no connection left")

    @defer.inlineCallbacks
    def test_message_within_the_fragment_budget_is_answered(self):
        text = json.dumps({"type": "time_sync", "requestId": "frag", "clientTime": 1.0})
        text = text[:-1] + ', "pad": "' + " " * MAX_MESSAGE_FRAGMENTS + '"}'
        data = text.encode()
        n = MAX_MESSAGE_FRAGMENTS
        chunks = [data[i : i + 1] for i in range(n - 1)] + [data[n - 1 :]]

        def act(c):
            c.handshake()
            c.send(
                b"".join(
                    frame(1 if i == 0 else 0, chunk, fin=i == n - 1)
                    for i, chunk in enumerate(chunks)
                )
            )
            frames = []
            while not any(b'"frag"' in payload for _, payload in frames):
                frames.append(c.next_frame())
            c.finish()
            return frames

        frames = yield raw(self.port, act)
        reply = json.loads([p for _, p in frames if b'"frag"' in p][0])
        self.assertEqual((reply["type"], reply["success"]), ("time_sync", True))


class BannerTests(HandshakeMixin, unittest.TestCase):
    """No software name or version in what the server answers over HTTP."""

    def setUp(self):
        self.serve()

    @defer.inlineCallbacks
    def test_handshake_response_names_no_software(self):
        def act(c):
            response = c.handshake("/", "null")
            c.finish()
            return response

        status, headers = yield raw(self.port, act)
        self.assertEqual(status, 101)
        self.assertNotIn("server", headers)
        self.assertNotIn("autobahn", repr(headers).lower())

    @defer.inlineCallbacks
    def test_plain_http_names_no_software(self):
        """
        A plain HTTP request gets the status page (jspsych_tobii.web), which
        names no software either, and no redirect.
        """

        def get(path):
            def act(c):
                request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                c.send(request.encode())
                answer = b""
                while True:
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        return answer
                    answer += chunk

            return raw(self.port, act)

        for path in ("/", "/?redirect=http%3A%2F%2Fevil.example", "/status.json", "/nothing"):
            response = yield get(path)
            head = response.split(b"\r\n\r\n", 1)[0].lower()
            self.assertTrue(response.startswith(b"HTTP/1.1 "), response[:40])
            self.assertNotIn(b"\r\nserver:", head)
            self.assertNotIn(b"autobahn", response.lower())
            self.assertNotIn(b"twisted", response.lower())
            self.assertNotIn(b"location", head)


class KeepaliveTests(unittest.SynchronousTestCase):
    """
    --ping-interval / --ping-timeout: a client that stops answering pings is
    dropped within interval + timeout.  In memory, on a Clock (Autobahn's
    timers follow txaio's loop).
    """

    def connect(self, protocol, *argv):
        self.server = FakeServer(command_line=["--mock", *argv])
        clock = self.server.clock
        self.patch(txaio.config, "loop", clock)
        client_factory = WebSocketClientFactory("ws://localhost:8080", reactor=clock)
        client_factory.protocol = protocol
        # the port's factory is the HTTP site; WebSocket connections come from its factory
        factory = self.server.service.site.websocket_factory
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client)
        )
        self.assertEqual(server.state, server.STATE_OPEN)
        return server, client, pump

    def advance(self, pump, seconds, step=0.1):
        for _ in range(int(round(seconds / step))):
            self.server.clock.advance(step)
            pump.flush()

    def test_silent_client_dropped_within_interval_plus_timeout(self):
        server, client, pump = self.connect(
            SilentClient, "--ping-interval", "10", "--ping-timeout", "5"
        )
        self.advance(pump, 10.3)
        self.assertEqual(client.pings, 1)
        self.advance(pump, 4.5)
        self.assertEqual(server.state, server.STATE_OPEN)
        self.assertEqual(len(self.server.state.hub.gates), 1)
        self.advance(pump, 0.7)
        self.assertEqual(server.state, server.STATE_CLOSED)
        self.assertEqual(len(self.server.state.hub.gates), 0, "its stream was released")
        self.assertTrue(client.lost)

    def test_answering_client_stays(self):
        server, client, pump = self.connect(
            AnsweringClient, "--ping-interval", "10", "--ping-timeout", "5"
        )
        self.advance(pump, 120)
        self.assertGreaterEqual(client.pings, 10)
        self.assertEqual(server.state, server.STATE_OPEN)

    def test_zero_interval_sends_no_pings(self):
        server, client, pump = self.connect(SilentClient, "--ping-interval", "0")
        self.advance(pump, 120)
        self.assertEqual((client.pings, server.state), (0, server.STATE_OPEN))

    def test_zero_timeout_pings_but_never_drops(self):
        server, client, pump = self.connect(
            SilentClient, "--ping-interval", "10", "--ping-timeout", "0"
        )
        self.advance(pump, 120)
        self.assertEqual((client.pings, server.state), (1, server.STATE_OPEN))

    def test_defaults(self):
        server, client, pump = self.connect(SilentClient)
        self.advance(pump, 19.5)
        self.assertEqual(server.state, server.STATE_OPEN)
        self.advance(pump, 1.0)
        self.assertEqual(server.state, server.STATE_CLOSED)


class SilentClient(WebSocketClientProtocol):
    """A client whose machine vanished: it never answers a ping."""

    pings = 0
    lost = False

    def onPing(self, payload):
        self.pings += 1

    def onClose(self, wasClean, code, reason):
        self.lost = True


class AnsweringClient(SilentClient):
    def onPing(self, payload):
        super().onPing(payload)
        self.sendPong(payload)


class TLSTests(unittest.TestCase):
    """An ssl: endpoint serves wss://; the key's path stays out of the log."""

    def certificate(self):
        """A self-signed certificate for localhost, written to key.pem and cert.pem."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        folder = os.path.dirname(temp_path(self))
        key_path = os.path.join(folder, "key.pem")
        cert_path = os.path.join(folder, "cert.pem")
        with open(key_path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        return key_path, cert_path, cert_pem

    @defer.inlineCallbacks
    def test_wss_request(self):
        from twisted.internet import ssl

        key_path, cert_path, cert_pem = self.certificate()
        log = LogCapture(self)
        options = Options()
        options.parseOptions(
            [
                "--mock",
                "--port",
                f"ssl:0:privateKey={key_path}:certKey={cert_path}:interface=127.0.0.1",
            ]
        )
        port = serve(self, options)[1]
        trust = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(cert_pem))
        c = yield connect(port, tls=trust)
        self.addCleanup(c.dropConnection, abort=True)
        self.assertTrue(c.transport_details.is_secure)
        reply = yield c.request("time_sync", clientTime=5.0)
        self.assertIs(reply["success"], True)
        self.assertEqual(reply["clientTime"], 5.0)
        (line,) = log.lines_with("serving the jsPsych client at")
        self.assertIn("ssl:0:interface=127.0.0.1", line)
        for text in log.everything():
            self.assertNotIn(os.path.dirname(key_path), text)


class HostileClientTests(LoopbackServerMixin, unittest.TestCase):
    """Clients that do not read, or send too much, over real sockets."""

    rate = 600.0

    def server_side(self, client):
        """The server's protocol for this client's connection."""
        for gate in self.state.hub.gates:
            proto = gate._channel
            if proto.transport.getPeer().port == client.transport.getHost().port:
                return proto
        raise AssertionError("no such connection")

    def stop_reading(self, client):
        """The client stops reading; small socket buffers, so the kernel holds little."""
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        server = self.server_side(client)
        server.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        client.transport.pauseProducing()
        return server

    @defer.inlineCallbacks
    def stalled_and_watcher(self):
        """
        A client that stops reading, a watcher that tracks, and the stalled
        client's server side: C{(client, watcher, server)}.
        """
        c = yield self.client()
        watcher = yield self.client()
        yield watcher.request("start_tracking")
        return c, watcher, self.stop_reading(c)

    @defer.inlineCallbacks
    def assert_watcher_unaffected(self, c, watcher):
        """The stalled client C{c} reads again and is closed; the watcher still tracks."""
        c.transport.resumeProducing()
        yield c.closed
        reply = yield watcher.request("get_status")
        self.assertIs(reply["tracking"], True)
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_pings_are_answered(self):
        c = yield self.client()
        pongs = []
        c.onPong = pongs.append
        for i in range(PING_BURST):
            c.sendPing(b"%d" % i)
        yield wait_for(lambda: len(pongs) == PING_BURST, what="the pongs")
        self.assertEqual(pongs[-1], b"%d" % (PING_BURST - 1))
        reply = yield c.request("time_sync", clientTime=1)
        self.assertIs(reply["success"], True)

    @defer.inlineCallbacks
    def test_ping_flood_is_closed(self):
        """
        Autobahn answers every ping with a pong, ~20 us of reactor time each
        and a pong buffered for a client that does not read: 140,000 pings
        were 18 MB.  Past the ping budget the client is closed instead (a
        flood twenty times the burst shows it; the budget's arithmetic is
        L{PingBudgetTests}').
        """
        c, watcher, server = yield self.stalled_and_watcher()
        for i in range(20 * PING_BURST):
            c.sendPing(b"%08d" % i)
        yield wait_for(lambda: server.gate.closed, what="the close")
        self.assertIn("ping flood", server.closed_for)
        self.assertEqual(server.state, server.STATE_CLOSED)
        # the close frame went out first, but the client had not read, and
        # its unread pings make the kernel reset the connection
        yield self.assert_watcher_unaffected(c, watcher)

    @defer.inlineCallbacks
    def test_flood_of_empty_frames_is_answered_a_few_dozen_per_turn(self):
        """
        ~11,000 empty frames fit in one 64 KiB read, ~75 ms of Autobahn's
        parsing at once; the server parses a few dozen per reactor turn
        (server.intake), later turns take the rest, and every one is
        answered, while the watcher keeps its stream.
        """
        c = yield self.client()
        watcher = yield self.client()
        yield watcher.request("start_tracking")
        server = self.server_side(c)
        count = 20_000
        c.transport.write(frame(1, b"") * count)
        yield wait_for(lambda: len(c.other) == count, timeout=60, what="every answer")
        self.assertEqual({m["type"] for m in c.other}, {"error"})
        self.assertGreater(server.intake.postponed, 0)
        seen = len(watcher.gaze)
        yield wait_for(lambda: len(watcher.gaze) > seen, what="the watcher's gaze")
        reply = yield c.request("get_status")
        self.assertIs(reply["success"], True)

    @defer.inlineCallbacks
    def test_client_that_does_not_read_is_closed_with_1008(self):
        c, watcher, server = yield self.stalled_and_watcher()
        request = json.dumps({"type": "get_status"}).encode()
        for _ in range(8000):
            c.sendMessage(request)
        yield wait_for(lambda: server.gate.closed, what="the close")
        self.assertEqual(server.localCloseCode, 1008)
        self.assertEqual(server.gate.backlog, 0)
        # the other client noticed nothing
        yield self.assert_watcher_unaffected(c, watcher)

    @defer.inlineCallbacks
    def test_heavy_work_runs_on_worker_threads(self):
        """Large-frame decoding, validation and calibration maths: not on the reactor thread."""
        import threading

        from jspsych_tobii.core import messages, quality
        from jspsych_tobii.server import calibration

        threads = {}

        def spy(name, f):
            def run(*args, **kwargs):
                threads[name] = threading.current_thread()
                return f(*args, **kwargs)

            return run

        self.patch(messages, "_loads_yielding", spy("decode", messages._loads_yielding))
        self.patch(quality, "validation_summary", spy("validation", quality.validation_summary))
        self.patch(
            calibration,
            "calibration_summary",
            spy("calibration", calibration.calibration_summary),
        )
        c = yield self.client()
        yield c.request("start_tracking")
        yield wait_for(lambda: len(c.gaze) >= 500, what="500 samples")
        c.send_only("validation_start")
        samples = [dict(g, pad="p" * 1000) for g in c.gaze[-500:]]
        reply = yield c.request(
            "validation_point", timeout=30, point={"x": 0.5, "y": 0.5}, gaze_samples=samples
        )
        self.assertIs(reply["success"], True)
        report = yield c.request("validation_compute", timeout=30)
        self.assertEqual(report["pointData"][0]["sampleSource"], "server")
        c.send_only("calibration_start")
        yield c.request("calibration_point", point={"x": 0.5, "y": 0.5})
        calibration = yield c.request("calibration_compute")
        self.assertIs(calibration["success"], True)
        self.assertEqual(set(threads), {"decode", "validation", "calibration"})
        for name, thread in threads.items():
            self.assertIsNot(thread, threading.main_thread(), name)
            self.assertIn("jspsych-tobii-work", thread.name, name)


class PingBudgetTests(unittest.SynchronousTestCase):
    """Pings, in memory on a clock: a burst and a steady pace are answered, a flood is closed."""

    def setUp(self):
        self.lab = Lab(self)
        self.page, self.server = self.lab.open()

    def test_steady_pings_are_answered(self):
        for i in range(PING_BURST):
            self.page.sendPing(b"b%d" % i)
        self.lab.flush()
        self.assertEqual(len(self.page.pongs), PING_BURST)
        for i in range(100):
            self.lab.run(1.0 / PINGS_PER_SECOND)
            self.page.sendPing(b"s%d" % i)
        self.lab.flush()
        self.assertEqual(len(self.page.pongs), PING_BURST + 100)
        self.assertIsNone(self.page.close_status)

    def test_flood_is_closed_with_1008(self):
        for i in range(PING_BURST + 1):
            self.page.sendPing(b"%d" % i)
        self.lab.flush()
        self.assertEqual(len(self.page.pongs), PING_BURST)
        clean, code, reason = self.page.close_status
        self.assertEqual(code, 1008)
        self.assertIn("ping flood", reason)
        self.assertEqual(self.lab.server.state.hub.gates, set())
