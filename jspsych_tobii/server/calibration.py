# -*- test-case-name: tests.test_calibration -*-
"""
L{CalibrationCoordinator}: who calibrates the tracker, and in what order.

A tracker has one calibration mode, so one connection owns calibration at a
time; a second gets a clear "busy" error, and the owner's disconnect leaves
calibration mode and frees it.  The owner's operations run strictly one
after another (the client sends C{calibration_start} without waiting, then
points), and a failure of the fire-and-forget start is reported on the
owner's next awaited request, naming its cause.  Collection runs on the
tracker's side (a Deferred), so the reactor and every gaze stream keep going.

L{calibration_summarizer} makes the reply's summary: the eye position read
from the gaze buffer on the reactor, the maths on a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Set, Tuple

from twisted.internet import defer

from jspsych_tobii.core.calibration_quality import calibration_summary
from jspsych_tobii.core.signals import mean_eye_position
from jspsych_tobii.interfaces import CalibrationResult, ITracker, ITrackerProvider, TrackerError
from jspsych_tobii.logs import Logger

if TYPE_CHECKING:
    from jspsych_tobii.server.hub import GazeHub
    from jspsych_tobii.server.work import WorkerPool

#: Calibration targets (distinct points) one calibration may collect.
MAX_CALIBRATION_POINTS = 50


class CalibrationError(Exception):
    """A calibration request cannot be carried out; the message says why."""


class CalibrationCoordinator:
    """
    @param trackers: gives the tracker to calibrate (C{require()}).
    @param summarize: turns a L{CalibrationResult} into the reply's dict, or
        a Deferred of it (the maths runs off the reactor).
    """

    log = Logger()

    def __init__(
        self,
        trackers: ITrackerProvider,
        summarize: Callable[[CalibrationResult], Any],
    ):
        self._trackers = trackers
        self._summarize = summarize
        self.owner: Optional[object] = None
        self._tracker: Optional[ITracker] = None
        self._lock = defer.DeferredLock()
        self._start_error: Optional[str] = None
        self.last_result: Optional[dict] = None
        self._targets: Set[Tuple[float, float]] = set()  # collected in this calibration

    def _check_owner(self, who: object) -> None:
        if self.owner is None:
            try:
                # the plugin's calibration_start is fire-and-forget: name the
                # cause it never read rather than blame the client
                self._trackers.require()
            except TrackerError as e:
                raise CalibrationError(str(e)) from None
            raise CalibrationError(
                "calibration has not been started on this connection (send calibration_start)"
            )
        if self.owner is not who:
            raise CalibrationError("another client is calibrating the eye tracker")

    def _serial(self, work: Callable[[], Any]) -> defer.Deferred:
        return self._lock.run(lambda: defer.maybeDeferred(work))

    def start(self, who: object) -> defer.Deferred:
        if self.owner is not None and self.owner is not who:
            return defer.fail(CalibrationError("another client is calibrating the eye tracker"))
        try:
            tracker = self._trackers.require()
        except TrackerError as e:
            return defer.fail(e)
        restart = self.owner is who and self._tracker is not None
        self.owner = who
        self._start_error = None
        self._targets.clear()

        @defer.inlineCallbacks
        def enter():
            current = self._tracker
            if restart and current is not None:
                yield current.leaveCalibration()
            self._tracker = tracker
            try:
                yield tracker.enterCalibration()
            except Exception as e:
                self._start_error = str(e) or e.__class__.__name__
                self._tracker = None
                raise

        return self._serial(enter)

    def _entered(self, who: object):
        self._check_owner(who)
        if self._start_error is not None:
            raise CalibrationError(f"calibration could not start: {self._start_error}")
        if self._tracker is None:
            raise CalibrationError("calibration is not active")
        return self._tracker

    def collect(self, who: object, x: float, y: float) -> defer.Deferred:
        try:
            self._check_owner(who)
        except CalibrationError as e:
            return defer.fail(e)
        target = (x, y)
        if target not in self._targets and len(self._targets) >= MAX_CALIBRATION_POINTS:
            return defer.fail(
                CalibrationError(
                    f"calibration_point: at most {MAX_CALIBRATION_POINTS} calibration points "
                    "per calibration (discard one, or send calibration_start to begin again)"
                )
            )
        self._targets.add(target)
        return self._serial(lambda: self._entered(who).collectCalibrationData(x, y))

    def discard(self, who: object, x: float, y: float) -> defer.Deferred:
        try:
            self._check_owner(who)
        except CalibrationError as e:
            return defer.fail(e)
        self._targets.discard((x, y))
        return self._serial(lambda: self._entered(who).discardCalibrationData(x, y))

    def compute(self, who: object) -> defer.Deferred:
        """Compute and apply, keep the result, then leave calibration mode."""
        try:
            self._check_owner(who)
        except CalibrationError as e:
            return defer.fail(e)

        @defer.inlineCallbacks
        def compute():
            tracker = self._entered(who)
            try:
                result = yield tracker.computeCalibration()
            finally:
                yield self._leave()
            self.last_result = yield defer.maybeDeferred(self._summarize, result)
            return self.last_result

        return self._serial(compute)

    def stop(self, who: object) -> defer.Deferred:
        """Leave calibration mode without computing."""
        try:
            self._check_owner(who)
        except CalibrationError as e:
            return defer.fail(e)
        return self._serial(self._leave)

    def abandon(self, who: object) -> Optional[defer.Deferred]:
        """C{who} disconnected: leave calibration mode if it owned it."""
        if self.owner is not who:
            return None
        self.log.info("calibrating client left; leaving calibration mode")
        d = self._serial(self._leave)
        d.addErrback(lambda f: self.log.failure("leaving calibration mode", f))
        return d

    @defer.inlineCallbacks
    def _leave(self):
        tracker, self._tracker = self._tracker, None
        self.owner = None
        self._start_error = None
        self._targets.clear()
        if tracker is not None:
            yield tracker.leaveCalibration()


#: Gaze origins of the last this many seconds place the eye for calibration degrees.
CALIBRATION_EYE_WINDOW_US = 10_000_000


def calibration_summarizer(
    trackers: ITrackerProvider, hub: GazeHub, work: WorkerPool
) -> Callable[[CalibrationResult], defer.Deferred]:
    """
    The calibration reply's maths: the eye position from the gaze buffer
    (read when called, on the reactor), the rest on a worker thread (a
    Deferred of the summary's dict).
    """

    def summarize(result: CalibrationResult) -> defer.Deferred:
        info = trackers.info()
        display = info.display_area if info is not None else None
        now = hub.clock.now_us()
        recent = hub.buffer.query(now - CALIBRATION_EYE_WINDOW_US, now) if hub.running else None
        eye = mean_eye_position(recent)
        return work.run(calibration_summary, result, display, eye_position_mm=eye)

    return summarize
