# -*- test-case-name: tests.test_tobii -*-
"""
The Tobii Pro SDK's vocabulary, as plain records: what C{tobii_research}
(1.10+ and 2.x) calls things and how they map onto L{jspsych_tobii.interfaces}.

This module owns loading the SDK, reading a tracker's description
(L{read_info}), the coordinate mappings (display area, user position), the
clock-offset measurement, the tables of capabilities, notifications and
validities, the layout of a gaze row copied in an SDK callback, and the
blocking discovery behind C{--list-trackers} (L{find_trackers},
L{describe}).  Everything here is blocking or pure: the threading lives in
L{jspsych_tobii.trackers.tobii}.
"""

from __future__ import annotations

import math
import time
from typing import Any, List, Optional, Tuple

from jspsych_tobii.interfaces import (
    EYE_FIELDS,
    GAZE_DTYPE,
    DisplayArea,
    NotificationKind,
    TrackerError,
    TrackerInfo,
)
from jspsych_tobii.logs import Logger

_log = Logger()

NOT_INSTALLED = (
    "tobii-research is not installed: pip install tobii-research "
    "(it has wheels for CPython 3.10 only)"
)

#: SDK capability constant -> our capability name.
CAPABILITIES = (
    ("CAPABILITY_HAS_GAZE_DATA", "gaze"),
    ("CAPABILITY_CAN_DO_SCREEN_BASED_CALIBRATION", "calibration"),
    ("CAPABILITY_CAN_DO_MONOCULAR_CALIBRATION", "monocular_calibration"),
    ("CAPABILITY_HAS_EYE_IMAGES", "eye_images"),
    ("CAPABILITY_HAS_EXTERNAL_SIGNAL", "external_signal"),
    ("CAPABILITY_CAN_SET_DISPLAY_AREA", "set_display_area"),
    ("CAPABILITY_HAS_EYE_OPENNESS_DATA", "eye_openness"),
)

#: SDK notification constant -> the kind we report (None: logged only).
NOTIFICATIONS = (
    ("EYETRACKER_NOTIFICATION_CONNECTION_LOST", NotificationKind.CONNECTION_LOST),
    ("EYETRACKER_NOTIFICATION_CONNECTION_RESTORED", NotificationKind.CONNECTION_RESTORED),
    ("EYETRACKER_NOTIFICATION_CALIBRATION_CHANGED", NotificationKind.CALIBRATION_CHANGED),
    ("EYETRACKER_NOTIFICATION_DISPLAY_AREA_CHANGED", NotificationKind.DISPLAY_AREA_CHANGED),
    ("EYETRACKER_NOTIFICATION_GAZE_OUTPUT_FREQUENCY_CHANGED", NotificationKind.FREQUENCY_CHANGED),
    ("EYETRACKER_NOTIFICATION_STREAM_BUFFER_OVERFLOW", NotificationKind.STREAM_BUFFER_OVERFLOW),
    ("EYETRACKER_NOTIFICATION_DEVICE_FAULTS", "device_faults"),
    ("EYETRACKER_NOTIFICATION_DEVICE_WARNINGS", "device_warnings"),
)

VALIDITY = (
    ("VALIDITY_VALID_AND_USED", "valid_and_used"),
    ("VALIDITY_VALID_BUT_NOT_USED", "valid_but_not_used"),
    ("VALIDITY_INVALID_AND_NOT_USED", "invalid"),
)

#: Where user positions come from.
GUIDE = "user_position_guide"
TRACK_BOX = "track_box"

#: Rounds of the clock-offset measurement.
CLOCK_ROUNDS = 20

# A gaze row is built as a plain tuple in the SDK's thread, in the field order
# of GAZE_DTYPE: the two time stamps, zeros for the fields the server fills
# in, then each eye's fields in the order L{TobiiTracker._onGaze} writes them.
ROW_EYE_FIELDS = (
    "x",
    "y",
    "point_x",
    "point_y",
    "point_z",
    "origin_x",
    "origin_y",
    "origin_z",
    "pupil",
    "gaze_valid",
    "origin_valid",
    "pupil_valid",
)
ROW_HEAD = GAZE_DTYPE.names[: GAZE_DTYPE.names.index("left_" + EYE_FIELDS[0][0])]
if (
    ROW_HEAD[:2] != ("device_time_us", "system_time_us")
    or tuple(name for name, _ in EYE_FIELDS) != ROW_EYE_FIELDS
):  # pragma: no cover - guards a change of GAZE_DTYPE
    raise ImportError("GAZE_DTYPE changed: update the gaze row layout in trackers/tobii.py")
#: Zeros for the fields between the time stamps and the eyes (seq, ...).
ROW_PAD = (0,) * (len(ROW_HEAD) - 2)


def load_sdk() -> Any:
    """
    Import C{tobii_research}.

    @raise TrackerError: it is not installed (or cannot load).
    """
    try:
        import tobii_research
    except ImportError as e:
        raise TrackerError(NOT_INSTALLED) from e
    except OSError as e:  # its native library failed to load
        raise TrackerError(f"tobii-research could not be loaded: {e}") from e
    return tobii_research


def sdk_error_message(e: BaseException) -> str:
    """A one-line message for an SDK exception (theirs print the repr of a value)."""
    text = getattr(e, "value", None)
    if not isinstance(text, str) or not text:
        text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def sdk_errors(sdk: Any) -> Tuple[type, ...]:
    """The SDK's exception classes, plus the builtins its wrapper raises."""
    found = [
        value
        for name, value in vars(sdk).items()
        if name.startswith("EyeTracker")
        and name.endswith("Error")
        and isinstance(value, type)
        and issubclass(value, Exception)
    ]
    return tuple(found) + (ValueError,)


def format_hz(frequency: float) -> str:
    return f"{frequency:g}"


def match_frequency(frequency: Any, frequencies: Tuple[float, ...]) -> float:
    """
    The supported frequency equal to C{frequency}.

    @raise TrackerError: none is.
    """
    try:
        wanted = float(frequency)
    except (TypeError, ValueError):
        wanted = math.nan
    for candidate in frequencies:
        if math.isclose(candidate, wanted, rel_tol=1e-4, abs_tol=0.05):
            return candidate
    valid = ", ".join(format_hz(f) for f in frequencies) or "none reported"
    raise TrackerError(
        f"gaze output frequency {frequency} Hz is not supported by this tracker; "
        f"valid frequencies: {valid}"
    )


def display_area_from(value: Any) -> Optional[DisplayArea]:
    """A L{DisplayArea} from the SDK's object or dictionary form."""
    if value is None:
        return None

    def corner(name):
        raw = value[name] if isinstance(value, dict) else getattr(value, name)
        return tuple(float(v) for v in raw)

    return DisplayArea(corner("top_left"), corner("top_right"), corner("bottom_left"))


def guide_axes(position: Any) -> Optional[Tuple[float, float, float]]:
    """
    Map a position in the SDK's track box coordinate system to ours.

    The track box coordinate system (also used by the user position guide
    stream) is normalised with its origin at the top right corner of the box
    nearest the tracker, seen from the user: x grows toward the user's left,
    y downward, z away from the tracker.  Ours has x 0 = left, y 0 = bottom,
    z 0 = far, so every axis flips.  Values are clipped to 0..1; a position
    with a NaN is no position.
    """
    if position is None:
        return None
    try:
        x, y, z = (float(v) for v in position)
    except (TypeError, ValueError):
        return None
    if math.isnan(x) or math.isnan(y) or math.isnan(z):
        return None
    return (
        min(1.0, max(0.0, 1.0 - x)),
        min(1.0, max(0.0, 1.0 - y)),
        min(1.0, max(0.0, 1.0 - z)),
    )


def read_info(sdk: Any, eyetracker: Any, system_clock_offset_us: int = 0) -> TrackerInfo:
    """
    Everything L{TrackerInfo} holds, read from an SDK EyeTracker.  Blocking:
    call it on the worker thread (or from a command-line tool).
    """
    errors = sdk_errors(sdk)
    device_capabilities = tuple(getattr(eyetracker, "device_capabilities", ()) or ())
    capabilities = set()
    for constant, name in CAPABILITIES:
        value = getattr(sdk, constant, None)
        if value is not None and value in device_capabilities:
            capabilities.add(name)
    if getattr(sdk, "CAPABILITY_HAS_GAZE_DATA", None) is None:
        capabilities.add("gaze")  # an SDK too old to say
    if getattr(sdk, "EYETRACKER_USER_POSITION_GUIDE", None) is not None:
        capabilities.add(GUIDE)
    if callable(getattr(eyetracker, "get_track_box", None)):
        try:
            eyetracker.get_track_box()
        except errors:
            pass
        else:
            capabilities.add(TRACK_BOX)
    try:
        frequencies = tuple(float(f) for f in eyetracker.get_all_gaze_output_frequencies())
    except errors:
        frequencies = ()
    try:
        frequency = float(eyetracker.get_gaze_output_frequency())
    except errors:
        frequency = 0.0
    try:
        display_area = display_area_from(eyetracker.get_display_area())
    except errors:
        display_area = None
    return TrackerInfo(
        address=str(eyetracker.address),
        model=str(eyetracker.model),
        serial_number=str(eyetracker.serial_number),
        firmware_version=str(eyetracker.firmware_version),
        device_name=str(getattr(eyetracker, "device_name", "") or ""),
        frequencies=tuple(sorted(frequencies)),
        frequency=frequency,
        capabilities=frozenset(capabilities),
        display_area=display_area,
        sdk_version=str(getattr(sdk, "__version__", "")),
        system_clock_offset_us=system_clock_offset_us,
    )


def measure_clock_offset(sdk: Any, rounds: int = CLOCK_ROUNDS) -> int:
    """
    The SDK's system clock minus C{time.monotonic_ns() // 1000}, in µs.  Each
    round brackets one C{get_system_time_stamp()} between two reads of the
    monotonic clock; the round with the narrowest bracket wins.  An offset
    within that bracket cannot be told from zero and is reported as 0 (the
    usual case on Linux, where both are CLOCK_MONOTONIC).  Blocking.
    """
    best: Optional[Tuple[int, int]] = None
    for _ in range(rounds):
        before = time.monotonic_ns() // 1000
        stamp = int(sdk.get_system_time_stamp())
        after = time.monotonic_ns() // 1000
        width = after - before
        if best is None or width < best[0]:
            best = (width, stamp - (before + after) // 2)
    assert best is not None
    width, offset = best
    return 0 if abs(offset) <= width else offset


def find_trackers(sdk: Any = None) -> List[TrackerInfo]:
    """
    Every tracker the SDK finds, described.  Blocking (discovery takes about
    two seconds): for C{--list-trackers}, not for the reactor thread.

    @raise TrackerError: tobii-research is not installed.
    """
    if sdk is None:
        sdk = load_sdk()
    errors = sdk_errors(sdk)
    try:
        found = sdk.find_all_eyetrackers()
    except errors as e:
        raise TrackerError(f"eye tracker discovery failed: {sdk_error_message(e)}") from e
    infos = []
    for eyetracker in found:
        try:
            infos.append(read_info(sdk, eyetracker))
        except errors as e:
            _log.warn(
                "cannot describe eye tracker {address}: {error}",
                address=getattr(eyetracker, "address", "?"),
                error=sdk_error_message(e),
            )
    return infos


def describe(info: TrackerInfo) -> str:
    """One line about a tracker: address, model, serial, firmware, frequencies."""
    frequencies = ", ".join(format_hz(f) for f in info.frequencies) or "?"
    return (
        f"{info.address}  {info.model}  serial {info.serial_number}  "
        f"firmware {info.firmware_version}  {frequencies} Hz"
    )
