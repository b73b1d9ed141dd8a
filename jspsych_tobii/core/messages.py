# -*- test-case-name: tests.test_messages -*-
"""
The wire protocol's requests and replies, without any I/O.

L{parse_request} turns one WebSocket text frame into a L{Request} with
validated parameters, or raises L{RequestError} carrying the request's
C{requestId} (when one could be read) and a message fit for the client.
L{reply} and L{error_reply} build the reply objects; every reply echoes the
C{requestId} of its request.  The request types and their fields are those
of CLIENT_CONTRACT.md; L{SCHEMAS} is the single table of them.
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

__all__ = [
    "Request",
    "RequestError",
    "SCHEMAS",
    "parse_request",
    "reply",
    "error_reply",
    "MAX_ABS_NUMBER",
]

#: Largest magnitude accepted for a time or other number: ~31,000 years in
#: ms; anything larger is a client bug, not a time.
MAX_ABS_NUMBER = 1e15
MAX_REQUEST_ID_LENGTH = 256


class RequestError(Exception):
    """A request the server cannot act on; C{str(error)} is shown to the client."""

    def __init__(self, message: str, request_id: Any = None, request_type: Optional[str] = None):
        super().__init__(message)
        self.request_id = request_id
        self.request_type = request_type


@dataclass
class Request:
    type: str
    request_id: Any
    params: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict)


# -- field validators: each takes (name, value, present) and returns the value to use


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'{name}' must be a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"'{name}' is too large") from None
    if not math.isfinite(number):
        raise ValueError(f"'{name}' must be a finite number")
    if abs(number) > MAX_ABS_NUMBER:
        raise ValueError(f"'{name}' is out of range ({number:g})")
    return number


def _unit(name: str, value: Any) -> float:
    number = _number(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"'{name}' must be between 0 and 1, got {number:g}")
    return number


def _point(name: str, value: Any) -> Dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"'{name}' must be an object {{x, y}}, got {_describe(value)}")
    for axis in ("x", "y"):
        if axis not in value:
            raise ValueError(f"'{name}.{axis}' is missing")
    return {"x": _unit(f"{name}.x", value["x"]), "y": _unit(f"{name}.y", value["y"])}


def _list(name: str, value: Any) -> list:
    if not isinstance(value, list):
        raise ValueError(f"'{name}' must be an array, got {_describe(value)}")
    return value


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string, got {_describe(value)}")
    if len(value) > 1000:
        raise ValueError(f"'{name}' is too long ({len(value)} characters, at most 1000)")
    return value


def _object(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"'{name}' must be an object, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"


Validator = Callable[[str, Any], Any]

REQUIRED = object()


def _spec(**fields: tuple) -> Dict[str, tuple]:
    return fields


#: For each request type, its fields: name -> (validator, default).  A default
#: of REQUIRED makes the field mandatory; None means optional.
SCHEMAS: Dict[str, Dict[str, tuple]] = {
    "time_sync": _spec(clientTime=(_number, None)),
    "start_tracking": _spec(),
    "stop_tracking": _spec(),
    "get_current_gaze": _spec(),
    "get_data": _spec(start_time=(_number, None), end_time=(_number, None)),
    "get_user_position": _spec(),
    "get_device_clock_offset": _spec(),
    "get_tracker_info": _spec(),
    "get_status": _spec(),
    "calibration_start": _spec(),
    "calibration_point": _spec(point=(_point, REQUIRED), timestamp=(_number, None)),
    "calibration_discard_point": _spec(point=(_point, REQUIRED)),
    "calibration_compute": _spec(),
    "calibration_stop": _spec(),
    "get_calibration_data": _spec(),
    "validation_start": _spec(),
    "validation_point": _spec(
        point=(_point, REQUIRED),
        timestamp=(_number, None),
        gaze_samples=(_list, None),
    ),
    "validation_compute": _spec(),
    "mock_look_at": _spec(point=(_point, None)),
    "get_markers": _spec(),
    "marker": _spec(label=(_string, REQUIRED), timestamp=(_number, None), data=(_object, None)),
}


class _NotJSON(ValueError):
    """A JSON constant (NaN, Infinity) that JSON does not have."""


def _reject_constant(name: str) -> None:
    raise _NotJSON(f"{name} is not a JSON value (send a finite number or null)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode(payload: bytes | str, yielding: bool = False) -> Any:
    """
    The JSON value of a frame, or ValueError with what is wrong in the
    server's own words (never Python's: no exception text reaches a client).
    With C{yielding}, see L{_loads_yielding}.
    """
    try:
        if yielding:
            return _loads_yielding(payload)
        if isinstance(payload, (bytes, bytearray)):
            # as json.loads does, without building a decoder per frame
            payload = payload.decode(json.detect_encoding(payload), "surrogatepass")
        return _DECODER.decode(payload)
    except _NotJSON:
        raise
    except json.JSONDecodeError as e:
        raise ValueError(
            f"not JSON at line {e.lineno}, column {e.colno} (character {e.pos})"
        ) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (a bad byte at offset {e.start})") from None
    except RecursionError:
        raise ValueError("arrays or objects nested too deeply") from None
    except ValueError:
        # the only other ValueError json raises: an integer too long to convert
        limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
        raise ValueError(
            f"a number has more than {limit} digits" if limit else "a number has too many digits"
        ) from None


def _loads_yielding(payload: bytes | str) -> Any:
    """
    C{json.loads} with the decoder's pure-Python scanner: the same result,
    several times slower, but the interpreter can switch threads while it
    runs.  The C scanner holds the GIL for a whole frame (0.25 s for 12 MB),
    so a large frame decoded on a worker thread would still stall the
    reactor; this one lets it run every few ms.
    """
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode(json.detect_encoding(payload), "surrogatepass")
    elif payload.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", payload, 0)
    decoder = json.JSONDecoder(parse_constant=_reject_constant)  # one per call: not shared
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(payload)


def parse_request(payload: bytes | str, is_binary: bool = False, yielding: bool = False) -> Request:
    """
    Decode and validate one frame.

    @param yielding: decode so that other threads can run meanwhile (for a
        large frame decoded on a worker thread; see L{_loads_yielding}).
    @raise RequestError: with the request's C{requestId} when it could be read.
    """
    if is_binary:
        raise RequestError("binary frames are not supported; send JSON text")
    try:
        message = _decode(payload, yielding)
    except ValueError as e:
        raise RequestError(f"invalid JSON: {e}", _salvage_request_id(payload)) from None
    if not isinstance(message, dict):
        raise RequestError(f"a request must be a JSON object, got {_describe(message)}")

    request_id = message.get("requestId")
    if request_id is not None and (
        isinstance(request_id, (dict, list))
        or (isinstance(request_id, str) and len(request_id) > MAX_REQUEST_ID_LENGTH)
    ):
        raise RequestError("'requestId' must be a short string or a number", request_id)

    kind = message.get("type")
    if not isinstance(kind, str):
        raise RequestError("a request needs a string 'type'", request_id)
    schema = SCHEMAS.get(kind)
    if schema is None:
        shown = kind if len(kind) <= 60 else kind[:60] + "..."
        raise RequestError(f"unknown message type: {shown!r}", request_id, kind)

    params: Dict[str, Any] = {}
    for name, (validator, default) in schema.items():
        value = message.get(name)
        if value is None:
            if default is REQUIRED:
                raise RequestError(f"'{name}' is required for {kind}", request_id, kind)
            params[name] = None
            continue
        try:
            params[name] = validator(name, value)
        except ValueError as e:
            raise RequestError(f"{kind}: {e}", request_id, kind) from None

    if kind == "get_data":
        start, end = params["start_time"], params["end_time"]
        if start is not None and end is not None and start > end:
            raise RequestError(
                f"get_data: start_time ({start:g}) is after end_time ({end:g})", request_id, kind
            )
    return Request(kind, request_id, params, message)


_REQUEST_ID = re.compile(rb'"requestId"\s*:\s*("(?:[^"\\\\]|\\\\.){0,256}"|-?\d{1,18})')


def _salvage_request_id(payload: bytes | str) -> Any:
    """The C{requestId} of a frame that is not valid JSON, when it can be read."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    match = _REQUEST_ID.search(payload[:65536])
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


def reply(request: Request, **fields: Any) -> dict:
    """
    A reply to C{request}: the request's own C{type} (as the original server
    answered, so clients that match replies by type work) and its
    C{requestId}.
    """
    message = {"type": request.type}
    message.update(fields)
    if request.request_id is not None:
        message["requestId"] = request.request_id
    return message


def error_reply(message: str, request_id: Any = None, request_type: Optional[str] = None) -> dict:
    """The one shape of every error: C{type: "error"}, C{success: false}, C{error}."""
    out: Dict[str, Any] = {"type": "error", "success": False, "error": message}
    if request_type is not None:
        out["requestType"] = request_type
    if request_id is not None:
        out["requestId"] = request_id
    return out
