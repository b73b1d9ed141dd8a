"""
A WebSocket test client speaking the jsPsych extension's protocol over a
real socket (Autobahn), with the client's time-sync maths.
"""

import itertools
import json
import statistics
import time

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, endpoints, reactor, task


class ExtensionClient(WebSocketClientProtocol):
    """
    C{clock_offset_ms} shifts this client's clock A from the monotonic clock,
    as a browser's performance.now() is unrelated to the server's clock.
    """

    clock_offset_ms = 0.0

    def connectionMade(self):
        self.gaze = []
        self.other = []
        self.waiting = {}
        self.ids = itertools.count()
        self.opened = defer.Deferred()
        self.closed = defer.Deferred()
        super().connectionMade()

    def onOpen(self):
        self.opened.callback(self)

    def now(self):
        """Clock A, ms."""
        return time.monotonic_ns() / 1e6 + self.clock_offset_ms

    def onMessage(self, payload, isBinary):
        message = json.loads(payload)
        waiting = self.waiting.pop(message.get("requestId"), None)
        if waiting is not None:
            waiting.callback(message)
        elif message.get("type") == "gaze_data":
            message["gaze"]["_received"] = self.now()
            self.gaze.append(message["gaze"])
        else:
            self.other.append(message)

    def onClose(self, wasClean, code, reason):
        for d in self.waiting.values():
            d.errback(ConnectionError(reason))
        self.waiting.clear()
        if not self.closed.called:
            self.closed.callback((wasClean, code, reason))

    def request(self, kind, timeout=5.0, **fields):
        request_id = f"req_{next(self.ids)}"
        d = defer.Deferred()
        self.waiting[request_id] = d
        self.sendMessage(json.dumps(dict(fields, type=kind, requestId=request_id)).encode())
        return d.addTimeout(timeout, reactor)

    def send_only(self, kind, **fields):
        """A fire-and-forget request, as the plugins send some."""
        self.sendMessage(json.dumps(dict(fields, type=kind)).encode())

    @defer.inlineCallbacks
    def sync_time(self, rounds=10, interval=0.1):
        """The extension's time sync: median of serverTime - (t0 + rtt/2)."""
        offsets, self.sync_rtts = [], []
        for _ in range(rounds):
            t0 = self.now()
            reply = yield self.request("time_sync", clientTime=t0)
            t1 = self.now()
            self.sync_rtts.append(t1 - t0)
            offsets.append(reply["serverTime"] - (t0 + (t1 - t0) / 2))
            yield task.deferLater(reactor, interval, lambda: None)
        self.offset_ab = statistics.median(offsets)
        return self.offset_ab


def connect(port, protocol=ExtensionClient, path="/", tls=None, origin=None, **attributes):
    """
    Connect to ws://127.0.0.1:port/ (the root path, like the extension's
    default URL), or to another C{path} (C{/?token=...}).  With C{tls} (a
    client TLS options object) the URL is wss://localhost:port/.  With
    C{origin}, the handshake says it comes from a page of that origin.
    """
    scheme, host = ("wss", "localhost") if tls is not None else ("ws", "127.0.0.1")
    factory = WebSocketClientFactory(f"{scheme}://{host}:{port}{path}", origin=origin)
    factory.protocol = protocol
    factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if tls is not None:
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    d = endpoint.connect(factory)

    def opened(proto):
        for name, value in attributes.items():
            setattr(proto, name, value)
        return proto.opened

    return d.addCallback(opened)


def handshake_status(port, origin, path="/", host="127.0.0.1"):
    """
    Fires with the HTTP status of a WebSocket handshake with this Origin
    (101 when admitted, 403 when refused), sent from a thread.
    """
    from twisted.internet.threads import deferToThread

    from . import rawws

    return deferToThread(rawws.handshake_status, port, origin, path, host)
