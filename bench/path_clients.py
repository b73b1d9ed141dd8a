"""
The clients of bench_path.py, in a process of their own: N plain-socket
WebSocket clients on one selector loop, so that they cost the machine as
little as possible and the same for every server measured.

    python bench/path_clients.py PORT CLIENTS SETTLE SECONDS [SYNC_HZ]

Steps, each printed as one JSON line on stdout:

  1. idle time sync: client 0 sends C{time_sync} at SYNC_HZ for SETTLE
     seconds while nobody tracks;
  2. every client sends C{start_tracking}; the stream settles for SETTLE s;
  3. C{{"event": "measuring"}}, then for SECONDS every client records each
     gaze frame's sequence number and its capture-to-receipt latency (receipt
     on CLOCK_MONOTONIC minus the frame's C{timestamp}, the capture time on
     the same clock); then C{{"event": "measured"}} (the harness measures the
     server's CPU between the two lines: gaze only, no requests);
  4. for SECONDS more, client 0 sends C{time_sync} at SYNC_HZ while the
     stream goes on;
  5. C{{"event": "done", ...}} with the figures.

A time sync's round trip is receipt minus sending; its offset is
C{serverTime} minus the middle of the round trip.  Replies are matched by
C{requestId}, whatever their C{type}.
"""

import json
import os
import selectors
import socket
import sys
import time

from rawsocket import open_websocket


def now_ms():
    return time.monotonic_ns() / 1e6


def masked_frame(payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    else:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + mask + body


class Client:
    def __init__(self, port, index):
        self.index = index
        self.sock, self.buffer = open_websocket(port)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.measuring = False
        self.seqs = []
        self.latencies = []
        self.frames = 0
        self.replies = {}
        self.fragments = None

    def send(self, message):
        self.sock.setblocking(True)
        self.sock.sendall(masked_frame(json.dumps(message).encode()))
        self.sock.setblocking(False)

    def readable(self):
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        received = now_ms()
        if not data:
            raise EOFError(f"client {self.index}: the server closed the connection")
        buffer = self.buffer
        buffer += data
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1] & 0x7F
            start = pos + 2
            if b1 == 126:
                if end - pos < 4:
                    break
                b1 = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif b1 == 127:
                if end - pos < 10:
                    break
                b1 = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 10
            stop = start + b1
            if stop > end:
                break
            payload = bytes(buffer[start:stop])
            pos = stop
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode in (0x1, 0x0) and not fin:
                self.fragments = (self.fragments or []) + [payload]
                continue
            if opcode == 0x0:
                payload = b"".join(self.fragments + [payload])
                self.fragments = None
            elif opcode != 0x1:
                continue
            self.message(payload, received)
        del buffer[:pos]

    def message(self, payload, received):
        if payload.startswith(b'{"type":"gaze_data"'):
            self.frames += 1
            if self.measuring:
                i = payload.index(b'"timestamp":') + 12
                j = payload.index(b'"seq":') + 6
                self.seqs.append(int(payload[j : payload.index(b",", j)]))
                self.latencies.append(received - float(payload[i : payload.index(b",", i)]))
            return
        reply = json.loads(payload)
        self.replies[reply.get("requestId")] = (reply, received)


def pump(selector, seconds, on_tick=None, tick=None):
    end = now_ms() + seconds * 1000.0
    next_tick = now_ms()
    while True:
        now = now_ms()
        if now >= end:
            return
        if on_tick is not None and now >= next_tick:
            on_tick()
            next_tick += tick
        timeout = min(end, next_tick if on_tick is not None else end) - now_ms()
        for key, _ in selector.select(max(0.0, timeout) / 1000.0):
            key.data.readable()


class Syncer:
    def __init__(self, client):
        self.client = client
        self.sent = {}
        self.n = 0

    def __call__(self):
        self.n += 1
        request_id = f"sync{self.n}"
        self.sent[request_id] = now_ms()
        self.client.send({"type": "time_sync", "requestId": request_id, "clientTime": 0})

    def results(self):
        rtts, offsets = [], []
        for request_id, sent in self.sent.items():
            got = self.client.replies.pop(request_id, None)
            if got is None:
                continue
            reply, received = got
            rtts.append(received - sent)
            offsets.append(reply["serverTime"] - (sent + received) / 2.0)
        self.sent.clear()
        return {"rtt": rtts, "offset": offsets}


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    settle, seconds = float(sys.argv[3]), float(sys.argv[4])
    sync_hz = float(sys.argv[5]) if len(sys.argv) > 5 else 100.0
    clients = [Client(port, i) for i in range(count)]
    selector = selectors.DefaultSelector()
    for c in clients:
        selector.register(c.sock, selectors.EVENT_READ, c)
    syncer = Syncer(clients[0])
    pump(selector, settle, syncer, 1000.0 / sync_hz)
    pump(selector, 0.05)
    idle = syncer.results()
    for c in clients:
        c.send({"type": "start_tracking", "requestId": "start"})
    pump(selector, settle, syncer, 1000.0 / sync_hz)
    syncer.results()
    print(json.dumps({"event": "measuring"}), flush=True)
    started = now_ms()
    for c in clients:
        c.measuring = True
    pump(selector, seconds)
    for c in clients:
        c.measuring = False
    elapsed = (now_ms() - started) / 1000.0
    print(json.dumps({"event": "measured"}), flush=True)
    pump(selector, seconds, syncer, 1000.0 / sync_hz)
    pump(selector, 0.05)
    loaded = syncer.results()
    print(
        json.dumps(
            {
                "event": "done",
                "elapsed": elapsed,
                "clients": [{"seqs": c.seqs, "latencies": c.latencies} for c in clients],
                "sync_idle": idle,
                "sync_loaded": loaded,
            }
        ),
        flush=True,
    )
    for c in clients:
        c.sock.close()


if __name__ == "__main__":
    main()
