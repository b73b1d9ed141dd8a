# -*- test-case-name: tests.test_jsonsafe -*-
"""
Values that C{json.dumps(..., allow_nan=False)} accepts: L{json_safe}, the
one sanitiser the replies, the recording's header and events, the exports
and the LSL markers go through; and the small helpers the quality reports
build their numbers with (L{finite}, L{point_or_none}, L{mean_or_none}),
which give None, never NaN, for a value that cannot be computed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def finite(value: Any) -> float | None:
    """A finite value as a Python float, anything else as None."""
    if value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def point_or_none(x: Any, y: Any) -> dict[str, float | None] | None:
    """C{{"x": x, "y": y}} when both are finite, else None."""
    fx, fy = finite(x), finite(y)
    if fx is None or fy is None:
        return None
    return {"x": fx, "y": fy}


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return finite(math.fsum(present) / len(present))


def json_safe(value: Any) -> Any:
    """
    A copy of C{value} made of plain JSON values: numpy scalars and arrays
    become Python numbers and lists, non-finite numbers become None, tuples
    become lists, sets sorted lists, dict keys strings; an object with a
    C{to_dict} method becomes that dict, any other object its C{str}.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return finite(value)
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, (set, frozenset)):
        return sorted(json_safe(item) for item in value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return json_safe(to_dict())
    return str(value)
