"""
One port for the WebSocket and HTTP (L{jspsych_tobii.web.site}): the
jsPsych client's WebSocket at the root, behind twisted.web, with its flow
control and TCP_NODELAY; plain HTTP requests get the status page.
"""

import os
import re
import shutil
import socket
import tempfile
import time

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.server.gate import SendGate
from jspsych_tobii.server.protocol import own_origins
from jspsych_tobii.web.status import _asset

from .httpclient import request
from .support import serve, wait
from .wsclient import connect, handshake_status


class SharedPortTests(unittest.TestCase):
    def setUp(self):
        config = ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True, mock_rate=600)
        self.service, self.port = serve(self, config)
        self.state = self.service.state
        self.factory = self.service.site.websocket_factory

    @defer.inlineCallbacks
    def client(self, **kwargs):
        proto = yield connect(self.port, **kwargs)
        self.addCleanup(proto.dropConnection, abort=True)
        return proto

    def server_side(self):
        (proto,) = self.factory.connections
        return proto

    @defer.inlineCallbacks
    def test_websocket_at_the_root_with_a_query_string(self):
        page = yield self.client(path="/?token=abc&session=1")
        yield page.sync_time(rounds=2, interval=0.01)
        reply = yield page.request("start_tracking")
        self.assertIs(reply["success"], True)
        yield wait(0.3)
        seqs = [g["seq"] for g in page.gaze]
        self.assertGreater(len(seqs), 50)
        self.assertEqual(seqs, list(range(len(seqs))))

    @defer.inlineCallbacks
    def test_gate_replaces_the_http_channel_as_producer(self):
        """Behind twisted.web the transport's producer must be the connection's SendGate."""
        yield self.client()
        proto = self.server_side()
        self.assertIsInstance(proto.transport.producer, SendGate)
        self.assertIs(proto.transport.producer, proto.gate)
        self.assertTrue(proto.transport.streamingProducer)

    @defer.inlineCallbacks
    def test_tcp_nodelay_is_set_on_the_upgraded_socket(self):
        yield self.client()
        handle = self.server_side().transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @defer.inlineCallbacks
    def test_plain_http_gets_the_status_page(self):
        page = yield request(self.port, "/")
        self.assertEqual(page.code, 200)
        self.assertEqual(page.header("content-type"), "text/html; charset=utf-8")
        self.assertIn(b"<title>jspsych-tobii status</title>", page.body)
        self.assertIn("default-src 'none'", page.header("content-security-policy"))
        for name, kind in (("status.js", "text/javascript"), ("status.css", "text/css")):
            asset = yield request(self.port, "/" + name)
            self.assertEqual(asset.code, 200)
            self.assertTrue(asset.header("content-type").startswith(kind))
        missing = yield request(self.port, "/nothing-here")
        self.assertEqual(missing.code, 404)

    def test_status_page_loads_nothing_from_the_network(self):
        """Self-contained: no CDN, no web font, nothing absolute (works offline)."""
        html = _asset("status.html").decode()
        sources = re.findall(r'(?:src|href)="([^"]*)"', html)
        self.assertEqual(
            sorted(sources), sorted(["data:,", "status.css", "status.js", "status.json"])
        )
        for name in ("status.html", "status.js", "status.css"):
            text = _asset(name).decode()
            self.assertNotRegex(text, r"https?://|//cdn|@import|url\(", name)

    @defer.inlineCallbacks
    def test_http_requests_are_not_logged(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield self.client()  # logs "client ... connected"
        for _ in range(5):
            yield request(self.port, "/status.json")
        self.assertGreater(len(events), 0, "no event was seen at all")
        self.assertNotIn("status.json", " ".join(formatEvent(e) for e in events))


class OwnOriginTests(unittest.TestCase):
    def test_own_origins(self):
        def http(origins):
            return [o for o in origins if o.startswith("http:")]

        self.assertEqual(
            own_origins(IPv4Address("TCP", "192.168.1.5", 8080), "0.0.0.0"),
            ["http://192.168.1.5:8080", "https://192.168.1.5:8080"],
        )
        self.assertEqual(
            http(own_origins(IPv4Address("TCP", "10.0.0.2", 80), "LabPC.example")),
            ["http://10.0.0.2:80", "http://labpc.example:80"],
        )
        self.assertEqual(
            http(own_origins(IPv6Address("TCP", "::1", 8080), "::")), ["http://[::1]:8080"]
        )
        self.assertEqual(
            http(own_origins(IPv6Address("TCP", "::ffff:192.168.1.5", 8080), "::")),
            ["http://[::ffff:192.168.1.5]:8080", "http://192.168.1.5:8080"],
        )
        self.assertEqual(own_origins(UNIXAddress("/run/tobii.sock"), "localhost"), [])

    @defer.inlineCallbacks
    def test_a_non_loopback_host_admits_its_own_pages(self):
        """
        With --host on another interface and a restrictive origin list, a
        page served by this server (origin http://<that address>:<port>) may
        connect; another port or host may not.  A wildcard bind admits the
        address each connection arrived at.
        """
        address = _a_non_loopback_address()
        for host in (address, "0.0.0.0"):
            config = ServerConfig(
                host=host, port="0", mock=True, allowed_origins="http://localhost:*"
            )
            _, port = serve(self, config)
            status = yield handshake_status(port, host=address, origin=f"http://{address}:{port}")
            self.assertEqual(status, 101, host)
            status = yield handshake_status(
                port, host=address, origin=f"http://{address}:{port + 1}"
            )
            self.assertEqual(status, 403, host)
            status = yield handshake_status(
                port, host=address, origin=f"http://evil.example:{port}"
            )
            self.assertEqual(status, 403, host)

    @defer.inlineCallbacks
    def test_the_host_name_is_admitted(self):
        config = ServerConfig(
            host="localhost", port="0", mock=True, allowed_origins="http://lab.example:*"
        )
        _, port = serve(self, config)
        self.assertEqual((yield handshake_status(port, f"http://localhost:{port}")), 101)
        self.assertEqual((yield handshake_status(port, f"http://localhost:{port + 1}")), 403)


def _a_non_loopback_address():
    """This machine's address toward the outside (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, nothing sent
            address = s.getsockname()[0]
        except OSError:
            address = None
    if not address or address.startswith("127."):
        # no route out: an address on the loopback interface that is not 127.0.0.1
        address = "127.0.0.2"
    return address


class HTTPLimitTests(unittest.TestCase):
    def start(self):
        config = ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True, mock_rate=300)
        self.service, self.port = serve(self, config)

    def exchange(self, data, wait_for_close=True):
        """Send raw bytes from a thread; fires with everything read until the server closes."""
        from twisted.internet.threads import deferToThread

        def attempt():
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                for piece in data:
                    try:
                        s.sendall(piece)
                    except OSError:
                        break  # the server closed first
                chunks = []
                while True:
                    try:
                        chunk = s.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                return b"".join(chunks)

        return deferToThread(attempt)

    @defer.inlineCallbacks
    def test_large_bodies_are_refused_before_they_are_stored(self):
        self.start()
        head = (
            b"POST /preview HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        answer = yield self.exchange([head, b"x" * 100_000])
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        chunked = b"POST /preview HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks = [b"4000\r\n" + b"y" * 0x4000 + b"\r\n"] * 5
        answer = yield self.exchange([chunked] + chunks)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        # and the server still answers
        status = yield request(self.port, "/status.json")
        self.assertEqual(status.code, 200)

    @defer.inlineCallbacks
    def test_idle_http_is_closed_and_a_websocket_is_not(self):
        from jspsych_tobii.web import site

        idle = 0.2
        self.patch(site, "IDLE_TIMEOUT_SECONDS", idle)
        self.start()
        page = yield connect(self.port)
        self.addCleanup(page.dropConnection, abort=True)
        yield page.request("start_tracking")
        started = time.monotonic()
        answer = yield self.exchange([b"GET / HTTP/1.1\r\nHost: x\r\n"])  # never finished
        self.assertEqual(answer, b"")
        # closed by the patched timeout, not the default minute (a loose bound)
        self.assertLess(time.monotonic() - started, 5.0)
        yield wait(2 * idle)  # the WebSocket has been idle longer than that
        count = len(page.gaze)
        yield wait(0.2)
        self.assertGreater(len(page.gaze), count, "the WebSocket was closed as idle HTTP")
        self.assertEqual(page.state, page.STATE_OPEN)


class TokenTests(unittest.TestCase):
    """With --token, HTTP requests show it too: ?token= once, then the cookie."""

    token = "lab-Secret_token.7~z"

    def setUp(self):
        folder = tempfile.mkdtemp(prefix="jspsych-tobii-serve-")
        self.addCleanup(shutil.rmtree, folder, True)
        with open(os.path.join(folder, "index.html"), "w") as f:
            f.write("<!doctype html><title>exp</title>")
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1", mock=True, token=self.token, serve=folder
        )
        self.service, self.port = serve(self, config)

    @defer.inlineCallbacks
    def test_without_the_token_nothing_is_shown(self):
        for path in (
            "/",
            "/status.json",
            "/status.js",
            "/experiment/",
            "/?token=wrong",
            f"/?token={self.token}x",
            f"/status.json?tok={self.token}",
        ):
            response = yield request(self.port, path)
            self.assertEqual(response.code, 403, path)
            self.assertIn(b"?token=", response.body)
            self.assertNotIn(b"jspsych-tobii status", response.body)
            self.assertIsNone(response.header("set-cookie"), path)
        wrong = {"Cookie": "jspsych_tobii_token=wrong"}
        response = yield request(self.port, "/status.json", headers=wrong)
        self.assertEqual(response.code, 403)
        preview = yield request(
            self.port,
            "/preview",
            method="POST",
            headers={"Content-Type": "application/json"},
            body=b'{"id": "p", "on": true}',
        )
        self.assertEqual(preview.code, 403)
        self.assertFalse(self.service.state.hub.previewing)

    @defer.inlineCallbacks
    def test_the_token_once_then_the_cookie(self):
        page = yield request(self.port, f"/?token={self.token}")
        self.assertEqual(page.code, 200)
        self.assertIn(b"jspsych-tobii status", page.body)
        cookie = page.header("set-cookie")
        self.assertTrue(cookie.startswith(f"jspsych_tobii_token={self.token}"), cookie)
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        self.assertTrue({"httponly", "samesite=strict", "path=/"} <= attributes, attributes)
        headers = {"Cookie": cookie.split(";")[0]}
        for path in ("/status.json", "/status.js", "/experiment/"):
            response = yield request(self.port, path, headers=headers)
            self.assertEqual(response.code, 200, path)
        status = yield request(self.port, f"/status.json?token={self.token}")
        self.assertEqual(status.code, 200, "a script may give the token in the URL each time")
