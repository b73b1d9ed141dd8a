"""
Streaming benchmark: the server with its mock tracker at 1200 Hz and N
clients, against the floor of bench_path.py (a bare fan-out of pre-encoded
frames, one per sample as a tracker SDK delivers them), measured in the
same run.  bench_path.py measures the production path (the Tobii adapter);
this one the mock, as --mock runs it.

    python bench/bench_stream.py [--clients 4] [--rate 1200] [--seconds 10] [--status-poll 5]

For each server it starts the server in its own process, connects N
WebSocket clients from this process, sends start_tracking, lets the stream
settle, then measures for --seconds: per client the delivered rate, samples
lost (gaps in the per-session sequence numbers), and latency from capture to
receipt (both on CLOCK_MONOTONIC, which the mock stamps capture times with,
so no clock sync is involved); and the server process's CPU time from
/proc.  It prints our/floor ratios and checks the targets: no lost samples,
p99 capture-to-receipt <= 5 ms, server CPU <= 2x the floor.

With --status-poll HZ the server is measured a second time while this
process also fetches /status.json HZ times a second over a kept-alive
connection, as an open status page does, and it prints what watching costs
the experiment pages: the ratios of CPU, delivered rate and p99 latency with
and without the page, and the status.json response time.
"""

import argparse
import os
import socket
import subprocess
import sys
import time

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent, HTTPConnectionPool, readBody

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Client(WebSocketClientProtocol):
    def connectionMade(self):
        super().connectionMade()
        self.measuring = False
        self.latencies = []
        self.seqs = []
        self.opened = defer.Deferred()

    def onOpen(self):
        self.sendMessage(b'{"type":"start_tracking","requestId":"req_1"}')
        self.opened.callback(self)

    def onMessage(self, payload, isBinary):
        now = time.monotonic_ns() / 1e6
        if not self.measuring or not payload.startswith(b'{"type":"gaze_data"'):
            return
        # only the two fields measured are decoded, to keep the client cheap
        i = payload.index(b'"timestamp":') + 12
        timestamp = float(payload[i : payload.index(b",", i)])
        j = payload.index(b'"seq":') + 6
        self.seqs.append(int(payload[j : payload.index(b",", j)]))
        self.latencies.append(now - timestamp)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


class StatusPoller:
    """Fetches /status.json at a rate, one request at a time, as the status page does."""

    def __init__(self, port, rate):
        self.url = f"http://127.0.0.1:{port}/status.json".encode()
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.agent = Agent(reactor, pool=self.pool)
        self.rate = rate
        self.busy = False
        self.times = []
        self.sizes = []
        self.errors = 0
        self.loop = task.LoopingCall(self.poll)

    def start(self):
        self.loop.start(1.0 / self.rate, now=True)

    def stop(self):
        self.loop.stop()
        return self.pool.closeCachedConnections()

    def poll(self):
        if self.busy:
            return
        self.busy = True
        started = time.monotonic()

        def done(body):
            self.busy = False
            self.times.append((time.monotonic() - started) * 1000.0)
            self.sizes.append(len(body))

        def failed(f):
            self.busy = False
            self.errors += 1

        d = self.agent.request(b"GET", self.url)
        d.addCallback(readBody).addCallbacks(done, failed)


@defer.inlineCallbacks
def measure(name, command, port, clients, seconds, status_poll=0.0):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield wait_listening(port, process)
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}")
        factory.protocol = Client
        factory.setProtocolOptions(utf8validateIncoming=False)
        protos = []
        for _ in range(clients):
            done = defer.Deferred()
            reactor.connectTCP("127.0.0.1", port, factory)
            factory.protocol = Client
            protos.append(done)
        # collect protocols as they open
        opened = []
        original = Client.onOpen

        def on_open(self):
            original(self)
            opened.append(self)

        Client.onOpen = on_open
        while len(opened) < clients:
            yield task.deferLater(reactor, 0.05, lambda: None)
        Client.onOpen = original
        poller = None
        if status_poll:
            poller = StatusPoller(port, status_poll)
            poller.start()
        yield task.deferLater(reactor, 1.0, lambda: None)  # settle
        if poller is not None:
            poller.times.clear()
            poller.sizes.clear()
        cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
        for p in opened:
            p.measuring = True
        yield task.deferLater(reactor, seconds, lambda: None)
        for p in opened:
            p.measuring = False
        cpu1, t1 = cpu_seconds(process.pid), time.monotonic()
        if poller is not None:
            yield poller.stop()
        for p in opened:
            p.dropConnection(abort=True)
    finally:
        process.terminate()
        process.wait(10)
    elapsed = t1 - t0
    rows = []
    for p in opened:
        seqs = p.seqs
        lost = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
        rows.append(
            {
                "rate": len(seqs) / elapsed,
                "lost": lost,
                "p50": percentile(p.latencies, 50),
                "p99": percentile(p.latencies, 99),
                "max": max(p.latencies),
            }
        )
    result = {"name": name, "clients": rows, "cpu": (cpu1 - cpu0) / elapsed}
    if poller is not None:
        result["status"] = {
            "polls": len(poller.times),
            "rate": len(poller.times) / elapsed,
            "errors": poller.errors,
            "p50": percentile(poller.times, 50) if poller.times else None,
            "p99": percentile(poller.times, 99) if poller.times else None,
            "bytes": sum(poller.sizes) / len(poller.sizes) if poller.sizes else 0,
        }
    return result


def report(result):
    print(f"\n{result['name']}: server CPU {result['cpu'] * 100:.1f}% of one core")
    print("  client   rate/s   lost   p50 ms   p99 ms   max ms")
    for i, row in enumerate(result["clients"]):
        print(
            f"  {i:>6} {row['rate']:>8.1f} {row['lost']:>6d} {row['p50']:>8.2f} "
            f"{row['p99']:>8.2f} {row['max']:>8.2f}"
        )


def server_command(port, rate):
    return [
        sys.executable,
        "-m",
        "jspsych_tobii.cli",
        "--mock",
        "--mock-rate",
        str(rate),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "ERROR",
    ]


def summary(result):
    rows = result["clients"]
    return {
        "rate": min(r["rate"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "p50": max(r["p50"] for r in rows),
        "p99": max(r["p99"] for r in rows),
        "cpu": result["cpu"],
    }


@defer.inlineCallbacks
def run(args):
    ours_port, floor_port = free_port(), free_port()
    ours = yield measure(
        "jspsych-tobii (mock tracker)",
        server_command(ours_port, args.rate),
        ours_port,
        args.clients,
        args.seconds,
    )
    watched = None
    if args.status_poll:
        watched_port = free_port()
        watched = yield measure(
            f"jspsych-tobii (mock tracker), status.json polled at {args.status_poll:g} Hz",
            server_command(watched_port, args.rate),
            watched_port,
            args.clients,
            args.seconds,
            status_poll=args.status_poll,
        )
    floor = yield measure(
        "floor (bare fan-out, pre-encoded frames)",
        [
            sys.executable,
            os.path.join(HERE, "path_server.py"),
            "floor",
            str(floor_port),
            str(args.rate),
        ],
        floor_port,
        args.clients,
        args.seconds,
    )
    print(f"\n{args.clients} clients, {args.rate:g} Hz, {args.seconds:g} s measured per server")
    report(ours)
    if watched is not None:
        report(watched)
    report(floor)
    lost = sum(r["lost"] for r in ours["clients"])
    p99 = max(r["p99"] for r in ours["clients"])
    floor_p99 = max(r["p99"] for r in floor["clients"])
    cpu_ratio = ours["cpu"] / floor["cpu"] if floor["cpu"] else float("inf")
    print("\nours/floor ratios")
    print(f"  server CPU     {cpu_ratio:.2f}x   (target <= 2x)")
    print(f"  p99 latency    {p99 / floor_p99:.2f}x   ({p99:.2f} ms vs {floor_p99:.2f} ms)")
    print("\ntargets")
    checks = [
        ("no lost samples", lost == 0, f"{lost} lost"),
        ("p99 capture-to-receipt <= 5 ms", p99 <= 5.0, f"{p99:.2f} ms"),
        ("server CPU <= 2x floor", cpu_ratio <= 2.0, f"{cpu_ratio:.2f}x"),
    ]
    if watched is not None:
        a, b, st = summary(ours), summary(watched), watched["status"]
        print("\nwatching the status page (with / without)")
        for label, key, fmt in (
            ("server CPU    ", "cpu", "{:.1%}"),
            ("delivered rate", "rate", "{:.1f}/s"),
            ("p50 latency   ", "p50", "{:.2f} ms"),
            ("p99 latency   ", "p99", "{:.2f} ms"),
        ):
            with_, without = fmt.format(b[key]), fmt.format(a[key])
            print(f"  {label} {b[key] / a[key]:.3f}x   ({with_} vs {without})")
        print(f"  lost samples   {b['lost']} vs {a['lost']}")
        print(
            f"  status.json: {st['polls']} answers ({st['rate']:.1f}/s), {st['errors']} errors, "
            f"{st['bytes'] / 1024:.1f} KiB each, p50 {st['p50']:.2f} ms, p99 {st['p99']:.2f} ms"
        )
        checks.append(("no lost samples while watched", b["lost"] == 0, f"{b['lost']} lost"))
        checks.append(
            (
                "p99 capture-to-receipt <= 5 ms while watched",
                b["p99"] <= 5.0,
                f"{b['p99']:.2f} ms",
            )
        )
    return report_checks(checks)


def sleep(seconds):
    """A Deferred that fires after C{seconds} on the reactor."""
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_listening(port, process=None, tries=200):
    """
    Wait until something accepts connections on 127.0.0.1:C{port}; stop the
    bench if C{process} (the server) exits first.
    """
    for _ in range(tries):
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before serving")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            yield sleep(0.05)
    raise SystemExit(f"nothing listened on port {port}")


def cpu_ticks():
    """The machine's (stolen, total) CPU time so far, in ticks (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return values[7], sum(values)


def stolen_since(start):
    """
    The share of the machine's CPU time since C{start} (L{cpu_ticks}) that
    the host running this virtual machine gave to others (steal): the
    noise no benchmark here can remove.
    """
    stolen, total = cpu_ticks()
    return 100.0 * (stolen - start[0]) / max(1, total - start[1])


def report_checks(checks, indent="  "):
    """Print each (label, ok, value) as PASS or FAIL; whether all passed."""
    for label, ok, value in checks:
        print(f"{indent}[{'PASS' if ok else 'FAIL'}] {label}: {value}")
    return all(ok for _, ok, _ in checks)


def run_on_reactor(start):
    """
    Run the Deferred that C{start()} returns on the reactor, then stop it;
    return what the Deferred fired with (None if it failed: traceback printed).
    """
    outcome = {}

    def finish(result):
        outcome["result"] = result
        reactor.stop()

    def failed(f):
        f.printTraceback()
        reactor.stop()

    reactor.callWhenRunning(lambda: start().addCallbacks(finish, failed))
    reactor.run()
    return outcome.get("result")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--status-poll",
        type=float,
        default=0.0,
        help="also measure the server while /status.json is fetched this often (Hz; the "
        "status page polls at 5)",
    )
    args = parser.parse_args()
    sys.exit(0 if run_on_reactor(lambda: run(args)) else 1)


if __name__ == "__main__":
    main()
