"""
L{ValidationRun}: one connection's validation, from its points to its report.

The client sends, per point, the target and its own copies of the samples it
attached to that point.  The report is computed from the server's own
full-fidelity samples over the window those copies span (their C{timestamp}s
are on the sample clock), skipping the first part of each window as the
saccade to the target and, when asked, keeping only its last part (as Titta
does); the client's copies are used only when the server no longer holds
that window.  The maths is L{jspsych_tobii.core.quality}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from jspsych_tobii.core import quality
from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.interfaces import GAZE_DTYPE, DisplayArea, empty_gaze


@dataclass
class ValidationPoint:
    x: float
    y: float
    client_time: Optional[float]
    client_samples: list


class ValidationRun:
    """
    @ivar skip_initial_ms: the start of each point's span left out as the
        saccade to the target.
    @ivar window_ms: when > 0, only the last this many ms of each point's
        span are used (never reaching into the skipped start); 0 uses
        everything after the skip.
    """

    def __init__(
        self,
        skip_initial_ms: float = quality.DEFAULT_SKIP_INITIAL_MS,
        window_ms: float = 0.0,
    ):
        self.points: List[ValidationPoint] = []
        self.notes: List[str] = []
        self.skip_initial_ms = skip_initial_ms
        self.window_ms = window_ms

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add_point(self, x: float, y: float, client_time: Optional[float], samples: Any) -> None:
        self.points.append(ValidationPoint(x, y, client_time, samples or []))

    def _samples_for(self, point: ValidationPoint, buffer: GazeBuffer):
        """The point's samples, where they came from, and the window used (µs)."""
        span = quality.client_window_us(point.client_samples)
        if span is None:
            return empty_gaze(0), "none", None
        start_us, end_us = span
        window = quality.window_bounds_us(start_us, end_us, self.skip_initial_ms, self.window_ms)
        oldest = buffer.oldest_time_us()
        if oldest is not None and oldest <= start_us:
            source, held = "server", buffer.query(start_us, end_us)
        else:
            source, held = "client", _from_client_copies(point.client_samples)
        chosen = quality.select_window(held, start_us, end_us, self.skip_initial_ms, self.window_ms)
        return chosen, source, window

    def describe_window(self) -> str:
        """The window rule, in words, for the reply's C{definitions}."""
        skip = f"{self.skip_initial_ms:g} ms"
        if self.window_ms > 0:
            rule = f"the last {self.window_ms:g} ms of each point, leaving out its first {skip}"
        else:
            rule = f"each point from {skip} after its first sample to its last"
        return rule + " (pointData[].window: the bounds used, ms on the sample clock)"

    def compute(self, buffer: GazeBuffer, display: Optional[DisplayArea]) -> dict:
        chosen = [(p, *self._samples_for(p, buffer)) for p in self.points]
        report = quality.validation_summary([(p.x, p.y, s) for p, s, _, _ in chosen], display)
        for item, (_, _, source, window) in zip(report["pointData"], chosen):
            item["sampleSource"] = source
            item["window"] = (
                None
                if window is None
                else {"startMs": window[0] / 1000.0, "endMs": window[1] / 1000.0}
            )
        report["skipInitialMs"] = self.skip_initial_ms
        report["windowMs"] = self.window_ms
        report["definitions"]["window"] = self.describe_window()
        if self.notes:
            report["notes"] = list(self.notes)
        return report


def _from_client_copies(gaze_samples: list) -> np.ndarray:
    """
    Binocular records rebuilt from the client's copies (x, y and time only);
    the fallback when the server's buffer no longer holds a point's window.
    """
    rows = []
    for entry in gaze_samples:
        if not isinstance(entry, dict):
            continue
        t, x, y = entry.get("timestamp"), entry.get("x"), entry.get("y")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (t, x, y)):
            if all(np.isfinite(v) for v in (t, x, y)):
                rows.append((int(round(t * 1000)), float(x), float(y)))
    batch = empty_gaze(len(rows))
    if rows:
        rows.sort()
        times, xs, ys = (np.array(c) for c in zip(*rows))
        batch["system_time_us"] = times
        for eye in ("left", "right"):
            batch[f"{eye}_x"], batch[f"{eye}_y"] = xs, ys
            batch[f"{eye}_gaze_valid"] = True
    assert batch.dtype == GAZE_DTYPE
    return batch
