# -*- test-case-name: tests.test_state -*-
"""
The contracts: L{ITracker} and the plain records it speaks, and the
interfaces the server's parts meet each other through (L{ITrackerProvider},
L{ITrackerListener}, L{ISessionListener}, L{IGazeObserver}, L{IEventSink}).

Every tracker implementation (the mock, the Tobii Pro SDK adapter, a replay
of a recording, an adapter running in another process) provides L{ITracker}.
Nothing that crosses this interface is an SDK object: gaze arrives as numpy
structured arrays of L{GAZE_DTYPE}, everything else as the frozen dataclasses
below, so records can be copied, pickled, framed for another process and
compared in tests.

Threading rules, which every implementation keeps:
  - every method is called on the reactor thread;
  - receivers given to the tracker are called on the reactor thread;
  - every operation that may block returns a L{Deferred}; the reactor never
    waits for the device.

Clock rule: C{system_time_us} of a gaze sample and of a notification is on
the server's monotonic clock (see L{jspsych_tobii.core.timesync}), shifted by
L{TrackerInfo.system_clock_offset_us}.  With the Tobii SDK on Linux that
offset is zero: the SDK's system clock is CLOCK_MONOTONIC in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np
from zope.interface import Attribute, Interface

__all__ = [
    "GAZE_DTYPE",
    "EYE_FIELDS",
    "empty_gaze",
    "DisplayArea",
    "TrackerInfo",
    "UserPosition",
    "CalibrationEyeSample",
    "CalibrationPointResult",
    "CalibrationResult",
    "TrackerNotification",
    "NotificationKind",
    "TrackerError",
    "NoTrackerError",
    "ITracker",
    "ITrackerProvider",
    "ITrackerListener",
    "ISessionListener",
    "IGazeObserver",
    "IEventSink",
]

# Per-eye columns, in the order they appear for each eye.
EYE_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("x", "f8"),  # gaze point on the display area, normalised, origin top-left
    ("y", "f8"),
    ("point_x", "f8"),  # gaze point in the user coordinate system, mm
    ("point_y", "f8"),
    ("point_z", "f8"),
    ("origin_x", "f8"),  # gaze origin (eye position) in the user coordinate system, mm
    ("origin_y", "f8"),
    ("origin_z", "f8"),
    ("pupil", "f8"),  # pupil diameter, mm
    ("gaze_valid", "?"),
    ("origin_valid", "?"),
    ("pupil_valid", "?"),
)

#: One binocular gaze sample.  C{seq} (the sample's number in its tracking
#: session) and C{server_time_us} (when the server received it, on the server
#: clock) are filled in by the server; trackers leave them 0.
GAZE_DTYPE = np.dtype(
    [
        ("device_time_us", "i8"),
        ("system_time_us", "i8"),
        ("seq", "i8"),
        ("server_time_us", "i8"),
    ]
    + [(f"left_{name}", kind) for name, kind in EYE_FIELDS]
    + [(f"right_{name}", kind) for name, kind in EYE_FIELDS]
)


#: What a tracker hands the hub (L{ITracker.startGaze}): a batch of
#: L{GAZE_DTYPE} records, as an array, or as the records' bytes in a
#: C{bytearray} the tracker keeps no reference to (the hub stamps it in
#: place).  The bytes cost no numpy call: the form for a tracker whose SDK
#: calls back once per sample.
GazeBatch = Union[np.ndarray, bytearray]
GazeReceiver = Callable[[GazeBatch], Any]


def gaze_array(batch: GazeBatch) -> np.ndarray:
    """A L{GazeBatch} as an array of L{GAZE_DTYPE} (bytes: a view of them)."""
    if isinstance(batch, bytearray):
        return np.frombuffer(batch, GAZE_DTYPE)
    return batch


def empty_gaze(n: int) -> np.ndarray:
    """
    A batch of C{n} samples with every float NaN and every validity False.
    """
    batch = np.zeros(n, dtype=GAZE_DTYPE)
    for name, kind in EYE_FIELDS:
        if kind == "f8":
            batch[f"left_{name}"] = np.nan
            batch[f"right_{name}"] = np.nan
    return batch


Point3 = Tuple[float, float, float]


@dataclass(frozen=True)
class DisplayArea:
    """
    The active display area, as three corners in the user coordinate system
    (mm, origin at the tracker, x to the user's right, y up, z toward the user).
    """

    top_left: Point3
    top_right: Point3
    bottom_left: Point3

    @property
    def width_mm(self) -> float:
        return float(np.linalg.norm(np.subtract(self.top_right, self.top_left)))

    @property
    def height_mm(self) -> float:
        return float(np.linalg.norm(np.subtract(self.bottom_left, self.top_left)))

    def to_dict(self) -> dict:
        return {
            "top_left": list(self.top_left),
            "top_right": list(self.top_right),
            "bottom_left": list(self.bottom_left),
            "width_mm": self.width_mm,
            "height_mm": self.height_mm,
        }


@dataclass(frozen=True)
class TrackerInfo:
    """
    What a connected tracker is.  C{capabilities} holds lower-case names such
    as C{"gaze"}, C{"calibration"}, C{"monocular_calibration"},
    C{"user_position_guide"}, C{"track_box"}, C{"eye_images"}.
    """

    address: str
    model: str
    serial_number: str
    firmware_version: str
    device_name: str = ""
    frequencies: Tuple[float, ...] = ()
    frequency: float = 0.0
    capabilities: frozenset = frozenset()
    display_area: Optional[DisplayArea] = None
    sdk_version: str = ""
    #: tracker system clock minus the server's monotonic clock, in µs
    system_clock_offset_us: int = 0

    def to_dict(self) -> dict:
        return {
            "address": self.address,
            "model": self.model,
            "serialNumber": self.serial_number,
            "firmwareVersion": self.firmware_version,
            "deviceName": self.device_name,
            "frequencies": list(self.frequencies),
            "frequency": self.frequency,
            "capabilities": sorted(self.capabilities),
            "displayArea": self.display_area.to_dict() if self.display_area else None,
            "sdkVersion": self.sdk_version,
        }


@dataclass(frozen=True)
class UserPosition:
    """
    Where the eyes are within the tracker's head box, each axis 0..1 with 0.5
    ideal: x 0 = left, y 0 = bottom, z 0 = far, 1 = close.  C{None} for an
    eye that is not seen.
    """

    left: Optional[Point3]
    right: Optional[Point3]
    system_time_us: int = 0

    def to_dict(self) -> dict:
        def axis(eye, i):
            return None if eye is None else float(eye[i])

        return {
            "leftX": axis(self.left, 0),
            "leftY": axis(self.left, 1),
            "leftZ": axis(self.left, 2),
            "rightX": axis(self.right, 0),
            "rightY": axis(self.right, 1),
            "rightZ": axis(self.right, 2),
            "leftValid": self.left is not None,
            "rightValid": self.right is not None,
        }


@dataclass(frozen=True)
class CalibrationEyeSample:
    """
    One eye's gaze sample kept by the tracker for a calibration point.
    C{validity} is C{"valid_and_used"}, C{"valid_but_not_used"} or C{"invalid"}.
    """

    x: float
    y: float
    validity: str


@dataclass(frozen=True)
class CalibrationPointResult:
    """The tracker's samples for one calibration target at (x, y)."""

    x: float
    y: float
    left: Tuple[CalibrationEyeSample, ...] = ()
    right: Tuple[CalibrationEyeSample, ...] = ()


@dataclass(frozen=True)
class CalibrationResult:
    """The outcome of computing and applying a calibration."""

    success: bool
    points: Tuple[CalibrationPointResult, ...] = ()
    status: str = ""


class NotificationKind:
    """The kinds of L{TrackerNotification}."""

    CONNECTION_LOST = "connection_lost"
    CONNECTION_RESTORED = "connection_restored"
    CALIBRATION_CHANGED = "calibration_changed"
    DISPLAY_AREA_CHANGED = "display_area_changed"
    FREQUENCY_CHANGED = "frequency_changed"
    STREAM_BUFFER_OVERFLOW = "stream_buffer_overflow"
    STREAM_ERROR = "stream_error"
    TRACKER_AVAILABLE = "tracker_available"
    TRACKER_UNAVAILABLE = "tracker_unavailable"


@dataclass(frozen=True)
class TrackerNotification:
    """Something the tracker reported outside the data streams."""

    kind: str
    system_time_us: int = 0
    message: str = ""
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "systemTimestamp": self.system_time_us / 1000.0,
            "message": self.message,
            "data": self.data,
        }


class TrackerError(Exception):
    """A tracker operation failed; the message is fit to show a user."""


class NoTrackerError(TrackerError):
    """There is no eye tracker connected."""

    def __init__(self, message: str = "no eye tracker connected"):
        super().__init__(message)


class ITracker(Interface):
    """
    An eye tracker, as the server sees it.  See the module docstring for the
    threading and clock rules.
    """

    info = Attribute("L{TrackerInfo} once connected, else None.")

    def connect():
        """
        Find and open the device.

        @return: a Deferred firing with L{TrackerInfo}, or failing with
            L{NoTrackerError} when there is none.
        """

    def disconnect():
        """
        Stop every stream and release the device.  Safe to call twice.

        @return: a Deferred firing with None.
        """

    def startGaze(receiver):
        """
        Subscribe to the gaze stream.  C{receiver} is called on the reactor
        with batches (L{GazeBatch}: a numpy array of L{GAZE_DTYPE}, or its
        records' bytes) in time order; a burst of samples costs one call.

        @return: a Deferred firing once the subscription is in place.
        """

    def stopGaze():
        """
        Unsubscribe from the gaze stream; no receiver call happens after the
        returned Deferred fires.
        """

    def setNotificationReceiver(receiver):
        """
        C{receiver(notification)} is called on the reactor with every
        L{TrackerNotification}.  None removes it.
        """

    def getUserPosition():
        """
        The latest L{UserPosition}, or None.  Never blocks.
        """

    def setGazeOutputFrequency(frequency):
        """
        @return: a Deferred firing with the frequency now in effect, or failing
            with L{TrackerError} for a frequency not in C{info.frequencies}.
        """

    def enterCalibration():
        """@return: a Deferred firing when the tracker is in calibration mode."""

    def collectCalibrationData(x, y):
        """
        Collect data while the participant looks at (x, y), normalised on the
        display area.  Takes up to about a second.

        @return: a Deferred firing with True when data was collected.
        """

    def discardCalibrationData(x, y):
        """@return: a Deferred firing when the point's data is discarded."""

    def computeCalibration():
        """
        Compute and apply a calibration from the data collected.

        @return: a Deferred firing with a L{CalibrationResult}.
        """

    def leaveCalibration():
        """@return: a Deferred firing when calibration mode is left."""


# -- the server's parts, as they see each other (wired in jspsych_tobii.tap)


class ITrackerProvider(Interface):
    """
    Who has the tracker in use, if any: what the gaze hub, the calibration
    coordinator, each connection and the status page ask for it.
    """

    tracker = Attribute("The L{ITracker} in use (also while its connection is lost), or None.")
    available = Attribute("True while the tracker in use is connected.")
    last_error = Attribute("Why there is no tracker (the last connect's error), or None.")
    stream_errors = Attribute("Records lost per stream because they could not be read.")

    def require():
        """The connected L{ITracker}, or raise L{NoTrackerError} saying why there is none."""

    def info():
        """The L{TrackerInfo} of the tracker in use, or None."""

    def display_area():
        """The L{DisplayArea} of the tracker in use, or None."""


class ITrackerListener(Interface):
    """What the tracker service tells about the tracker (the gaze hub listens)."""

    def tracker_connected(info):
        """The tracker is connected; C{info} is its L{TrackerInfo}."""

    def tracker_lost():
        """The tracker's connection was lost."""

    def tracker_restored():
        """The tracker's connection came back."""

    def tracker_status(message):
        """A status message (a dict) for every client: a notification of the tracker."""

    def tracker_closing():
        """The service stops: release the tracker's streams.  @return: a Deferred."""


class ISessionListener(Interface):
    """Told when a tracking session starts and ends (the recorder, the LSL publisher)."""

    def session_started(session, started_us, tracker):
        """
        Tracking session number C{session} started at C{started_us} (server
        clock) on the tracker described by C{tracker} (a dict, or None).
        """

    def session_ended(reason):
        """The current session ended, for C{reason} (a short phrase)."""


class IGazeObserver(Interface):
    """Sees every gaze batch of a tracking session, before any client."""

    def write_batch(batch):
        """C{batch}: numpy records of L{GAZE_DTYPE}, numbered and stamped by the server."""


class IEventSink(Interface):
    """Told of every event of the server (markers, calibration, notifications)."""

    def write_event(kind, **fields):
        """An event of C{kind} with its fields (JSON-able values)."""
