"""
The cost of --lsl: the server with its mock tracker at 1200 Hz and 4
WebSocket clients, without and with --lsl (a pylsl inlet in this process
pulling the gaze outlet, as LabRecorder would), measured in the same run
with bench_stream.py's helpers.

    python bench/bench_lsl.py [--clients 4] [--rate 1200] [--seconds 5] [--rounds 2]

Each round measures both servers for --seconds each (alternating, so that
a change of load on a shared machine hits both); it prints the server
process's CPU (its liblsl threads included), the WebSocket clients' lost
samples and p99 latency, and what the inlet received: samples lost (gaps in
the seq channel from its first sample to its last) and their order.  The load average is
printed too: on a shared machine it is part of the figure.

liblsl is confined to this machine: a configuration with ResolveScope =
machine is written and named in LSLAPICFG before pylsl is imported (the
server processes inherit it).
"""

import argparse
import os
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

_cfg = os.path.join(tempfile.mkdtemp(prefix="bench-lsl-"), "lsl_api.cfg")
with open(_cfg, "w") as f:
    f.write("[multicast]\nResolveScope = machine\n[log]\nlevel = -3\n")
os.environ["LSLAPICFG"] = _cfg

import bench_stream  # noqa: E402
import pylsl  # noqa: E402
from twisted.internet import defer  # noqa: E402

GAZE_ID = "jspsych-tobii:Mock Tracker:MOCK-0001:gaze"


class InletPuller(threading.Thread):
    """Resolves the gaze outlet once it appears and pulls from it until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.seqs = []
        self.stamps = []

    def run(self):
        found = []
        while not found and not self.stop.is_set():
            found = pylsl.resolve_byprop("source_id", GAZE_ID, timeout=1.0)
        if not found:
            return
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        inlet.open_stream(timeout=10)
        while not self.stop.is_set():
            data, stamps = inlet.pull_chunk(timeout=0.05)
            if data:
                self.seqs.extend(int(sample[-1]) for sample in data)
                self.stamps.extend(stamps)
        inlet.close_stream()


def server_command(args, port, lsl):
    command = [
        sys.executable,
        "-m",
        "jspsych_tobii.cli",
        "--mock",
        "--mock-rate",
        str(args.rate),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "ERROR",
    ]
    return command + (["--lsl"] if lsl else [])


@defer.inlineCallbacks
def measure(args, lsl):
    port = bench_stream.free_port()
    puller = InletPuller() if lsl else None
    if puller is not None:
        puller.start()
    name = f"jspsych-tobii --mock{' --lsl' if lsl else ''}"
    result = yield bench_stream.measure(
        name, server_command(args, port, lsl), port, args.clients, args.seconds
    )
    if puller is not None:
        puller.stop.set()
        puller.join(15)
        result["lsl"] = puller
    return result


def lsl_summary(puller):
    seqs = puller.seqs
    if not seqs:
        return {"received": 0, "lost": None}
    lost = (seqs[-1] - seqs[0] + 1) - len(seqs)
    order = all(b == a + 1 for a, b in zip(seqs, seqs[1:]))
    return {"received": len(seqs), "lost": lost, "in_order": order}


@defer.inlineCallbacks
def run(args):
    without, with_lsl = [], []
    for _ in range(args.rounds):
        without.append((yield measure(args, lsl=False)))
        with_lsl.append((yield measure(args, lsl=True)))
    print(
        f"\n{args.clients} clients, {args.rate:g} Hz, {args.seconds:g} s per run, "
        f"{args.rounds} round(s); load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} cores"
    )
    for result in without + with_lsl:
        bench_stream.report(result)
    cpu_without = sum(r["cpu"] for r in without) / len(without)
    cpu_with = sum(r["cpu"] for r in with_lsl) / len(with_lsl)
    ws_lost = sum(row["lost"] for r in with_lsl for row in r["clients"])
    p99_without = max(row["p99"] for r in without for row in r["clients"])
    p99_with = max(row["p99"] for r in with_lsl for row in r["clients"])
    summaries = [lsl_summary(r["lsl"]) for r in with_lsl]
    received = sum(s["received"] for s in summaries)
    lsl_lost = sum(s["lost"] or 0 for s in summaries)
    ordered = all(s.get("in_order") for s in summaries)
    print("\n--lsl against the same server without it")
    print(
        f"  server CPU       {cpu_without * 100:.1f}% -> {cpu_with * 100:.1f}% of one core "
        f"({cpu_with / cpu_without:.2f}x, +{(cpu_with - cpu_without) * 100:.1f} points)"
    )
    print(f"  WebSocket p99    {p99_without:.2f} ms -> {p99_with:.2f} ms")
    print(
        f"  LSL inlet        {received} samples received, {lsl_lost} lost, "
        f"{'in order' if ordered else 'OUT OF ORDER'}"
    )
    checks = [
        ("no WebSocket sample lost with --lsl", ws_lost == 0, f"{ws_lost} lost"),
        ("no LSL sample lost", received > 0 and lsl_lost == 0 and ordered, f"{lsl_lost} lost"),
    ]
    print("\ntargets")
    return bench_stream.report_checks(checks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1200.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.exit(0 if bench_stream.run_on_reactor(lambda: run(args)) else 1)


if __name__ == "__main__":
    main()
