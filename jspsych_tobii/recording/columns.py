# -*- test-case-name: tests.test_export_formats -*-
"""
The sample table every export writes, as typed numpy columns, and the one
rule that turns a sample's monotonic capture time into absolute time.

Absolute time: a recording's header holds the session's wall-clock start
(C{started_unix}, Unix seconds to the microsecond, read from the system
clock when the session opened) and its start on the monotonic server clock
(C{started_us}).  A sample captured at monotonic time C{system_time_us} was
therefore captured at

    unix_time_us = round(started_unix * 1e6) + (system_time_us - started_us)

in integer microseconds, so the column is exact to the microsecond against
that start.  The wall clock is read once: a later step of the system clock
(NTP, a manual change) does not move the samples, and the monotonic clock's
drift against UTC (typically under 50 ppm) accumulates over the session.

The CSV/TSV export formats these columns as text; Parquet stores them typed;
BIDS picks its columns from them.  Nothing here imports Twisted.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

__all__ = [
    "TimeBase",
    "binocular",
    "COLUMN_UNITS",
    "column_unit",
    "event_keys",
    "event_time_ms",
]


class TimeBase:
    """
    What a recording's header says about time: where the session started on
    the monotonic clock and on the wall clock.

    @ivar started_us: the session's start, monotonic server clock, µs.
    @ivar started_unix_us: the same instant as Unix time, µs (None when the
        header has no wall-clock start).
    """

    def __init__(self, started_us: Optional[int], started_unix_us: Optional[int]):
        self.started_us = started_us
        self.started_unix_us = started_unix_us

    @classmethod
    def from_header(cls, header: Dict[str, Any], samples: Optional[np.ndarray] = None):
        """
        The header's time base.  A header without C{started_us} (it never
        lacks one when the server wrote it) falls back to the first sample.
        """
        started_us = header.get("started_us")
        if not isinstance(started_us, int) or isinstance(started_us, bool):
            started_us = None
            if samples is not None and len(samples):
                started_us = int(samples["system_time_us"][0])
        started_unix = header.get("started_unix")
        unix_us = None
        if isinstance(started_unix, (int, float)) and not isinstance(started_unix, bool):
            unix_us = int(round(float(started_unix) * 1_000_000))
        return cls(started_us, unix_us)

    def unix_us(self, system_time_us: np.ndarray) -> Optional[np.ndarray]:
        """Unix time (µs, int64) of monotonic server-clock times, or None without a start."""
        if self.started_us is None or self.started_unix_us is None:
            return None
        return np.asarray(system_time_us, dtype=np.int64) + np.int64(
            self.started_unix_us - self.started_us
        )

    def unix_ms(self, t_server_ms: float) -> Optional[float]:
        """Unix time (ms) of one server-clock time in ms (an event's C{t_server_ms})."""
        if self.started_us is None or self.started_unix_us is None:
            return None
        return t_server_ms + (self.started_unix_us - self.started_us) / 1000.0

    def elapsed_ms(self, t_server_ms: float) -> Optional[float]:
        """Milliseconds since the session's start of one server-clock time in ms, or None."""
        if self.started_us is None:
            return None
        return t_server_ms - self.started_us / 1000.0

    def elapsed_us(self, system_time_us: np.ndarray) -> np.ndarray:
        """Microseconds since the session's start (since 0 when the start is unknown)."""
        return system_time_us - (self.started_us or 0)


def format_unix_seconds(unix_us: np.ndarray) -> List[str]:
    """Unix seconds with six decimals, from integer µs, exactly (no float rounding)."""
    seconds, micros = np.divmod(np.asarray(unix_us, dtype=np.int64), 1_000_000)
    return [f"{s}.{u:06d}" for s, u in zip(seconds.tolist(), micros.tolist())]


def event_time_ms(event: Dict[str, Any]) -> Optional[float]:
    """An event's C{t_server_ms} as a float, or None when it has no number there."""
    t = event.get("t_server_ms")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return float(t)
    return None


def event_keys(events: Iterable[Dict[str, Any]]) -> List[str]:
    """The events' fields besides C{t_server_ms} and C{kind}, in the order first seen."""
    keys: List[str] = []
    seen = {"t_server_ms", "kind"}
    for event in events:
        for key in event:
            if key not in seen:
                seen.add(key)
                keys.append(key)
    return keys


def binocular(chunk: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Gaze averaged over the valid eyes, NaN when neither is (as the client sees it)."""
    out = []
    lv = chunk["left_gaze_valid"] & np.isfinite(chunk["left_x"]) & np.isfinite(chunk["left_y"])
    rv = chunk["right_gaze_valid"] & np.isfinite(chunk["right_x"]) & np.isfinite(chunk["right_y"])
    for axis in ("x", "y"):
        left = np.where(lv, chunk[f"left_{axis}"], np.nan)
        right = np.where(rv, chunk[f"right_{axis}"], np.nan)
        out.append(np.where(lv & rv, (left + right) * 0.5, np.where(lv, left, right)))
    return out[0], out[1]


#: The unit of each sample-table column (by the CSV export's column names).
COLUMN_UNITS = {
    "sample": "count",
    "unix_time": "s",
    "gaze_x": "display width (0 left, 1 right)",
    "gaze_y": "display height (0 top, 1 bottom)",
}


def column_unit(column: str) -> str:
    """The unit of a sample-table column, for metadata."""
    if column in COLUMN_UNITS:
        return COLUMN_UNITS[column]
    if column.endswith("_ms"):
        return "ms"
    if column.endswith("_mm"):
        return "mm"
    if column.endswith("_valid"):
        return "boolean"
    if column.endswith("_gaze_x"):
        return COLUMN_UNITS["gaze_x"]
    if column.endswith("_gaze_y"):
        return COLUMN_UNITS["gaze_y"]
    return ""
