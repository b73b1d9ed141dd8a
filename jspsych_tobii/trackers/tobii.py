# -*- test-case-name: tests.test_tobii -*-
"""
L{TobiiTracker}: L{ITracker} over the Tobii Pro SDK (C{tobii_research} 1.10+
and 2.x), in this process.

The adapter is split by thread, and each part is its own class:

  - L{TobiiTracker} (here) is what the server sees.  It runs on the
    reactor: it answers every L{ITracker} call at once, turns what the SDK
    threads handed over into gaze batches and notifications, reads the
    latest user position when asked, and re-subscribes streams that stay
    silent after a restored connection.
  - L{jspsych_tobii.trackers.tobii_worker.SDKWorker} owns the SDK's
    C{EyeTracker} and makes every blocking SDK call, on one worker thread;
    this class reaches it only through
    L{jspsych_tobii.trackers.tobii_worker.WorkerThread.call}.
  - L{jspsych_tobii.trackers.tobii_callbacks.StreamCallbacks} is what the
    SDK's own threads call: it copies and hands over, and counts what it
    cannot read.

What the SDK's records mean (gaze rows, positions, calibration results,
clocks) is in L{jspsych_tobii.trackers.tobii_sdk}.  Samples keep the SDK's
device and system time stamps (µs).  The SDK's system clock is
CLOCK_MONOTONIC on Linux; at connect its offset from the server's clock is
measured and reported as L{TrackerInfo.system_clock_offset_us}.

Features are chosen by what the SDK and the tracker offer, never by model
name: the user position guide stream where the SDK has it and the tracker
delivers it, else the gaze origin in track box coordinates (1.x only); the
stream buffer overflow notification where the SDK has it (2.x).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import (
    DisplayArea,
    GazeReceiver,
    ITracker,
    NotificationKind,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
)
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.tobii_callbacks import (
    CALLBACK_FAILED,
    GAZE_STREAM,
    POSITION_STREAM,
    FailureReport,
    StreamCallbacks,
)
from jspsych_tobii.trackers.tobii_sdk import (
    GUIDE,
    ROW_SYSTEM_TIME,
    describe,
    display_area_from,
    find_trackers,
    format_hz,
    gaze_rows_to_records,
    load_sdk,
    match_frequency,
    sdk_errors,
    user_position,
)
from jspsych_tobii.trackers.tobii_worker import ISDKReactor, SDKWorker, WorkerThread
from jspsych_tobii.waiters import Waiters

__all__ = ["TobiiTracker", "find_trackers", "describe", "load_sdk"]

_log = Logger()


@implementer(ITracker)
class TobiiTracker:
    """
    An eye tracker driven through C{tobii_research}.  Every method runs on
    the reactor.

    @param reactor: an L{jspsych_tobii.trackers.tobii_worker.ISDKReactor}
        (C{callFromThread} and C{callLater}).
    @param clock_us: the server's microsecond clock
        (L{jspsych_tobii.core.timesync.ServerClock.source}): the SDK's clock
        offset is measured against it, and notifications without an SDK
        time stamp are stamped with it.
    @param address: the tracker to open (as listed by C{--list-trackers});
        None for the first one found.
    @param sdk: the imported C{tobii_research} module; imported when None.
    @param frequency: a gaze output frequency to set at connect.

    @ivar overflows: stream buffer overflows the SDK reported (2.x).
    @ivar callbackErrorInterval: seconds between the counts logged (and
        told to clients) while a stream's callback keeps failing.
    @ivar stopTimeout: seconds L{disconnect} waits for the worker.
    @ivar resumeCheckDelay: seconds after a restored connection before
        streams that stayed silent are subscribed again.
    @ivar positionMaxAge: seconds after which a user position is stale.
    """

    stopTimeout = 1.0
    resumeCheckDelay = 0.5
    callbackErrorInterval = 60.0
    positionMaxAge = 1.0

    def __init__(
        self,
        reactor: ISDKReactor,
        clock_us: MicrosecondClock,
        address: Optional[str] = None,
        sdk: Any = None,
        frequency: Optional[float] = None,
    ):
        if sdk is None:
            sdk = load_sdk()
        self._reactor = reactor
        self._clock_us = clock_us
        self._sdk = sdk
        self.info: Optional[TrackerInfo] = None
        self.overflows = 0

        self._callbacks = StreamCallbacks(
            reactor, sdk, clock_us, self._deliverGaze, self._deliverEvents
        )
        self._failures = FailureReport(
            reactor,
            self._callbacks.failures,
            lambda message, data: self._notify(NotificationKind.STREAM_ERROR, message, data),
            self.callbackErrorInterval,
        )
        # Set once disconnect() begins; the worker reads it (an open under
        # way then subscribes nothing).
        self._closing = threading.Event()
        self._worker = WorkerThread(
            reactor,
            SDKWorker(sdk, self._callbacks, clock_us, address, frequency, self._closing.is_set),
            sdk_errors(sdk),
            name=f"tobii-sdk-{id(self):x}",
        )
        self._connecting: Optional[Waiters] = None
        self._closed: Optional[Waiters] = None

        self._gazeReceiver: Optional[GazeReceiver] = None
        self._gazeSince = 0
        self._notificationReceiver: Optional[Callable[[TrackerNotification], Any]] = None
        self._positionSource: Optional[str] = None
        self._positionFallback = False
        # when the last gaze rows arrived (µs on clock_us)
        self._lastGazeAt: Optional[int] = None
        self._resumeCall: Optional[IDelayedCall] = None

    @property
    def callbackErrors(self) -> int:
        """Records lost to exceptions inside stream callbacks (or in converting
        what they handed over), over every stream."""
        return self._callbacks.failures.total

    @property
    def streamErrors(self) -> Dict[str, int]:
        """The same, per stream name (C{gaze}, C{user_position}, ...)."""
        return self._callbacks.failures.byStream()

    # -- ITracker

    def connect(self) -> defer.Deferred:
        if self._closed is not None:
            return defer.fail(TrackerError("this tracker was disconnected"))
        if self.info is not None:
            return defer.succeed(self.info)
        connecting = self._connecting
        if connecting is None:  # else join the connect under way
            self._connecting = connecting = Waiters()
            self._worker.call(SDKWorker.open).addBoth(self._connectDone)
        return connecting.wait()

    def disconnect(self) -> defer.Deferred:
        if self._closed is not None:
            return self._closed.wait()
        self._closed = closed = Waiters()
        self._closing.set()
        self._gazeReceiver = None
        self._callbacks.gazeWanted = False
        self._notificationReceiver = None
        if self._resumeCall is not None and self._resumeCall.active():
            self._resumeCall.cancel()
        self._resumeCall = None
        self._failures.stop()
        self._worker.stop(self.stopTimeout).addCallback(closed.fire)
        return closed.wait()

    def startGaze(self, receiver: GazeReceiver) -> defer.Deferred:
        if not self._usable():
            return defer.fail(TrackerError("the eye tracker is not connected"))
        self._gazeReceiver = receiver
        self._gazeSince = self._nowUs()
        self._callbacks.gazeWanted = True
        d = self._worker.call(SDKWorker.subscribeGaze)

        def failed(failure: Failure) -> Failure:
            if self._gazeReceiver is receiver:
                self._gazeReceiver = None
                self._callbacks.gazeWanted = False
            return failure

        d.addErrback(failed)
        return d

    def stopGaze(self) -> defer.Deferred:
        self._gazeReceiver = None
        self._callbacks.gazeWanted = False
        if not self._usable() or not self._worker.started:
            return defer.succeed(None)
        return self._worker.call(SDKWorker.unsubscribeGaze)

    def setNotificationReceiver(
        self, receiver: Optional[Callable[[TrackerNotification], Any]]
    ) -> None:
        self._notificationReceiver = receiver

    def getUserPosition(self) -> Optional[UserPosition]:
        latest = self._callbacks.position
        if latest is None:
            return None
        arrived, raw = latest
        if self._clock_us() - arrived > self.positionMaxAge * 1e6:
            return None
        offset = self.info.system_clock_offset_us if self.info is not None else 0
        return user_position(raw, arrived + offset)

    def _lastPositionAt(self) -> Optional[int]:
        """When the latest user position arrived (µs on clock_us), if one did."""
        latest = self._callbacks.position
        return latest[0] if latest is not None else None

    def setGazeOutputFrequency(self, frequency: float) -> defer.Deferred:
        info = self._usableInfo()
        if info is None:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        try:
            wanted = match_frequency(frequency, info.frequencies)
        except TrackerError as e:
            return defer.fail(e)
        d = self._worker.call(SDKWorker.setFrequency, wanted)

        def applied(current: float) -> float:
            if self.info is not None:
                self.info = replace(self.info, frequency=current)
            return current

        d.addCallback(applied)
        return d

    def enterCalibration(self) -> defer.Deferred:
        info = self._usableInfo()
        if info is None:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        if "calibration" not in info.capabilities:
            return defer.fail(TrackerError("this eye tracker cannot do screen-based calibration"))
        return self._worker.call(SDKWorker.enterCalibration)

    def collectCalibrationData(self, x: float, y: float) -> defer.Deferred:
        if not self._usable():
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self._worker.call(SDKWorker.collect, float(x), float(y))

    def discardCalibrationData(self, x: float, y: float) -> defer.Deferred:
        if not self._usable():
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self._worker.call(SDKWorker.discard, float(x), float(y))

    def computeCalibration(self) -> defer.Deferred:
        if not self._usable():
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self._worker.call(SDKWorker.compute)

    def leaveCalibration(self) -> defer.Deferred:
        if not self._usable() or not self._worker.started:
            return defer.succeed(None)
        return self._worker.call(SDKWorker.leaveCalibration)

    # -- connecting

    def _usable(self) -> bool:
        """Connected, and not disconnected since."""
        return self._usableInfo() is not None

    def _usableInfo(self) -> Optional[TrackerInfo]:
        """The info while connected and not disconnected since, else None."""
        return self.info if self._closed is None else None

    def _nowUs(self) -> int:
        """Now, on the tracker's system clock."""
        offset = self.info.system_clock_offset_us if self.info is not None else 0
        return self._clock_us() + offset

    def _connectDone(self, result: Union[Tuple[TrackerInfo, Optional[str]], Failure]) -> None:
        waiters, self._connecting = self._connecting, None
        outcome: Union[TrackerInfo, Failure]
        if isinstance(result, Failure):
            outcome = result
        else:
            try:
                outcome = self._connected(*result)
            except Exception:
                outcome = Failure()
        assert waiters is not None
        waiters.fire(outcome)

    def _connected(self, info: TrackerInfo, source: Optional[str]) -> TrackerInfo:
        if self._closed is not None:
            raise TrackerError("the eye tracker was disconnected while connecting")
        self.info = info
        self._positionSource = source
        _log.info(
            "connected to {model} {serial} at {address} ({frequency} Hz, SDK {sdk})",
            model=info.model,
            serial=info.serial_number,
            address=info.address,
            frequency=format_hz(info.frequency),
            sdk=info.sdk_version,
        )
        return info

    def _notify(
        self, kind: str, message: str = "", data: Optional[dict] = None, at: Optional[int] = None
    ) -> None:
        notification = TrackerNotification(
            kind=kind,
            system_time_us=int(at) if at is not None else self._nowUs(),
            message=message,
            data=data or {},
        )
        receiver = self._notificationReceiver
        if receiver is None:
            return
        try:
            receiver(notification)
        except Exception:
            _log.failure("the notification receiver failed on {kind}", kind=kind)

    # -- what the SDK's threads handed over

    def _deliverGaze(self, rows: List[tuple]) -> None:
        self._lastGazeAt = self._clock_us()
        receiver = self._gazeReceiver
        if receiver is None:
            return
        since = self._gazeSince
        if rows[0][ROW_SYSTEM_TIME] < since:  # captured before this startGaze
            rows = [row for row in rows if row[ROW_SYSTEM_TIME] >= since]
            if not rows:
                return
        try:
            records = gaze_rows_to_records(rows)
        except Exception:
            # a record of an unexpected shape: the SDK changed what it sends
            if self._callbacks.failures.add(GAZE_STREAM, len(rows)):
                self._failures.start(GAZE_STREAM, Failure())
            return
        try:
            receiver(records)
        except Exception:
            _log.failure("the gaze receiver failed")

    def _deliverEvents(self, events: List[tuple]) -> None:
        for kind, data in events:
            try:
                self._handleEvent(kind, data)
            except Exception:
                _log.failure("handling the tracker event {kind} failed", kind=kind)

    def _handleEvent(self, kind: str, data: dict) -> None:
        if self._closed is not None:
            return
        if kind == CALLBACK_FAILED:
            self._failures.start(data["stream"], data["failure"])
            return
        at = data.get("system_time_stamp")
        if kind == NotificationKind.CONNECTION_LOST:
            _log.warn("lost the connection to the eye tracker")
            self._callbacks.position = None
            self._notify(kind, "lost the connection to the eye tracker", at=at)
        elif kind == NotificationKind.CONNECTION_RESTORED:
            _log.info("the connection to the eye tracker is restored")
            self._scheduleResumeCheck()
            self._notify(kind, "the connection to the eye tracker is restored", at=at)
        elif kind == NotificationKind.CALIBRATION_CHANGED:
            self._notify(kind, "the calibration changed", at=at)
        elif kind == NotificationKind.DISPLAY_AREA_CHANGED:
            area = None
            try:
                area = display_area_from(data.get("display_area"))
            except (KeyError, TypeError, ValueError, AttributeError):
                pass
            if area is not None and self.info is not None:
                self.info = replace(self.info, display_area=area)
            elif self.info is not None:
                self._worker.call(SDKWorker.readDisplayArea).addCallbacks(
                    self._displayAreaRead,
                    lambda f: _log.warn(
                        "cannot read the changed display area: {error}", error=f.getErrorMessage()
                    ),
                )
            self._notify(
                kind,
                "the display area changed",
                {"displayArea": area.to_dict() if area is not None else None},
                at=at,
            )
        elif kind == NotificationKind.FREQUENCY_CHANGED:
            frequency = float(data.get("gaze_output_frequency", 0.0) or 0.0)
            if self.info is not None and frequency:
                self.info = replace(self.info, frequency=frequency)
            self._notify(
                kind,
                f"the gaze output frequency is now {format_hz(frequency)} Hz",
                {"frequency": frequency},
                at=at,
            )
        elif kind == NotificationKind.STREAM_BUFFER_OVERFLOW:
            self.overflows += 1
            stream = str(data.get("notification_source_stream", ""))
            _log.warn("the SDK's buffer of {stream} overflowed: samples lost", stream=stream)
            self._notify(
                kind,
                f"the SDK's stream buffer overflowed ({stream}): samples were lost",
                {"stream": stream, "overflows": self.overflows},
                at=at,
            )
        elif kind == NotificationKind.STREAM_ERROR:
            self._streamError(data, at)
        else:  # device faults and warnings: for the operator's log
            detail = data.get("faults") or data.get("warnings") or ""
            _log.warn("eye tracker {kind}: {detail}", kind=kind.replace("_", " "), detail=detail)

    def _streamError(self, data: dict, at: Optional[int]) -> None:
        source = str(data.get("source", ""))
        error = str(data.get("error", ""))
        message = str(data.get("message", ""))
        guideSource = getattr(
            self._sdk, "STREAM_ERROR_SOURCE_SUBSCRIPTION_USER_POSITION_GUIDE", None
        )
        if source == guideSource and not self._positionFallback:
            # The tracker does not deliver the guide (old models): fall back
            # to the track box.  Queued after the connect job, if that is
            # still running, so it always sees the guide subscribed.
            self._positionFallback = True
            _log.info("no user position guide ({error}); trying the track box", error=error)
            self._worker.call(SDKWorker.positionFallback).addCallbacks(
                self._positionFallbackDone,
                lambda f: _log.warn("no user positions: {error}", error=f.getErrorMessage()),
            )
        _log.warn(
            "eye tracker stream error: {source}: {error}: {message}",
            source=source,
            error=error,
            message=message,
        )
        self._notify(
            NotificationKind.STREAM_ERROR,
            f"{source}: {error}: {message}",
            {"source": source, "error": error},
            at=at,
        )

    def _positionFallbackDone(self, source: Optional[str]) -> None:
        self._positionSource = source
        if self.info is not None:
            capabilities = set(self.info.capabilities)
            capabilities.discard(GUIDE)
            self.info = replace(self.info, capabilities=frozenset(capabilities))

    def _displayAreaRead(self, area: Optional[DisplayArea]) -> None:
        if area is not None and self.info is not None:
            self.info = replace(self.info, display_area=area)

    # -- after a restored connection

    def _scheduleResumeCheck(self) -> None:
        if self._resumeCall is not None and self._resumeCall.active():
            self._resumeCall.cancel()
        self._resumeCall = self._reactor.callLater(
            self.resumeCheckDelay, self._checkResumed, self._clock_us()
        )

    def _checkResumed(self, restoredAt: int) -> None:
        """Subscribe again to the streams still silent since C{restoredAt}."""
        self._resumeCall = None
        if not self._usable():
            return

        def silent(lastAt: Optional[int]) -> bool:
            return lastAt is None or lastAt < restoredAt

        streams = []
        if self._callbacks.gazeWanted:
            gazeSilent = silent(self._lastGazeAt)
        else:  # the gaze stream may be open only to feed track box positions
            gazeSilent = self._callbacks.trackBoxFeed and silent(self._lastPositionAt())
        if gazeSilent:
            streams.append(GAZE_STREAM)
        if self._positionSource == GUIDE and silent(self._lastPositionAt()):
            streams.append(POSITION_STREAM)
        if streams:
            _log.info("resubscribing to {streams} after the restored connection", streams=streams)
            self._worker.call(SDKWorker.resubscribe, streams).addErrback(
                lambda f: _log.warn("resubscribing failed: {error}", error=f.getErrorMessage())
            )
