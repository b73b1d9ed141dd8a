# -*- test-case-name: tests.test_tobii_worker -*-
"""
The Tobii SDK's worker thread: L{SDKWorker}, which owns the SDK's
C{EyeTracker} and makes every blocking SDK call, and L{WorkerThread}, the
one thread it runs on.

Every blocking SDK call (discovery, C{EyeTracker(address)}, getters and
setters, subscribing and unsubscribing, calibration) runs on one dedicated
thread, a single-thread L{ThreadPool} used through L{deferToThreadPool}.  The
SDK serialises its calls anyway and some take seconds; the reactor never
waits on one.  Because they all run on that one thread, in order, the
state they change (the streams subscribed, calibration mode) belongs to
that thread alone: it lives in L{SDKWorker}, whose methods are only ever
called through L{WorkerThread.call}.  Nothing else holds an L{SDKWorker}.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import (
    CalibrationResult,
    DisplayArea,
    NoTrackerError,
    TrackerError,
    TrackerInfo,
)
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.tobii_callbacks import GAZE_STREAM, POSITION_STREAM, StreamCallbacks
from jspsych_tobii.trackers.tobii_sdk import (
    GUIDE,
    TRACK_BOX,
    calibration_result,
    display_area_from,
    match_frequency,
    measure_clock_offset,
    read_info,
    sdk_error_message,
    sdk_errors,
)

__all__ = ["ISDKReactor", "SDKWorker", "WorkerThread"]

_log = Logger()

T = TypeVar("T")


class ISDKReactor(IReactorTime, IReactorFromThreads):
    """
    What the Tobii SDK adapter needs of the reactor: timers, and calls from
    the SDK's threads and its worker thread.  Twisted's reactors provide both.
    """


class _DaemonThread(threading.Thread):
    """A thread that never keeps the process from exiting (a call stuck in the SDK)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class SDKWorker:
    """
    The SDK's C{EyeTracker}, its subscriptions and its calibration.  Every
    method runs on the worker thread, called only through
    L{WorkerThread.call}; SDK exceptions become L{TrackerError} there.

    @param sdk: the SDK module.
    @param callbacks: the L{StreamCallbacks} to subscribe.
    @param clock_us: the server's microsecond clock (the clock offset is
        measured against it).
    @param address: the tracker to open; None for the first one found.
    @param frequency: a gaze output frequency to set when opening it.
    @param closing: true once the tracker is being disconnected (an open
        under way then subscribes nothing).
    """

    def __init__(
        self,
        sdk: Any,
        callbacks: StreamCallbacks,
        clock_us: MicrosecondClock,
        address: Optional[str],
        frequency: Optional[float],
        closing: Callable[[], bool],
    ):
        self._sdk = sdk
        self._errors = sdk_errors(sdk)
        self._callbacks = callbacks
        self._clock_us = clock_us
        self._address = address
        self._frequency = frequency
        self._closing = closing
        self._eyetracker: Any = None
        self._subscribed: Dict[str, Callable[[Any], None]] = {}
        self._calibration: Any = None
        self._inCalibration = False
        self._hasTrackBox = False
        self._guide = getattr(sdk, "EYETRACKER_USER_POSITION_GUIDE", None)
        # our stream names -> the SDK's stream and the callback subscribed to it
        self._streams: Dict[str, Tuple[str, Callable[[Any], None]]] = {
            GAZE_STREAM: (sdk.EYETRACKER_GAZE_DATA, callbacks.gaze)
        }
        if self._guide is not None:
            self._streams[POSITION_STREAM] = (self._guide, callbacks.userPosition)

    # -- opening

    def open(self) -> Tuple[TrackerInfo, Optional[str]]:
        """
        Find and open the tracker, subscribe to its notifications and user
        positions.

        @return: its info, and where user positions come from (L{GUIDE},
            L{TRACK_BOX} or None).
        """
        self._eyetracker = self._find()
        try:
            return self._setUp()
        except BaseException:
            # Leave nothing subscribed on a tracker we are not going to use.
            self.close()
            raise

    def _find(self) -> Any:
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

    def _setUp(self) -> Tuple[TrackerInfo, Optional[str]]:
        sdk = self._sdk
        eyetracker = self._eyetracker
        info = read_info(sdk, eyetracker)
        self._hasTrackBox = TRACK_BOX in info.capabilities
        if self._frequency is not None:
            wanted = match_frequency(self._frequency, info.frequencies)
            if wanted != info.frequency:
                eyetracker.set_gaze_output_frequency(wanted)
                info = replace(info, frequency=float(eyetracker.get_gaze_output_frequency()))
        info = replace(info, system_clock_offset_us=measure_clock_offset(sdk, self._clock_us))
        if self._closing():
            return info, None
        for stream, callback in self._callbacks.notifications.items():
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
            self._subscribe(errors, self._callbacks.streamError)
        source = self._startPositions()
        if source != GUIDE:
            capabilities = set(info.capabilities)
            capabilities.discard(GUIDE)
            info = replace(info, capabilities=frozenset(capabilities))
        return info, source

    # -- streams

    def _subscribe(self, stream: str, callback: Callable[[Any], None]) -> None:
        if stream in self._subscribed:
            return
        self._eyetracker.subscribe_to(stream, callback, as_dictionary=True)
        self._subscribed[stream] = callback

    def _unsubscribe(self, stream: str) -> None:
        callback = self._subscribed.pop(stream, None)
        if callback is not None:
            self._eyetracker.unsubscribe_from(stream, callback)

    def _startPositions(self) -> Optional[str]:
        """Subscribe to the user position guide, or feed positions from gaze."""
        if self._guide is not None:
            try:
                self._subscribe(self._guide, self._callbacks.userPosition)
                return GUIDE
            except self._errors as e:
                _log.info("no user position guide ({error})", error=sdk_error_message(e))
        return self._trackBoxFeed()

    def _trackBoxFeed(self) -> Optional[str]:
        if not self._hasTrackBox:
            return None
        # 1.x: gaze carries the eye positions in track box coordinates; keep
        # the gaze stream open for them even while no one wants gaze.
        self._callbacks.trackBoxFeed = True
        self._subscribe(self._sdk.EYETRACKER_GAZE_DATA, self._callbacks.gaze)
        return TRACK_BOX

    def positionFallback(self) -> Optional[str]:
        """The tracker does not deliver the guide: feed positions from gaze, if it can."""
        if self._guide is not None:
            self._unsubscribe(self._guide)
        return self._trackBoxFeed()

    def subscribeGaze(self) -> None:
        self._subscribe(self._sdk.EYETRACKER_GAZE_DATA, self._callbacks.gaze)

    def unsubscribeGaze(self) -> None:
        """Unless gaze feeds user positions, or is wanted again already."""
        callbacks = self._callbacks
        if not callbacks.trackBoxFeed and not callbacks.gazeWanted:
            self._unsubscribe(self._sdk.EYETRACKER_GAZE_DATA)

    def resubscribe(self, streams: List[str]) -> None:
        """Subscribe again to C{streams} (L{GAZE_STREAM}, L{POSITION_STREAM})."""
        for name in streams:
            stream, callback = self._streams[name]
            try:
                self._unsubscribe(stream)
            except self._errors:
                self._subscribed.pop(stream, None)
            self._subscribe(stream, callback)

    # -- settings

    def setFrequency(self, frequency: float) -> float:
        self._eyetracker.set_gaze_output_frequency(frequency)
        return float(self._eyetracker.get_gaze_output_frequency())

    def readDisplayArea(self) -> Optional[DisplayArea]:
        return display_area_from(self._eyetracker.get_display_area())

    # -- calibration

    def enterCalibration(self) -> None:
        if self._calibration is None:
            self._calibration = self._sdk.ScreenBasedCalibration(self._eyetracker)
        if self._inCalibration:
            # A calibration left unfinished (its client went away): start over.
            self.leaveCalibration()
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

    def collect(self, x: float, y: float) -> bool:
        calibration = self._requireCalibration()
        success = self._sdk.CALIBRATION_STATUS_SUCCESS
        if calibration.collect_data(x, y) == success:
            return True
        # Trackers often succeed on a second try (the eyes settle).
        return calibration.collect_data(x, y) == success

    def discard(self, x: float, y: float) -> None:
        self._requireCalibration().discard_data(x, y)

    def compute(self) -> CalibrationResult:
        calibration = self._requireCalibration()
        try:
            result = calibration.compute_and_apply()
        except self._sdk.EyeTrackerOperationFailedError as e:
            _log.warn("computing the calibration failed: {error}", error=sdk_error_message(e))
            return CalibrationResult(success=False, points=(), status="failure")
        return calibration_result(self._sdk, result)

    def leaveCalibration(self) -> None:
        if not self._inCalibration or self._calibration is None:
            return
        self._inCalibration = False
        try:
            self._calibration.leave_calibration_mode()
        except self._sdk.EyeTrackerInvalidOperationError:
            pass  # not in calibration mode after all

    # -- closing

    def close(self) -> None:
        """Leave calibration mode and unsubscribe from every stream."""
        if self._eyetracker is None:
            return
        try:
            self.leaveCalibration()
        except self._errors as e:
            _log.warn("leaving calibration mode failed: {error}", error=sdk_error_message(e))
        self._callbacks.trackBoxFeed = False
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


class WorkerThread:
    """
    The one thread an L{SDKWorker} runs on, and the only way to reach it:
    L{call} runs one of its methods there and returns a Deferred.  The
    thread starts at the first call; L{stop} closes the worker and ends it.

    @param reactor: an L{ISDKReactor} (C{callFromThread} and C{callLater}).
    @param worker: the L{SDKWorker}; nothing else may hold it.
    @param errors: the SDK's exception classes, which become L{TrackerError}.
    @param name: the thread's name.
    """

    def __init__(
        self,
        reactor: ISDKReactor,
        worker: SDKWorker,
        errors: Tuple[Type[Exception], ...],
        name: str,
    ):
        self._reactor = reactor
        self._worker = worker
        self._errors = errors
        self._pool = ThreadPool(1, 1, name=name)
        self._pool.threadFactory = _DaemonThread
        self._stopped = False

    @property
    def started(self) -> bool:
        """Has the thread been started (and not stopped)?"""
        return self._pool.started

    @property
    def threads(self) -> List[threading.Thread]:
        """The pool's thread, while it runs."""
        return list(self._pool.threads)

    def call(self, method: Callable[..., T], *args: Any) -> "defer.Deferred[T]":
        """
        Run C{method(worker, *args)} on the thread (C{method} is a method of
        L{SDKWorker}, unbound); SDK exceptions become L{TrackerError}.
        """
        if self._stopped:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        if not self._pool.started:
            self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, self._guarded, method, *args)

    def _guarded(self, method: Callable[..., T], *args: Any) -> T:
        try:
            return method(self._worker, *args)
        except TrackerError:
            raise
        except self._errors as e:
            raise TrackerError(sdk_error_message(e)) from e

    def stop(self, timeout: float) -> defer.Deferred:
        """
        Close the worker (leave calibration mode, unsubscribe every stream),
        then end the thread.  If the worker is stuck in an SDK call for
        C{timeout} seconds, leave it behind: its thread is a daemon.

        @return: a Deferred firing with None when done or given up.
        """
        if self._stopped:
            return defer.succeed(None)
        self._stopped = True
        pool = self._pool
        if not pool.started:
            return defer.succeed(None)
        done: defer.Deferred = defer.Deferred()
        finished = deferToThreadPool(self._reactor, pool, self._guarded, SDKWorker.close)

        def end(result: Optional[Failure], timedOut: bool) -> None:
            if isinstance(result, Failure):
                _log.failure("closing the eye tracker failed", result)
            if done.called:
                return None
            if timer.active():
                timer.cancel()
            if timedOut:
                # The worker is stuck in an SDK call: let it go.  Stopping
                # the pool is left to a helper thread so that the reactor
                # does not join it.
                _log.warn(
                    "the Tobii SDK did not answer within {seconds} s; "
                    "leaving its worker thread behind",
                    seconds=timeout,
                )
                _DaemonThread(target=pool.stop, name="tobii-sdk-stop").start()
            else:
                # Every stream is unsubscribed and the worker is idle:
                # joining it is immediate.
                pool.stop()
            done.callback(None)
            return None

        timer: IDelayedCall = self._reactor.callLater(timeout, end, None, True)
        finished.addBoth(end, False)
        return done
