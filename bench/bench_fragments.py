"""
How long can one hostile client hold up the reactor with a message in many
tiny fragments?  A client sends one text message as 20,000 one-byte
fragments; the server's protocol reads it 64 KiB at a time, as Twisted
delivers it, and parses at most MAX_STEPS_PER_TURN steps of it per reactor
turn (server.intake), in front of every other client's gaze.  The script
times each turn (the longest is the longest stall) and the whole message,
with the fragment budget (MAX_MESSAGE_FRAGMENTS) and, as the baseline in
the same run, without it (then only the intake bounds a turn).

    python bench/bench_fragments.py [--fragments 20000] [--repeat 5]

Target: with the budget the longest stall stays in the low milliseconds.
"""

import argparse
import os
import sys
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jspsych_tobii.server import protocol  # noqa: E402
from tests.rawws import frame, handshake_request  # noqa: E402
from tests.support import FakeServer  # noqa: E402

READ = 65536


def one_run(fragments: int):
    server = FakeServer(ping_interval=0)
    turns = []  # the reactor time of each turn: a read, or a later turn of parsing
    schedule = server.clock.callLater

    def timed(delay, f, *args, **kwargs):
        def run(*args, **kwargs):
            start = time.perf_counter()
            f(*args, **kwargs)
            turns.append(time.perf_counter() - start)

        return schedule(delay, run, *args, **kwargs)

    server.clock.callLater = timed
    factory = server.service.site.websocket_factory
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    proto.makeConnection(StringTransport())
    proto.dataReceived(handshake_request(8080))
    assert proto.state == proto.STATE_OPEN
    data = b"".join(
        frame(1 if i == 0 else 0, b" ", fin=i == fragments - 1) for i in range(fragments)
    )
    for at in range(0, len(data), READ):
        start = time.perf_counter()
        proto.dataReceived(data[at : at + READ])
        turns.append(time.perf_counter() - start)
        server.clock.advance(0)  # the later turns that parse the rest of this read
    return max(turns), sum(turns), proto.state


def measure(fragments: int, repeat: int, budget: int):
    saved = protocol.MAX_MESSAGE_FRAGMENTS
    protocol.MAX_MESSAGE_FRAGMENTS = budget
    try:
        runs = [one_run(fragments) for _ in range(repeat)]
    finally:
        protocol.MAX_MESSAGE_FRAGMENTS = saved
    worst = min(r[0] for r in runs)  # best of the repeats: the least disturbed
    total = min(r[1] for r in runs)
    return worst, total, runs[-1][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fragments", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)

    base_worst, base_total, base_state = measure(args.fragments, args.repeat, 10**9)
    worst, total, state = measure(args.fragments, args.repeat, protocol.MAX_MESSAGE_FRAGMENTS)
    names = {0: "closed", 1: "connecting", 2: "closing", 3: "open"}
    print(f"{args.fragments} one-byte fragments in one message, read {READ} bytes at a time")
    print(f"{'':28}{'longest turn':>14}{'whole message':>15}{'connection':>12}")
    print(
        f"{'no budget (baseline)':28}{base_worst * 1e3:>11.1f} ms{base_total * 1e3:>12.1f} ms"
        f"{names[base_state]:>12}"
    )
    print(
        f"{'budget ' + str(protocol.MAX_MESSAGE_FRAGMENTS):28}{worst * 1e3:>11.1f} ms"
        f"{total * 1e3:>12.1f} ms{names[state]:>12}"
    )
    print(
        f"ratio (budget / baseline): longest turn {worst / base_worst:.3f}x, "
        f"whole message {total / base_total:.3f}x; "
        f"{base_total / args.fragments * 1e6:.1f} µs per fragment without the budget"
    )


if __name__ == "__main__":
    main()
