"""
Latency and time sync seen by a real browser (headless Chromium), for each
server of bench_path.py, in the same run.

    python bench/bench_browser.py [--modes floor,ours,mock,mock-batched]
                                  [--seconds 5] [--runs 3] [--rate 1200]

The page (bench/browser/latency.html) does what the jsPsych extension does:
10 time_sync rounds 100 ms apart, offset = the median of serverTime minus
the middle of each round trip; then it measures time_sync every 50 ms for
--seconds while idle, starts tracking, and for --seconds while gaze streams
measures each sample's receipt (performance.now() in onmessage) minus its
browserTimestamp (its capture time converted to browser time with that
offset), and time_sync every 50 ms again.

Reported per server, medians of --runs: receipt minus browserTimestamp p50
and p99; time_sync round trip min and p50, idle and streaming; the spread of
the offset (p99 - p1), idle and streaming, and how much wider it is while
streaming (the widening); the same widening of the middle 80% (p90 - p10),
which one late reply among the ~100 of a phase does not set.  The floor
(bench/path_server.py) is a bare fan-out of the same fake SDK stream.
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

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def figures(result):
    out = {
        "p50": percentile(result["latencies"], 50),
        "p99": percentile(result["latencies"], 99),
        "samples": len(result["latencies"]),
    }
    for phase in ("idle", "streaming"):
        rtts = [r["rtt"] for r in result[phase]]
        offsets = [r["offset"] for r in result[phase]]
        out[f"rtt_min_{phase}"] = min(rtts)
        out[f"rtt_p50_{phase}"] = percentile(rtts, 50)
        out[f"spread_{phase}"] = percentile(offsets, 99) - percentile(offsets, 1)
        # the same for the middle 80%: with ~100 offsets a phase, p99 - p1 is
        # close to their range, which one late reply sets
        out[f"middle_{phase}"] = percentile(offsets, 90) - percentile(offsets, 10)
    return out


def run(args):
    from bench_stream import wait_listening
    from twisted.internet import defer, reactor
    from twisted.web import resource, server, static

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    page = os.path.join(HERE, "browser", "latency.html")
    results = {}

    class Report(resource.Resource):
        isLeaf = True

        def __init__(self):
            super().__init__()
            self.waiting = None

        def render_POST(self, request):
            if self.waiting is not None and not self.waiting.called:
                self.waiting.callback(json.loads(request.content.read()))
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            return b"ok"

    root = resource.Resource()
    root.putChild(b"latency.html", static.File(page))
    report = Report()
    root.putChild(b"report", report)
    site = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
    web = site.getHost().port

    @defer.inlineCallbacks
    def one(mode):
        port = free_port()
        srv = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "path_server.py"), mode, str(port), str(args.rate)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        profile = tempfile.mkdtemp(prefix="bench-browser-")
        browser = None
        try:
            yield wait_listening(port, srv)
            report.waiting = defer.Deferred()
            url = (
                f"http://127.0.0.1:{web}/latency.html?server=ws://127.0.0.1:{port}"
                f"&report=http://127.0.0.1:{web}/report&seconds={args.seconds}"
            )
            browser = subprocess.Popen(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    "--remote-debugging-port=0",
                    url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            outcome = yield report.waiting.addTimeout(120, reactor)
        finally:
            if browser is not None:
                browser.kill()
                browser.wait(10)
            srv.terminate()
            srv.wait(10)
            shutil.rmtree(profile, True)
        if not outcome["ok"]:
            raise RuntimeError(f"{mode}: {outcome['error']}")
        return figures(outcome["result"])

    @defer.inlineCallbacks
    def main():
        try:
            for i in range(args.runs):
                for mode in args.modes.split(","):
                    f = yield one(mode)
                    results.setdefault(mode, []).append(f)
                    print(
                        f"  run {i + 1} {mode:>12}: p50 {f['p50']:.2f} p99 {f['p99']:.2f} ms, "
                        f"RTT min {f['rtt_min_streaming']:.2f} ms, spread "
                        f"{f['spread_idle']:.2f} -> {f['spread_streaming']:.2f} ms",
                        flush=True,
                    )
        except Exception as e:
            print(f"benchmark failed: {e!r}", file=sys.stderr)
            results.clear()
        finally:
            site.stopListening()
            reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="floor,ours,mock,mock-batched")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1200.0)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print("load average at the start", " ".join(f.read().split()[:3]))
    results = run(args)
    if not results:
        return 2
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(
        f"\nheadless Chromium, {args.rate:g} Hz, {args.seconds:g} s per phase, "
        f"medians of {args.runs} runs; load average at the end {load}"
    )
    print(
        "| server | receipt - browserTimestamp p50 | p99 | time_sync RTT min idle / streaming "
        "| RTT p50 streaming | offset spread idle | streaming | widening "
        "| p90 - p10 widening |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    names = {
        "floor": "floor (bare fan-out)",
        "ours": "ours (Tobii adapter)",
        "child": "ours (--sdk-python)",
        "mock": "ours (--mock)",
        "mock-batched": "ours (--mock-delivery batched)",
    }
    for mode, runs in results.items():
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {names.get(mode, mode)} | {m['p50']:.2f} ms | {m['p99']:.2f} ms "
            f"| {m['rtt_min_idle']:.2f} / {m['rtt_min_streaming']:.2f} ms "
            f"| {m['rtt_p50_streaming']:.2f} ms | {m['spread_idle']:.2f} ms "
            f"| {m['spread_streaming']:.2f} ms "
            f"| {m['spread_streaming'] - m['spread_idle']:+.2f} ms "
            f"| {m['middle_streaming'] - m['middle_idle']:+.2f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
