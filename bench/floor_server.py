"""
The floor for bench_stream.py: the least an Autobahn server can do to push
gaze frames at a given rate.  Every 2 ms it emits the frames that are due,
each a pre-encoded gaze_data frame with only its sequence number and capture
time spliced in, framed once with prepareMessage and sent to every client
with sendPreparedMessage.  No tracker, no buffer, no per-sample encoding.

    python bench/floor_server.py PORT RATE
"""

import sys
import time

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor, task

TEMPLATE = (
    '{"type":"gaze_data","gaze":{"x":0.512345,"y":0.487654,"timestamp":%.3f,'
    '"leftValid":true,"rightValid":true,"leftPupilDiameter":3.2012,'
    '"rightPupilDiameter":3.2512,"leftX":0.512001,"leftY":0.487001,"rightX":0.512689,'
    '"rightY":0.488307,"deviceTimestamp":%.3f,"seq":%d,"server_timestamp":%.3f}}'
)


class Push(WebSocketServerProtocol):
    def connectionMade(self):
        super().connectionMade()
        self.transport.setTcpNoDelay(True)  # as the server does (see its protocol.py)

    def onOpen(self):
        self.factory.clients.add(self)

    def onClose(self, wasClean, code, reason):
        self.factory.clients.discard(self)

    def onMessage(self, payload, isBinary):
        pass


def main(port, rate):
    factory = WebSocketServerFactory()
    factory.protocol = Push
    factory.clients = set()
    period_us = 1e6 / rate
    start_us = time.monotonic_ns() // 1000
    state = {"k": 0}

    def tick():
        now = time.monotonic_ns() // 1000
        last = int((now - start_us) // period_us)
        server = now / 1000.0
        while state["k"] <= last:
            k = state["k"]
            t = (start_us + round(k * period_us)) / 1000.0
            prepared = factory.prepareMessage((TEMPLATE % (t, t + 7340000, k, server)).encode())
            for client in factory.clients:
                client.sendPreparedMessage(prepared)
            state["k"] = k + 1

    task.LoopingCall(tick).start(0.002)
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
