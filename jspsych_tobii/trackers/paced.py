# -*- test-case-name: tests.test_mock,tests.test_replay -*-
"""
L{PacedStream}: what the trackers that make their own samples (the mock,
the replay) share: the receivers they deliver to, and a reactor timer that
delivers the samples due every few milliseconds (the replay's; the mock
uses a pacing).

How the mock's samples reach the reactor is injected: L{ThreadPacing}
takes each sample from the mock's L{ISampleSource} when it is due, on a
thread, and hands its bytes over through the same L{ThreadHandoff} as the
Tobii SDK adapter (what the server uses); with L{TimerPacing} a reactor
timer takes and delivers them in batches (deterministic under a
L{task.Clock}, for tests, and C{--mock-delivery batched}).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from jspsych_tobii.interfaces import GazeBatch, GazeReceiver, TrackerError, TrackerNotification
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.handoff import ThreadHandoff

_log = Logger()

#: Largest interval between deliveries of gaze batches, seconds.
DELIVERY_INTERVAL = 0.002


class PacedStream:
    """
    A subclass sets C{self._reactor}.  One that uses the timer defines
    C{_deliver()} (called by the timer; it calls C{_schedule()} again while
    the stream runs) and may override C{_delivery_interval()}; one that does
    not overrides C{_stop_timer()}.
    """

    _reactor: IReactorTime
    _timer: Optional[IDelayedCall] = None
    _receiver: Optional[GazeReceiver] = None
    _notify: Optional[Callable[[TrackerNotification], Any]] = None

    def _delivery_interval(self) -> float:
        return DELIVERY_INTERVAL

    def _deliver(self) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _schedule(self) -> None:
        self._timer = self._reactor.callLater(self._delivery_interval(), self._deliver)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def stopGaze(self) -> defer.Deferred:
        self._stop_timer()
        self._receiver = None
        return defer.succeed(None)

    def setNotificationReceiver(
        self, receiver: Optional[Callable[[TrackerNotification], Any]]
    ) -> None:
        self._notify = receiver


class ISampleSource(Interface):
    """
    Where a pacing takes a tracker's samples from: made on whichever thread
    the pacing runs (so a source is thread-safe), handed to the reactor by
    the pacing.
    """

    def take() -> Optional[GazeBatch]:
        """The samples due by now that were not taken before, or C{None}."""

    def prepare() -> None:
        """
        Make ahead what will soon be due, so that L{take} is quick when it
        is; a pacing thread calls it between samples.  May do nothing.
        """


class IPacing(Interface):
    """How a tracker's samples reach the reactor: L{TimerPacing} or L{ThreadPacing}."""

    running = Attribute("True between L{start} and L{stop}.")

    def start(
        source: ISampleSource,
        deliver: Callable[[GazeBatch], Any],
        start_us: int,
        period_us: float,
    ) -> None:
        """
        From now on, whenever samples are due (every C{period_us} from
        C{start_us}, µs on the tracker's clock), take them from C{source}
        and call C{deliver} with them on the reactor.  A pacing already
        running is stopped first.
        """

    def stop() -> None:
        """No C{deliver()} call after this."""


@implementer(IPacing)
class TimerPacing:
    """
    Batched delivery: a reactor timer takes and delivers, every
    C{DELIVERY_INTERVAL} (or every sample period, if shorter), whatever
    became due meanwhile.  Everything runs on the reactor, so it is
    deterministic under a L{task.Clock}; on a real reactor its waits are
    rounded up to whole milliseconds, so samples arrive in batches a
    millisecond or two late.
    """

    def __init__(self, reactor: IReactorTime, interval: float = DELIVERY_INTERVAL):
        self._reactor = reactor
        self._interval = interval
        self._timer: Optional[IDelayedCall] = None
        self._every = interval

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(
        self,
        source: ISampleSource,
        deliver: Callable[[GazeBatch], Any],
        start_us: int,
        period_us: float,
    ) -> None:
        self.stop()
        self._every = min(self._interval, period_us / 1e6)
        self._timer = self._reactor.callLater(self._every, self._tick, source, deliver)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _tick(self, source: ISampleSource, deliver: Callable[[GazeBatch], Any]) -> None:
        self._timer = self._reactor.callLater(self._every, self._tick, source, deliver)
        batch = source.take()
        if batch is not None:
            deliver(batch)


@implementer(IPacing)
class ThreadPacing:
    """
    Per-sample delivery, the way a tracker SDK delivers: a thread of its own
    sleeps until each sample is due (C{start_us + k * period_us} on
    C{clock_us}), takes it from the source, and hands its bytes to the
    reactor through the same L{ThreadHandoff} the SDK adapter uses (one
    sample, unless the thread was late, when the late ones come together).
    Between samples it lets the source L{prepare<ISampleSource.prepare>}
    the next ones, so the reactor does no work for a sample but deliver it.
    The thread's waits are not rounded to the reactor's millisecond, so a
    sample reaches the reactor about as soon as it is due.  Needs a real
    reactor (C{callFromThread}).
    """

    def __init__(
        self, reactor: IReactorFromThreads, clock_us: Callable[[], int], name: str = "paced stream"
    ):
        if not callable(getattr(reactor, "callFromThread", None)):
            raise TrackerError(
                "per-sample delivery needs a reactor that takes calls from threads; "
                "use batched delivery (--mock-delivery batched) with this one"
            )
        self._reactor = reactor
        self._clock_us = clock_us
        self._name = name
        self._stop: Optional[threading.Event] = None
        self.ticks = 0  # due times the thread woke for, for tests

    @property
    def running(self) -> bool:
        return self._stop is not None

    def start(
        self,
        source: ISampleSource,
        deliver: Callable[[GazeBatch], Any],
        start_us: int,
        period_us: float,
    ) -> None:
        self.stop()
        stop = self._stop = threading.Event()

        def hand_over(records: List[bytes]) -> None:
            if not stop.is_set():
                deliver(bytearray().join(records))

        handoff = ThreadHandoff(self._reactor, hand_over)
        thread = threading.Thread(
            target=self._run,
            args=(source, handoff, stop, start_us, period_us),
            name=self._name,
            daemon=True,
        )
        thread.start()

    def stop(self) -> None:
        """The thread ends within one sample period; nothing is delivered after this."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _run(
        self,
        source: ISampleSource,
        handoff: ThreadHandoff,
        stop: threading.Event,
        start: int,
        period: float,
    ) -> None:
        clock = self._clock_us
        k = 0
        while not stop.is_set():
            due = start + int(round(k * period))
            now = clock()
            if now < due:
                stop.wait((due - now) / 1e6)
                continue
            self.ticks += 1
            try:
                batch = source.take()
                if batch is not None and len(batch):
                    handoff.put(bytes(batch) if isinstance(batch, bytearray) else batch.tobytes())
                source.prepare()
            except Exception:
                # a bug in the source: said on the reactor, where it is logged
                # like any other failure, and the stream ends (no sample is
                # made up to fill the gap)
                self._reactor.callFromThread(
                    _log.failure,
                    "{name}: making samples failed; the stream stops",
                    Failure(),
                    name=self._name,
                )
                return
            # the next sample not yet due; late ones are taken with this one
            k = max(k + 1, int((now - start) // period) + 1)
