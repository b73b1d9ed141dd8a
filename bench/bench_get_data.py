"""
How fast is a large get_data, and does it stall another client's gaze
stream?  The server (its own process: mock tracker at 1200 Hz, recording to
a temporary folder) streams to a watching client (this process) for
--seconds, then another client (the asker, a process of its own) asks
--runs times, a few seconds apart, for the last --seconds of the session:
72,000 samples and ~20 MB of JSON for 60 s, most of them read back from the
recording, the newest from memory.

    python bench/bench_get_data.py [--seconds 60] [--runs 9] [--no-floor]

After each of the server's answers the asker asks the floor
(bench/bulk_floor.py, a process of its own) for the same, twice: it holds
the server's first answer, byte for byte, and sends it back in fragments
of about the server's size with no other work, once all at once (one
C{sendmsg} call) and once spread evenly over as long as the server's
answer just took.  What the floor's answers add to the watcher's gap (the
watcher still watching our server's stream) is what moving those 20 MB to
the asker costs this machine with no server work at all: in a burst, and
at the server's pace.

What is measured, per run, for the server and for each floor, and the
median over the runs:

  - answer time: from the asker sending the request to the asker receiving
    the reply's last byte (its monotonic clock);
  - added gap: the watcher's longest gap between gaze frames (arrival times
    on its monotonic clock) from the request to 20 ms after the answer,
    minus the median of its longest gaps in windows of the same length in
    the 4 s before the request, when nothing but the stream is going on;
  - server CPU for the answer: the server process's CPU time (all its
    threads, from /proc) from request to answer, minus what streaming alone
    cost over the same time at its rate in the 4 s before;
  - the asker's CPU time for the answer (reading 20 MB);
  - where the longest gap arose: for the frame that ended it, how long
    after its sample's capture the server's hub stamped it
    (C{server_timestamp} minus C{timestamp}, both on the server's clock)
    and how long after that the watcher read it (its monotonic clock, the
    same clock here).  A late stamp means the sample reached the server
    late (the tracker's thread or the reactor waited, for a core or the
    GIL); a late read, that the frame was late leaving the server, or the
    watcher late reading it.

and, in this process, without sockets (CPU time, so mostly independent of
the machine's load): the same answer's work as the server splits it, per
reactor turn (what can delay another client's frames) and per slice made
on the worker thread (read from the recording's get_data text cache, as the
server does, and beside it, every sample encoded as without the cache), and
in total, each the least of 3 answers (an interrupt or the host's pause
counts as CPU time of the turn it stops), with the first answer's longest
turn beside it.

Targets (issue 14), each printed PASS or FAIL with what it compares:

  - median answer time under 200 ms;
  - median added gap at most 2 ms (the floors' are printed beside it, and
    the median over the runs of ours minus each floor's);
  - the longest reactor turn of the answer's work at most 1 ms of CPU.

Wall times and gaps also hold the operating system's scheduling of the
busy processes (server, watcher, asker, and whatever else runs) on this
machine's cores: the load average is printed with the results.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from bench_stream import (
    cpu_ticks,
    report_checks,
    run_on_reactor,
    sleep,
    stolen_since,
    wait_listening,
)
from twisted.internet import defer, protocol, reactor

HERE = os.path.dirname(os.path.abspath(__file__))
#: Baseline before each request, and the pause between runs (ms).
BEFORE_MS = 4000.0
#: The watcher's frames counted after the answer's last byte (ms).
AFTER_MS = 20.0
#: Who answers in each run: the server, then the floor at once, then the
#: floor spread over as long as the server's answer took.
WHO = ("ours", "at once", "spread")
#: The answer's work measured in this process this many times (per turn and
#: per slice the least counts).
REPEATS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_ms(pid):
    """CPU time (ms) of all the threads of a process, from /proc (ns resolution)."""
    total = 0
    folder = f"/proc/{pid}/task"
    for tid in os.listdir(folder):
        try:
            with open(f"{folder}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total / 1e6


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Watcher(WebSocketClientProtocol):
    def connectionMade(self):
        super().connectionMade()
        self.arrivals = []
        self.stamps = []  # per frame: its server_timestamp (the hub's stamp, ms)
        self.captures = []  # per frame: its sample's timestamp (capture, ms)
        self.latest_ms = None  # the newest frame's sample time (server clock)

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        now = time.monotonic_ns() / 1e6
        if payload.startswith(b'{"type":"gaze_data"'):
            self.arrivals.append(now)
            self.latest_ms = number_after(payload, b'"timestamp":')
            self.captures.append(self.latest_ms)
            self.stamps.append(number_after(payload, b'"server_timestamp":'))


def number_after(payload, key):
    """The JSON number that follows C{key} in C{payload}."""
    start = end = payload.index(key) + len(key)
    while payload[end : end + 1] in b"-+.0123456789eE" and end < len(payload):
        end += 1
    return float(payload[start:end])


class Asker(protocol.ProcessProtocol):
    """The asker process: a question per line to its stdin, an answer per line back."""

    def __init__(self):
        self.lines = b""
        self.waiting = None

    def ask(self, port, start_ms, end_ms, spread_ms=None):
        self.waiting = defer.Deferred()
        spread = b"" if spread_ms is None else b" %.3f" % spread_ms
        self.transport.write(b"%d %.3f %.3f%s\n" % (port, start_ms, end_ms, spread))
        return self.waiting

    def outReceived(self, data):
        self.lines += data
        while b"\n" in self.lines:
            line, self.lines = self.lines.split(b"\n", 1)
            waiting, self.waiting = self.waiting, None
            waiting.callback(json.loads(line))

    def errReceived(self, data):
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason):
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.errback(reason)


def longest_gap(arrivals, start, end):
    times = [t for t in arrivals if start <= t <= end]
    return max((b - a for a, b in zip(times, times[1:])), default=float("nan"))


def gap_origin(watcher, start, end):
    """
    For the frame that ended the longest gap between C{start} and C{end}:
    (capture to the hub's stamp, the hub's stamp to receipt), in ms.
    """
    arrivals = watcher.arrivals
    first = next(i for i, t in enumerate(arrivals) if t >= start)
    last = max(i for i, t in enumerate(arrivals) if t <= end)
    after = max(range(first + 1, last + 1), key=lambda i: arrivals[i] - arrivals[i - 1])
    stamp = watcher.stamps[after]
    return stamp - watcher.captures[after], arrivals[after] - stamp


@defer.inlineCallbacks
def live_runs(args):
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
            "ERROR" if args.server_log is None else "INFO",
            "--record-dir",
            folder,
        ]
        + ([] if args.server_log is None else ["--log-file", args.server_log]),
        stdout=subprocess.DEVNULL,
    )
    asker = floor = floor_port = None
    runs = {who: [] for who in WHO}
    try:
        yield wait_listening(port, server)
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}")
        factory.protocol = Watcher
        factory.opened = defer.Deferred()
        reactor.connectTCP("127.0.0.1", port, factory)
        watcher = yield factory.opened
        watcher.sendMessage(b'{"type":"start_tracking","requestId":"w"}')
        print(f"streaming {args.seconds:g} s at 1200 Hz before the first request...")
        yield sleep(args.seconds + 0.5)
        asker = Asker()
        script = os.path.join(HERE, "get_data_asker.py")
        reply_file = os.path.join(folder, "reply.json")
        reactor.spawnProcess(
            asker, sys.executable, [sys.executable, script, str(port), reply_file], env=None
        )
        for number in range(args.runs):
            # the server's answer, then the floor's (the first answer's bytes), at
            # once and spread over as long as the server's answer took
            for who in WHO if args.floor else WHO[:1]:
                if who != "ours" and floor is None:
                    floor, floor_port = start_floor(reply_file)
                target = port if who == "ours" else floor_port
                spread = runs["ours"][-1]["took"] if who == "spread" else None
                run = yield one_run(args, server, watcher, asker, target, spread)
                runs[who].append(run)
                print(
                    f"  run {number + 1}, {who}: {run['count']} samples, {run['mb']:.1f} MB, "
                    f"answer {run['took']:.0f} ms, watcher's longest gap {run['during']:.2f} ms "
                    f"(median of {run['windows']} windows before: {run['typical']:.2f} ms, "
                    f"added {run['added']:+.2f} ms), server CPU {run['server_cpu']:.0f} ms, "
                    f"asker CPU {run['asker_cpu']:.0f} ms; the frame that ended the gap: "
                    f"stamped by the hub {run['to_hub']:.2f} ms after capture, read "
                    f"{run['to_watcher']:.2f} ms after that; load {load()}"
                )
    finally:
        if asker is not None and asker.transport is not None:
            asker.transport.closeStdin()
        server.terminate()
        server.wait(10)
        if floor is not None:
            floor.terminate()
            floor.wait(10)
        shutil.rmtree(folder, True)
    return runs


def start_floor(reply_file):
    """bulk_floor.py serving the reply the asker saved; the process and its port."""
    floor = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "bulk_floor.py"), reply_file],
        stdout=subprocess.PIPE,
    )
    return floor, int(floor.stdout.readline())


@defer.inlineCallbacks
def one_run(args, server, watcher, asker, port, spread_ms=None):
    """
    Ask the server on C{port} for the last C{args.seconds} of the session,
    after C{BEFORE_MS} of quiet, and measure the answer (see the module's
    docstring).  Whoever answers, the watcher watches the server's stream
    and the CPU time is the server's.  C{spread_ms}: for the floor, send
    the answer over that long.
    """
    cpu_before = process_cpu_ms(server.pid)
    yield sleep(BEFORE_MS / 1000)
    end_ms = watcher.latest_ms
    cpu_asked = process_cpu_ms(server.pid)
    answer = yield asker.ask(port, end_ms - args.seconds * 1000, end_ms, spread_ms)
    cpu_answered = process_cpu_ms(server.pid)
    asked, done = answer["asked"], answer["done"]
    took = done - asked
    streaming_rate = (cpu_asked - cpu_before) / BEFORE_MS  # CPU ms per ms
    yield sleep(AFTER_MS / 1000 + 0.2)
    during = longest_gap(watcher.arrivals, asked, done + AFTER_MS)
    to_hub, to_watcher = gap_origin(watcher, asked, done + AFTER_MS)
    width = took + AFTER_MS
    windows = []
    t = asked - BEFORE_MS
    while t + width <= asked:
        windows.append(longest_gap(watcher.arrivals, t, t + width))
        t += width
    typical = statistics.median(windows)
    return {
        "count": answer["count"],
        "success": answer["success"],
        "mb": answer["bytes"] / 1e6,
        "took": took,
        "during": during,
        "typical": typical,
        "added": during - typical,
        "windows": len(windows),
        "server_cpu": (cpu_answered - cpu_asked) - streaming_rate * took,
        "asker_cpu": answer["cpu_ms"],
        "to_hub": to_hub,
        "to_watcher": to_watcher,
    }


def in_process(seconds):
    """
    The same answer's work as the server splits it, measured in this
    process without sockets: the recording and buffer of C{seconds} at
    1200 Hz; each reactor turn (taking a piece, as the gate does) and each
    slice made for the worker thread timed apart, in CPU time of this
    thread (the moments the system gives the core to another process do not
    count), each the least of L{REPEATS} answers: what an interrupt handler
    or the virtual machine's host takes while a turn runs is counted as the
    turn's CPU time (one turn of a few microseconds measured up to 1.2 ms
    so), and is not the answer's work.
    """
    import numpy as np

    from jspsych_tobii.core.buffer import GazeBuffer
    from jspsych_tobii.recording.writer import SessionRecorder
    from jspsych_tobii.trackers.eyemodel import EyeModel

    folder = tempfile.mkdtemp(prefix="bench-get-data-turns-")
    try:
        recorder = SessionRecorder(folder)
        recorder.session_started(1, 0, None)
        buffer = GazeBuffer(10000)
        n = int(seconds * 1200)
        samples = EyeModel().samples(np.arange(n) * 833)
        samples["seq"] = np.arange(n)
        samples["server_time_us"] = samples["system_time_us"] + 300
        for i in range(0, n, 3):
            batch = samples[i : i + 3].copy()
            recorder.write_batch(batch)
            buffer.extend(batch)
        recorder.sync()
        runs = [answer(recorder, buffer, text=True) for _ in range(REPEATS)]
        encoding = [answer(recorder, buffer, text=False) for _ in range(REPEATS)]
        recorder.close()
    finally:
        shutil.rmtree(folder, True)
    turns = [min(times) * 1000 for times in zip(*(turns for turns, _, _ in runs))]
    slices = [min(times) * 1000 for times in zip(*(slices for _, slices, _ in runs))]
    encoded = [min(times) * 1000 for times in zip(*(slices for _, slices, _ in encoding))]
    assert runs[0][2] == encoding[0][2], "the cache's text is the encoder's"
    return turns, slices, runs[0][2], max(runs[0][0]) * 1000, encoded


def answer(recorder, buffer, text):
    """
    One answer's work for L{in_process}: the CPU time of each reactor turn
    and each worker slice, and the size of the answer.  With C{text}, as the
    server does it: the samples the recording's get_data cache holds are
    read as text; without, every sample is encoded (as before the cache).
    """
    import gc

    from jspsych_tobii.core.history import session_range, session_text_range
    from jspsych_tobii.server.bulk import SLICE, reply_pieces

    gc.collect()
    queued = []  # the worker thread's jobs, run between reactor turns
    slices = []

    def run(f):
        d = defer.Deferred()
        queued.append((f, d))
        return d

    turns = []
    started = time.thread_time()
    if text:
        chunks = session_text_range(recorder, buffer, None, None, SLICE)
    else:
        chunks = session_range(recorder, buffer, None, None)
    pieces = reply_pieces({"type": "get_data"}, "samples", chunks, run=run)
    turns.append(time.thread_time() - started)
    size = 0
    while True:
        started = time.thread_time()
        piece = next(pieces, None)
        turns.append(time.thread_time() - started)
        if piece is None:
            break
        if isinstance(piece, bytes):
            size += len(piece)
        while queued:  # the worker thread
            f, d = queued.pop(0)
            started = time.thread_time()
            result = f()
            slices.append(time.thread_time() - started)
            d.callback(result)
    return turns, slices, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--server-log", help="write the server's log (INFO) to this file")
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="do not measure the floor (bench/bulk_floor.py) after each answer",
    )
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min) at the start: {load()}")
    ticks = cpu_ticks()
    outcome = run_on_reactor(lambda: live_runs(args))
    stolen = stolen_since(ticks)
    if not outcome or not outcome["ours"]:
        sys.exit(1)
    runs = outcome["ours"]
    floors = [who for who in WHO[1:] if outcome[who]]
    turns, slices, size, first_longest, encoded = in_process(args.seconds)

    def median(key, who="ours"):
        return statistics.median(run[key] for run in outcome[who])

    n = len(runs)
    print(
        f"\nget_data of the last {args.seconds:g} s ({runs[0]['count']} samples, "
        f"{runs[0]['mb']:.1f} MB), median of {n} runs; load average at the end: {load()}; "
        f"CPU time stolen by the virtual machine's host: {stolen:.1f}%"
    )
    rows = [
        ("answer time (asker: request sent to last byte received), ms", "took", "7.0f"),
        ("watcher's longest frame gap while answering, ms", "during", "7.2f"),
        (
            f"same, median of same-length windows in the {BEFORE_MS / 1000:g} s before, ms",
            "typical",
            "7.2f",
        ),
        ("added gap (per run: while answering minus before), ms", "added", "+7.2f"),
        ("server CPU for the answer (process, minus streaming's rate), ms", "server_cpu", "7.0f"),
        (f"asker CPU for the answer (reading {runs[0]['mb']:.0f} MB), ms", "asker_cpu", "7.0f"),
        ("the frame that ended the longest gap: capture to the hub's stamp, ms", "to_hub", "7.2f"),
        (
            "                                      the hub's stamp to receipt, ms",
            "to_watcher",
            "7.2f",
        ),
    ]
    print(f"  {'':70}{'ours':>8}" + "".join(f"{'floor, ' + who:>18}" for who in floors))
    for label, key, spec in rows:
        values = [median(key)] + [median(key, who) for who in floors]
        print(
            f"  {label:70}"
            + "".join(f"{format(v, spec):>{8 if i == 0 else 18}}" for i, v in enumerate(values))
        )
    if floors:
        print(
            "  (floor: bench/bulk_floor.py, a process of its own, sends the same bytes in 512 KiB\n"
            "   fragments, at once (one sendmsg call) or spread evenly over as long as the\n"
            "   server's answer just took; it answers right after the server, the watcher\n"
            "   watching the server's stream)"
        )
    for who in floors:
        pairs = [ours["added"] - floor["added"] for ours, floor in zip(runs, outcome[who])]
        print(
            f"  added gap, ours minus the floor's ({who}), median of {len(pairs)} pairs "
            f"{statistics.median(pairs):+.2f} ms"
        )
    worst = max(range(len(turns)), key=turns.__getitem__)
    what = "the first: the range taken, memory's part copied" if worst == 0 else "a piece"
    turns.sort()
    print(
        f"\nthe same answer's work in this process, no sockets, CPU time ({size / 1e6:.1f} MB;"
        f" each turn and slice the least of {REPEATS} answers):"
        f"\n  reactor: {len(turns)} turns, {sum(turns):.1f} ms in all, median "
        f"{turns[len(turns) // 2]:.3f} ms, longest {turns[-1]:.3f} ms (turn {worst + 1}, {what});"
        f" the first answer alone, longest {first_longest:.3f} ms"
        f"\n  worker thread, reading what the recording's text cache holds (as the server"
        f" does): {len(slices)} slices, {sum(slices):.0f} ms in all, median "
        f"{sorted(slices)[len(slices) // 2]:.2f} ms, longest {max(slices):.2f} ms"
        f"\n  worker thread, encoding every sample instead (without the cache): {len(encoded)}"
        f" slices, {sum(encoded):.0f} ms in all; the cache's share of that:"
        f" {sum(slices) / sum(encoded):.2f}x"
    )
    all_answered = all(run["success"] for run in runs)
    checks = [
        (
            f"median answer time of {n} runs (request sent to last byte received) "
            "is under 200 ms",
            median("took") < 200.0 and all_answered,
            f"{median('took'):.0f} ms" + ("" if all_answered else " (a reply said success false)"),
        ),
        (
            f"median over {n} runs of the watcher's longest gap while answering minus the "
            "median longest gap of same-length windows before the request is at most 2 ms",
            median("added") <= 2.0,
            f"{median('added'):+.2f} ms",
        ),
        (
            "the longest reactor turn of the answer's work (CPU time, in this process, "
            "no sockets) is at most 1 ms",
            turns[-1] <= 1.0,
            f"{turns[-1]:.3f} ms",
        ),
    ]
    print()
    sys.exit(0 if report_checks(checks, indent="") else 1)


if __name__ == "__main__":
    main()
