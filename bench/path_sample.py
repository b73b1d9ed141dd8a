"""
What one gaze sample costs on its way through the server, without sockets:
the fake SDK's record goes through the callback (the SDK's thread), the
hand-off, and on the reactor's side to N clients' transports, which only
keep what is written.  The same for the floor of bench_path.py (its
callback, the same hand-off, a pre-encoded frame written to each transport)
in the same run.  Each sample is handed over and drained on its own, as
the SDK's callbacks at 1200 Hz are on an idle reactor.

    python bench/path_sample.py [--samples 20000] [--clients 1,4,8]
                                [--profile ours] [--repeat 5]

Prints µs per sample (the best of --repeat rounds, process CPU time) for
each path and client count, and the difference.  With --profile, runs that
path under cProfile once and prints the functions that took the most time.
"""

import argparse
import collections
import cProfile
import os
import pstats
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]


class Reactor:
    """C{callFromThread} keeps the call; L{run} makes the pending ones."""

    def __init__(self):
        self.calls = collections.deque()

    def callFromThread(self, f, *args, **kwargs):
        self.calls.append((f, args, kwargs))

    def callLater(self, delay, f, *args, **kwargs):  # pragma: no cover - not on this path
        raise AssertionError("no timers on the gaze path")

    def run(self):
        calls = self.calls
        while calls:
            f, args, kwargs = calls.popleft()
            f(*args, **kwargs)


class Transport:
    """Keeps what is written, as a socket's transport does until the reactor writes it."""

    connected = True
    disconnecting = False

    def __init__(self):
        self.data = []
        self.write = self.data.append


def records(count):
    from tests import fake_tobii_research as fake

    sdk = fake.make_sdk("2.x")
    device = sdk.add_device(frequency=1200.0)
    period = 1e6 / 1200
    start = time.monotonic_ns() // 1000
    out = [device._gaze(k, int(start + k * period), period) for k in range(count)]
    sdk.shutdown()
    return out


def floor_path(reactor, clients):
    from path_server import floor_stream

    transports = [Transport() for _ in range(clients)]
    return floor_stream(reactor, transports), transports


def ours_path(reactor, clients):
    """The adapter's callbacks, hub, gates and protocols, wired as the server wires them."""
    from jspsych_tobii.core.timesync import ServerClock, monotonic_us
    from jspsych_tobii.server.gate import SendGate
    from jspsych_tobii.server.hub import GazeHub
    from jspsych_tobii.server.protocol import TobiiServerProtocol, prepare_text
    from jspsych_tobii.trackers.tobii import TobiiTracker
    from tests import fake_tobii_research as fake

    sdk = fake.make_sdk("2.x")
    tracker = TobiiTracker(reactor, monotonic_us, sdk=sdk)
    hub = GazeHub(None, ServerClock(monotonic_us), 120_000, prepare_text)
    # what startGaze and a tracking session leave behind
    hub._tracker = tracker
    hub._in_session = True
    tracker._gazeReceiver = hub._on_gaze
    tracker._callbacks.gazeWanted = True
    transports = []
    for _ in range(clients):
        protocol = TobiiServerProtocol()
        protocol.state = protocol.STATE_OPEN
        protocol.send_queue = collections.deque()
        protocol.transport = Transport()
        transports.append(protocol.transport)
        gate = SendGate(protocol, reactor)
        hub._subscribers.add(gate)
    return tracker._callbacks.gaze, transports


PATHS = {"floor": floor_path, "ours": ours_path}


def run(path, clients, samples):
    """CPU seconds for every sample through C{path} to C{clients} transports."""
    reactor = Reactor()
    callback, transports = PATHS[path](reactor, clients)
    drain = reactor.run
    t0 = time.process_time()
    for record in samples:
        callback(record)
        drain()
    elapsed = time.process_time() - t0
    written = sum(len(t.data) for t in transports)
    if written != len(samples) * clients:
        raise SystemExit(f"{path}: {written} frames written, {len(samples) * clients} expected")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(PATHS), help="profile this path once")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    samples = records(args.samples)
    counts = [int(n) for n in args.clients.split(",")]
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        run(args.profile, counts[0], samples)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
        return
    print(f"{args.samples} samples of the fake SDK, best of {args.repeat} rounds, CPU time")
    print("| clients | floor µs/sample | ours µs/sample | ours - floor | ours / floor |")
    print("|---|---|---|---|---|")
    for n in counts:
        best = {}
        for _ in range(args.repeat):
            for path in PATHS:
                t = run(path, n, samples) / len(samples) * 1e6
                best[path] = min(best.get(path, t), t)
        floor, ours = best["floor"], best["ours"]
        print(f"| {n} | {floor:.2f} | {ours:.2f} | {ours - floor:+.2f} | {ours / floor:.2f}x |")


if __name__ == "__main__":
    main()
