"""
How fast is a large get_data, and does it stall the gaze stream?  The
server (mock tracker at 1200 Hz, recording to a temporary folder) streams to
a watching client for --seconds, then another client (its own process) asks
for the whole session: everything from disk and memory, 72,000 samples and
~20 MB of JSON for 60 s.  The watcher measures, on CLOCK_MONOTONIC, the gaps
between the gaze frames it receives, while the answer is prepared and sent
and, as the baseline of the same run, in windows of the same length during
the 5 s before the request.

    python bench/bench_get_data.py [--seconds 60]

Targets (issue 14), each printed with what exactly it compares:

  - the answer's time, from sending the request to receiving its last byte,
    is under 200 ms;
  - the watcher's longest gap while the answer is sent exceeds the median of
    its longest gaps in same-length windows before the request by at most
    2 ms;
  - the server's longest single piece of work for the same answer (its CPU
    time, in this process, without sockets: what one reactor turn costs) is
    at most 2 ms.

The watcher's gaps also hold the operating system's scheduling of three busy
processes (server, watcher, the client reading 20 MB) on this machine's
cores; the last figure is what the server alone controls.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from bench_stream import run_on_reactor
from twisted.internet import defer, reactor, task

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Watcher(WebSocketClientProtocol):
    def connectionMade(self):
        super().connectionMade()
        self.arrivals = []
        self.latencies = []
        self.replies = {}
        self.opened = defer.Deferred()

    def onOpen(self):
        self.opened.callback(self)

    def onMessage(self, payload, isBinary):
        now = time.monotonic_ns() / 1e6
        if payload.startswith(b'{"type":"gaze_data"'):
            i = payload.index(b'"timestamp":') + 12
            self.arrivals.append(now)
            self.latencies.append(now - float(payload[i : payload.index(b",", i)]))
        else:
            self.replies.setdefault("any", []).append((now, len(payload)))


def stats(arrivals, latencies, start, end):
    times = [t for t in arrivals if start <= t <= end]
    gaps = [b - a for a, b in zip(times, times[1:])]
    lat = sorted(x for t, x in zip(arrivals, latencies) if start <= t <= end)
    return {
        "frames": len(times),
        "max_gap": max(gaps) if gaps else float("nan"),
        "p99": lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
    }


def baseline_gaps(arrivals, start, end, width):
    """The longest gap in each window of C{width} ms between start and end."""
    out = []
    t = start
    while t + width <= end:
        times = [a for a in arrivals if t <= a <= t + width]
        gaps = [b - a for a, b in zip(times, times[1:])]
        if gaps:
            out.append(max(gaps))
        t += width
    return sorted(out)


@defer.inlineCallbacks
def connect(port):
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}")
    factory.protocol = Watcher
    factory.setProtocolOptions(
        utf8validateIncoming=False, maxMessagePayloadSize=0, maxFramePayloadSize=0
    )
    protos = []
    original = Watcher.onOpen

    def on_open(self):
        original(self)
        protos.append(self)

    Watcher.onOpen = on_open
    reactor.connectTCP("127.0.0.1", port, factory)
    while not protos:
        yield task.deferLater(reactor, 0.02, lambda: None)
    Watcher.onOpen = original
    return protos[0]


@defer.inlineCallbacks
def run(args):
    folder = tempfile.mkdtemp(prefix="bench-get-data-")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jspsych_tobii.cli",
            "--mock",
            "--mock-rate",
            "1200",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "ERROR",
            "--record-dir",
            folder,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                yield task.deferLater(reactor, 0.05, lambda: None)
        watcher = yield connect(port)
        watcher.sendMessage(b'{"type":"start_tracking","requestId":"w"}')
        print(f"streaming {args.seconds:g} s at 1200 Hz before asking for everything...")
        yield task.deferLater(reactor, args.seconds, lambda: None)
        # the asker is another process, so that reading 10 MB does not
        # stall this one's measurements
        asker = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "get_data_asker.py"), str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        while asker.poll() is None:
            yield task.deferLater(reactor, 0.05, lambda: None)
        answer = json.loads(asker.stdout.read())
        asked, answered, size = answer["asked"], answer["done"], answer["bytes"]
        yield task.deferLater(reactor, 1.0, lambda: None)
        during = stats(watcher.arrivals, watcher.latencies, asked, answered + 20)
        before = stats(watcher.arrivals, watcher.latencies, asked - 5000, asked)
        windows = baseline_gaps(watcher.arrivals, asked - 5000, asked, answered + 20 - asked)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, True)
    took = answered - asked
    print(
        f"\nget_data of the whole session: {answer['count']} samples, {size / 1e6:.1f} MB, "
        f"answered in {took:.0f} ms (request sent to last byte received)"
    )
    typical = windows[len(windows) // 2]
    print("\nwatcher's stream                      frames   longest gap   p99 latency")
    for name, row in (("5 s before the request", before), ("while answering", during)):
        print(
            f"  {name:<34} {row['frames']:>8d} {row['max_gap']:>10.2f} ms"
            f" {row['p99']:>10.2f} ms"
        )
    print(
        f"  longest gap in {len(windows)} windows of {took + 20:.0f} ms before: "
        f"median {typical:.2f} ms, max {windows[-1]:.2f} ms"
    )
    added = during["max_gap"] - typical
    checks = [
        (
            f"get_data of {answer['count']} samples answered in under 200 ms "
            "(request sent to last byte received)",
            took < 200.0,
            f"{took:.0f} ms",
        ),
        (
            "watcher's longest gap while answering is at most 2 ms above the median longest "
            "gap of same-length windows before the request",
            added <= 2.0,
            f"{during['max_gap']:.2f} - {typical:.2f} = {added:+.2f} ms",
        ),
    ]
    for label, ok, value in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {label}: {value}")
    return all(ok for _, ok, _ in checks)


def server_turns(seconds):
    """
    The server's own work per reactor turn for the same answer, measured in
    this process without sockets: the recording and buffer of C{seconds} at
    1200 Hz, and each piece of the reply timed as the gate takes it.
    """
    import gc

    import numpy as np

    from jspsych_tobii.core.buffer import GazeBuffer
    from jspsych_tobii.core.history import session_range
    from jspsych_tobii.recording.writer import SessionRecorder
    from jspsych_tobii.server.bulk import reply_pieces
    from jspsych_tobii.trackers.eyemodel import EyeModel

    folder = tempfile.mkdtemp(prefix="bench-get-data-turns-")
    try:
        recorder = SessionRecorder(folder)
        recorder.session_started(1, 0, None)
        buffer = GazeBuffer(10000)
        n = int(seconds * 1200)
        samples = EyeModel().samples(np.arange(n) * 833)
        for i in range(0, n, 3):
            batch = samples[i : i + 3].copy()
            recorder.write_batch(batch)
            buffer.extend(batch)
        recorder.sync()
        gc.collect()
        # CPU time of this thread: what the work costs, without the moments
        # the operating system gave the core to another process
        started = time.thread_time()
        pieces = reply_pieces(
            {"type": "get_data"}, "samples", session_range(recorder, buffer, None, None)
        )
        turns = [time.thread_time() - started]
        while True:
            started = time.thread_time()
            piece = next(pieces, None)
            turns.append(time.thread_time() - started)
            if piece is None:
                break
        recorder.close()
    finally:
        shutil.rmtree(folder, True)
    turns = sorted(t * 1000 for t in turns)
    print(
        f"\nserver work (CPU time) per reactor turn for the same answer ({len(turns)} turns, "
        f"{sum(turns):.0f} ms in all): median {turns[len(turns) // 2]:.2f} ms, "
        f"max {turns[-1]:.2f} ms"
    )
    return turns[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    ok = run_on_reactor(lambda: run(args))
    worst_turn = server_turns(args.seconds)
    turn_ok = worst_turn <= 2.0
    print(
        f"[{'PASS' if turn_ok else 'FAIL'}] the server's longest single piece of work for this "
        f"answer (CPU time, in this process, no sockets) is at most 2 ms: {worst_turn:.2f} ms"
    )
    sys.exit(0 if ok and turn_ok else 1)


if __name__ == "__main__":
    main()
