"""
L{ValidationRun}: one connection's validation, from its points to its report.

The client sends, per point, the target and its own copies of the samples it
attached to that point.  The report is computed from the server's own
full-fidelity samples over the window those copies span (their C{timestamp}s
are on the sample clock), skipping the first part of each window as the
saccade to the target; the client's copies are used only when the server no
longer holds that window.  The maths is L{jspsych_tobii.core.quality}.
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
    def __init__(self, skip_initial_ms: float = quality.DEFAULT_SKIP_INITIAL_MS):
        self.points: List[ValidationPoint] = []
        self.notes: List[str] = []
        self.skip_initial_ms = skip_initial_ms

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add_point(self, x: float, y: float, client_time: Optional[float], samples: Any) -> None:
        self.points.append(ValidationPoint(x, y, client_time, samples or []))

    def _samples_for(self, point: ValidationPoint, buffer: GazeBuffer):
        window = quality.client_window_us(point.client_samples)
        if window is None:
            return empty_gaze(0), "none"
        start_us, end_us = window
        oldest = buffer.oldest_time_us()
        if oldest is not None and oldest <= start_us:
            held = buffer.query(start_us, end_us)
            return quality.select_window(held, start_us, end_us, self.skip_initial_ms), "server"
        copies = _from_client_copies(point.client_samples)
        return quality.select_window(copies, start_us, end_us, self.skip_initial_ms), "client"

    def compute(self, buffer: GazeBuffer, display: Optional[DisplayArea]) -> dict:
        chosen = [(p, *self._samples_for(p, buffer)) for p in self.points]
        report = quality.validation_summary([(p.x, p.y, s) for p, s, _ in chosen], display)
        for item, (_, _, source) in zip(report["pointData"], chosen):
            item["sampleSource"] = source
        report["skipInitialMs"] = self.skip_initial_ms
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
