# -*- test-case-name: tests.test_tobii_sdk -*-
"""
The Tobii Pro SDK's vocabulary, as plain records: what C{tobii_research}
(1.10+ and 2.x) calls things and how they map onto L{jspsych_tobii.interfaces}.

This module owns every conversion of what the SDK hands over: loading the
SDK, reading a tracker's description (L{read_info}), a gaze record as a row
of L{GAZE_DTYPE} (L{gaze_row}, its column order derived from the dtype's
field names and L{GAZE_SOURCES}), user positions (L{position_from_gaze},
L{position_from_guide}, L{user_position}), display areas, calibration
results, the clock-offset measurement, the tables of capabilities,
notifications and validities, and the blocking discovery behind
C{--list-trackers} (L{find_trackers}, L{describe}).  Everything here is
blocking or pure; which thread calls what is decided in
L{jspsych_tobii.trackers.tobii} (the reactor),
L{jspsych_tobii.trackers.tobii_worker} (the SDK worker thread) and
L{jspsych_tobii.trackers.tobii_callbacks} (the SDK's own threads).
"""

from __future__ import annotations

import math
import struct
from operator import itemgetter
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Type

import numpy as np

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    CalibrationEyeSample,
    CalibrationPointResult,
    CalibrationResult,
    DisplayArea,
    NotificationKind,
    Point3,
    TrackerError,
    TrackerInfo,
    UserPosition,
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


def _eye_sources(eye: str) -> Dict[str, Tuple[str, Optional[int]]]:
    gaze = f"{eye}_gaze_point_on_display_area"
    point = f"{eye}_gaze_point_in_user_coordinate_system"
    origin = f"{eye}_gaze_origin_in_user_coordinate_system"
    return {
        f"{eye}_x": (gaze, 0),
        f"{eye}_y": (gaze, 1),
        f"{eye}_point_x": (point, 0),
        f"{eye}_point_y": (point, 1),
        f"{eye}_point_z": (point, 2),
        f"{eye}_origin_x": (origin, 0),
        f"{eye}_origin_y": (origin, 1),
        f"{eye}_origin_z": (origin, 2),
        f"{eye}_pupil": (f"{eye}_pupil_diameter", None),
        f"{eye}_gaze_valid": (f"{eye}_gaze_point_validity", None),
        f"{eye}_origin_valid": (f"{eye}_gaze_origin_validity", None),
        f"{eye}_pupil_valid": (f"{eye}_pupil_validity", None),
    }


#: Where each column of L{GAZE_DTYPE} comes from in the SDK's gaze record
#: (its dictionary form): the key, and the index within the tuple held there
#: (None for a single value).  The columns not named here (C{seq},
#: C{server_time_us}) are the server's, and 0 in a row.
GAZE_SOURCES: Dict[str, Tuple[str, Optional[int]]] = {
    "device_time_us": ("device_time_stamp", None),
    "system_time_us": ("system_time_stamp", None),
    **_eye_sources("left"),
    **_eye_sources("right"),
}


class RowStep:
    """
    One part of a row: called with a record, it gives the part's values as
    a tuple; C{expression} is the same as Python source (items of a tuple
    display, reading the record as C{record}), for L{compile_row}.
    """

    __slots__ = ("read", "expression")

    def __init__(self, read: Callable[[Any], tuple], expression: str):
        self.read = read
        self.expression = expression

    def __call__(self, record: Any) -> tuple:
        return self.read(record)


def _zeros(count: int) -> RowStep:
    zeros = (0,) * count
    return RowStep(lambda record: zeros, ", ".join(["0"] * count))


def _singles(keys: List[str]) -> RowStep:
    read = itemgetter(*keys)
    return RowStep(
        (lambda record: (read(record),)) if len(keys) == 1 else read,
        ", ".join(f"record[{key!r}]" for key in keys),
    )


def _whole(key: str) -> RowStep:
    return RowStep(itemgetter(key), f"*record[{key!r}]")


def row_plan(dtype: np.dtype, sources: Dict[str, Tuple[str, Optional[int]]]) -> List[RowStep]:
    """
    How to copy an SDK record into a tuple in the field order of C{dtype}:
    steps that each read a part of the row, to be concatenated.  A run of
    single values is read with one C{itemgetter}; a tuple whose items fill
    consecutive columns, in index order, is taken whole; a run of columns
    without a source is zeros.

    @raise ValueError: a tuple's items do not fill consecutive columns in
        index order (C{dtype} and C{sources} disagree).
    """
    counts: Dict[str, int] = {}
    for key, index in sources.values():
        if index is not None:
            counts[key] = counts.get(key, 0) + 1
    steps: List[RowStep] = []
    singles: List[str] = []
    zeros = 0
    names = dtype.names or ()
    position = 0

    def flush() -> None:
        nonlocal zeros
        if singles:
            steps.append(_singles(list(singles)))
            singles.clear()
        if zeros:
            steps.append(_zeros(zeros))
            zeros = 0

    while position < len(names):
        source = sources.get(names[position])
        if source is None:
            if singles:
                flush()
            zeros += 1
            position += 1
            continue
        key, index = source
        if index is None:
            if zeros:
                flush()
            singles.append(key)
            position += 1
            continue
        flush()
        count = counts[key]
        run = [sources.get(name) for name in names[position : position + count]]
        if run != [(key, i) for i in range(count)]:
            raise ValueError(
                f"the items of {key} do not fill consecutive columns from {names[position]}"
            )
        steps.append(_whole(key))
        position += count
    flush()
    return steps


def compile_row(steps: List[RowStep], name: str) -> Callable[[Any], tuple]:
    """
    The steps as one function, C{name}: a single tuple display of every
    step's values, about three times cheaper than calling the steps and
    concatenating their parts (it runs on the SDK's thread for every sample).
    """
    source = f"def {name}(record):\n    return ({', '.join(s.expression for s in steps)},)\n"
    namespace: Dict[str, Any] = {}
    exec(compile(source, f"<{name}: planned from GAZE_DTYPE>", "exec"), namespace)
    function: Callable[[Any], tuple] = namespace[name]
    return function


_GAZE_ROW = row_plan(GAZE_DTYPE, GAZE_SOURCES)
#: Where a row of L{gaze_row} holds the sample's system time stamp.
ROW_SYSTEM_TIME = (GAZE_DTYPE.names or ()).index("system_time_us")

#: An SDK gaze record (dictionary form) as a tuple in the field order of
#: L{GAZE_DTYPE}, as C{np.array(rows, dtype=GAZE_DTYPE)} takes it.  Called in
#: the SDK's callback: it only copies.  Raises when the record lacks a key
#: or holds something else than a sequence where one is expected (one of the
#: wrong length makes a row of the wrong length: L{gaze_rows_to_records} raises).
gaze_row = compile_row(_GAZE_ROW, "gaze_row")


#: One row of L{gaze_row} packed as a L{GAZE_DTYPE} record.
_GAZE_RECORD = struct.Struct("<4q9d3?9d3?")
if _GAZE_RECORD.size != GAZE_DTYPE.itemsize:  # pragma: no cover - a guard for edits
    raise ImportError("GAZE_DTYPE changed: update _GAZE_RECORD in trackers/tobii_sdk.py")


def gaze_rows_to_records(rows: List[tuple]) -> bytearray:
    """
    The rows of L{gaze_row} as the bytes of L{GAZE_DTYPE} records, the form
    a tracker may hand the hub (L{ITracker.startGaze}): packed with
    C{struct}, no numpy call for the one row the SDK usually delivers, or
    by numpy for values C{struct} refuses.

    @raise ValueError: a row of the wrong shape (the SDK changed a record).
    """
    pack = _GAZE_RECORD.pack
    try:
        if len(rows) == 1:  # the usual case: the SDK calls back once per sample
            return bytearray(pack(*rows[0]))
        return bytearray(b"".join([pack(*row) for row in rows]))
    except struct.error:
        return bytearray(np.array(rows, dtype=GAZE_DTYPE).tobytes())


#: A user position as a callback copies it: the SDK's system time stamp (or
#: None), each eye's position in track box coordinates, and its validity.
RawPosition = Tuple[Optional[int], Any, Any, Any, Any]


def position_from_gaze(record: Any) -> RawPosition:
    """The eye positions in a gaze record of SDK 1.x (track box coordinates)."""
    return (
        record["system_time_stamp"],
        record["left_gaze_origin_in_trackbox_coordinate_system"],
        record["left_gaze_origin_validity"],
        record["right_gaze_origin_in_trackbox_coordinate_system"],
        record["right_gaze_origin_validity"],
    )


def position_from_guide(record: Any) -> RawPosition:
    """A record of the user position guide stream (it carries no time stamp)."""
    return (
        None,
        record["left_user_position"],
        record["left_user_position_validity"],
        record["right_user_position"],
        record["right_user_position_validity"],
    )


def user_position(raw: RawPosition, now_us: int) -> UserPosition:
    """
    A L{UserPosition} from what L{position_from_gaze} or
    L{position_from_guide} copied; stamped C{now_us} when it carries no time.
    """
    stamp, left, left_valid, right, right_valid = raw
    return UserPosition(
        left=guide_axes(left) if left_valid else None,
        right=guide_axes(right) if right_valid else None,
        system_time_us=int(now_us if stamp is None else stamp),
    )


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


def sdk_errors(sdk: Any) -> Tuple[Type[Exception], ...]:
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

    def corner(name: str) -> Point3:
        raw = value[name] if isinstance(value, dict) else getattr(value, name)
        x, y, z = (float(v) for v in raw)
        return (x, y, z)

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
    capabilities: Set[str] = set()
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


def offset_from_brackets(brackets: List[Tuple[int, int, int]]) -> int:
    """
    A clock's offset from ours, in µs, from readings of it each bracketed by
    two reads of ours, C{(before, stamp, after)}: the narrowest bracket wins.
    An offset within that bracket cannot be told from zero and is 0 (the
    usual case on Linux, where both clocks are CLOCK_MONOTONIC).
    """
    width, offset = min(
        (after - before, stamp - (before + after) // 2) for before, stamp, after in brackets
    )
    return 0 if abs(offset) <= width else offset


def measure_clock_offset(sdk: Any, clock_us: MicrosecondClock, rounds: int = CLOCK_ROUNDS) -> int:
    """
    The SDK's system clock minus C{clock_us} (the server's monotonic clock),
    in µs: each round brackets one C{get_system_time_stamp()} between two
    reads of C{clock_us} (L{offset_from_brackets}).  Blocking.
    """
    brackets: List[Tuple[int, int, int]] = []
    for _ in range(rounds):
        before = clock_us()
        stamp = int(sdk.get_system_time_stamp())
        brackets.append((before, stamp, clock_us()))
    return offset_from_brackets(brackets)


def calibration_result(sdk: Any, result: Any) -> CalibrationResult:
    """A L{CalibrationResult} from the SDK's C{compute_and_apply()} result."""
    validity = {
        getattr(sdk, constant): name
        for constant, name in VALIDITY
        if getattr(sdk, constant, None) is not None
    }
    points: List[CalibrationPointResult] = []
    for point in result.calibration_points:
        left: List[CalibrationEyeSample] = []
        right: List[CalibrationEyeSample] = []
        for sample in point.calibration_samples:
            for eye, out in ((sample.left_eye, left), (sample.right_eye, right)):
                x, y = eye.position_on_display_area
                out.append(
                    CalibrationEyeSample(float(x), float(y), validity.get(eye.validity, "invalid"))
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
    infos: List[TrackerInfo] = []
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
