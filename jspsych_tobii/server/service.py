# -*- test-case-name: tests.test_service -*-
"""
L{TrackerService}: the tracker's lifecycle inside the server.

On start it connects the tracker; when there is none it keeps the server up
(as a systemd service should), logs, and retries discovery periodically,
while tracker-dependent requests are answered with "no eye tracker
connected".  It routes tracker notifications to every client, aligns the
server clock with the tracker's system clock, and on stop releases the gaze
stream and disconnects the tracker before the reactor stops.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer

from jspsych_tobii.core.timesync import ServerClock
from jspsych_tobii.interfaces import (
    ITracker,
    NotificationKind,
    NoTrackerError,
    TrackerError,
    TrackerNotification,
)
from jspsych_tobii.logs import Logger

#: Seconds between discovery attempts while no tracker is found.
DEFAULT_RETRY_INTERVAL = 5.0


class TrackerService(service.Service):
    """
    @param make_tracker: builds the L{ITracker} to use (called once).
    @param clock: the server clock, aligned to the tracker's on connect.
    """

    name = "tracker"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        make_tracker: Callable[[], ITracker],
        clock: ServerClock,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ):
        self._reactor = reactor
        self._make_tracker = make_tracker
        self.clock = clock
        self.retry_interval = retry_interval
        self.hub: Any = None  # set by makeService
        self.record_event: Callable[..., None] = lambda kind, **fields: None
        self._candidate: Optional[ITracker] = None
        self.tracker: Optional[ITracker] = None
        self.available = False
        self.last_error: Optional[str] = None
        self._retry = None
        self._connecting: Optional[defer.Deferred] = None
        self.attempts = 0

    def require(self) -> ITracker:
        """The connected tracker, or L{NoTrackerError}."""
        if self.tracker is None or not self.available:
            if self.last_error and self.tracker is None:
                raise NoTrackerError(f"no eye tracker connected ({self.last_error})")
            raise NoTrackerError()
        return self.tracker

    def startService(self):
        super().startService()
        try:
            self._candidate = self._make_tracker()
        except TrackerError as e:
            # e.g. the SDK is not installed: say so once, clearly, and stay up
            self.last_error = str(e)
            self.log.error("cannot use the eye tracker: {error}", error=str(e))
            return None
        self._candidate.setNotificationReceiver(self._on_notification)
        self._connect()

    def _connect(self):
        self._retry = None
        self.attempts += 1
        self._connecting = d = defer.maybeDeferred(self._candidate.connect)
        d.addCallbacks(self._connected, self._not_connected)
        return d

    def _connected(self, info):
        self._connecting = None
        self.clock.offset_us = info.system_clock_offset_us
        self.tracker = self._candidate
        self.available = True
        self.last_error = None
        self.log.info(
            "eye tracker connected: {model} {serial} at {address} ({frequency:g} Hz)",
            model=info.model,
            serial=info.serial_number,
            address=info.address,
            frequency=info.frequency,
        )
        if self.hub is not None:
            self.hub.broadcast(
                {"type": "tracker_status", "status": "connected", "tracker": info.to_dict()}
            )

    def _not_connected(self, failure):
        self._connecting = None
        self.last_error = failure.getErrorMessage()
        if not failure.check(TrackerError):
            self.log.failure("unexpected error connecting the eye tracker", failure)
        if not self.running:
            return
        self.log.warn(
            "{error}; retrying in {interval:g} s",
            error=self.last_error,
            interval=self.retry_interval,
        )
        self._retry = self._reactor.callLater(self.retry_interval, self._connect)

    def _on_notification(self, note: TrackerNotification) -> None:
        if note.kind == NotificationKind.CONNECTION_LOST:
            self.available = False
            if self.hub is not None:
                self.hub.tracker_lost()
            self.log.warn("eye tracker connection lost: {message}", message=note.message)
        elif note.kind == NotificationKind.CONNECTION_RESTORED:
            self.available = True
            self.log.info("eye tracker connection restored")
            if self.hub is not None:
                self.hub.restart().addErrback(
                    lambda f: self.log.failure("could not resume the gaze stream", f)
                )
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
        if self.hub is not None:
            message = {"type": "tracker_status", "status": note.kind}
            message.update(note.to_dict())
            self.hub.broadcast(message)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self.hub is not None:
            try:
                yield self.hub.stop()
            except Exception:
                self.log.failure("stopping the gaze stream")
        candidate, self._candidate = self._candidate, None
        self.tracker = None
        self.available = False
        if candidate is not None:
            try:
                yield candidate.disconnect()
            except Exception:
                self.log.failure("disconnecting the eye tracker")
            self.log.info("eye tracker released")
