# -*- test-case-name: tests.test_tobii_callbacks -*-
"""
What the Tobii SDK's own threads run, and what becomes of their failures.

The SDK calls a stream callback on one of its threads, often while holding
a lock, and swallows whatever the callback raises.  So each callback of
L{StreamCallbacks} does two things only: it copies the record into plain
values (the conversions of L{jspsych_tobii.trackers.tobii_sdk}) and hands
the copy to the reactor through a L{ThreadHandoff}.  It never calls the SDK
and never raises.  A user position is not handed over: the reactor only
ever wants the latest, when asked for it, so the callback replaces
L{StreamCallbacks.position} and wakes nothing.

A record a callback cannot read (an SDK that renamed a field, say) is lost,
but never silently: L{FailureCounts} counts it, on any thread, and the
first failure of a stream goes to the reactor with its traceback, as a
L{CALLBACK_FAILED} event.  There L{FailureReport} logs it, tells the
clients (a L{NotificationKind.STREAM_ERROR} naming the stream) and then
logs a count every C{interval} seconds for as long as the failures go on.

Which thread runs what:
  - L{StreamCallbacks}: the SDK's threads (its flags are written by the
    reactor and the SDK worker thread);
  - L{FailureCounts}: any thread, under its lock;
  - L{FailureReport}: the reactor.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from jspsych_tobii.interfaces import NotificationKind
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.handoff import ThreadHandoff
from jspsych_tobii.trackers.tobii_sdk import (
    NOTIFICATIONS,
    RawPosition,
    gaze_row,
    position_from_gaze,
    position_from_guide,
)

__all__ = [
    "GAZE_STREAM",
    "POSITION_STREAM",
    "NOTIFICATION_STREAM",
    "ERROR_STREAM",
    "CALLBACK_FAILED",
    "StreamCallbacks",
    "FailureCounts",
    "FailureReport",
]

_log = Logger()

#: The streams whose callbacks count their failures, by the names the log,
#: the clients (C{data["stream"]} of a C{stream_error}) and C{get_status} use.
GAZE_STREAM = "gaze"
POSITION_STREAM = "user_position"
NOTIFICATION_STREAM = "notifications"
ERROR_STREAM = "stream_errors"

#: The event a failing callback hands to the reactor (never an SDK kind).
CALLBACK_FAILED = "callback_failed"


class FailureCounts:
    """
    Records lost to failures, in all and per stream.  Any thread.

    A stream is I{watched} while a report of its failures is under way on
    the reactor; the first failure of an unwatched stream starts one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._byStream: Dict[str, int] = {}
        self._watched: Set[str] = set()

    def add(self, stream: str, records: int = 1) -> bool:
        """
        Count C{records} lost in C{stream}.

        @return: True when no report of C{stream} is under way: the caller
            must start one.
        """
        with self._lock:
            self._total += records
            self._byStream[stream] = self._byStream.get(stream, 0) + records
            if stream in self._watched:
                return False
            self._watched.add(stream)
            return True

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    def byStream(self) -> Dict[str, int]:
        """A copy of the counts per stream."""
        with self._lock:
            return dict(self._byStream)

    def count(self, stream: str) -> int:
        with self._lock:
            return self._byStream.get(stream, 0)

    def endIfQuiet(self, stream: str, reported: int) -> int:
        """
        The count of C{stream}; when it is still C{reported} (nothing lost
        since), its report ends.
        """
        with self._lock:
            count = self._byStream.get(stream, 0)
            if count == reported:
                self._watched.discard(stream)
            return count


class StreamCallbacks:
    """
    The callbacks subscribed to the SDK's streams.  Every method but the
    constructor runs on an SDK thread: it copies, hands off, never raises.

    @param reactor: provides C{callFromThread}.
    @param sdk: the SDK module (for its notification constants).
    @param clock_us: the server's microsecond clock, read on the SDK
        threads to stamp when a position arrived.
    @param gaze: called on the reactor with a list of L{gaze_row} tuples.
    @param events: called on the reactor with a list of C{(kind, data)}:
        notifications, stream errors and L{CALLBACK_FAILED}.

    @ivar failures: the L{FailureCounts} of these callbacks.
    @ivar position: the latest user position and when it arrived,
        C{(arrived_us, raw)} (a raw position of L{position_from_gaze} or
        L{position_from_guide}), or C{None}; replaced whole by each
        position callback, read (and cleared) on the reactor.
    @ivar gazeWanted: whether gaze rows are handed over (set on the reactor).
    @ivar trackBoxFeed: whether gaze records also feed user positions (SDK
        1.x; set on the worker thread).
    @ivar notifications: the callback for each notification stream the SDK
        offers, by the SDK's stream name.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        sdk: Any,
        clock_us: Callable[[], int],
        gaze: Callable[[List[tuple]], Any],
        events: Callable[[List[tuple]], Any],
    ):
        self.failures = FailureCounts()
        self._clock_us = clock_us
        self.position: Optional[Tuple[int, RawPosition]] = None
        self.gazeWanted = False
        self.trackBoxFeed = False
        self.gazeHandoff = ThreadHandoff(reactor, gaze)
        self.eventHandoff = ThreadHandoff(reactor, events)
        self.notifications: Dict[str, Callable[[Any], None]] = {}
        for constant, kind in NOTIFICATIONS:
            stream = getattr(sdk, constant, None)
            if stream is not None:
                self.notifications[stream] = functools.partial(self.notification, kind)

    def gaze(self, record: Any) -> None:
        try:
            if self.gazeWanted:
                self.gazeHandoff.put(gaze_row(record))
            if self.trackBoxFeed:
                self.position = (self._clock_us(), position_from_gaze(record))
        except Exception:
            self._failed(GAZE_STREAM)

    def userPosition(self, record: Any) -> None:
        try:
            self.position = (self._clock_us(), position_from_guide(record))
        except Exception:
            self._failed(POSITION_STREAM)

    def notification(self, kind: str, record: Any) -> None:
        try:
            self.eventHandoff.put((kind, dict(record)))
        except Exception:
            self._failed(NOTIFICATION_STREAM)

    def streamError(self, record: Any) -> None:
        try:
            self.eventHandoff.put((NotificationKind.STREAM_ERROR, dict(record)))
        except Exception:
            self._failed(ERROR_STREAM)

    def _failed(self, stream: str) -> None:
        """
        Called in a callback's C{except} clause: count the lost record and,
        when no report is under way, hand the failure (with its traceback)
        to the reactor.  Never raises.
        """
        try:
            if self.failures.add(stream):
                failure = Failure()
                failure.cleanFailure()  # keep the text of the stack, not its frames
                self.eventHandoff.put((CALLBACK_FAILED, {"stream": stream, "failure": failure}))
        except Exception:
            pass  # nothing may escape into the SDK; the count is kept


class FailureReport:
    """
    On the reactor: tells of the records lost in each stream.  The first
    failure ever of a stream is logged with its traceback, a later one on a
    line; the clients are told; then, every C{interval} seconds while
    records keep being lost, a count.  A quiet interval ends the report.

    @param counts: the L{FailureCounts} to report.
    @param notify: C{notify(message, data)} tells the clients (a
        L{NotificationKind.STREAM_ERROR}).
    @param interval: seconds between counts.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        counts: FailureCounts,
        notify: Callable[[str, dict], Any],
        interval: float,
    ):
        self._reactor = reactor
        self._counts = counts
        self._notify = notify
        self.interval = interval
        self._tracebackLogged: Set[str] = set()
        self._timers: Dict[str, IDelayedCall] = {}

    def start(self, stream: str, failure: Failure) -> None:
        """A report of C{stream}'s failures begins, with this C{failure}."""
        error = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        count = self._counts.count(stream)
        if stream not in self._tracebackLogged:
            self._tracebackLogged.add(stream)
            _log.failure(
                "cannot read the {stream} records the Tobii SDK delivers: they are lost "
                "while this goes on (a changed SDK?)",
                failure,
                level=LogLevel.error,
                stream=stream,
            )
        else:
            _log.error(
                "cannot read the {stream} records the Tobii SDK delivers, again: {error}",
                stream=stream,
                error=error,
            )
        self._tell(stream, count, error)
        self._timers[stream] = self._reactor.callLater(
            self.interval, self._recount, stream, count, error
        )

    def stop(self) -> None:
        """No more counts (the tracker is disconnected)."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def _recount(self, stream: str, reported: int, error: str) -> None:
        count = self._counts.endIfQuiet(stream, reported)
        if count == reported:
            self._timers.pop(stream, None)
            _log.info(
                "the {stream} records of the Tobii SDK have been read without a failure "
                "for {interval:g} s ({count} lost in all)",
                stream=stream,
                interval=self.interval,
                count=count,
            )
            return
        _log.warn(
            "{lost} more {stream} records of the Tobii SDK could not be read in the last "
            "{interval:g} s ({count} lost in all)",
            lost=count - reported,
            stream=stream,
            interval=self.interval,
            count=count,
        )
        self._tell(stream, count, error)
        self._timers[stream] = self._reactor.callLater(
            self.interval, self._recount, stream, count, error
        )

    def _tell(self, stream: str, count: int, error: str) -> None:
        self._notify(
            f"cannot read the eye tracker's {stream} data ({error}): {count} records lost",
            {"source": "callback", "stream": stream, "error": error, "count": count},
        )
