# -*- test-case-name: tests.test_timesync -*-
"""
Clocks: the server clock and each connection's view of its browser's clock.

Three clocks meet in this server (see CLIENT_CONTRACT.md):
  - A, the browser's C{performance.now()} in ms;
  - B, the server clock, sent as C{time_sync.serverTime} in ms;
  - C, the tracker's sample clock, sent as C{gaze.timestamp} in ms.

This server makes B and C the same clock: the monotonic clock the Tobii SDK
stamps its C{system_time_stamp} with (CLOCK_MONOTONIC in µs on Linux).  So the
offset B - C is zero by construction, and C{browserTimestamp} computed by the
client is the sample's capture time in browser time, up to the A-B sync error.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

MicrosecondClock = Callable[[], int]


def monotonic_us() -> int:
    """The process's monotonic clock in integer microseconds."""
    return time.monotonic_ns() // 1000


class ServerClock:
    """
    Clock B.  C{now_us()} is the monotonic clock plus an offset, which is the
    tracker's L{system_clock_offset_us<jspsych_tobii.interfaces.TrackerInfo>}
    (zero with the mock and with the SDK on Linux), so that server time and
    sample time are one clock.

    @param source: the microsecond clock to read; tests pass one driven by a
        L{twisted.internet.task.Clock}.

    @ivar source: that clock, without the offset: what every tracker is
        given as C{clock_us} and adds its own offset to.
    """

    def __init__(self, source: MicrosecondClock = monotonic_us, offset_us: int = 0):
        self.source = source
        self.offset_us = offset_us

    def now_us(self) -> int:
        return self.source() + self.offset_us

    def now_ms(self) -> float:
        return self.now_us() / 1000.0


def clock_from_seconds(seconds: Callable[[], float]) -> MicrosecondClock:
    """Adapt a seconds clock (such as C{task.Clock.seconds}) to microseconds."""
    return lambda: int(round(seconds() * 1_000_000))


class ClientClockModel:
    """
    The server's view of one connection's clock A.  Every C{time_sync}
    request carries C{clientTime} (A, when sent) and arrives at server time B.
    C{B - A} at arrival is the offset plus the one-way delay, so the smallest
    value seen is the best bound on the offset A->B; it is what the server
    uses to convert a browser time stamp (for example of an event marker) to
    server time.
    """

    def __init__(self) -> None:
        self._best: Optional[float] = None
        self.rounds = 0

    def observe(self, client_ms: float, server_ms: float) -> None:
        self.rounds += 1
        diff = server_ms - client_ms
        if self._best is None or diff < self._best:
            self._best = diff

    @property
    def offset_ms(self) -> Optional[float]:
        """Server time minus client time, in ms, or None before any round."""
        return self._best

    def to_server_ms(self, client_ms: float) -> Optional[float]:
        if self._best is None:
            return None
        return client_ms + self._best
