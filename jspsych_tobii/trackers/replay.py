# -*- test-case-name: tests.test_replay -*-
"""
L{ReplayTracker}: a recorded session played back as an L{ITracker}.

Samples come out with the recording's own inter-sample timing (divided by
C{speed}), in batches every couple of milliseconds, as from a live tracker.

What is restamped, and why: C{system_time_us} is moved onto the server's
clock, as if each sample had been captured now, because the client aligns
gaze with its trials through that clock (see CLIENT_CONTRACT.md); sample
C{i} gets C{anchor + (t_i - t_anchor) / speed}, so relative timing is kept
exactly at speed 1 and scaled otherwise.  C{seq} and C{server_time_us} are
the server's to fill (the L{ITracker} rule), so they are handed over as 0.
Every other field, C{device_time_us} included, is the recording's, so the
original timing stays recoverable from the device clock, and
L{ReplayTracker.original_time_us} maps a restamped time back.

A replay cannot calibrate: the calibration methods fail with a
L{TrackerError} saying so (C{leaveCalibration}, which has nothing to undo,
succeeds), and C{info.capabilities} has no C{"calibration"}.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    DisplayArea,
    GazeReceiver,
    ITracker,
    Point3,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
    empty_gaze,
)
from jspsych_tobii.logs import Logger
from jspsych_tobii.recording.format import RecordingFormatError, read_gaze, read_header
from jspsych_tobii.trackers.eyemodel import (
    DEFAULT_DISPLAY,
    DEFAULT_HEAD,
    HEAD_BOX_FAR,
    HEAD_BOX_HALF_HEIGHT,
    HEAD_BOX_HALF_WIDTH,
    HEAD_BOX_NEAR,
)
from jspsych_tobii.trackers.paced import PacedStream

#: Records examined at a time when looking for the samples that are due.
SCAN = 4096
MIN_SPEED, MAX_SPEED = 0.01, 1000.0
#: Notification kind sent when a replay without C{loop} reaches its end.
REPLAY_FINISHED = "replay_finished"
CALIBRATION_CAPABILITIES = frozenset({"calibration", "monocular_calibration"})

NO_CALIBRATION = (
    "this is a replay of a recording ({name}); a replay cannot be calibrated. "
    "Run the server with a real eye tracker (or --mock) to calibrate"
)


def user_position_from_origins(sample: np.void) -> UserPosition:
    """
    Where the eyes of a sample are in the head box, on the user-position
    scale, from its gaze origins (the same mapping as the mock's).
    """

    def place(eye: str) -> Optional[Point3]:
        values = [float(sample[f"{eye}_origin_{axis}"]) for axis in "xyz"]
        if not bool(sample[f"{eye}_origin_valid"]) or not all(np.isfinite(values)):
            return None
        x, y, z = values
        return (
            float(np.clip((x + HEAD_BOX_HALF_WIDTH) / (2 * HEAD_BOX_HALF_WIDTH), 0, 1)),
            float(
                np.clip(
                    (y - DEFAULT_HEAD[1] + HEAD_BOX_HALF_HEIGHT) / (2 * HEAD_BOX_HALF_HEIGHT), 0, 1
                )
            ),
            float(np.clip((HEAD_BOX_FAR - z) / (HEAD_BOX_FAR - HEAD_BOX_NEAR), 0, 1)),
        )

    return UserPosition(
        left=place("left"), right=place("right"), system_time_us=int(sample["system_time_us"])
    )


def _display_area(description: Any) -> Optional[DisplayArea]:
    def corner(name: str) -> Point3:
        x, y, z = (float(v) for v in description[name])
        return (x, y, z)

    try:
        return DisplayArea(
            top_left=corner("top_left"),
            top_right=corner("top_right"),
            bottom_left=corner("bottom_left"),
        )
    except (KeyError, TypeError, ValueError):
        return None


@implementer(ITracker)
class ReplayTracker(PacedStream):
    """
    @param reactor: provides C{callLater}.
    @param clock_us: the server's microsecond clock, which samples are
        restamped onto (L{jspsych_tobii.core.timesync.ServerClock.source}).
    @param path: the session's C{.gaze} file (or its C{.events.jsonl}).
    @param speed: playback speed; 2.0 plays twice as fast.
    @param loop: start again from the beginning after the last sample,
        instead of ending the stream.
    @raise TrackerError: the file is not a readable recording, or is empty.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        clock_us: MicrosecondClock,
        path: str,
        speed: float = 1.0,
        loop: bool = False,
    ):
        speed = float(speed)
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise TrackerError(
                f"replay speed must be between {MIN_SPEED:g} and {MAX_SPEED:g}, got {speed:g}"
            )
        self._reactor = reactor
        self.path = os.fspath(path)
        self.speed = speed
        self.loop = bool(loop)
        self._clock_us = clock_us
        try:
            self.header = read_header(self.path)
            samples = read_gaze(self.path)
        except RecordingFormatError as e:
            raise TrackerError(f"cannot replay: {e}") from None
        if len(samples) == 0:
            raise TrackerError(f"cannot replay {self.path}: the recording holds no samples")
        if samples.dtype != GAZE_DTYPE:
            samples = _as_gaze(samples)
        self._samples = samples
        self._name = os.path.basename(self.path)
        times = np.asarray(samples["system_time_us"][: min(len(samples), 10_001)])
        gaps = np.diff(times)
        gaps = gaps[gaps > 0]
        if len(gaps):
            median = float(np.median(gaps))
            self.period_us = float(np.mean(gaps[gaps < 1.5 * median]))  # gaps of lost samples out
        else:
            self.period_us = 1e6 / 120.0
        self.frequency = self._recorded_frequency()
        self.info: Optional[TrackerInfo] = None
        self._receiver: Optional[GazeReceiver] = None
        self._notify: Optional[Callable[[TrackerNotification], Any]] = None
        self._timer = None
        self._next = 0  # index of the next sample to deliver
        self._anchor_us = 0  # server time at which sample _anchor_index is due
        self._anchor_t = 0  # its recorded system time
        self._pass = 0  # completed passes through the recording (loop)
        self._last_stamp: Optional[int] = None
        self._latest: Optional[np.void] = None
        self._first: Optional[np.void] = None
        self.delivered = 0

    # -- helpers

    def _recorded_frequency(self) -> float:
        tracker = self.header.get("tracker") or {}
        frequency = tracker.get("frequency") if isinstance(tracker, dict) else None
        if isinstance(frequency, (int, float)) and frequency > 0:
            return float(frequency)
        return round(1e6 / self.period_us, 1)

    def _make_info(self) -> TrackerInfo:
        tracker = self.header.get("tracker")
        tracker = tracker if isinstance(tracker, dict) else {}
        display = _display_area(tracker.get("displayArea"))
        if display is None:
            self.log.warn(
                "the recording {name} does not describe its display area; assuming a 24-inch "
                "16:9 screen",
                name=self._name,
            )
            display = DEFAULT_DISPLAY
        recorded = tracker.get("capabilities")
        recorded = recorded if isinstance(recorded, list) else []
        capabilities = (frozenset(str(c) for c in recorded) - CALIBRATION_CAPABILITIES) | {
            "gaze",
            "replay",
        }
        model = str(tracker.get("model") or "unknown tracker")
        return TrackerInfo(
            address=f"replay://{self._name}",
            model=f"Replay of {model}",
            serial_number=str(tracker.get("serialNumber") or "replay"),
            firmware_version=str(tracker.get("firmwareVersion") or ""),
            device_name=f"replay of {self._name} at {self.speed:g}x",
            frequencies=(self.frequency,),
            frequency=self.frequency,
            capabilities=frozenset(capabilities),
            display_area=display,
            sdk_version="replay",
            system_clock_offset_us=0,
        )

    def original_time_us(self, restamped_us: int) -> int:
        """The recorded C{system_time_us} of a sample of the current pass."""
        return int(round(self._anchor_t + (restamped_us - self._anchor_us) * self.speed))

    # -- ITracker

    def connect(self) -> defer.Deferred:
        self.info = self._make_info()
        return defer.succeed(self.info)

    def disconnect(self) -> defer.Deferred:
        self._stop_timer()
        self._receiver = None
        return defer.succeed(None)

    def startGaze(self, receiver: GazeReceiver) -> defer.Deferred:
        self._receiver = receiver
        if self._timer is None:
            if self._next >= len(self._samples):
                self._next = 0  # played to the end: a new stream starts over
                self._pass = 0
            self._set_anchor(self._next, self._clock_us())
            self._schedule()
        return defer.succeed(None)

    def getUserPosition(self) -> Optional[UserPosition]:
        if self.info is None:
            return None
        sample = self._latest
        if sample is None:
            sample = self._first_seen()
        return user_position_from_origins(sample)

    def setGazeOutputFrequency(self, frequency: float) -> defer.Deferred:
        frequency = float(frequency)
        if frequency != self.frequency:
            return defer.fail(
                TrackerError(
                    f"a replay plays at the recorded frequency ({self.frequency:g} Hz), "
                    f"not {frequency:g} Hz"
                )
            )
        return defer.succeed(frequency)

    def enterCalibration(self) -> defer.Deferred:
        return self._cannot_calibrate()

    def collectCalibrationData(self, x: float, y: float) -> defer.Deferred:
        return self._cannot_calibrate()

    def discardCalibrationData(self, x: float, y: float) -> defer.Deferred:
        return self._cannot_calibrate()

    def computeCalibration(self) -> defer.Deferred:
        return self._cannot_calibrate()

    def leaveCalibration(self) -> defer.Deferred:
        return defer.succeed(None)  # never in calibration mode: nothing to leave

    # -- internals

    def _cannot_calibrate(self) -> defer.Deferred:
        return defer.fail(TrackerError(NO_CALIBRATION.format(name=self._name)))

    def _first_seen(self) -> np.void:
        """The first sample with an eye seen (the participant at the start)."""
        if self._first is None:
            head = np.asarray(self._samples[: min(len(self._samples), 100_000)])
            seen = np.flatnonzero(head["left_origin_valid"] | head["right_origin_valid"])
            self._first = head[int(seen[0]) if len(seen) else 0].copy()
        return self._first

    def _set_anchor(self, index: int, due_us: int) -> None:
        self._anchor_us = int(due_us)
        self._anchor_t = int(self._samples["system_time_us"][index])

    def _due(self, now_us: int) -> int:
        """Index one past the last sample due at server time C{now_us}."""
        samples = self._samples
        limit = self._anchor_t + (now_us - self._anchor_us) * self.speed
        end = self._next
        total = len(samples)
        while end < total:
            window = np.asarray(samples["system_time_us"][end : min(total, end + SCAN)])
            found = int(np.searchsorted(window, limit, "right"))
            end += found
            if found < len(window):
                break
        return end

    def _deliver(self) -> None:
        self._timer = None
        now = self._clock_us()
        batches = []
        while True:
            end = self._due(now)
            if end > self._next:
                batches.append(self._batch(self._next, end))
                self._next = end
            if self._next < len(self._samples) or not self.loop:
                break
            self._wrap()
        for batch in batches:
            self.delivered += len(batch)
            receiver = self._receiver  # a receiver may stop the stream
            if receiver is not None:
                receiver(batch)
        if self._receiver is None:
            return
        if self._next >= len(self._samples):
            self.log.info("replay of {name} finished", name=self._name)
            if self._notify is not None:
                self._notify(
                    TrackerNotification(
                        REPLAY_FINISHED, now, f"replay of {self._name} finished", {}
                    )
                )
            return
        self._schedule()

    def _wrap(self) -> None:
        """Loop: the first sample follows the last one period later."""
        samples = self._samples
        last_due = self._anchor_us + (int(samples["system_time_us"][-1]) - self._anchor_t) / (
            self.speed
        )
        self._pass += 1
        self._next = 0
        self._set_anchor(0, int(round(last_due + self.period_us / self.speed)))

    def _batch(self, start: int, end: int) -> np.ndarray:
        batch = np.array(self._samples[start:end])
        recorded = batch["system_time_us"]
        stamps = self._anchor_us + np.round((recorded - self._anchor_t) / self.speed).astype(
            np.int64
        )
        # strictly increasing, even when a high speed squeezes samples together
        floor = (self._last_stamp if self._last_stamp is not None else stamps[0] - 1) + 1
        steps = np.arange(len(stamps), dtype=np.int64)
        stamps = np.maximum.accumulate(np.maximum(stamps - steps, floor)) + steps
        self._last_stamp = int(stamps[-1])
        if self._pass:
            span = int(self._samples["device_time_us"][-1]) - int(
                self._samples["device_time_us"][0]
            )
            batch["device_time_us"] += self._pass * (span + int(round(self.period_us)))
        batch["system_time_us"] = stamps
        batch["seq"] = 0
        batch["server_time_us"] = 0
        self._latest = batch[-1].copy()
        return batch


def _as_gaze(records: np.ndarray) -> np.ndarray:
    """Records of another layout as L{GAZE_DTYPE}; fields it lacks are NaN/False/0."""
    out = empty_gaze(len(records))
    present = records.dtype.names or ()
    for name in GAZE_DTYPE.names or ():
        if name in present:
            out[name] = records[name]
    return out
