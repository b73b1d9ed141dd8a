# -*- test-case-name: tests.test_mock -*-
"""
L{MockTracker}: an L{ITracker} with no hardware, for demos, development and
tests.  It is only ever used when asked for (C{--mock}); the server never
falls back to it.

Samples are produced by L{EyeModel} at their ideal capture times
(C{start + k / rate}) on the server's monotonic clock, by a L{MockSamples}
that the pacing takes them from (L{jspsych_tobii.trackers.paced}).  The
server's pacing is a thread: it makes each sample ahead of time and hands
it over when it is due, as bytes, through the same hand-off as the Tobii
SDK adapter, so latency measured against the mock is the server's own and
the reactor does no more work for a sample than for a real tracker's.  By
default (and for tests on a L{task.Clock}) a reactor timer makes and
delivers them in batches.  With an injected L{task.Clock} and seed,
everything is deterministic.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import (
    CalibrationEyeSample,
    CalibrationPointResult,
    CalibrationResult,
    GazeBatch,
    GazeReceiver,
    ITracker,
    NotificationKind,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
)
from jspsych_tobii.trackers.eyemodel import DEFAULT_DISPLAY, EyeModel
from jspsych_tobii.trackers.paced import IPacing, ISampleSource, PacedStream, TimerPacing

MOCK_FREQUENCIES = (30.0, 60.0, 120.0, 250.0, 300.0, 600.0, 1200.0)
#: How long collecting one calibration point takes, like a real tracker.
CALIBRATION_COLLECT_SECONDS = 0.7
#: Samples are synthesised this far ahead (never delivered early), so numpy
#: works on hundreds of samples per call instead of two or three: a call costs
#: ~0.2 ms whatever its size, so 300 samples (1200 Hz) cost 1.3 µs each and
#: 30 cost 7 µs each.  A change of gaze target discards what was made ahead.
SYNTHESIS_SECONDS = 0.25
DEVICE_CLOCK_OFFSET_US = 7_340_000_000


@implementer(ISampleSource)
class MockSamples:
    """
    The samples of one run of the mock's stream (from L{startGaze}, or a
    change of frequency, to its end): sample C{k} is captured at C{start_us
    + k / rate} and due then.  Thread-safe: the pacing takes samples on its
    own thread while the reactor may change the model (L{MockTracker.lookAt});
    both hold C{lock}, the tracker's one lock around its L{EyeModel}.  The
    thread holds it for at most one synthesis (~0.3 ms at 1200 Hz), so the
    reactor, which takes it only when the mock's gaze target changes or a
    calibration point is collected, waits at most that long.
    """

    def __init__(
        self,
        model: EyeModel,
        lock: threading.Lock,
        clock_us: MicrosecondClock,
        start_us: int,
        rate: float,
    ):
        self._model = model
        self._lock = lock
        self._clock_us = clock_us
        self.start_us = start_us
        self._period = 1e6 / rate
        self._ahead_n = max(1, int(rate * SYNTHESIS_SECONDS))
        self._next_k = 0
        self._ahead: Optional[np.ndarray] = None
        self._closed = False

    def take(self) -> Optional[GazeBatch]:
        with self._lock:
            if self._closed:
                return None
            last_k = int((self._clock_us() - self.start_us) // self._period)
            due = last_k - self._next_k + 1
            if due <= 0:
                return None
            ahead = self._ahead
            if ahead is None or len(ahead) < due:
                ahead = self._synthesise(max(due, self._ahead_n))
            batch, self._ahead = ahead[:due], ahead[due:]
            self._next_k += due
            return batch

    def prepare(self) -> None:
        with self._lock:
            if not self._closed and (self._ahead is None or len(self._ahead) == 0):
                self._ahead = self._synthesise(self._ahead_n)

    def discard_ahead(self) -> None:
        """Called with C{lock} held, when the model changed: what was made ahead is stale."""
        self._ahead = None

    def close(self) -> None:
        """Nothing is taken after this (a pacing thread may still be ending)."""
        with self._lock:
            self._closed = True
            self._ahead = None

    def _synthesise(self, count: int) -> np.ndarray:
        """Samples C{next_k ...}, made ahead of time at their capture times."""
        ks = np.arange(self._next_k, self._next_k + count)
        times = self.start_us + np.round(ks * self._period).astype(np.int64)
        return self._model.samples(times, DEVICE_CLOCK_OFFSET_US)


@implementer(ITracker)
class MockTracker(PacedStream):
    """
    @param reactor: provides C{callLater}.
    @param clock_us: the server's microsecond clock, which samples are
        stamped with (L{jspsych_tobii.core.timesync.ServerClock.source}; in
        tests, one driven by the same L{task.Clock} as C{reactor}).
    @param rate: samples per second.
    @param pacing: how samples reach the reactor, an L{IPacing}: a L{TimerPacing} (the
        default: batches on a reactor timer) or a L{ThreadPacing} (each
        sample when due, from a thread, on the same C{clock_us}).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        clock_us: MicrosecondClock,
        rate: float = 120.0,
        seed: int = 0,
        offset_deg: float = 0.0,
        noise_deg: float = 0.02,
        blinks: bool = True,
        pacing: Optional[IPacing] = None,
    ):
        if not 1.0 <= rate <= 2000.0:
            raise TrackerError(f"mock rate must be between 1 and 2000 Hz, got {rate:g}")
        self._reactor = reactor
        self.rate = float(rate)
        self._clock_us = clock_us
        self.model = EyeModel(seed=seed, offset_deg=offset_deg, noise_deg=noise_deg, blinks=blinks)
        self.info: Optional[TrackerInfo] = None
        self._receiver: Optional[GazeReceiver] = None
        self._notify: Optional[Callable[[TrackerNotification], Any]] = None
        self._pacing: IPacing = pacing if pacing is not None else TimerPacing(reactor)
        self._lock = threading.Lock()  # around the model: see MockSamples
        self._samples: Optional[MockSamples] = None
        self._calibrating = False
        self._calibration: Dict[Tuple[float, float], List[CalibrationPointResult]] = {}
        self._failures: Dict[str, Exception] = {}

    # -- test hooks

    def failNext(self, operation: str, error: Exception) -> None:
        """Make the next call of method C{operation} fail with C{error}."""
        self._failures[operation] = error

    def _check(self, operation: str) -> None:
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error

    def lookAt(self, x: Optional[float], y: Optional[float] = None) -> None:
        """Make the synthetic participant fixate (x, y); C{lookAt(None)} frees it."""
        with self._lock:
            self.model.look_at(x, y)
            if self._samples is not None:
                self._samples.discard_ahead()

    def notify(self, kind: str, message: str = "", **data: Any) -> None:
        """Emit a notification, as a device would."""
        if self._notify is not None:
            self._notify(TrackerNotification(kind, self._clock_us(), message, data))

    # -- ITracker

    def connect(self) -> defer.Deferred:
        try:
            self._check("connect")
        except Exception as e:
            return defer.fail(e)
        self.info = TrackerInfo(
            address="mock://tracker",
            model="Mock Tracker",
            serial_number="MOCK-0001",
            firmware_version="mock",
            device_name="jspsych-tobii mock",
            frequencies=MOCK_FREQUENCIES if self.rate in MOCK_FREQUENCIES else (self.rate,),
            frequency=self.rate,
            capabilities=frozenset({"gaze", "calibration", "user_position_guide"}),
            display_area=DEFAULT_DISPLAY,
            sdk_version="mock",
            system_clock_offset_us=0,
        )
        return defer.succeed(self.info)

    def disconnect(self) -> defer.Deferred:
        self._stop_timer()
        self._receiver = None
        self._calibrating = False
        return defer.succeed(None)

    def startGaze(self, receiver: GazeReceiver) -> defer.Deferred:
        try:
            self._check("startGaze")
        except Exception as e:
            return defer.fail(e)
        self._receiver = receiver
        if not self._pacing.running:
            self._start_pacing()
        return defer.succeed(None)

    def getUserPosition(self) -> Optional[UserPosition]:
        return self.model.user_position(self._clock_us())

    def setGazeOutputFrequency(self, frequency: float) -> defer.Deferred:
        frequency = float(frequency)
        if self.info is not None and frequency not in self.info.frequencies:
            return defer.fail(
                TrackerError(
                    f"frequency {frequency:g} Hz is not supported; choose one of "
                    + ", ".join(f"{f:g}" for f in self.info.frequencies)
                )
            )
        running = self._pacing.running
        self._stop_timer()
        self.rate = frequency
        if self.info is not None:
            self.info = replace(self.info, frequency=frequency)
        if running:
            self._start_pacing()
        self.notify(NotificationKind.FREQUENCY_CHANGED, f"{frequency:g} Hz", frequency=frequency)
        return defer.succeed(frequency)

    def enterCalibration(self) -> defer.Deferred:
        return self._after(0.05, "enterCalibration", self._enter)

    def _enter(self) -> None:
        self._calibrating = True
        self._calibration.clear()

    def collectCalibrationData(self, x: float, y: float) -> defer.Deferred:
        if not self._calibrating:
            return defer.fail(TrackerError("not in calibration mode"))
        self.lookAt(x, y)

        def collected() -> bool:
            if not self._calibrating:
                self.lookAt(None)
                raise TrackerError("calibration mode was left during collection")
            now = self._clock_us()
            times = now - np.arange(12)[::-1] * int(1e6 / self.rate)
            with self._lock:
                samples = self.model.samples(times)
            self.lookAt(None)

            def eye(name: str) -> Tuple[CalibrationEyeSample, ...]:
                return tuple(
                    CalibrationEyeSample(
                        float(sx), float(sy), "valid_and_used" if ok else "invalid"
                    )
                    for sx, sy, ok in zip(
                        samples[f"{name}_x"], samples[f"{name}_y"], samples[f"{name}_gaze_valid"]
                    )
                )

            self._calibration[(x, y)] = [CalibrationPointResult(x, y, eye("left"), eye("right"))]
            return True

        return self._after(CALIBRATION_COLLECT_SECONDS, "collectCalibrationData", collected)

    def discardCalibrationData(self, x: float, y: float) -> defer.Deferred:
        def discard() -> None:
            if not self._calibrating:
                raise TrackerError("not in calibration mode")
            self._calibration.pop((x, y), None)

        return self._after(0.0, "discardCalibrationData", discard)

    def computeCalibration(self) -> defer.Deferred:
        def compute() -> CalibrationResult:
            if not self._calibrating:
                raise TrackerError("not in calibration mode")
            points = tuple(p for results in self._calibration.values() for p in results)
            if not points:
                return CalibrationResult(False, (), "calibration_status_failure")
            return CalibrationResult(True, points, "calibration_status_success")

        return self._after(0.2, "computeCalibration", compute)

    def leaveCalibration(self) -> defer.Deferred:
        def leave() -> None:
            self._calibrating = False

        return self._after(0.0, "leaveCalibration", leave)

    # -- internals

    def _after(self, seconds: float, operation: str, action: Callable[[], Any]) -> defer.Deferred:
        """Run C{action} after C{seconds} of simulated device time."""
        try:
            self._check(operation)
        except Exception as e:
            return defer.fail(e)
        d: defer.Deferred = defer.Deferred()

        def run() -> None:
            try:
                d.callback(action())
            except Exception:
                d.errback()

        self._reactor.callLater(seconds, run)
        return d

    def _start_pacing(self) -> None:
        self._stop_timer()
        self._samples = MockSamples(
            self.model, self._lock, self._clock_us, self._clock_us(), self.rate
        )
        self._pacing.start(self._samples, self._hand_over, self._samples.start_us, 1e6 / self.rate)

    def _stop_timer(self) -> None:
        self._pacing.stop()
        if self._samples is not None:
            self._samples.close()

    def _hand_over(self, batch: GazeBatch) -> None:
        """Called by the pacing, on the reactor, with the samples just due."""
        receiver = self._receiver
        if receiver is None:
            self._stop_timer()
            return
        receiver(batch)
