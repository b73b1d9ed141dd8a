# -*- test-case-name: tests.test_service -*-
"""
L{TrackerService}: the tracker's lifecycle inside the server.

On start it connects the tracker; when there is none it keeps the server up
(as a systemd service should) and retries discovery forever, ever less often
(L{DEFAULT_RETRY_INTERVAL} doubling up to L{MAX_RETRY_INTERVAL}), while
tracker-dependent requests are answered with "no eye tracker connected".
It logs changes of state only: the first failure, a different failure, the
connection; a repeated failure is a debug line.  It routes tracker
notifications to every client, aligns the server clock with the tracker's
system clock, and on stop releases the gaze stream and disconnects the
tracker before the reactor stops.

The tracker in use lives in a L{TrackerSlot} (an L{ITrackerProvider}): the
gaze hub, calibration and the connections are given the slot, the service is
given the hub as its L{ITrackerListener}, so neither holds the other.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from jspsych_tobii.core.timesync import ServerClock
from jspsych_tobii.interfaces import (
    DisplayArea,
    ITracker,
    ITrackerListener,
    ITrackerProvider,
    NotificationKind,
    NoTrackerError,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
)
from jspsych_tobii.logs import Logger

#: Seconds before the first new discovery attempt while no tracker is found;
#: the wait doubles after each failed attempt, up to L{MAX_RETRY_INTERVAL}.
DEFAULT_RETRY_INTERVAL = 5.0
MAX_RETRY_INTERVAL = 60.0


EventRecorder = Callable[..., None]


@implementer(ITrackerProvider)
class TrackerSlot:
    """
    The tracker in use and why there is none: written by the
    L{TrackerService}, read by everything else.

    @ivar stream_errors: records lost in each stream of the tracker because
        they could not be read (as the tracker's C{stream_error}
        notifications count them), by stream name.
    """

    def __init__(self) -> None:
        self.tracker: Optional[ITracker] = None
        self.available = False
        self.last_error: Optional[str] = None
        #: C{last_error} says there is none (a L{NoTrackerError}), in its own words
        self.no_tracker = False
        self.stream_errors: Dict[str, int] = {}

    def require(self) -> ITracker:
        """The connected tracker, or L{NoTrackerError}."""
        if self.tracker is None or not self.available:
            if self.last_error and self.tracker is None:
                if self.no_tracker:  # it says so itself
                    raise NoTrackerError(self.last_error)
                raise NoTrackerError(f"no eye tracker connected ({self.last_error})")
            raise NoTrackerError()
        return self.tracker

    def info(self) -> Optional[TrackerInfo]:
        return self.tracker.info if self.tracker is not None else None

    def display_area(self) -> Optional[DisplayArea]:
        """The display area of the tracker in use, or None."""
        info = self.info()
        return info.display_area if info is not None else None


@implementer(ITrackerProvider)
class TrackerService(service.Service):
    """
    @param make_tracker: builds the L{ITracker} to use (called once).
    @param clock: the server clock, aligned to the tracker's on connect.
    @param slot: where the tracker in use is kept, for everyone else.
    @param listener: told of connections, losses and notifications (the hub).
    @param record_event: C{record_event(kind, **fields)} adds an event to the
        recording and the event sinks.
    @param retry_interval: seconds before the first retry of a failed
        connect; each further failure doubles it, up to C{max_retry_interval}.

    @ivar stream_errors: records lost in each stream of the tracker because
        they could not be read (as the tracker's C{stream_error}
        notifications count them), by stream name.
    """

    name = "tracker"  # type: ignore[assignment]  # Twisted declares it None
    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        make_tracker: Callable[[], ITracker],
        clock: ServerClock,
        slot: TrackerSlot,
        listener: ITrackerListener,
        record_event: EventRecorder,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        max_retry_interval: float = MAX_RETRY_INTERVAL,
    ):
        self._reactor = reactor
        self._make_tracker = make_tracker
        self.clock = clock
        self.retry_interval = retry_interval
        self._retry_delay = backoffPolicy(
            initialDelay=retry_interval,
            maxDelay=max(retry_interval, max_retry_interval),
            factor=2.0,
            jitter=lambda: 0.0,
        )
        self._failures = 0  # failed connects in a row
        self.slot = slot
        self._listener = listener
        self.record_event = record_event
        self._candidate: Optional[ITracker] = None
        self._retry: Optional[IDelayedCall] = None
        self._connecting: Optional[defer.Deferred] = None
        self.attempts = 0

    # what the slot says, for logs and tests
    tracker = property(lambda self: self.slot.tracker)
    available = property(lambda self: self.slot.available)
    last_error = property(lambda self: self.slot.last_error)
    stream_errors = property(lambda self: self.slot.stream_errors)

    def require(self) -> ITracker:
        """The connected tracker, or L{NoTrackerError}."""
        return self.slot.require()

    def info(self) -> Optional[TrackerInfo]:
        return self.slot.info()

    def display_area(self) -> Optional[DisplayArea]:
        return self.slot.display_area()

    def startService(self):
        super().startService()
        try:
            self._candidate = self._make_tracker()
        except TrackerError as e:
            # e.g. the SDK is not installed: say so once, clearly, and stay up
            self.slot.last_error = str(e)
            self.log.error("cannot use the eye tracker: {error}", error=str(e))
            return None
        self._candidate.setNotificationReceiver(self._on_notification)
        self._connect()

    def _connect(self):
        self._retry = None
        self.attempts += 1
        candidate = self._candidate
        assert candidate is not None  # made by startService
        self._connecting = d = defer.maybeDeferred(candidate.connect)
        d.addCallbacks(self._connected, self._not_connected)
        return d

    def _connected(self, info):
        self._connecting = None
        self.clock.offset_us = info.system_clock_offset_us
        slot = self.slot
        slot.tracker = self._candidate
        slot.available = True
        slot.last_error = None
        slot.no_tracker = False
        self.log.info(
            "eye tracker connected: {model} {serial} at {address} ({frequency:g} Hz){after}",
            model=info.model,
            serial=info.serial_number,
            address=info.address,
            frequency=info.frequency,
            after=f" after {self._failures + 1} attempts" if self._failures else "",
        )
        self._failures = 0
        self._listener.tracker_connected(info)

    def _not_connected(self, failure):
        self._connecting = None
        error = failure.getErrorMessage()
        changed = self._failures == 0 or error != self.last_error
        self.slot.last_error = error
        self.slot.no_tracker = failure.check(NoTrackerError) is not None
        if changed and not failure.check(TrackerError):
            self.log.failure("unexpected error connecting the eye tracker", failure)
        if not self.running:
            return
        delay = self._retry_delay(self._failures)
        self._failures += 1
        if changed:
            self.log.warn(
                "{error}; looking again in {delay:g} s, then ever less often (every "
                "{longest:g} s at most), logging only when this changes",
                error=error,
                delay=delay,
                longest=self._retry_delay(100),
            )
        else:
            self.log.debug(
                "{error} (attempt {attempt}); looking again in {delay:g} s",
                error=error,
                attempt=self._failures,
                delay=delay,
            )
        self._retry = self._reactor.callLater(delay, self._connect)

    def _on_notification(self, note: TrackerNotification) -> None:
        if note.kind == NotificationKind.CONNECTION_LOST:
            self.slot.available = False
            self._listener.tracker_lost()
            self.log.warn("eye tracker connection lost: {message}", message=note.message)
        elif note.kind == NotificationKind.CONNECTION_RESTORED:
            self.slot.available = True
            self.log.info("eye tracker connection restored")
            self._listener.tracker_restored()
        elif note.kind == NotificationKind.STREAM_ERROR and note.data.get("source") == "callback":
            # the tracker has logged it (rate-limited); keep its count for get_status
            self.slot.stream_errors[str(note.data.get("stream"))] = int(note.data.get("count") or 0)
        elif note.kind == NotificationKind.DISPLAY_AREA_CHANGED and self.tracker is not None:
            self.log.info("display area changed: {message}", message=note.message)
        else:
            self.log.info(
                "tracker notification {kind}: {message}", kind=note.kind, message=note.message
            )
        self.record_event(
            "tracker_notification",
            t_server_ms=note.system_time_us / 1000.0 if note.system_time_us else None,
            notification=note.kind,
            message=note.message,
            data=note.data,
        )
        message = {"type": "tracker_status", "status": note.kind}
        message.update(note.to_dict())
        self._listener.tracker_status(message)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        try:
            yield self._listener.tracker_closing()
        except Exception:
            self.log.failure("stopping the gaze stream")
        candidate, self._candidate = self._candidate, None
        self.slot.tracker = None
        self.slot.available = False
        if candidate is not None:
            try:
                yield candidate.disconnect()
            except Exception:
                self.log.failure("disconnecting the eye tracker")
            self.log.info("eye tracker released")
