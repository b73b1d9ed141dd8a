"""
A stand-in for the Tobii Pro SDK Python module C{tobii_research}, for tests.

L{make_sdk} returns a fresh module object with the SDK's public names and
signatures (C{find_all_eyetrackers}, C{EyeTracker(address)},
C{get_system_time_stamp}, C{ScreenBasedCalibration}, the C{EYETRACKER_*},
C{CAPABILITY_*}, C{CALIBRATION_STATUS_*}, C{VALIDITY_*} and C{STREAM_ERROR_*}
constants, the exception classes) and the behaviour that matters to an
adapter:

  - I{version}: C{"2.x"} has no track box API, has the stream buffer overflow
    notification and gaze without track box coordinates; C{"1.x"} has
    C{EyeTracker.get_track_box}, the track box changed notification and
    gaze origins in track box coordinates.  Both have the user position
    guide stream; whether a tracker delivers it is a property of the
    L{FakeDevice} (by default: yes on 2.x, no on 1.x, where subscribing
    reports a "not supported" stream error, as for old trackers).
  - Streams are produced by one thread per device, at the configured
    frequency (up to 1200 Hz), each sample stamped with the time it was
    due; the thread catches up in bursts when late, like the SDK's pump.
    Callbacks are called while a per-device lock is held (the real SDK holds
    its subscription lock); exceptions they raise are swallowed, counted in
    C{sdk.callback_errors} and reported on C{EYETRACKER_STREAM_ERRORS}.
  - Every API call is serialised on one lock, logged in C{sdk.calls} with
    the calling thread's name, and optionally slowed by C{sdk.call_delay}.
    A call made from inside a callback is recorded in
    C{sdk.calls_from_callback} and fails with the SDK's "callback in
    progress" error instead of deadlocking.
  - Subscribing the same callback twice to a stream raises
    C{EyeTrackerInvalidOperationError}, as the real SDK does.
  - The system clock is C{time.monotonic_ns() // 1000} (plus
    C{sdk.clock_offset_us}, to imitate a platform where they differ).
  - L{FakeDevice} has hooks to lose and restore the connection, overflow a
    stream buffer, change the display area, raise stream errors, move the
    eyes, script calibration outcomes, and leave fields out of the records
    of a stream (C{missing_fields}, as an SDK that renamed them would).

Call C{sdk.shutdown()} in a cleanup: it stops every device thread.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

# -- constants shared by both versions -------------------------------------

CAPABILITY_CAN_SET_DISPLAY_AREA = "capability_can_set_display_area"
CAPABILITY_HAS_EXTERNAL_SIGNAL = "capability_has_external_signal"
CAPABILITY_HAS_EYE_IMAGES = "capability_has_eye_images"
CAPABILITY_HAS_GAZE_DATA = "capability_has_gaze_data"
CAPABILITY_CAN_DO_SCREEN_BASED_CALIBRATION = "capability_can_do_screen_based_calibration"
CAPABILITY_CAN_DO_MONOCULAR_CALIBRATION = "capability_can_do_monocular_calibration"
CAPABILITY_HAS_EYE_OPENNESS_DATA = "capability_has_eye_openness_data"

EYETRACKER_EXTERNAL_SIGNAL = "eyetracker_external_signal"
EYETRACKER_EYE_IMAGES = "eyetracker_eye_images"
EYETRACKER_GAZE_DATA = "eyetracker_gaze_data"
EYETRACKER_USER_POSITION_GUIDE = "eyetracker_user_position_guide"
EYETRACKER_TIME_SYNCHRONIZATION_DATA = "eyetracker_time_synchronization_data"
EYETRACKER_STREAM_ERRORS = "eyetracker_stream_errors"
EYETRACKER_NOTIFICATION_CALIBRATION_MODE_ENTERED = (
    "eyetracker_notification_calibration_mode_entered"
)
EYETRACKER_NOTIFICATION_CALIBRATION_MODE_LEFT = "eyetracker_notification_calibration_mode_left"
EYETRACKER_NOTIFICATION_CALIBRATION_CHANGED = "eyetracker_notification_calibration_changed"
EYETRACKER_NOTIFICATION_CONNECTION_LOST = "eyetracker_notification_connection_lost"
EYETRACKER_NOTIFICATION_CONNECTION_RESTORED = "eyetracker_notification_connection_restored"
EYETRACKER_NOTIFICATION_DISPLAY_AREA_CHANGED = "eyetracker_notification_display_area_changed"
EYETRACKER_NOTIFICATION_GAZE_OUTPUT_FREQUENCY_CHANGED = (
    "eyetracker_notification_gaze_output_frequency_changed"
)
EYETRACKER_NOTIFICATION_EYE_TRACKING_MODE_CHANGED = (
    "eyetracker_notification_eye_tracking_mode_changed"
)
EYETRACKER_NOTIFICATION_DEVICE_FAULTS = "eyetracker_notification_device_faults"
EYETRACKER_NOTIFICATION_DEVICE_WARNINGS = "eyetracker_notification_device_warnings"
# 2.x only
EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW = "eyetracker_notification_stream_buffer_overflow"
# 1.x only
EYETRACKER_NOTIFICATION_TRACK_BOX_CHANGED = "eyetracker_notification_track_box_changed"

CALIBRATION_STATUS_FAILURE = "calibration_status_failure"
CALIBRATION_STATUS_SUCCESS = "calibration_status_success"
CALIBRATION_STATUS_SUCCESS_LEFT_EYE = "calibration_status_success_left_eye"
CALIBRATION_STATUS_SUCCESS_RIGHT_EYE = "calibration_status_success_right_eye"
VALIDITY_INVALID_AND_NOT_USED = "validity_invalid_and_not_used"
VALIDITY_VALID_BUT_NOT_USED = "validity_valid_but_not_used"
VALIDITY_VALID_AND_USED = "validity_valid_and_used"
SELECTED_EYE_LEFT = "selected_eye_left"
SELECTED_EYE_RIGHT = "selected_eye_right"
SELECTED_EYE_BOTH = "selected_eye_both"

STREAM_ERROR_SOURCE_USER = "stream_error_source_user"
STREAM_ERROR_SOURCE_STREAM_PUMP = "stream_error_source_stream_pump"
STREAM_ERROR_SOURCE_SUBSCRIPTION_GAZE_DATA = "stream_error_source_subscription_gaze_data"
STREAM_ERROR_SOURCE_SUBSCRIPTION_USER_POSITION_GUIDE = (
    "stream_error_source_subscription_user_position_guide"
)
STREAM_ERROR_SOURCE_SUBSCRIPTION_NOTIFICATION = "stream_error_source_subscription_notification"
STREAM_ERROR_CONNECTION_LOST = "stream_error_connection_lost"
STREAM_ERROR_INSUFFICIENT_LICENSE = "stream_error_insufficient_license"
STREAM_ERROR_NOT_SUPPORTED = "stream_error_not_supported"
STREAM_ERROR_TOO_MANY_SUBSCRIBERS = "stream_error_too_many_subscribers"
STREAM_ERROR_INTERNAL_ERROR = "stream_error_internal_error"
STREAM_ERROR_USER_ERROR = "stream_error_user_error"

_COMMON_NOTIFICATIONS = (
    EYETRACKER_NOTIFICATION_CALIBRATION_MODE_ENTERED,
    EYETRACKER_NOTIFICATION_CALIBRATION_MODE_LEFT,
    EYETRACKER_NOTIFICATION_CALIBRATION_CHANGED,
    EYETRACKER_NOTIFICATION_CONNECTION_LOST,
    EYETRACKER_NOTIFICATION_CONNECTION_RESTORED,
    EYETRACKER_NOTIFICATION_DISPLAY_AREA_CHANGED,
    EYETRACKER_NOTIFICATION_GAZE_OUTPUT_FREQUENCY_CHANGED,
    EYETRACKER_NOTIFICATION_EYE_TRACKING_MODE_CHANGED,
    EYETRACKER_NOTIFICATION_DEVICE_FAULTS,
    EYETRACKER_NOTIFICATION_DEVICE_WARNINGS,
)
_DATA_STREAMS = (
    EYETRACKER_GAZE_DATA,
    EYETRACKER_USER_POSITION_GUIDE,
    EYETRACKER_EXTERNAL_SIGNAL,
    EYETRACKER_EYE_IMAGES,
    EYETRACKER_TIME_SYNCHRONIZATION_DATA,
)

# -- exceptions: like the SDK's, they keep a value and print its repr -------


class _SDKError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value

    def __str__(self):
        return repr(self.value)


class EyeTrackerConnectionFailedError(_SDKError):
    """The connection to the eye tracker failed or was lost."""


class EyeTrackerFeatureNotSupportedError(_SDKError):
    """The eye tracker does not support the feature."""


class EyeTrackerInternalError(_SDKError):
    """An internal error in the SDK."""


class EyeTrackerInvalidOperationError(_SDKError):
    """The operation is invalid in this context."""


class EyeTrackerLicenseError(_SDKError):
    """The license is insufficient."""


class EyeTrackerOperationFailedError(_SDKError):
    """The operation failed."""


class EyeTrackerUnavailableError(_SDKError):
    """No device is available."""


class EyeTrackerDisplayAreaNotValidError(_SDKError):
    """The display area is not valid."""


_EXCEPTIONS = (
    EyeTrackerConnectionFailedError,
    EyeTrackerFeatureNotSupportedError,
    EyeTrackerInternalError,
    EyeTrackerInvalidOperationError,
    EyeTrackerLicenseError,
    EyeTrackerOperationFailedError,
    EyeTrackerUnavailableError,
    EyeTrackerDisplayAreaNotValidError,
)

# -- data objects, for subscribers that do not ask for dictionaries --------


class DisplayArea:
    """Built from a dict of three corners, like the SDK's."""

    def __init__(self, display_area):
        if not isinstance(display_area, dict):
            raise ValueError("DisplayArea requires a dictionary with three corners")
        self.top_left = tuple(float(v) for v in display_area["top_left"])
        self.top_right = tuple(float(v) for v in display_area["top_right"])
        self.bottom_left = tuple(float(v) for v in display_area["bottom_left"])
        self.bottom_right = tuple(
            a - b + c
            for a, b, c in zip(self.top_right, self.top_left, self.bottom_left, strict=True)
        )
        self.width = math.dist(self.top_left, self.top_right)
        self.height = math.dist(self.top_left, self.bottom_left)

    def as_dict(self):
        return {
            "top_left": self.top_left,
            "top_right": self.top_right,
            "bottom_left": self.bottom_left,
        }


class TrackBox:
    """The eight corners of the track box in the user coordinate system (1.x)."""

    CORNERS = (
        "back_lower_left",
        "back_lower_right",
        "back_upper_left",
        "back_upper_right",
        "front_lower_left",
        "front_lower_right",
        "front_upper_left",
        "front_upper_right",
    )

    def __init__(self, coordinates):
        for name in self.CORNERS:
            setattr(self, name, tuple(coordinates[name]))


class _Eye:
    def __init__(self, **fields):
        self.__dict__.update(fields)


class GazeData:
    """The object form of one gaze sample (subscribed without as_dictionary)."""

    def __init__(self, data):
        if not isinstance(data, dict):
            raise ValueError("You shouldn't create GazeData objects yourself.")
        for side in ("left", "right"):
            origin = _Eye(
                position_in_user_coordinates=data[f"{side}_gaze_origin_in_user_coordinate_system"],
                validity=bool(data[f"{side}_gaze_origin_validity"]),
            )
            tb_key = f"{side}_gaze_origin_in_trackbox_coordinate_system"
            if tb_key in data:
                origin.position_in_track_box_coordinates = data[tb_key]
            eye = _Eye(
                gaze_point=_Eye(
                    position_on_display_area=data[f"{side}_gaze_point_on_display_area"],
                    position_in_user_coordinates=data[
                        f"{side}_gaze_point_in_user_coordinate_system"
                    ],
                    validity=bool(data[f"{side}_gaze_point_validity"]),
                ),
                pupil=_Eye(
                    diameter=data[f"{side}_pupil_diameter"],
                    validity=bool(data[f"{side}_pupil_validity"]),
                ),
                gaze_origin=origin,
            )
            setattr(self, f"{side}_eye", eye)
        self.device_time_stamp = data["device_time_stamp"]
        self.system_time_stamp = data["system_time_stamp"]


class UserPositionGuide:
    """The object form of one user position guide record."""

    def __init__(self, data):
        for side in ("left", "right"):
            setattr(
                self,
                f"{side}_eye",
                _Eye(
                    user_position=data[f"{side}_user_position"],
                    validity=bool(data[f"{side}_user_position_validity"]),
                ),
            )


class StreamErrorData:
    def __init__(self, data):
        self.system_time_stamp = data["system_time_stamp"]
        self.source = data["source"]
        self.error = data["error"]
        self.message = data["message"]


class _NotificationData:
    def __init__(self, data):
        for key, value in data.items():
            if key == "notification_type":
                continue
            if key == "display_area":
                value = DisplayArea(value)
            setattr(self, key, value)


def _notification_class(name):
    return type(name, (_NotificationData,), {})


ConnectionLostData = _notification_class("ConnectionLostData")
ConnectionRestoredData = _notification_class("ConnectionRestoredData")
CalibrationModeEnteredData = _notification_class("CalibrationModeEnteredData")
CalibrationModeLeftData = _notification_class("CalibrationModeLeftData")
CalibrationChangedData = _notification_class("CalibrationChangedData")
DisplayAreaChangedData = _notification_class("DisplayAreaChangedData")
GazeOutputFrequencyChangedData = _notification_class("GazeOutputFrequencyChangedData")
EyeTrackingModeChangedData = _notification_class("EyeTrackingModeChangedData")
DeviceFaultsData = _notification_class("DeviceFaultsData")
DeviceWarningsData = _notification_class("DeviceWarningsData")
StreamBufferOverflowData = _notification_class("StreamBufferOverflowData")
TrackBoxChangedData = _notification_class("TrackBoxChangedData")

_NOTIFICATION_CLASSES = {
    EYETRACKER_NOTIFICATION_CONNECTION_LOST: ConnectionLostData,
    EYETRACKER_NOTIFICATION_CONNECTION_RESTORED: ConnectionRestoredData,
    EYETRACKER_NOTIFICATION_CALIBRATION_MODE_ENTERED: CalibrationModeEnteredData,
    EYETRACKER_NOTIFICATION_CALIBRATION_MODE_LEFT: CalibrationModeLeftData,
    EYETRACKER_NOTIFICATION_CALIBRATION_CHANGED: CalibrationChangedData,
    EYETRACKER_NOTIFICATION_DISPLAY_AREA_CHANGED: DisplayAreaChangedData,
    EYETRACKER_NOTIFICATION_GAZE_OUTPUT_FREQUENCY_CHANGED: GazeOutputFrequencyChangedData,
    EYETRACKER_NOTIFICATION_EYE_TRACKING_MODE_CHANGED: EyeTrackingModeChangedData,
    EYETRACKER_NOTIFICATION_DEVICE_FAULTS: DeviceFaultsData,
    EYETRACKER_NOTIFICATION_DEVICE_WARNINGS: DeviceWarningsData,
    EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW: StreamBufferOverflowData,
    EYETRACKER_NOTIFICATION_TRACK_BOX_CHANGED: TrackBoxChangedData,
}


class CalibrationEyeData:
    def __init__(self, position_on_display_area, validity):
        self.position_on_display_area = position_on_display_area
        self.validity = validity


class CalibrationSample:
    def __init__(self, left_eye, right_eye):
        self.left_eye = left_eye
        self.right_eye = right_eye


class CalibrationPoint:
    def __init__(self, position_on_display_area, calibration_samples):
        self.position_on_display_area = position_on_display_area
        self.calibration_samples = calibration_samples


class CalibrationResult:
    def __init__(self, status, calibration_points):
        self.status = status
        self.calibration_points = calibration_points


# -- the device: what is on the other end of the cable ---------------------

SPECTRUM_FREQUENCIES = (60.0, 120.0, 150.0, 300.0, 600.0, 1200.0)
DEFAULT_DISPLAY_AREA = {
    "top_left": (-264.0, 311.0, 43.0),
    "top_right": (264.0, 311.0, 43.0),
    "bottom_left": (-264.0, 14.0, -10.0),
}
DEFAULT_TRACK_BOX = {
    "back_lower_left": (-200.0, -150.0, 800.0),
    "back_lower_right": (200.0, -150.0, 800.0),
    "back_upper_left": (-200.0, 250.0, 800.0),
    "back_upper_right": (200.0, 250.0, 800.0),
    "front_lower_left": (-150.0, -100.0, 500.0),
    "front_lower_right": (150.0, -100.0, 500.0),
    "front_upper_left": (-150.0, 200.0, 500.0),
    "front_upper_right": (150.0, 200.0, 500.0),
}
DEVICE_CLOCK_OFFSET_US = -3_600_000_000
#: Samples a stream can fall behind before the device drops them (2.x reports it).
STREAM_BUFFER_SAMPLES = 5000
#: Rate of the user position guide stream.
USER_POSITION_HZ = 60.0


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class FakeDevice:
    """
    One fake eye tracker.  Its public attributes may be changed by tests at
    any time; the methods named like events inject those events.
    """

    def __init__(
        self,
        sdk: "FakeSDK",
        address: str,
        model: str,
        serial_number: str,
        firmware_version: str = "2.6.1-fake",
        device_name: str = "",
        frequencies: Tuple[float, ...] = SPECTRUM_FREQUENCIES,
        frequency: Optional[float] = None,
        capabilities: Optional[Tuple[str, ...]] = None,
        display_area: Optional[dict] = None,
        user_position_guide: Optional[bool] = None,
        resume_streams_on_restore: bool = True,
        present: bool = True,
    ):
        self.sdk = sdk
        self.address = address
        self.model = model
        self.serial_number = serial_number
        self.firmware_version = firmware_version
        self.device_name = device_name or model
        self.runtime_version = "1.0.0-fake"
        self.frequencies = tuple(float(f) for f in frequencies)
        self.frequency = float(frequency if frequency is not None else self.frequencies[0])
        if capabilities is None:
            capabilities = (
                CAPABILITY_HAS_GAZE_DATA,
                CAPABILITY_CAN_DO_SCREEN_BASED_CALIBRATION,
                CAPABILITY_CAN_DO_MONOCULAR_CALIBRATION,
                CAPABILITY_CAN_SET_DISPLAY_AREA,
                CAPABILITY_HAS_EXTERNAL_SIGNAL,
            )
        self.capabilities = tuple(capabilities)
        self.display_area = dict(display_area or DEFAULT_DISPLAY_AREA)
        self.track_box = dict(DEFAULT_TRACK_BOX)
        if user_position_guide is None:
            user_position_guide = sdk.version == "2.x"
        self.user_position_guide = user_position_guide
        #: After a restore, do subscribed streams flow again by themselves?
        #: If not, they stay silent until unsubscribed and subscribed again.
        self.resume_streams_on_restore = resume_streams_on_restore
        self.present = present
        self.connected = True
        #: Eye positions in the SDK's track box coordinates, normalised over the
        #: track box with (0, 0, 0) its top right corner nearest the tracker, seen
        #: from the user: x grows toward the user's left, y downward, z away
        #: from the tracker (None: eye not found).
        self.left_position: Optional[Tuple[float, float, float]] = (0.6, 0.5, 0.5)
        self.right_position: Optional[Tuple[float, float, float]] = (0.4, 0.5, 0.5)
        #: Calibration: time one collect_data takes, and the status it returns
        #: (a value or a callable of (x, y)).
        self.collect_seconds = 0.02
        self.collect_status: Any = CALIBRATION_STATUS_SUCCESS
        self.in_calibration = False
        self.calibration_points: Dict[Tuple[float, float], int] = {}
        self.calibrations_applied = 0
        #: Stream name -> record keys left out of what that stream delivers
        #: to dictionary subscribers (an SDK that renamed or dropped a field).
        self.missing_fields: Dict[str, Tuple[str, ...]] = {}
        #: Counters: samples of each stream delivered to a callback.
        self.delivered: Dict[str, int] = {}
        self.samples_dropped = 0
        self._lock = threading.RLock()  # held while calling back, like the SDK's
        self._trackers: List["_EyeTrackerBase"] = []
        self._thread: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._stop = False
        self._epoch = 0  # bumped when the sample schedule must restart
        self._events: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue()
        self._event_thread: Optional[threading.Thread] = None

    # -- event hooks for tests

    def lose_connection(self) -> None:
        """The tracker goes away: streams stop, calls fail, a notification follows."""
        with self._lock:
            self.connected = False
            for tracker in self._trackers:
                for stream in _DATA_STREAMS:
                    if tracker._alive.pop(stream, None):
                        tracker._suspended.add(stream)
        now = self.sdk._now()
        self._post_notification(EYETRACKER_NOTIFICATION_CONNECTION_LOST, {"system_time_stamp": now})
        self._post_stream_error(
            STREAM_ERROR_SOURCE_STREAM_PUMP, STREAM_ERROR_CONNECTION_LOST, "connection lost"
        )

    def restore_connection(self) -> None:
        """The tracker is back.  Streams resume if C{resume_streams_on_restore}."""
        with self._lock:
            self.connected = True
            self._epoch += 1
            for tracker in self._trackers:
                if self.resume_streams_on_restore:
                    for stream in tracker._suspended:
                        if stream in tracker._subs:
                            tracker._alive[stream] = True
                tracker._suspended.clear()
        self._wake.set()
        self._post_notification(
            EYETRACKER_NOTIFICATION_CONNECTION_RESTORED, {"system_time_stamp": self.sdk._now()}
        )

    def overflow(self, stream: str = EYETRACKER_GAZE_DATA) -> None:
        """Report a stream buffer overflow (2.x only)."""
        if self.sdk.version != "2.x":
            raise AssertionError("stream buffer overflow notifications exist only in 2.x")
        self._post_notification(
            EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW,
            {"system_time_stamp": self.sdk._now(), "notification_source_stream": stream},
        )

    def stream_error(self, source: str, error: str, message: str) -> None:
        self._post_stream_error(source, error, message)

    def change_display_area(self, top_left, top_right, bottom_left) -> None:
        """The display area is changed by another program (Eye Tracker Manager)."""
        self.display_area = {
            "top_left": tuple(top_left),
            "top_right": tuple(top_right),
            "bottom_left": tuple(bottom_left),
        }
        self._post_notification(
            EYETRACKER_NOTIFICATION_DISPLAY_AREA_CHANGED,
            {"system_time_stamp": self.sdk._now(), "display_area": dict(self.display_area)},
        )

    def subscriptions(self) -> Dict[str, int]:
        """Stream name -> number of callbacks subscribed, over every EyeTracker object."""
        counts: Dict[str, int] = {}
        with self._lock:
            for tracker in self._trackers:
                for stream, callbacks in tracker._subs.items():
                    counts[stream] = counts.get(stream, 0) + len(callbacks)
        return counts

    # -- plumbing used by the EyeTracker objects

    def _register(self, tracker: "_EyeTrackerBase") -> None:
        with self._lock:
            if tracker not in self._trackers:
                self._trackers.append(tracker)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(
                    target=self._run, name=f"fake-tobii-stream {self.serial_number}", daemon=True
                )
                self._thread.start()

    def _post(self, event: Callable[[], None]) -> None:
        """Run C{event} on this device's notification thread, in order."""
        with self._lock:
            if self._stop:
                return
            if self._event_thread is None:
                self._event_thread = threading.Thread(
                    target=self._run_events,
                    name=f"fake-tobii-events {self.serial_number}",
                    daemon=True,
                )
                self._event_thread.start()
        self._events.put(event)

    def _run_events(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            event()

    def _post_notification(self, kind: str, data: dict) -> None:
        payload = dict(data, notification_type=kind)
        self._post(lambda: self._dispatch(kind, payload))

    def _post_stream_error(self, source: str, error: str, message: str) -> None:
        payload = {
            "system_time_stamp": self.sdk._now(),
            "source": source,
            "error": error,
            "message": message,
        }
        self._post(lambda: self._dispatch(EYETRACKER_STREAM_ERRORS, payload))

    def _dispatch(self, stream: str, payload: dict) -> int:
        """Call every live callback of C{stream}, holding the device lock."""
        called = 0
        with self._lock:
            for tracker in self._trackers:
                callbacks = tracker._subs.get(stream)
                if not callbacks or not tracker._alive.get(stream):
                    continue
                missing = self.missing_fields.get(stream, ())
                for callback, as_dictionary in list(callbacks.items()):
                    if as_dictionary:
                        data = {k: v for k, v in payload.items() if k not in missing}
                    else:
                        data = _as_object(stream, payload)
                    self.sdk._invoke(callback, data, stream, self)
                    called += 1
        if called:
            self.delivered[stream] = self.delivered.get(stream, 0) + 1
        return called

    def _wants(self, stream: str) -> bool:
        for tracker in self._trackers:
            if tracker._subs.get(stream) and tracker._alive.get(stream):
                return True
        return False

    def _run(self) -> None:
        epoch = None
        start = 0
        k = 0
        period = 1.0
        while not self._stop:
            with self._lock:
                idle = not self.connected or not (
                    self._wants(EYETRACKER_GAZE_DATA) or self._wants(EYETRACKER_USER_POSITION_GUIDE)
                )
            if idle:
                # Nothing to produce: sleep until a subscription or a restore,
                # then start a new sample schedule.
                epoch = None
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            if epoch != self._epoch:
                epoch = self._epoch
                period = 1e6 / self.frequency
                start = _monotonic_us()
                k = 0
            now = _monotonic_us()
            due = int(start + k * period)
            behind = int((now - due) // period)
            if behind > STREAM_BUFFER_SAMPLES:
                # The consumer is too slow: the buffer overflows, samples are lost.
                self.samples_dropped += behind
                k += behind
                if self.sdk.version == "2.x":
                    self.overflow(EYETRACKER_GAZE_DATA)
                continue
            upg_every = max(1, round(self.frequency / USER_POSITION_HZ))
            while due <= now and epoch == self._epoch and not self._stop:
                with self._lock:
                    if self.connected:
                        if self._wants(EYETRACKER_GAZE_DATA):
                            self._dispatch(EYETRACKER_GAZE_DATA, self._gaze(k, due, period))
                        if k % upg_every == 0 and self._wants(EYETRACKER_USER_POSITION_GUIDE):
                            self._dispatch(EYETRACKER_USER_POSITION_GUIDE, self._guide())
                k += 1
                due = int(start + k * period)
            wait = (due - _monotonic_us()) / 1e6
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def _gaze(self, k: int, due_us: int, period_us: float) -> dict:
        t = k * period_us / 1e6
        x = 0.5 + 0.25 * math.cos(t)
        y = 0.5 + 0.25 * math.sin(t)
        tl = self.display_area["top_left"]
        tr = self.display_area["top_right"]
        bl = self.display_area["bottom_left"]
        point = tuple(tl[i] + x * (tr[i] - tl[i]) + y * (bl[i] - tl[i]) for i in range(3))
        system = due_us + self.sdk.clock_offset_us
        sample = {
            "device_time_stamp": system + DEVICE_CLOCK_OFFSET_US,
            "system_time_stamp": system,
        }
        nan2 = (math.nan, math.nan)
        nan3 = (math.nan, math.nan, math.nan)
        # user coordinates: z is the distance from the tracker, so track box
        # z 0 lies on the front face (nearest), 1 on the back face
        near = self.track_box["front_upper_right"][2]
        far = self.track_box["back_upper_right"][2]
        for side, position, dx in (
            ("left", self.left_position, -31.0),
            ("right", self.right_position, 31.0),
        ):
            valid = position is not None
            tb = position if valid else nan3
            origin = (
                (dx + (0.5 - tb[0]) * 300.0, (0.5 - tb[1]) * 300.0, near + tb[2] * (far - near))
                if valid
                else nan3
            )
            sample[f"{side}_gaze_point_on_display_area"] = (x, y) if valid else nan2
            sample[f"{side}_gaze_point_in_user_coordinate_system"] = point if valid else nan3
            sample[f"{side}_gaze_point_validity"] = int(valid)
            sample[f"{side}_pupil_diameter"] = (
                (3.0 if side == "left" else 3.1) if valid else math.nan
            )
            sample[f"{side}_pupil_validity"] = int(valid)
            sample[f"{side}_gaze_origin_in_user_coordinate_system"] = origin
            sample[f"{side}_gaze_origin_validity"] = int(valid)
            if self.sdk.version == "1.x":
                sample[f"{side}_gaze_origin_in_trackbox_coordinate_system"] = tb
        return sample

    def _guide(self) -> dict:
        nan3 = (math.nan, math.nan, math.nan)
        left, right = self.left_position, self.right_position
        return {
            "left_user_position": tuple(left) if left else nan3,
            "left_user_position_validity": int(left is not None),
            "right_user_position": tuple(right) if right else nan3,
            "right_user_position_validity": int(right is not None),
        }

    def _shutdown(self) -> None:
        with self._lock:
            self._stop = True
            thread, self._thread = self._thread, None
            events, self._event_thread = self._event_thread, None
        self._wake.set()
        self._events.put(None)
        for t in (thread, events):
            if t is not None and t is not threading.current_thread():
                t.join(2.0)


def _as_object(stream: str, payload: dict) -> Any:
    if stream == EYETRACKER_GAZE_DATA:
        return GazeData(payload)
    if stream == EYETRACKER_USER_POSITION_GUIDE:
        return UserPositionGuide(payload)
    if stream == EYETRACKER_STREAM_ERRORS:
        return StreamErrorData(payload)
    return _NOTIFICATION_CLASSES[stream](payload)


# -- the EyeTracker classes ------------------------------------------------


class _EyeTrackerBase:
    _sdk: "FakeSDK"

    def __init__(self, address):
        if not isinstance(address, str):
            raise ValueError("An EyeTracker must be initialized with a URI.")
        with self._sdk._api("EyeTracker.__init__"):
            device = self._sdk._devices.get(address)
            if device is None or not device.present:
                time.sleep(self._sdk.connect_fail_seconds)
                raise EyeTrackerConnectionFailedError(
                    "The connection to the eye tracker failed. se_connection_failed"
                )
        self._device = device
        self._subs: Dict[str, Dict[Any, bool]] = {}
        self._alive: Dict[str, bool] = {}
        self._suspended: set = set()
        device._register(self)

    # properties are cached by the SDK: reading them is not a call
    address = property(lambda self: self._device.address)
    device_name = property(lambda self: self._device.device_name)
    serial_number = property(lambda self: self._device.serial_number)
    model = property(lambda self: self._device.model)
    firmware_version = property(lambda self: self._device.firmware_version)
    runtime_version = property(lambda self: self._device.runtime_version)
    device_capabilities = property(lambda self: self._device.capabilities)

    def _call(self, name):
        return self._sdk._api(name, self._device)

    def get_all_gaze_output_frequencies(self):
        with self._call("get_all_gaze_output_frequencies"):
            return tuple(self._device.frequencies)

    def get_gaze_output_frequency(self):
        with self._call("get_gaze_output_frequency"):
            return self._device.frequency

    def set_gaze_output_frequency(self, gaze_output_frequency):
        with self._call("set_gaze_output_frequency"):
            frequency = float(gaze_output_frequency)
            device = self._device
            if frequency not in device.frequencies:
                raise ValueError("The value is out of bounds. out_of_bounds")
            changed = frequency != device.frequency
            with device._lock:
                device.frequency = frequency
                device._epoch += 1
            device._wake.set()
        if changed:
            device._post_notification(
                EYETRACKER_NOTIFICATION_GAZE_OUTPUT_FREQUENCY_CHANGED,
                {"system_time_stamp": self._sdk._now(), "gaze_output_frequency": frequency},
            )

    def get_all_eye_tracking_modes(self):
        with self._call("get_all_eye_tracking_modes"):
            return ("Default",)

    def get_eye_tracking_mode(self):
        with self._call("get_eye_tracking_mode"):
            return "Default"

    def get_display_area(self):
        with self._call("get_display_area"):
            return DisplayArea(dict(self._device.display_area))

    def set_display_area(self, display_area):
        with self._call("set_display_area"):
            if CAPABILITY_CAN_SET_DISPLAY_AREA not in self._device.capabilities:
                raise EyeTrackerFeatureNotSupportedError("The feature is not supported.")
        self._device.change_display_area(
            display_area.top_left, display_area.top_right, display_area.bottom_left
        )

    def subscribe_to(self, subscription_type, callback, as_dictionary=False):
        with self._call("subscribe_to"):
            if not callable(callback):
                raise ValueError("An invalid parameter has been sent to the API.")
            if subscription_type not in self._sdk._streams:
                raise ValueError("An invalid parameter has been sent to the API.")
            device = self._device
            with device._lock:
                callbacks = self._subs.setdefault(subscription_type, {})
                if callback in callbacks:
                    raise EyeTrackerInvalidOperationError(
                        "The operation is invalid in this context. invalid_operation"
                    )
                callbacks[callback] = as_dictionary
                if len(callbacks) == 1:
                    self._start_stream(subscription_type)
        device._wake.set()

    def _start_stream(self, stream):
        """The first callback of a stream: the SDK subscribes in the core."""
        device = self._device
        if stream == EYETRACKER_USER_POSITION_GUIDE and not device.user_position_guide:
            device._post_stream_error(
                STREAM_ERROR_SOURCE_SUBSCRIPTION_USER_POSITION_GUIDE,
                STREAM_ERROR_NOT_SUPPORTED,
                "The user position guide is not supported by this eye tracker.",
            )
            return
        self._alive[stream] = True

    def unsubscribe_from(self, subscription_type, callback=None):
        with self._call("unsubscribe_from"):
            if subscription_type not in self._sdk._streams:
                raise ValueError("An invalid parameter has been sent to the API.")
            with self._device._lock:
                callbacks = self._subs.get(subscription_type)
                if callbacks is None:
                    return
                callbacks.pop(callback, None)
                if callback is None or not callbacks:
                    del self._subs[subscription_type]
                    self._alive.pop(subscription_type, None)


class _EyeTracker2(_EyeTrackerBase):
    """The 2.x EyeTracker: no track box."""


class _EyeTracker1(_EyeTrackerBase):
    """The 1.x EyeTracker: has the track box."""

    def get_track_box(self):
        with self._call("get_track_box"):
            return TrackBox(self._device.track_box)


# -- calibration -----------------------------------------------------------


class _ScreenBasedCalibrationBase:
    _sdk: "FakeSDK"

    def __init__(self, eyetracker):
        if not isinstance(eyetracker, _EyeTrackerBase):
            raise ValueError(
                "A ScreenBasedCalibration object must be initialized with an EyeTracker."
            )
        if CAPABILITY_CAN_DO_SCREEN_BASED_CALIBRATION not in eyetracker.device_capabilities:
            raise ValueError(
                "A ScreenBasedCalibration object must be initialized with an EyeTracker "
                "that supports screen based calibration."
            )
        self._device = eyetracker._device

    def _require_mode(self):
        if not self._device.in_calibration:
            raise EyeTrackerInvalidOperationError(
                "Calibration has not been started. se_calibration_not_started"
            )

    def enter_calibration_mode(self):
        with self._sdk._api("enter_calibration_mode", self._device):
            if self._device.in_calibration:
                raise EyeTrackerInvalidOperationError(
                    "The calibration has already been started. se_calibration_already_started"
                )
            self._device.in_calibration = True
            self._device.calibration_points = {}
        self._device._post_notification(
            EYETRACKER_NOTIFICATION_CALIBRATION_MODE_ENTERED,
            {"system_time_stamp": self._sdk._now()},
        )

    def leave_calibration_mode(self):
        with self._sdk._api("leave_calibration_mode", self._device):
            self._require_mode()
            self._device.in_calibration = False
        self._device._post_notification(
            EYETRACKER_NOTIFICATION_CALIBRATION_MODE_LEFT, {"system_time_stamp": self._sdk._now()}
        )

    def collect_data(self, x, y):
        x, y = float(x), float(y)
        with self._sdk._api("collect_data", self._device):
            self._require_mode()
            time.sleep(self._device.collect_seconds)
            status = self._device.collect_status
            if callable(status):
                status = status(x, y)
            if status == CALIBRATION_STATUS_SUCCESS:
                points = self._device.calibration_points
                points[(x, y)] = points.get((x, y), 0) + 1
            return status

    def discard_data(self, x, y):
        x, y = float(x), float(y)
        with self._sdk._api("discard_data", self._device):
            self._require_mode()
            self._device.calibration_points.pop((x, y), None)

    def compute_and_apply(self):
        with self._sdk._api("compute_and_apply", self._device):
            self._require_mode()
            device = self._device
            if not device.calibration_points:
                return CalibrationResult(CALIBRATION_STATUS_FAILURE, ())
            points = []
            for (x, y), _ in sorted(device.calibration_points.items()):
                samples = []
                for i in range(8):
                    dx = 0.004 * math.cos(i)
                    dy = 0.004 * math.sin(i)
                    if i == 6:
                        left = CalibrationEyeData((x + dx, y + dy), VALIDITY_VALID_BUT_NOT_USED)
                    elif i == 7:
                        left = CalibrationEyeData(
                            (math.nan, math.nan), VALIDITY_INVALID_AND_NOT_USED
                        )
                    else:
                        left = CalibrationEyeData((x + dx, y + dy), VALIDITY_VALID_AND_USED)
                    right = CalibrationEyeData((x - dx, y - dy), VALIDITY_VALID_AND_USED)
                    samples.append(CalibrationSample(left, right))
                points.append(CalibrationPoint((x, y), tuple(samples)))
            device.calibrations_applied += 1
        device._post_notification(
            EYETRACKER_NOTIFICATION_CALIBRATION_CHANGED, {"system_time_stamp": self._sdk._now()}
        )
        return CalibrationResult(CALIBRATION_STATUS_SUCCESS, tuple(points))


class _ScreenBasedMonocularCalibrationBase(_ScreenBasedCalibrationBase):
    def __init__(self, eyetracker):
        super().__init__(eyetracker)
        if CAPABILITY_CAN_DO_MONOCULAR_CALIBRATION not in eyetracker.device_capabilities:
            raise EyeTrackerFeatureNotSupportedError("Monocular calibration is not supported.")

    def collect_data(self, x, y, eye_to_calculate=SELECTED_EYE_BOTH):
        return super().collect_data(x, y)

    def discard_data(self, x, y, eye_to_calculate=SELECTED_EYE_BOTH):
        return super().discard_data(x, y)


# -- the module ------------------------------------------------------------


class FakeSDK(types.ModuleType):
    """
    A fresh fake C{tobii_research} module.  Test controls: L{add_device},
    C{calls}, C{calls_from_callback}, C{callback_errors}, C{call_delay},
    C{discovery_seconds}, C{clock_offset_us}, L{shutdown}.
    """

    def __init__(self, version: str = "2.x"):
        super().__init__("tobii_research", "A fake of the Tobii Pro SDK, for tests.")
        if version not in ("1.x", "2.x"):
            raise ValueError("version must be '1.x' or '2.x'")
        self.version = version
        self.__version__ = "2.1.0.1" if version == "2.x" else "1.11.0.1"
        glob = globals()
        for name, value in glob.items():
            if name.isupper() and not name.startswith("_") and isinstance(value, str):
                setattr(self, name, value)
        for exc in _EXCEPTIONS:
            setattr(self, exc.__name__, exc)
        for cls in (
            DisplayArea,
            GazeData,
            UserPositionGuide,
            StreamErrorData,
            CalibrationEyeData,
            CalibrationSample,
            CalibrationPoint,
            CalibrationResult,
            *_NOTIFICATION_CLASSES.values(),
        ):
            setattr(self, cls.__name__, cls)
        notifications = list(_COMMON_NOTIFICATIONS)
        if version == "2.x":
            del self.EYETRACKER_NOTIFICATION_TRACK_BOX_CHANGED
            del self.TrackBoxChangedData
            notifications.append(EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW)
            base = _EyeTracker2
        else:
            del self.EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW
            del self.StreamBufferOverflowData
            notifications.append(EYETRACKER_NOTIFICATION_TRACK_BOX_CHANGED)
            self.TrackBox = TrackBox
            base = _EyeTracker1
        self._streams = frozenset(
            _DATA_STREAMS + (EYETRACKER_STREAM_ERRORS,) + tuple(notifications)
        )
        self.EyeTracker = type("EyeTracker", (base,), {"_sdk": self})
        self.ScreenBasedCalibration = type(
            "ScreenBasedCalibration", (_ScreenBasedCalibrationBase,), {"_sdk": self}
        )
        self.ScreenBasedMonocularCalibration = type(
            "ScreenBasedMonocularCalibration",
            (_ScreenBasedMonocularCalibrationBase,),
            {"_sdk": self},
        )
        # test controls
        self.call_delay = 0.0
        self.discovery_seconds = 0.02
        self.connect_fail_seconds = 0.02
        self.clock_offset_us = 0
        self.calls: List[Tuple[str, str]] = []
        self.calls_from_callback: List[Tuple[str, str]] = []
        self.callback_errors = 0
        self.callback_error_log: List[str] = []
        self._devices: Dict[str, FakeDevice] = {}
        self._api_lock = threading.Lock()
        self._local = threading.local()

    # -- the SDK's functions

    def find_all_eyetrackers(self):
        with self._api("find_all_eyetrackers"):
            time.sleep(self.discovery_seconds)
            present = [d.address for d in self._devices.values() if d.present]
        return tuple(self.EyeTracker(address) for address in present)

    def get_system_time_stamp(self):
        self._check_not_in_callback("get_system_time_stamp")
        self.calls.append(("get_system_time_stamp", threading.current_thread().name))
        return self._now()

    # -- test controls

    def add_device(self, address: Optional[str] = None, **options: Any) -> FakeDevice:
        """Plug in a tracker.  Options are those of L{FakeDevice}."""
        n = len(self._devices) + 1
        if self.version == "2.x":
            serial = options.pop("serial_number", f"TPSP1-0101092451{n:02d}")
            options.setdefault("model", "Tobii Pro Spectrum")
            address = address or f"tobii-prp://{serial}"
        else:
            serial = options.pop("serial_number", f"TX300-0101048002{n:02d}")
            options.setdefault("model", "Tobii TX300")
            options.setdefault("frequencies", (60.0, 120.0, 300.0))
            options.setdefault("firmware_version", "1.1.3-fake")
            address = address or f"tet-tcp://169.254.10.{n}"
        device = FakeDevice(self, address, serial_number=serial, **options)
        self._devices[address] = device
        return device

    def device(self, address: Optional[str] = None) -> FakeDevice:
        if address is None:
            return next(iter(self._devices.values()))
        return self._devices[address]

    def calls_named(self, name: str) -> List[Tuple[str, str]]:
        return [call for call in self.calls if call[0] == name]

    def shutdown(self) -> None:
        for device in list(self._devices.values()):
            device._shutdown()

    # -- plumbing

    def _now(self) -> int:
        return _monotonic_us() + self.clock_offset_us

    def _check_not_in_callback(self, name: str) -> None:
        if getattr(self._local, "in_callback", False):
            self.calls_from_callback.append((name, threading.current_thread().name))
            raise EyeTrackerOperationFailedError("Callback in progress. se_callback_in_progress")

    @contextlib.contextmanager
    def _api(self, name: str, device: Optional[FakeDevice] = None):
        self._check_not_in_callback(name)
        with self._api_lock:
            self.calls.append((name, threading.current_thread().name))
            if self.call_delay:
                time.sleep(self.call_delay)
            if device is not None and not device.connected:
                raise EyeTrackerConnectionFailedError(
                    "The connection to the eye tracker failed. se_connection_failed"
                )
            yield

    def _invoke(self, callback: Callable, data: Any, stream: str, device: FakeDevice) -> None:
        self._local.in_callback = True
        try:
            callback(data)
        except Exception as e:  # the SDK swallows it and reports a stream error
            self.callback_errors += 1
            self.callback_error_log.append(f"{stream}: {e!r}")
            if stream != EYETRACKER_STREAM_ERRORS:
                device._post_stream_error(
                    STREAM_ERROR_SOURCE_USER, STREAM_ERROR_USER_ERROR, f"callback raised {e!r}"
                )
        finally:
            self._local.in_callback = False


def make_sdk(version: str = "2.x") -> FakeSDK:
    """A fresh fake C{tobii_research} module of the given major version."""
    return FakeSDK(version)


def sdk_for(case, version: str = "2.x", devices: int = 1, **options) -> FakeSDK:
    """
    A fresh fake SDK with C{devices} trackers (each C{add_device(**options)}),
    shut down when the test C{case} ends.
    """
    sdk = make_sdk(version)
    case.addCleanup(sdk.shutdown)
    for _ in range(devices):
        sdk.add_device(**options)
    return sdk
