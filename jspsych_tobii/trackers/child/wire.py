# -*- test-case-name: tests.test_child_wire -*-
"""
The wire between the server and the SDK process (L{jspsych_tobii.trackers.child.tracker}
on the server side, L{jspsych_tobii.trackers.child.main} in the SDK process).

Both directions carry frames: a 4-byte big-endian payload length, a 1-byte
kind, then the payload.

  - L{MESSAGE} frames hold one JSON object (UTF-8): requests, replies,
    notifications, tracker info, user positions and the hello.
  - L{GAZE} frames hold a batch of gaze samples as raw L{GAZE_DTYPE} records,
    exactly the bytes of the numpy array.  Both sides check at start-up that
    they agree on that layout (the hello carries L{dtype_descr}).

This module also turns the plain records of L{jspsych_tobii.interfaces} into
JSON-able dictionaries and back.  It is pure: no Twisted, no I/O.
"""

from __future__ import annotations

import json
import struct
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    CalibrationEyeSample,
    CalibrationPointResult,
    CalibrationResult,
    DisplayArea,
    GazeBatch,
    NoTrackerError,
    Point3,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
)

__all__ = [
    "PROTOCOL",
    "MESSAGE",
    "GAZE",
    "MAX_PAYLOAD",
    "WireError",
    "FrameDecoder",
    "encode_frame",
    "encode_message",
    "encode_gaze",
    "decode_message",
    "decode_gaze",
    "gaze_records",
    "first_system_time_us",
    "dtype_descr",
    "same_dtype",
    "info_to_wire",
    "info_from_wire",
    "position_to_wire",
    "position_from_wire",
    "calibration_to_wire",
    "calibration_from_wire",
    "notification_to_wire",
    "notification_from_wire",
    "error_to_wire",
    "error_from_wire",
]

#: Version of this wire protocol, sent in the hello.
PROTOCOL = 1

#: Frame kinds.
MESSAGE = ord("J")
GAZE = ord("G")
_KINDS = frozenset((MESSAGE, GAZE))

#: The largest payload accepted (a gaze frame of about 180,000 samples).
MAX_PAYLOAD = 32 * 1024 * 1024

_HEADER = struct.Struct(">IB")
HEADER_SIZE = _HEADER.size

_SYSTEM_TIME = struct.Struct("<q")
_SYSTEM_TIME_AT: int = GAZE_DTYPE.fields["system_time_us"][1]  # type: ignore[index]


class WireError(ValueError):
    """The byte stream is not a sequence of valid frames."""


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One frame: header, then C{payload}."""
    if kind not in _KINDS:
        raise WireError(f"unknown frame kind {kind}")
    if len(payload) > MAX_PAYLOAD:
        raise WireError(f"frame payload of {len(payload)} bytes is too large")
    return _HEADER.pack(len(payload), kind) + payload


def encode_message(message: dict) -> bytes:
    """A L{MESSAGE} frame holding C{message} as compact JSON."""
    return encode_frame(MESSAGE, json.dumps(message, separators=(",", ":")).encode("utf-8"))


def encode_gaze(batch: GazeBatch) -> bytes:
    """A L{GAZE} frame holding the records of C{batch} (L{GAZE_DTYPE})."""
    if isinstance(batch, bytearray):
        return encode_frame(GAZE, bytes(gaze_records(batch)))
    if batch.dtype != GAZE_DTYPE:
        raise WireError(f"a gaze batch must be of GAZE_DTYPE, not {batch.dtype}")
    return encode_frame(GAZE, np.ascontiguousarray(batch).tobytes())


class FrameDecoder:
    """
    Splits a byte stream into frames, however it was chunked.  After a
    L{WireError} the stream is out of step and the decoder refuses more.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self._buffer = bytearray()
        self._max = max_payload
        self._broken: Optional[str] = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> List[Tuple[int, bytearray]]:
        """
        Add C{data}; return the frames completed, as C{(kind, payload)}.

        @raise WireError: a header announces an unknown kind or an oversized
            payload.
        """
        if self._broken is not None:
            raise WireError(self._broken)
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        end = len(buffer)
        while end - offset >= HEADER_SIZE:
            length, kind = _HEADER.unpack_from(buffer, offset)
            if kind not in _KINDS or length > self._max:
                head = bytes(buffer[offset : offset + 16])
                if kind not in _KINDS:
                    self._broken = f"not a frame (unknown kind {kind}): {head!r}"
                else:
                    self._broken = f"frame payload of {length} bytes is too large: {head!r}"
                del buffer[:]
                raise WireError(self._broken)
            start = offset + HEADER_SIZE
            if end - start < length:
                break
            frames.append((kind, buffer[start : start + length]))
            offset = start + length
        if offset:
            del buffer[:offset]
        return frames


def decode_message(payload: Union[bytes, bytearray]) -> dict:
    """
    The JSON object in a L{MESSAGE} payload.

    @raise WireError: it is not a JSON object.
    """
    try:
        message = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WireError(f"a message frame is not JSON: {e}") from None
    if not isinstance(message, dict):
        raise WireError("a message frame must hold a JSON object")
    return message


def gaze_records(payload: Union[bytes, bytearray]) -> bytearray:
    """
    The records of a L{GAZE} frame's payload, as the bytes a tracker hands
    the hub (C{payload} itself when it is a bytearray).

    @raise WireError: the payload is not a whole number of records.
    """
    size = GAZE_DTYPE.itemsize
    if len(payload) % size:
        raise WireError(
            f"a gaze frame of {len(payload)} bytes is not a whole number of {size}-byte records"
        )
    return payload if isinstance(payload, bytearray) else bytearray(payload)


def first_system_time_us(records: bytearray) -> int:
    """The C{system_time_us} of the first of (at least one) records."""
    value: int = _SYSTEM_TIME.unpack_from(records, _SYSTEM_TIME_AT)[0]
    return value


def decode_gaze(payload: Union[bytes, bytearray]) -> np.ndarray:
    """
    The records of a L{GAZE} frame's payload as a writable array (which
    shares memory with C{payload} when that is a bytearray).

    @raise WireError: the payload is not a whole number of records.
    """
    return np.frombuffer(gaze_records(payload), dtype=GAZE_DTYPE)


def dtype_descr(dtype: np.dtype = GAZE_DTYPE) -> list:
    """The record layout as JSON-able lists (field name, type with byte order)."""
    return [[name, dtype[name].str] for name in dtype.names or ()]


def same_dtype(descr: Any, dtype: np.dtype = GAZE_DTYPE) -> bool:
    """Does C{descr} (from the other side's hello) describe C{dtype} exactly?"""
    return descr == dtype_descr(dtype)


# -- records


def _point(value: Any) -> Point3:
    x, y, z = (float(v) for v in value)
    return (x, y, z)


def _optional_point(value: Any) -> Optional[Point3]:
    return None if value is None else _point(value)


def info_to_wire(info: TrackerInfo) -> dict:
    area = info.display_area
    return {
        "address": info.address,
        "model": info.model,
        "serial_number": info.serial_number,
        "firmware_version": info.firmware_version,
        "device_name": info.device_name,
        "frequencies": list(info.frequencies),
        "frequency": info.frequency,
        "capabilities": sorted(info.capabilities),
        "display_area": (
            None
            if area is None
            else [list(area.top_left), list(area.top_right), list(area.bottom_left)]
        ),
        "sdk_version": info.sdk_version,
        "system_clock_offset_us": info.system_clock_offset_us,
    }


def info_from_wire(d: dict) -> TrackerInfo:
    area = d.get("display_area")
    return TrackerInfo(
        address=str(d["address"]),
        model=str(d["model"]),
        serial_number=str(d["serial_number"]),
        firmware_version=str(d["firmware_version"]),
        device_name=str(d.get("device_name", "")),
        frequencies=tuple(float(f) for f in d.get("frequencies", ())),
        frequency=float(d.get("frequency", 0.0)),
        capabilities=frozenset(str(c) for c in d.get("capabilities", ())),
        display_area=None if area is None else DisplayArea(*(_point(c) for c in area)),
        sdk_version=str(d.get("sdk_version", "")),
        system_clock_offset_us=int(d.get("system_clock_offset_us", 0)),
    )


def position_to_wire(position: Optional[UserPosition]) -> Optional[dict]:
    if position is None:
        return None
    return {
        "left": None if position.left is None else list(position.left),
        "right": None if position.right is None else list(position.right),
        "system_time_us": position.system_time_us,
    }


def position_from_wire(d: Optional[dict]) -> Optional[UserPosition]:
    if d is None:
        return None
    return UserPosition(
        left=_optional_point(d.get("left")),
        right=_optional_point(d.get("right")),
        system_time_us=int(d.get("system_time_us", 0)),
    )


def _eye_samples_to_wire(samples: Tuple[CalibrationEyeSample, ...]) -> list:
    return [[s.x, s.y, s.validity] for s in samples]


def _eye_samples_from_wire(samples: list) -> Tuple[CalibrationEyeSample, ...]:
    return tuple(CalibrationEyeSample(float(x), float(y), str(v)) for x, y, v in samples)


def calibration_to_wire(result: CalibrationResult) -> dict:
    return {
        "success": bool(result.success),
        "status": result.status,
        "points": [
            {
                "x": p.x,
                "y": p.y,
                "left": _eye_samples_to_wire(p.left),
                "right": _eye_samples_to_wire(p.right),
            }
            for p in result.points
        ],
    }


def calibration_from_wire(d: dict) -> CalibrationResult:
    return CalibrationResult(
        success=bool(d["success"]),
        status=str(d.get("status", "")),
        points=tuple(
            CalibrationPointResult(
                float(p["x"]),
                float(p["y"]),
                _eye_samples_from_wire(p.get("left", ())),
                _eye_samples_from_wire(p.get("right", ())),
            )
            for p in d.get("points", ())
        ),
    )


def notification_to_wire(note: TrackerNotification) -> dict:
    return {
        "kind": note.kind,
        "system_time_us": note.system_time_us,
        "message": note.message,
        "data": note.data,
    }


def notification_from_wire(d: dict) -> TrackerNotification:
    return TrackerNotification(
        kind=str(d["kind"]),
        system_time_us=int(d.get("system_time_us", 0)),
        message=str(d.get("message", "")),
        data=dict(d.get("data") or {}),
    )


def error_to_wire(error: BaseException) -> dict:
    """A failure for a reply: its class (as the server should see it) and message."""
    if isinstance(error, NoTrackerError):
        kind = "NoTrackerError"
    elif isinstance(error, TrackerError):
        kind = "TrackerError"
    else:
        kind = "InternalError"
    message = str(error) if isinstance(error, TrackerError) else f"{type(error).__name__}: {error}"
    return {"kind": kind, "message": message}


def error_from_wire(d: dict) -> TrackerError:
    """The exception a reply's error stands for; always a L{TrackerError}."""
    kind = d.get("kind")
    message = str(d.get("message", "")) or "the SDK process reported an error"
    if kind == "NoTrackerError":
        return NoTrackerError(message)
    if kind == "InternalError":
        return TrackerError(f"internal error in the SDK process: {message}")
    return TrackerError(message)
