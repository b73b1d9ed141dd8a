"""
Can a careless or hostile client stall another client's gaze, or grow the
server without bound?  The server (a subprocess, mock tracker at 1200 Hz, on
an ephemeral loopback port) streams to a watching client in this process
while hostile clients attack it, one attack at a time, each from a process
of its own (this script, run with --attacker).  The watcher measures on
CLOCK_MONOTONIC its longest gap between gaze frames during each attack, and
during a quiet period first (the baseline, same run); the server's RSS is
read from /proc before, during (the peak) and after each attack.

    python bench/bench_hostile.py [--only ATTACK ...]

Attacks (issue 10's measurements, on the server before its limits):
  validation_refused  5 validation_points x 40,000 samples (12 MB each), then
                      validation_compute (was: 30 of them, 16 s on the reactor)
  validation_largest  30 points x 5,000 samples (the most a point may have),
                      over the server's own samples, then validation_compute
  get_data_unread     100 whole-buffer get_data, replies not read (was: +160 MB,
                      a 0.5 s gap)
  ping_flood          140,000 pings, pongs not read (was: +18 MB)
  oversized_markers   40 markers of 1.5 MB, then 200 of 60 KB (was: +280 MB,
                      kept after the sender left)
  request_flood       50,000 get_status, replies not read (closed with 1008)
  empty_frame_flood   100,000 empty text frames (6 bytes each, ~11,000 a read),
                      every error reply read (all must come)
  fragment_flood      one message in 200,000 one-byte fragments (helper D's
                      area: the fragment budget)

Goal: the watcher's gaze never stops for more than 50 ms, none of its
samples is lost, and the server's RSS grows by at most 100 MB during any
attack.  What the watcher sees also holds the machine's scheduling of busy
processes (on a shared machine that alone can pass 50 ms: the quiet
baseline is printed beside it), so the server's own share is measured too,
in the server process: the CPU time its reactor thread uses between two
ticks of a 2 ms timer (its work in one turn, which no load on the machine
inflates; the aim is under 20 ms), the timer's lateness, and the process's
CPU time during the latest tick (near the lateness: the server's threads
held the reactor up, holding the GIL; near zero: the machine did not run it).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from rawsocket import frame_header, open_websocket

HERE = os.path.dirname(os.path.abspath(__file__))
GAP_GOAL_MS = 50.0
#: The most CPU the reactor thread may use in one turn: well inside the gap goal.
TURN_AIM_MS = 20.0
RSS_BUDGET_MB = 100.0

ATTACKS = (
    "validation_refused",
    "validation_largest",
    "get_data_unread",
    "ping_flood",
    "oversized_markers",
    "request_flood",
    "empty_frame_flood",
    "fragment_flood",
)


# -- the attacker: a minimal blocking WebSocket client, in its own process


class RawClient:
    """Frames are masked with a zero key, so large payloads need no XOR."""

    def __init__(self, port, rcvbuf=None):
        self.sock, self.buffer = open_websocket(port, user_agent="hostile", rcvbuf=rcvbuf)

    @staticmethod
    def frame(opcode, payload, fin=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        return head + b"\0\0\0\0" + payload

    def send(self, message):
        self.sock.sendall(self.frame(1, json.dumps(message).encode()))

    def _need(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buffer.extend(chunk)

    def receive(self):
        """The next message: (opcode, payload), fragments joined."""
        parts, first = [], None
        while True:
            b0, at, n = frame_header(self.buffer, self._need)
            payload = bytes(self.buffer[at : at + n])
            del self.buffer[: at + n]
            opcode = b0 & 0x0F
            if opcode >= 8:
                if opcode == 8:
                    return 8, payload
                continue  # ping, pong
            first = opcode if first is None else first
            parts.append(payload)
            if b0 & 0x80:
                return first, b"".join(parts)

    def replies(self, request_ids):
        """The replies to these requests, in whatever order they come."""
        wanted, got = set(request_ids), {}
        while wanted - set(got):
            opcode, payload = self.receive()
            if opcode == 8:
                raise EOFError(f"closed: {int.from_bytes(payload[:2], 'big')}")
            message = json.loads(payload)
            if message.get("requestId") in wanted:
                got[message["requestId"]] = message
        return [got[i] for i in request_ids]

    def reply(self, request_id):
        return self.replies([request_id])[0]

    def close(self):
        self.sock.close()


def attack(name, port):
    """Run one attack; returns what it saw (printed as JSON)."""
    seen = {}
    if name in ("validation_refused", "validation_largest"):
        points, per_point = (5, 40_000) if name == "validation_refused" else (30, 5_000)
        c = RawClient(port)
        c.send({"type": "get_current_gaze", "requestId": "now"})
        now = c.reply("now")["gaze"]["timestamp"]
        # client copies spanning the last 4 s: the server holds that window
        span = 4000.0 if per_point <= 5000 else 30000.0
        samples = [
            {
                "x": 0.5,
                "y": 0.5,
                "timestamp": now - span + i * span / per_point,
                "leftValid": True,
                "rightValid": True,
                "leftPupilDiameter": 3.1,
                "rightPupilDiameter": 3.2,
                "server_timestamp": now,
                "browserTimestamp": now,
            }
            for i in range(per_point)
        ]
        point = RawClient.frame(
            1,
            json.dumps(
                {"type": "validation_point", "point": {"x": 0.5, "y": 0.5}, "gaze_samples": samples}
            ).encode(),
        )
        seen["frame_mb"] = round(len(point) / 1e6, 1)
        c.send({"type": "validation_start"})
        for _ in range(points):
            c.sock.sendall(point)
        c.send({"type": "validation_compute", "requestId": "compute"})
        reply = c.reply("compute")
        seen["compute"] = "ok" if reply.get("success") else reply.get("error", "")[:90]
        c.close()
    elif name == "get_data_unread":
        c = RawClient(port, rcvbuf=65536)
        for i in range(100):
            c.send({"type": "get_data", "requestId": f"g{i}"})
        time.sleep(3.0)  # not reading
        replies = c.replies([f"g{i}" for i in range(100)])
        seen["answered"] = sum(1 for r in replies if r.get("success"))
        seen["refused"] = sum(1 for r in replies if r.get("type") == "error")
        c.close()
    elif name == "ping_flood":
        c = RawClient(port, rcvbuf=65536)
        ping = RawClient.frame(9, b"12345678")
        for _ in range(140):
            c.sock.sendall(ping * 1000)
        time.sleep(1.0)
        c.close()
    elif name == "oversized_markers":
        c = RawClient(port)
        big = "x" * 1_500_000
        for i in range(40):
            c.send({"type": "marker", "label": "big", "data": {"text": big}, "requestId": f"b{i}"})
        refused = sum(1 for r in c.replies([f"b{i}" for i in range(40)]) if r["type"] == "error")
        fits = "x" * 60_000
        for i in range(200):
            c.send({"type": "marker", "label": "m", "data": {"text": fits}, "requestId": f"m{i}"})
        accepted = sum(1 for r in c.replies([f"m{i}" for i in range(200)]) if r.get("success"))
        c.send({"type": "get_markers", "requestId": "list"})
        listed = c.reply("list")
        seen.update(
            refused=refused, accepted=accepted, kept=listed["count"], evicted=listed["evicted"]
        )
        c.close()
    elif name == "request_flood":
        c = RawClient(port, rcvbuf=65536)
        request = RawClient.frame(1, b'{"type":"get_status","requestId":"s"}')
        try:
            for _ in range(50):
                c.sock.sendall(request * 1000)
            time.sleep(2.0)
            while True:
                opcode, payload = c.receive()
                if opcode == 8:
                    seen["closed_with"] = int.from_bytes(payload[:2], "big")
                    break
        except (EOFError, OSError) as e:
            seen["closed_with"] = seen.get("closed_with") or f"dropped ({e.__class__.__name__})"
        c.close()
    elif name == "empty_frame_flood":
        c = RawClient(port)
        count, got = 100_000, [0]
        # each empty frame gets an error reply (not JSON); read them as they come
        import threading

        def read():
            try:
                while got[0] < count:
                    opcode, payload = c.receive()
                    if opcode == 8:
                        return
                    if payload.startswith(b'{"type":"error"'):
                        got[0] += 1
            except (EOFError, OSError):
                return

        reader = threading.Thread(target=read)
        reader.start()
        empty = RawClient.frame(1, b"")
        for _ in range(count // 10_000):
            c.sock.sendall(empty * 10_000)
        reader.join(60)
        seen["answered"] = got[0]
        c.close()
    elif name == "fragment_flood":
        c = RawClient(port)
        body = b'{"type":"time_sync","requestId":"f","pad":"' + b"p" * 199_960 + b'"}'
        frames = [RawClient.frame(1, body[:1], fin=False)]
        frames += [RawClient.frame(0, body[i : i + 1], fin=False) for i in range(1, len(body) - 1)]
        frames.append(RawClient.frame(0, body[-1:], fin=True))
        try:
            c.sock.sendall(b"".join(frames))
            seen["reply"] = c.reply("f").get("type")
        except (EOFError, OSError) as e:
            seen["reply"] = f"closed ({e})"[:60]
        c.close()
    else:
        raise SystemExit(f"unknown attack {name}")
    return seen


# -- the server, with a probe of its reactor


def serve_with_probe(argv, path):
    """
    Run the server (the console script's code) with a 2 ms timer on its
    reactor; every 100 ms, append to C{path} the time, the timer's worst
    lateness (how long the reactor did not run it: its own work, waiting
    for the GIL, or the process not being scheduled on a busy machine), the
    CPU time the whole process used during that worst interval (near zero:
    the machine did not run it; near the lateness: its threads did), and
    the most CPU time the reactor thread used between two ticks (its own
    work only, whatever the machine's load).
    """
    from twisted.internet import reactor, task

    from jspsych_tobii import cli

    out = open(path, "w", buffering=1)
    state = {"expected": None, "late": 0.0, "during": 0.0, "busy": 0.0}
    state["since"] = time.monotonic_ns() / 1e6

    def probe():
        now = time.monotonic_ns() / 1e6
        cpu, process = time.thread_time() * 1000.0, time.process_time() * 1000.0
        if state["expected"] is not None:
            late = now - state["expected"]
            if late > state["late"]:
                state["late"], state["during"] = late, process - state["process"]
            state["busy"] = max(state["busy"], cpu - state["cpu"])
        state["expected"], state["cpu"], state["process"] = now + 2.0, cpu, process
        if now - state["since"] >= 100.0:
            out.write(f"{now:.1f} {state['late']:.2f} {state['during']:.2f} {state['busy']:.2f}\n")
            state["late"] = state["during"] = state["busy"] = 0.0
            state["since"] = now

    reactor.callWhenRunning(task.LoopingCall(probe).start, 0.002)
    return cli.main(argv)


def reactor_stalls(path, start, end):
    """The server's worst (lateness, process CPU meanwhile, CPU per turn) in [start, end], ms."""
    late = during = busy = 0.0
    with open(path) as f:
        for line in f:
            at, lateness, used, cpu = (float(v) for v in line.split())
            if start <= at <= end + 100.0:
                if lateness > late:
                    late, during = lateness, used
                busy = max(busy, cpu)
    return late, during, busy


# -- the bench: server, watcher, one attacker process per attack


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run(args):
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from bench_stream import run_on_reactor, sleep, wait_listening
    from twisted.internet import defer, reactor

    class Watcher(WebSocketClientProtocol):
        def onOpen(self):
            self.arrivals = []
            self.seqs = []
            self.factory.opened.callback(self)

        def onMessage(self, payload, isBinary):
            if payload.startswith(b'{"type":"gaze_data"'):
                self.arrivals.append(time.monotonic_ns() / 1e6)
                at = payload.find(b'"seq":') + 6
                self.seqs.append(int(payload[at : payload.index(b",", at)]))

    def lost(watcher, start, end):
        """Samples the watcher missed in [start, end]: gaps in the sequence numbers."""
        seqs = [q for t, q in zip(watcher.arrivals, watcher.seqs) if start <= t <= end]
        return sum(max(0, b - a - 1) for a, b in zip(seqs, seqs[1:]))

    def longest_gap(arrivals, start, end):
        times = [t for t in arrivals if start <= t <= end]
        gaps = [b - a for a, b in zip(times, times[1:])]
        if times:
            gaps += [times[0] - start, end - times[-1]]  # a stream that stopped altogether
        return max(gaps) if gaps else end - start

    @defer.inlineCallbacks
    def bench():
        port = free_port()
        probe = tempfile.NamedTemporaryFile(prefix="bench-hostile-", suffix=".txt", delete=False)
        probe.close()
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                probe.name,
                "--mock",
                "--mock-rate",
                "1200",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "ERROR",
            ],
            stdout=subprocess.DEVNULL,
        )
        rows = []
        probe_path = probe.name
        try:
            yield wait_listening(port, server)
            factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}")
            factory.protocol = Watcher
            factory.opened = defer.Deferred()
            factory.setProtocolOptions(utf8validateIncoming=False, maxMessagePayloadSize=0)
            reactor.connectTCP("127.0.0.1", port, factory)
            watcher = yield factory.opened
            watcher.sendMessage(b'{"type":"start_tracking","requestId":"w"}')
            yield sleep(2.0)
            start = time.monotonic_ns() / 1e6
            yield sleep(args.baseline)
            end = time.monotonic_ns() / 1e6
            late, _, busy = reactor_stalls(probe_path, start, end)
            base = dict(
                gap=longest_gap(watcher.arrivals, start, end),
                late=late,
                busy=busy,
                lost=lost(watcher, start, end),
            )
            load = os.getloadavg()[0]
            print(
                f"baseline over {args.baseline:g} s: watcher's longest gap {base['gap']:.1f} ms, "
                f"server timer late {late:.1f} ms, reactor CPU per turn {busy:.1f} ms; "
                f"server RSS {rss_mb(server.pid):.0f} MB; load average {load:.2f}",
                flush=True,
            )
            for name in args.only or ATTACKS:
                before = rss_mb(server.pid)
                peak = before
                start = time.monotonic_ns() / 1e6
                attacker = subprocess.Popen(
                    [sys.executable, __file__, "--attacker", name, "--port", str(port)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                while attacker.poll() is None:
                    peak = max(peak, rss_mb(server.pid))
                    yield sleep(0.02)
                end = time.monotonic_ns() / 1e6 + 500
                for _ in range(25):
                    peak = max(peak, rss_mb(server.pid))
                    yield sleep(0.02)
                yield sleep(1.0)
                after = rss_mb(server.pid)
                output = attacker.stdout.read().strip()
                try:
                    seen = json.loads(output.splitlines()[-1])
                except (ValueError, IndexError):
                    seen = {"attacker": f"exit {attacker.returncode}"}
                gap = longest_gap(watcher.arrivals, start, end)
                late, during, busy = reactor_stalls(probe_path, start, end)
                row = dict(
                    lost=lost(watcher, start, end),
                    name=name,
                    late=late,
                    during=during,
                    busy=busy,
                    seconds=(end - 500 - start) / 1000,
                    gap=gap,
                    before=before,
                    peak=peak,
                    after=after,
                    seen=seen,
                )
                rows.append(row)
                print(
                    f"  {name:<19} {row['seconds']:5.1f} s  gap {gap:6.1f} ms  "
                    f"late {late:6.1f} ms (process CPU meanwhile {during:5.1f} ms)  "
                    f"CPU/turn {busy:5.1f} ms  lost {row['lost']}  "
                    f"RSS +{peak - before:5.1f} MB peak, +{after - before:5.1f} MB after  {seen}",
                    flush=True,
                )
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(10)
            os.unlink(probe_path)
        return base, rows, alive, load

    return run_on_reactor(bench)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=ATTACKS)
    parser.add_argument("--baseline", type=float, default=5.0, help="quiet seconds first")
    parser.add_argument("--attacker", choices=ATTACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve_with_probe(sys.argv[3:], sys.argv[2]))
    args = parser.parse_args()
    if args.attacker:
        print(json.dumps(attack(args.attacker, args.port)))
        return
    result = run(args)
    if result is None:
        sys.exit(1)
    base, rows, alive, load = result
    print(
        "\nper attack: the watcher's longest gap between gaze frames and the samples it"
        "\nlost (goal: under 50 ms, none lost; the gap also holds the machine's load, see the"
        "\nbaseline); the most CPU the server's reactor thread used in one turn (its own"
        "\nwork, whatever the load; aim: under 20 ms); how late its 2 ms timer ran at worst"
        "\nand the process's CPU meanwhile (the server's threads holding the reactor up);"
        "\nthe server's RSS growth at the peak (budget: 100 MB) and after the attacker left."
    )
    print(
        f"  {'attack':<19} {'gap ms':>7} {'<50?':>4} {'lost':>5} {'CPU/turn':>8} {'<20?':>4} "
        f"{'late ms':>8} {'(CPU)':>6} {'RSS peak':>8} {'<100?':>5} {'after':>6}"
    )
    print(
        f"  {'(quiet baseline)':<19} {base['gap']:7.1f} {'':>4} {base['lost']:5d} "
        f"{base['busy']:8.1f} {'':>4} {base['late']:8.1f}"
    )

    def verdict(good):
        return "PASS" if good else "FAIL"

    server_ok, gaps_ok = alive, True
    for row in rows:
        grew = row["peak"] - row["before"]
        gap_ok = row["gap"] <= GAP_GOAL_MS and row["lost"] == 0
        turn_ok = row["busy"] <= TURN_AIM_MS
        rss_ok = grew <= RSS_BUDGET_MB
        server_ok = server_ok and turn_ok and rss_ok and row["lost"] == 0
        gaps_ok = gaps_ok and gap_ok
        print(
            f"  {row['name']:<19} {row['gap']:7.1f} {verdict(gap_ok)} {row['lost']:5d} "
            f"{row['busy']:8.1f} {verdict(turn_ok)} {row['late']:8.1f} {row['during']:6.1f} "
            f"{grew:+8.1f} {verdict(rss_ok):>5} {row['after'] - row['before']:+6.1f}"
        )
    worst_gap = max((row["gap"] for row in rows), default=0.0)
    worst_turn = max((row["busy"] for row in rows), default=0.0)
    print(
        f"\n[{verdict(server_ok)}] server: its reactor worked at most {worst_turn:.1f} ms in a "
        f"turn (aim {TURN_AIM_MS:g} ms), its RSS grew at most {RSS_BUDGET_MB:g} MB per attack, "
        f"the watcher lost no sample; server {'up' if alive else 'DIED'}"
    )
    print(
        f"[{verdict(gaps_ok)}] watcher: its gaze never stopped over {GAP_GOAL_MS:g} ms "
        f"(worst {worst_gap:.1f} ms; quiet baseline {base['gap']:.1f} ms; load average "
        f"{load:.2f} on {os.cpu_count()} cores)"
    )
    ok = server_ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
