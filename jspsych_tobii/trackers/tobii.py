# -*- test-case-name: tests.test_tobii -*-
"""
L{TobiiTracker}: L{ITracker} over the Tobii Pro SDK (C{tobii_research} 1.10+
and 2.x).  What the SDK's objects mean as records is in
L{jspsych_tobii.trackers.tobii_sdk}; this module owns the threads.

This module owns the boundary between the reactor and the SDK:

  - Every blocking SDK call (discovery, C{EyeTracker(address)}, getters and
    setters, subscribing and unsubscribing, calibration) runs on one
    dedicated worker thread, a single-thread L{ThreadPool} used through
    L{deferToThreadPool}.  The SDK serialises its calls anyway, and some take
    seconds; the reactor never waits on one.
  - Stream callbacks run on the SDK's threads, often under an SDK lock, and
    the SDK swallows what they raise.  They only copy the data into plain
    tuples and hand them to the reactor through L{ThreadHandoff}; they never
    call the SDK and never raise.  Gaze rows are converted to one numpy array
    of L{GAZE_DTYPE} per hand-off, on the reactor.
  - A record a callback cannot read (an SDK that renamed a field, say) is
    lost, but never silently: the callback counts it and hands its first
    failure, with the traceback, to the reactor, which logs it, tells the
    clients (a L{NotificationKind.STREAM_ERROR} naming the stream) and then
    logs a count every L{TobiiTracker.callbackErrorInterval} seconds for as
    long as the failures go on.
  - Samples keep the SDK's device and system time stamps (µs).  The SDK's
    system clock is CLOCK_MONOTONIC on Linux; at connect the offset to this
    process's monotonic clock is measured and reported as
    L{TrackerInfo.system_clock_offset_us}.

Features are chosen by what the SDK and the tracker offer, never by model
name: the user position guide stream where the SDK has it and the tracker
delivers it, else the gaze origin in track box coordinates (1.x only); the
stream buffer overflow notification where the SDK has it (2.x).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from jspsych_tobii.core.timesync import monotonic_us
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    CalibrationEyeSample,
    CalibrationPointResult,
    CalibrationResult,
    DisplayArea,
    ITracker,
    NotificationKind,
    NoTrackerError,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
)
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.handoff import ThreadHandoff
from jspsych_tobii.trackers.tobii_sdk import (
    GUIDE,
    NOTIFICATIONS,
    ROW_PAD,
    TRACK_BOX,
    VALIDITY,
    describe,
    display_area_from,
    find_trackers,
    format_hz,
    guide_axes,
    load_sdk,
    match_frequency,
    measure_clock_offset,
    read_info,
    sdk_error_message,
    sdk_errors,
)

__all__ = ["TobiiTracker", "find_trackers", "describe", "load_sdk"]

_log = Logger()

#: The streams whose callbacks count their failures, by the names the log,
#: the clients (C{data["stream"]} of a C{stream_error}) and C{get_status} use.
GAZE_STREAM = "gaze"
POSITION_STREAM = "user_position"
NOTIFICATION_STREAM = "notifications"
ERROR_STREAM = "stream_errors"

#: The event a failing callback hands to the reactor (never an SDK kind).
_CALLBACK_FAILED = "callback_failed"


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    # A call stuck in the SDK must never keep the process from exiting.
    return threading.Thread(*args, daemon=True, **kwargs)


@implementer(ITracker)
class TobiiTracker:
    """
    An eye tracker driven through C{tobii_research}.

    @param reactor: the reactor (C{callFromThread}, C{callLater}); None for
        the global one.
    @param address: the tracker to open (as listed by C{--list-trackers});
        None for the first one found.
    @param sdk: the imported C{tobii_research} module; imported when None.
    @param frequency: a gaze output frequency to set at connect.

    @ivar overflows: stream buffer overflows the SDK reported (2.x).
    @ivar callbackErrors: records lost to exceptions inside stream callbacks
        (or in converting what they handed over), over every stream.
    @ivar streamErrors: the same, per stream name (L{GAZE_STREAM}, ...).
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
        reactor: Any = None,
        address: Optional[str] = None,
        sdk: Any = None,
        frequency: Optional[float] = None,
    ):
        if reactor is None:
            from twisted.internet import reactor
        if sdk is None:
            sdk = load_sdk()
        self._reactor = reactor
        self._sdk = sdk
        self._errors = sdk_errors(sdk)
        self._address = address
        self._frequency = frequency
        self.info: Optional[TrackerInfo] = None
        self.overflows = 0
        # Written by the SDK's threads and the reactor, under _errorLock.
        self._errorLock = threading.Lock()
        self.callbackErrors = 0
        self.streamErrors: Dict[str, int] = {}
        self._errorWatched: Set[str] = set()  # streams with a report under way
        # Reactor-side: what was reported of each stream's failures.
        self._errorTracebackLogged: Set[str] = set()
        self._errorTimers: Dict[str, Any] = {}

        self._pool: Optional[ThreadPool] = None
        self._connectWaiters: Optional[List[defer.Deferred]] = None
        self._closed = False
        self._closeWaiters: Optional[List[defer.Deferred]] = None
        self._closeDone = False

        # Reactor-side state.
        self._gazeReceiver: Optional[Callable[[np.ndarray], Any]] = None
        self._gazeSince = 0
        self._notificationReceiver: Optional[Callable[[TrackerNotification], Any]] = None
        self._position: Optional[UserPosition] = None
        self._positionAt = 0.0
        self._positionSource: Optional[str] = None
        self._positionFallback = False
        self._lastGazeAt = 0.0
        self._lastPositionAt = 0.0
        self._resumeCall: Any = None

        # Read by the SDK's threads; written on the reactor or the worker.
        self._gazeWanted = False
        self._trackBoxFeed = False

        # Worker-owned state: only ever touched on the worker thread.
        self._eyetracker: Any = None
        self._subscribed: Dict[str, Callable] = {}
        self._calibration: Any = None
        self._inCalibration = False
        self._hasTrackBox = False

        self._gazeHandoff = ThreadHandoff(reactor, self._deliverGaze)
        self._positionHandoff = ThreadHandoff(reactor, self._deliverPositions)
        self._eventHandoff = ThreadHandoff(reactor, self._deliverEvents)
        self._notificationCallbacks: Dict[str, Callable] = {}
        for constant, kind in NOTIFICATIONS:
            stream = getattr(sdk, constant, None)
            if stream is not None:
                self._notificationCallbacks[stream] = functools.partial(self._onNotification, kind)

    # -- ITracker

    def connect(self) -> defer.Deferred:
        if self._closed:
            return defer.fail(TrackerError("this tracker was disconnected"))
        if self.info is not None:
            return defer.succeed(self.info)
        waiter: defer.Deferred = defer.Deferred()
        if self._connectWaiters is not None:  # already connecting
            self._connectWaiters.append(waiter)
            return waiter
        self._connectWaiters = [waiter]
        if self._pool is None:
            pool = ThreadPool(1, 1, name=f"tobii-sdk-{id(self):x}")
            pool.threadFactory = _daemon_thread
            pool.start()
            self._pool = pool
        self._call(self._openOnWorker).addBoth(self._connectDone)
        return waiter

    def disconnect(self) -> defer.Deferred:
        if self._closeDone:
            return defer.succeed(None)
        if self._closeWaiters is not None:
            waiter: defer.Deferred = defer.Deferred()
            self._closeWaiters.append(waiter)
            return waiter
        self._closed = True
        self._gazeReceiver = None
        self._gazeWanted = False
        self._notificationReceiver = None
        if self._resumeCall is not None and self._resumeCall.active():
            self._resumeCall.cancel()
        self._resumeCall = None
        for timer in self._errorTimers.values():
            if timer.active():
                timer.cancel()
        self._errorTimers.clear()
        pool = self._pool
        if pool is None:
            self._closeDone = True
            return defer.succeed(None)
        first: defer.Deferred = defer.Deferred()
        self._closeWaiters = [first]
        finished = deferToThreadPool(self._reactor, pool, self._closeOnWorker)

        def stop(result, timedOut):
            if isinstance(result, Failure):
                _log.failure("closing the eye tracker failed", result)
            if self._closeDone:
                return None
            self._closeDone = True
            if timer.active():
                timer.cancel()
            if timedOut:
                # The worker is stuck in an SDK call: let it go.  Its thread
                # is a daemon, and stopping the pool is left to a helper
                # thread so that the reactor does not join it.
                _log.warn(
                    "the Tobii SDK did not answer within {seconds} s; "
                    "leaving its worker thread behind",
                    seconds=self.stopTimeout,
                )
                _daemon_thread(target=pool.stop, name="tobii-sdk-stop").start()
            else:
                # Every stream is unsubscribed and the worker is idle:
                # joining it is immediate.
                pool.stop()
            waiters, self._closeWaiters = self._closeWaiters or [], None
            for waiter in waiters:
                waiter.callback(None)
            return None

        timer = self._reactor.callLater(self.stopTimeout, stop, None, True)
        finished.addBoth(stop, False)
        return first

    def startGaze(self, receiver: Callable[[np.ndarray], Any]) -> defer.Deferred:
        if self.info is None or self._closed:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        self._gazeReceiver = receiver
        self._gazeSince = self._nowUs()
        self._gazeWanted = True
        d = self._call(self._subscribeGazeOnWorker)

        def failed(failure):
            if self._gazeReceiver is receiver:
                self._gazeReceiver = None
                self._gazeWanted = False
            return failure

        d.addErrback(failed)
        return d

    def stopGaze(self) -> defer.Deferred:
        self._gazeReceiver = None
        self._gazeWanted = False
        if self.info is None or self._closed or self._pool is None:
            return defer.succeed(None)
        return self._call(self._unsubscribeGazeOnWorker)

    def setNotificationReceiver(
        self, receiver: Optional[Callable[[TrackerNotification], Any]]
    ) -> None:
        self._notificationReceiver = receiver

    def getUserPosition(self) -> Optional[UserPosition]:
        if self._position is None:
            return None
        if time.monotonic() - self._positionAt > self.positionMaxAge:
            return None
        return self._position

    def setGazeOutputFrequency(self, frequency: float) -> defer.Deferred:
        if self.info is None or self._closed:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        try:
            wanted = match_frequency(frequency, self.info.frequencies)
        except TrackerError as e:
            return defer.fail(e)
        d = self._call(self._setFrequencyOnWorker, wanted)

        def applied(current):
            if self.info is not None:
                self.info = replace(self.info, frequency=current)
            return current

        d.addCallback(applied)
        return d

    def enterCalibration(self) -> defer.Deferred:
        if self.info is None or self._closed:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        if "calibration" not in self.info.capabilities:
            return defer.fail(TrackerError("this eye tracker cannot do screen-based calibration"))
        return self._call(self._enterCalibrationOnWorker)

    def collectCalibrationData(self, x: float, y: float) -> defer.Deferred:
        if self.info is None or self._closed:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self._call(self._collectOnWorker, float(x), float(y))

    def discardCalibrationData(self, x: float, y: float) -> defer.Deferred:
        if self.info is None or self._closed:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self._call(self._discardOnWorker, float(x), float(y))

    def computeCalibration(self) -> defer.Deferred:
        if self.info is None or self._closed:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self._call(self._computeOnWorker)

    def leaveCalibration(self) -> defer.Deferred:
        if self.info is None or self._closed or self._pool is None:
            return defer.succeed(None)
        return self._call(self._leaveCalibrationOnWorker)

    # -- reactor-side helpers

    def _nowUs(self) -> int:
        """Now, on the tracker's system clock."""
        offset = self.info.system_clock_offset_us if self.info is not None else 0
        return monotonic_us() + offset

    def _call(self, f: Callable, *args: Any) -> defer.Deferred:
        """Run C{f(*args)} on the worker; SDK exceptions become L{TrackerError}."""
        if self._pool is None or self._closed:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return deferToThreadPool(self._reactor, self._pool, self._guarded, f, *args)

    def _guarded(self, f: Callable, *args: Any) -> Any:
        try:
            return f(*args)
        except TrackerError:
            raise
        except self._errors as e:
            raise TrackerError(sdk_error_message(e)) from e

    def _connectDone(self, result: Any) -> None:
        waiters, self._connectWaiters = self._connectWaiters or [], None
        if not isinstance(result, Failure):
            try:
                result = self._connected(*result)
            except Exception:
                result = Failure()
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _connected(self, info: TrackerInfo, source: Optional[str]) -> TrackerInfo:
        if self._closed:
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

    def _notify(self, kind: str, message: str = "", data: Optional[dict] = None, at=None) -> None:
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

    # -- stream callbacks: SDK threads.  Copy, hand off, never raise.

    def _onGaze(self, d: dict) -> None:
        try:
            if self._gazeWanted:
                self._gazeHandoff.put(
                    (d["device_time_stamp"], d["system_time_stamp"])
                    + ROW_PAD
                    + d["left_gaze_point_on_display_area"]
                    + d["left_gaze_point_in_user_coordinate_system"]
                    + d["left_gaze_origin_in_user_coordinate_system"]
                    + (
                        d["left_pupil_diameter"],
                        bool(d["left_gaze_point_validity"]),
                        bool(d["left_gaze_origin_validity"]),
                        bool(d["left_pupil_validity"]),
                    )
                    + d["right_gaze_point_on_display_area"]
                    + d["right_gaze_point_in_user_coordinate_system"]
                    + d["right_gaze_origin_in_user_coordinate_system"]
                    + (
                        d["right_pupil_diameter"],
                        bool(d["right_gaze_point_validity"]),
                        bool(d["right_gaze_origin_validity"]),
                        bool(d["right_pupil_validity"]),
                    )
                )
            if self._trackBoxFeed:
                self._positionHandoff.put(
                    (
                        d["system_time_stamp"],
                        d["left_gaze_origin_in_trackbox_coordinate_system"],
                        bool(d["left_gaze_origin_validity"]),
                        d["right_gaze_origin_in_trackbox_coordinate_system"],
                        bool(d["right_gaze_origin_validity"]),
                    )
                )
        except Exception:
            self._callbackFailed(GAZE_STREAM)

    def _onUserPosition(self, d: dict) -> None:
        try:
            self._positionHandoff.put(
                (
                    None,
                    d["left_user_position"],
                    bool(d["left_user_position_validity"]),
                    d["right_user_position"],
                    bool(d["right_user_position_validity"]),
                )
            )
        except Exception:
            self._callbackFailed(POSITION_STREAM)

    def _onNotification(self, kind: str, d: Any) -> None:
        try:
            self._eventHandoff.put((kind, dict(d)))
        except Exception:
            self._callbackFailed(NOTIFICATION_STREAM)

    def _onStreamError(self, d: Any) -> None:
        try:
            self._eventHandoff.put((NotificationKind.STREAM_ERROR, dict(d)))
        except Exception:
            self._callbackFailed(ERROR_STREAM)

    def _countFailures(self, stream: str, records: int = 1) -> bool:
        """
        Count C{records} lost in C{stream}; any thread.  True when no report
        of this stream is under way, and the caller must start one.
        """
        with self._errorLock:
            self.callbackErrors += records
            self.streamErrors[stream] = self.streamErrors.get(stream, 0) + records
            if stream in self._errorWatched:
                return False
            self._errorWatched.add(stream)
            return True

    def _callbackFailed(self, stream: str) -> None:
        """
        Called in a stream callback's C{except} clause, on an SDK thread:
        count the lost record and, when no report is under way, hand the
        failure (with its traceback) to the reactor.  Never raises.
        """
        try:
            if self._countFailures(stream):
                failure = Failure()
                failure.cleanFailure()  # keep the text of the stack, not its frames
                self._eventHandoff.put((_CALLBACK_FAILED, {"stream": stream, "failure": failure}))
        except Exception:
            pass  # nothing may escape into the SDK; the count is kept

    # -- consumers: the reactor

    def _deliverGaze(self, rows: List[tuple]) -> None:
        self._lastGazeAt = time.monotonic()
        receiver = self._gazeReceiver
        if receiver is None:
            return
        since = self._gazeSince
        if rows[0][1] < since:  # captured before this startGaze
            rows = [row for row in rows if row[1] >= since]
            if not rows:
                return
        try:
            batch = np.array(rows, dtype=GAZE_DTYPE)
        except Exception:
            # a record of an unexpected shape: the SDK changed what it sends
            if self._countFailures(GAZE_STREAM, len(rows)):
                self._reportCallbackFailure(GAZE_STREAM, Failure())
            return
        try:
            receiver(batch)
        except Exception:
            _log.failure("the gaze receiver failed")

    def _deliverPositions(self, items: List[tuple]) -> None:
        now = time.monotonic()
        self._lastPositionAt = now
        stamp, left, leftValid, right, rightValid = items[-1]
        if stamp is None:
            stamp = self._nowUs()
        self._position = UserPosition(
            left=guide_axes(left) if leftValid else None,
            right=guide_axes(right) if rightValid else None,
            system_time_us=int(stamp),
        )
        self._positionAt = now

    def _deliverEvents(self, events: List[tuple]) -> None:
        for kind, data in events:
            try:
                self._handleEvent(kind, data)
            except Exception:
                _log.failure("handling the tracker event {kind} failed", kind=kind)

    def _handleEvent(self, kind: str, data: dict) -> None:
        if self._closed:
            return
        if kind == _CALLBACK_FAILED:
            self._reportCallbackFailure(data["stream"], data["failure"])
            return
        at = data.get("system_time_stamp")
        if kind == NotificationKind.CONNECTION_LOST:
            _log.warn("lost the connection to the eye tracker")
            self._position = None
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
                self._call(self._readDisplayAreaOnWorker).addCallbacks(
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

    def _streamError(self, data: dict, at: Any) -> None:
        sdk = self._sdk
        source = str(data.get("source", ""))
        error = str(data.get("error", ""))
        message = str(data.get("message", ""))
        upgSource = getattr(sdk, "STREAM_ERROR_SOURCE_SUBSCRIPTION_USER_POSITION_GUIDE", None)
        if source == upgSource and not self._positionFallback:
            # The tracker does not deliver the guide (old models): fall back
            # to the track box.  Queued after the connect job, if that is
            # still running, so it always sees the guide subscribed.
            self._positionFallback = True
            _log.info("no user position guide ({error}); trying the track box", error=error)
            self._call(self._positionFallbackOnWorker).addCallbacks(
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

    def _reportCallbackFailure(self, stream: str, failure: Failure) -> None:
        """
        A report of C{stream}'s failures begins (on the reactor): log the
        first failure ever with its traceback, a later one on a line; tell
        the clients; then count on every L{callbackErrorInterval}.
        """
        error = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        with self._errorLock:
            count = self.streamErrors.get(stream, 0)
        if stream not in self._errorTracebackLogged:
            self._errorTracebackLogged.add(stream)
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
        self._notifyCallbackErrors(stream, count, error)
        self._errorTimers[stream] = self._reactor.callLater(
            self.callbackErrorInterval, self._countCallbackFailures, stream, count, error
        )

    def _countCallbackFailures(self, stream: str, reported: int, error: str) -> None:
        """Every L{callbackErrorInterval} while C{stream} keeps failing: say how much."""
        with self._errorLock:
            count = self.streamErrors.get(stream, 0)
            if count == reported:  # quiet for a whole interval: the report ends
                self._errorWatched.discard(stream)
        if count == reported:
            self._errorTimers.pop(stream, None)
            _log.info(
                "the {stream} records of the Tobii SDK have been read without a failure "
                "for {interval:g} s ({count} lost in all)",
                stream=stream,
                interval=self.callbackErrorInterval,
                count=count,
            )
            return
        _log.warn(
            "{lost} more {stream} records of the Tobii SDK could not be read in the last "
            "{interval:g} s ({count} lost in all)",
            lost=count - reported,
            stream=stream,
            interval=self.callbackErrorInterval,
            count=count,
        )
        self._notifyCallbackErrors(stream, count, error)
        self._errorTimers[stream] = self._reactor.callLater(
            self.callbackErrorInterval, self._countCallbackFailures, stream, count, error
        )

    def _notifyCallbackErrors(self, stream: str, count: int, error: str) -> None:
        self._notify(
            NotificationKind.STREAM_ERROR,
            f"cannot read the eye tracker's {stream} data ({error}): {count} records lost",
            {"source": "callback", "stream": stream, "error": error, "count": count},
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

    def _scheduleResumeCheck(self) -> None:
        if self._resumeCall is not None and self._resumeCall.active():
            self._resumeCall.cancel()
        restoredAt = time.monotonic()
        self._resumeCall = self._reactor.callLater(
            self.resumeCheckDelay, self._checkResumed, restoredAt
        )

    def _checkResumed(self, restoredAt: float) -> None:
        """Subscribe again to the streams still silent after a restore."""
        self._resumeCall = None
        if self._closed or self.info is None:
            return
        streams = []
        if self._gazeWanted:
            gazeSilent = self._lastGazeAt < restoredAt
        else:  # the gaze stream may be open only to feed track box positions
            gazeSilent = self._trackBoxFeed and self._lastPositionAt < restoredAt
        if gazeSilent:
            streams.append(self._sdk.EYETRACKER_GAZE_DATA)
        guide = getattr(self._sdk, "EYETRACKER_USER_POSITION_GUIDE", None)
        if self._positionSource == GUIDE and guide is not None:
            if self._lastPositionAt < restoredAt:
                streams.append(guide)
        if streams:
            _log.info("resubscribing to {streams} after the restored connection", streams=streams)
            self._call(self._resubscribeOnWorker, streams).addErrback(
                lambda f: _log.warn("resubscribing failed: {error}", error=f.getErrorMessage())
            )

    # -- the worker thread: every SDK call happens below

    def _subscribe(self, stream: str, callback: Callable) -> None:
        if stream in self._subscribed:
            return
        self._eyetracker.subscribe_to(stream, callback, as_dictionary=True)
        self._subscribed[stream] = callback

    def _unsubscribe(self, stream: str) -> None:
        callback = self._subscribed.pop(stream, None)
        if callback is not None:
            self._eyetracker.unsubscribe_from(stream, callback)

    def _findOnWorker(self) -> Any:
        sdk = self._sdk
        address = self._address
        if not address:
            found = sdk.find_all_eyetrackers()
            if not found:
                raise NoTrackerError("no eye tracker connected")
            return found[0]
        try:
            return sdk.EyeTracker(address)
        except self._errors as e:
            reason = sdk_error_message(e)
        # Not reachable directly: look for it (by address or serial number).
        found = sdk.find_all_eyetrackers()
        for eyetracker in found:
            if address in (eyetracker.address, eyetracker.serial_number):
                return eyetracker
        others = ", ".join(str(eyetracker.address) for eyetracker in found) or "none"
        raise NoTrackerError(
            f"no eye tracker at {address} ({reason}); eye trackers found: {others}"
        )

    def _openOnWorker(self) -> Tuple[TrackerInfo, Optional[str]]:
        self._eyetracker = self._findOnWorker()
        try:
            return self._setUpOnWorker()
        except BaseException:
            # Leave nothing subscribed on a tracker we are not going to use.
            self._closeOnWorker()
            raise

    def _setUpOnWorker(self) -> Tuple[TrackerInfo, Optional[str]]:
        sdk = self._sdk
        eyetracker = self._eyetracker
        info = read_info(sdk, eyetracker)
        self._hasTrackBox = TRACK_BOX in info.capabilities
        if self._frequency is not None:
            wanted = match_frequency(self._frequency, info.frequencies)
            if wanted != info.frequency:
                eyetracker.set_gaze_output_frequency(wanted)
                info = replace(info, frequency=float(eyetracker.get_gaze_output_frequency()))
        info = replace(info, system_clock_offset_us=measure_clock_offset(sdk))
        if self._closed:
            return info, None
        for stream, callback in self._notificationCallbacks.items():
            try:
                self._subscribe(stream, callback)
            except self._errors as e:
                _log.warn(
                    "cannot subscribe to {stream}: {error}",
                    stream=stream,
                    error=sdk_error_message(e),
                )
        errors = getattr(sdk, "EYETRACKER_STREAM_ERRORS", None)
        if errors is not None:
            self._subscribe(errors, self._onStreamError)
        source = self._startPositionsOnWorker()
        if source != GUIDE:
            capabilities = set(info.capabilities)
            capabilities.discard(GUIDE)
            info = replace(info, capabilities=frozenset(capabilities))
        return info, source

    def _startPositionsOnWorker(self) -> Optional[str]:
        """Subscribe to the user position guide, or feed positions from gaze."""
        guide = getattr(self._sdk, "EYETRACKER_USER_POSITION_GUIDE", None)
        if guide is not None:
            try:
                self._subscribe(guide, self._onUserPosition)
                return GUIDE
            except self._errors as e:
                _log.info("no user position guide ({error})", error=sdk_error_message(e))
        return self._trackBoxFeedOnWorker()

    def _trackBoxFeedOnWorker(self) -> Optional[str]:
        if not self._hasTrackBox:
            return None
        # 1.x: gaze carries the eye positions in track box coordinates; keep
        # the gaze stream open for them even while no one wants gaze.
        self._trackBoxFeed = True
        self._subscribe(self._sdk.EYETRACKER_GAZE_DATA, self._onGaze)
        return TRACK_BOX

    def _positionFallbackOnWorker(self) -> Optional[str]:
        guide = getattr(self._sdk, "EYETRACKER_USER_POSITION_GUIDE", None)
        if guide is not None:
            self._unsubscribe(guide)
        return self._trackBoxFeedOnWorker()

    def _subscribeGazeOnWorker(self) -> None:
        self._subscribe(self._sdk.EYETRACKER_GAZE_DATA, self._onGaze)

    def _unsubscribeGazeOnWorker(self) -> None:
        if not self._trackBoxFeed and not self._gazeWanted:
            self._unsubscribe(self._sdk.EYETRACKER_GAZE_DATA)

    def _resubscribeOnWorker(self, streams: List[str]) -> None:
        callbacks = {
            self._sdk.EYETRACKER_GAZE_DATA: self._onGaze,
            getattr(self._sdk, "EYETRACKER_USER_POSITION_GUIDE", None): self._onUserPosition,
        }
        for stream in streams:
            try:
                self._unsubscribe(stream)
            except self._errors:
                self._subscribed.pop(stream, None)
            self._subscribe(stream, callbacks[stream])

    def _setFrequencyOnWorker(self, frequency: float) -> float:
        self._eyetracker.set_gaze_output_frequency(frequency)
        return float(self._eyetracker.get_gaze_output_frequency())

    def _readDisplayAreaOnWorker(self) -> Optional[DisplayArea]:
        return display_area_from(self._eyetracker.get_display_area())

    def _enterCalibrationOnWorker(self) -> None:
        if self._calibration is None:
            self._calibration = self._sdk.ScreenBasedCalibration(self._eyetracker)
        if self._inCalibration:
            # A calibration left unfinished (its client went away): start over.
            self._leaveCalibrationOnWorker()
        try:
            self._calibration.enter_calibration_mode()
        except self._sdk.EyeTrackerInvalidOperationError:
            # Already in calibration mode, left so by someone else: start over.
            self._calibration.leave_calibration_mode()
            self._calibration.enter_calibration_mode()
        self._inCalibration = True

    def _requireCalibration(self) -> Any:
        if not self._inCalibration or self._calibration is None:
            raise TrackerError("the eye tracker is not in calibration mode")
        return self._calibration

    def _collectOnWorker(self, x: float, y: float) -> bool:
        calibration = self._requireCalibration()
        success = self._sdk.CALIBRATION_STATUS_SUCCESS
        if calibration.collect_data(x, y) == success:
            return True
        # Trackers often succeed on a second try (the eyes settle).
        return calibration.collect_data(x, y) == success

    def _discardOnWorker(self, x: float, y: float) -> None:
        self._requireCalibration().discard_data(x, y)

    def _computeOnWorker(self) -> CalibrationResult:
        sdk = self._sdk
        calibration = self._requireCalibration()
        try:
            result = calibration.compute_and_apply()
        except sdk.EyeTrackerOperationFailedError as e:
            _log.warn("computing the calibration failed: {error}", error=sdk_error_message(e))
            return CalibrationResult(success=False, points=(), status="failure")
        validity = {
            getattr(sdk, constant): name
            for constant, name in VALIDITY
            if getattr(sdk, constant, None) is not None
        }
        points = []
        for point in result.calibration_points:
            left, right = [], []
            for sample in point.calibration_samples:
                for eye, out in ((sample.left_eye, left), (sample.right_eye, right)):
                    x, y = eye.position_on_display_area
                    out.append(
                        CalibrationEyeSample(
                            float(x), float(y), validity.get(eye.validity, "invalid")
                        )
                    )
            px, py = point.position_on_display_area
            points.append(CalibrationPointResult(float(px), float(py), tuple(left), tuple(right)))
        status = str(result.status)
        prefix = "calibration_status_"
        if status.startswith(prefix):
            status = status[len(prefix) :]
        return CalibrationResult(
            success=result.status != sdk.CALIBRATION_STATUS_FAILURE,
            points=tuple(points),
            status=status,
        )

    def _leaveCalibrationOnWorker(self) -> None:
        if not self._inCalibration or self._calibration is None:
            return
        self._inCalibration = False
        try:
            self._calibration.leave_calibration_mode()
        except self._sdk.EyeTrackerInvalidOperationError:
            pass  # not in calibration mode after all

    def _closeOnWorker(self) -> None:
        """Leave calibration mode and unsubscribe from every stream."""
        if self._eyetracker is None:
            return
        try:
            self._leaveCalibrationOnWorker()
        except self._errors as e:
            _log.warn("leaving calibration mode failed: {error}", error=sdk_error_message(e))
        self._trackBoxFeed = False
        for stream in list(self._subscribed):
            try:
                self._unsubscribe(stream)
            except self._errors as e:
                _log.warn(
                    "unsubscribing from {stream} failed: {error}",
                    stream=stream,
                    error=sdk_error_message(e),
                )
        self._eyetracker = None
        self._calibration = None
