"""
The SDK in its own process against the SDK in the server's process, in the
same run, with the fake SDK of tests/fake_tobii_research.py (its sample
thread, each sample stamped with the time it was due).

    python bench/bench_child.py [--rate 1200] [--seconds 10]

For each of the in-process adapter (TobiiTracker) and the out-of-process one
(ChildTracker, running this interpreter as the child) it connects, starts
gaze, lets the stream settle for a second and then measures for --seconds,
at the gaze receiver on the server's reactor: samples received and lost
(gaps in the sample clock), the latency from capture (system_time_us) to
receipt (time.monotonic_ns at the receiver call; both are CLOCK_MONOTONIC),
and the CPU time of the server process (and of the SDK process).  It prints
the figures and checks the targets: no sample lost either way, and the
out-of-process p99 within 1 ms of the in-process p99.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RATE_ENV = "JSPSYCH_TOBII_BENCH_RATE"


def fake_sdk():
    """Called in the SDK process (--sdk bench_child:fake_sdk): one fake tracker."""
    from tests import fake_tobii_research as fake

    sdk = fake.make_sdk("2.x")
    sdk.add_device(frequency=float(os.environ.get(RATE_ENV, "1200")))
    return sdk


def cpu_seconds(pid=None):
    """User + system CPU seconds of a process (this one by default)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, q):
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else float("nan")


class Receiver:
    """The gaze receiver: stamps receipt, keeps capture times while measuring."""

    def __init__(self):
        self.measuring = False
        self.latencies = []
        self.captures = []
        self.batches = 0

    def __call__(self, batch):
        now = time.monotonic_ns() // 1000
        if not self.measuring:
            return
        captured = batch["system_time_us"].copy()
        self.captures.append(captured)
        self.latencies.append(now - captured)
        self.batches += 1

    def results(self, rate):
        import numpy as np

        captures = np.concatenate(self.captures)
        latencies = np.concatenate(self.latencies) / 1000.0
        period = 1e6 / rate
        expected = int(round((captures[-1] - captures[0]) / period)) + 1
        steps = np.diff(captures)
        return {
            "received": int(len(captures)),
            "lost": expected - int(len(captures)),
            "gaps": int(np.count_nonzero(steps > 1.5 * period)),
            "out_of_order": int(np.count_nonzero(steps <= 0)),
            "batches": self.batches,
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": float(latencies.max()),
        }


def run(args):
    from twisted.internet import defer, reactor, task

    sys.path.insert(0, ROOT)
    from jspsych_tobii.core.timesync import monotonic_us
    from jspsych_tobii.trackers.child.tracker import ChildTracker
    from jspsych_tobii.trackers.tobii import TobiiTracker
    from tests import fake_tobii_research as fake

    results = {}

    def sleep(seconds):
        return task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def measure(name, tracker, child_pid=None):
        receiver = Receiver()
        yield tracker.connect()
        yield tracker.startGaze(receiver)
        yield sleep(args.settle)
        pid = child_pid() if child_pid else None
        cpu0, child0, t0 = cpu_seconds(), cpu_seconds(pid) if pid else 0.0, time.monotonic()
        receiver.measuring = True
        yield sleep(args.seconds)
        receiver.measuring = False
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds() - cpu0) / elapsed
        child_cpu = (cpu_seconds(pid) - child0) / elapsed if pid else None
        yield tracker.stopGaze()
        yield tracker.disconnect()
        figures = receiver.results(args.rate)
        figures["cpu"] = cpu
        figures["child_cpu"] = child_cpu
        figures["rate"] = figures["received"] / elapsed
        results[name] = figures

    @defer.inlineCallbacks
    def main():
        try:
            sdk = fake.make_sdk("2.x")
            sdk.add_device(frequency=args.rate)
            try:
                yield measure("in-process", TobiiTracker(reactor, monotonic_us, sdk=sdk))
            finally:
                sdk.shutdown()
            child = ChildTracker(
                reactor,
                monotonic_us,
                sys.executable,
                frequency=args.rate,
                sdk_module="bench_child:fake_sdk",
                python_path=[ROOT, HERE],
                env={RATE_ENV: str(args.rate)},
            )
            yield measure("child process", child, lambda: child.pid)
        except Exception as e:
            print(f"benchmark failed: {e}", file=sys.stderr)
            results.clear()
        finally:
            reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run()
    return results


def report(results, rate, seconds):
    names = ["in-process", "child process"]
    rows = [
        ("delivered rate", lambda r: f"{r['rate']:.1f}/s"),
        ("samples received", lambda r: str(r["received"])),
        ("lost samples", lambda r: str(r["lost"])),
        ("gaps / out of order", lambda r: f"{r['gaps']} / {r['out_of_order']}"),
        ("batches", lambda r: str(r["batches"])),
        ("p50 capture-to-receipt", lambda r: f"{r['p50']:.3f} ms"),
        ("p99 capture-to-receipt", lambda r: f"{r['p99']:.3f} ms"),
        ("max capture-to-receipt", lambda r: f"{r['max']:.3f} ms"),
        ("server CPU (one core)", lambda r: f"{100 * r['cpu']:.1f}%"),
        (
            "SDK process CPU",
            lambda r: "-" if r["child_cpu"] is None else f"{100 * r['child_cpu']:.1f}%",
        ),
    ]
    print(f"fake SDK at {rate:g} Hz, {seconds:g} s each")
    print(f"| | {' | '.join(names)} |")
    print("|---|---|---|")
    for label, cell in rows:
        print(f"| {label} | {' | '.join(cell(results[n]) for n in names)} |")
    inproc, child = results["in-process"], results["child process"]
    difference = child["p99"] - inproc["p99"]
    print(f"p99 difference (child - in-process): {difference:+.3f} ms")
    ok = True
    for name in names:
        if results[name]["lost"] or results[name]["out_of_order"]:
            print(f"TARGET MISSED: {name} lost or reordered samples")
            ok = False
    if difference > 1.0:
        print("TARGET MISSED: the child's p99 is more than 1 ms above the in-process p99")
        ok = False
    if ok:
        print("targets met: no sample lost, p99 within 1 ms of the in-process adapter")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1200.0, help="sample rate, Hz")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds, each")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    results = run(args)
    if not results:
        return 2
    ok = report(results, args.rate, args.seconds)
    if args.json:
        print(json.dumps(results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
