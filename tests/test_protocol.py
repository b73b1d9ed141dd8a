"""
Loopback tests of the whole server: real sockets, the real reactor, the
mock tracker at high rates, and an Autobahn client speaking the extension's
protocol.
"""

import json
import socket

from twisted.internet import defer
from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.server.gate import DEFAULT_GAZE_BACKLOG

from .support import serve
from .wsclient import connect, wait


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
        yield wait(0.5)
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
        sample = {"x": 0.5, "y": 0.5, "timestamp": 1.0, "leftValid": True, "pad": "p" * 200}
        samples = [sample] * (15 * 1024 * 1024 // len(json.dumps(sample)))
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
        yield wait(0.2)
        self.assertGreater(len(b.gaze), count + 150)
        a_count = len(a.gaze)
        self.close(a)
        yield wait(0.2)
        self.assertEqual(len(a.gaze), a_count)
        self.assertGreater(len(b.gaze), count + 300)
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
        yield wait(0.2)
        self.assertGreater(len(again.gaze), 150)
        self.assertEqual(again.other[0]["type"], "tracking_resumed")
        self.assertEqual(self.state.hub.session, 1, "the stream was not kept running")
        status = yield again.request("get_status")
        self.assertIs(status["tracking"], True)

    @defer.inlineCallbacks
    def test_no_resume_after_grace(self):
        a = yield self.client()
        yield a.request("start_tracking")
        yield self.close(a)
        yield wait(self.grace + 0.2)
        self.assertFalse(self.state.hub.running)
        again = yield self.client()
        yield wait(0.1)
        self.assertEqual(again.gaze, [])

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
        yield wait(3.0)
        gates = [g for g in self.state.hub.gates if g.dropped]
        self.assertEqual(len(gates), 1, "exactly the slow client should drop frames")
        slow_gate = gates[0]
        self.assertLessEqual(slow_gate.backlog, DEFAULT_GAZE_BACKLOG)
        self.assertGreater(slow_gate.dropped, 0)
        seqs = [g["seq"] for g in fast.gaze]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))
        self.assertGreater(len(seqs), 3000)
        slow.transport.resumeProducing()
        statuses = []
        for _ in range(100):
            yield wait(0.1)
            statuses = [m for m in slow.other if m.get("type") == "stream_status"]
            if statuses:
                break
        self.assertTrue(statuses, "the slow client was never told what it missed")
        self.assertEqual(statuses[0]["dropped"], slow_gate.dropped)
        self.flushLoggedErrors()


class TimingChainTests(LoopbackServerMixin, unittest.TestCase):
    rate = 600.0

    @defer.inlineCallbacks
    def test_browser_timestamp_is_capture_time(self):
        """
        The client's browserTimestamp = gaze.timestamp + offsetBC - offsetAB
        lands within 1 ms of the sample's true capture time on clock A.
        """
        skew = -987654.321  # clock A: the monotonic clock shifted, like performance.now()
        c = yield self.client(clock_offset_ms=skew)
        offset_ab = yield c.sync_time(rounds=10, interval=0.1)
        yield c.request("start_tracking")
        yield wait(0.3)
        reply = yield c.request("get_device_clock_offset")
        offset_bc = reply["offset"]
        yield wait(0.2)
        self.assertGreater(len(c.gaze), 200)
        errors, latencies = [], []
        for g in c.gaze:
            browser = g["timestamp"] + offset_bc - offset_ab
            # the mock stamps the capture time on the monotonic clock: in A it is
            capture_a = g["timestamp"] + skew
            errors.append(abs(browser - capture_a))
            latencies.append(g["_received"] - browser)
        self.assertLess(max(errors), 1.0)
        self.assertGreater(min(latencies), -1.0, "a sample arrived before it was captured")
        self.assertLess(sorted(latencies)[len(latencies) // 2], 10.0)


class OriginTests(unittest.TestCase):
    """--allowed-origins: pages from other origins cannot connect."""

    def serve(self, origins):
        config = ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True, allowed_origins=origins)
        return serve(self, config)[1]

    def handshake(self, port, origin):
        """The HTTP status of a WebSocket handshake with this Origin (Autobahn refuses: 400)."""
        from twisted.internet.threads import deferToThread

        def attempt():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(
                    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nOrigin: {origin}\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                return int(s.recv(4096).split(b" ", 2)[1])

        return deferToThread(attempt)

    @defer.inlineCallbacks
    def test_only_allowed_origins_connect(self):
        port = self.serve("http://localhost:*, null")
        self.assertEqual((yield self.handshake(port, "http://localhost:8000")), 101)
        self.assertEqual((yield self.handshake(port, "null")), 101)
        self.assertEqual((yield self.handshake(port, "http://evil.example")), 400)

    @defer.inlineCallbacks
    def test_default_admits_every_page(self):
        port = self.serve("*")
        self.assertEqual((yield self.handshake(port, "http://anywhere.example:81")), 101)
        self.assertEqual((yield self.handshake(port, "null")), 101)

    @defer.inlineCallbacks
    def test_disk_pages_refused_unless_listed(self):
        port = self.serve("http://localhost:*")
        self.assertEqual((yield self.handshake(port, "null")), 400)
