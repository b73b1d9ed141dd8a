# -*- test-case-name: tests.test_validation -*-
"""
L{ValidationRun}: one connection's validation, from its points to its report.

The client sends, per point, the target and its own copies of the samples it
attached to that point.  The report is computed from the server's own
full-fidelity samples over the window those copies span (their C{timestamp}s
are on the sample clock), skipping the first part of each window as the
saccade to the target and, when asked, keeping only its last part (as Titta
does); the client's copies are used only when the server no longer holds
that window.  The maths is L{jspsych_tobii.core.quality}; which samples
belong to a point, L{jspsych_tobii.core.windows}.

The server's samples are read through the same query as get_data
(L{SessionSamples<jspsych_tobii.core.history.SessionSamples>}): from the
in-memory buffer, and from the session's recording for a window the buffer
no longer holds.

The work is bounded and split in two.  A run holds at most
L{MAX_VALIDATION_POINTS} points of at most L{MAX_SAMPLES_PER_POINT} samples
each, and keeps of the client's copies only their times and positions (not
the dicts the JSON decoder made).  L{ValidationRun.gather} copies, on the
thread that owns the gaze buffer and the recorder, what the report needs:
each point's window, at most one sample more than a point may have.
L{ValidationInput.compute} then reads nothing but those copies and the
points, so it can run on any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from jspsych_tobii.core import quality, windows
from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.core.history import SessionSamples
from jspsych_tobii.core.messages import MAX_ABS_NUMBER
from jspsych_tobii.interfaces import GAZE_DTYPE, DisplayArea, empty_gaze

#: Points one validation may have (a plugin shows 5 to 13).
MAX_VALIDATION_POINTS = 100
#: Samples per point: the client's copies, and the server's own samples in
#: the window they span (1 s at 1200 Hz is 1200).
MAX_SAMPLES_PER_POINT = 5000


class ValidationLimitError(ValueError):
    """A validation went past one of the limits; the message names it."""


@dataclass(frozen=True)
class ClientCopies:
    """
    What a validation keeps of the client's copies of one point's samples.

    @ivar count: how many entries the client sent.
    @ivar window_us: their span on the sample clock: the smallest and the
        largest finite C{timestamp} (ms on the sample clock, that is
        C{system_time_us / 1000}), each rounded to the nearest µs; None when
        no entry has one.
    @ivar rows: those with finite time, x and y, as C{(time_us, x, y)}
        rows in time order.
    """

    count: int
    window_us: Optional[Tuple[int, int]]
    rows: np.ndarray

    @classmethod
    def reduce(cls, gaze_samples: Any) -> "ClientCopies":
        """
        The C{gaze_samples} of a C{validation_point} as L{ClientCopies};
        more than L{MAX_SAMPLES_PER_POINT} are only counted (the run refuses
        them).  Pure: the server calls it on the worker thread that decoded
        a large frame, which then also frees the decoded samples.
        """
        count = len(gaze_samples) if isinstance(gaze_samples, (list, tuple)) else 0
        if count > MAX_SAMPLES_PER_POINT:
            return cls(count, None, np.zeros((0, 3)))
        return cls(count, *_client_copies(gaze_samples))


@dataclass(frozen=True)
class ValidationPoint:
    x: float
    y: float
    client_time: Optional[float]
    copies: ClientCopies

    @property
    def window_us(self) -> Optional[Tuple[int, int]]:
        return self.copies.window_us


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
        skip_initial_ms: float = windows.DEFAULT_SKIP_INITIAL_MS,
        window_ms: float = 0.0,
    ):
        self.points: List[ValidationPoint] = []
        self.notes: List[str] = []
        self.refused: List[str] = []  # why points were refused, for the compute to say
        self.skip_initial_ms = skip_initial_ms
        self.window_ms = window_ms

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add_point(self, x: float, y: float, client_time: Optional[float], samples: Any) -> None:
        """
        Add a point, keeping only what the report needs of the client's
        copies (C{samples}: the request's C{gaze_samples}, or already
        L{ClientCopies.reduce}d).

        @raise ValidationLimitError: past a limit; the run remembers why, so
            that the compute (the client's next awaited request) says so.
        """
        number = len(self.points) + len(self.refused) + 1
        problem = copies = None
        if len(self.points) >= MAX_VALIDATION_POINTS:
            problem = f"at most {MAX_VALIDATION_POINTS} points per validation"
        else:
            copies = samples if isinstance(samples, ClientCopies) else ClientCopies.reduce(samples)
            if copies.count > MAX_SAMPLES_PER_POINT:
                problem = f"{copies.count} gaze_samples, at most {MAX_SAMPLES_PER_POINT} per point"
        if problem is not None or copies is None:
            text = f"validation_point {number} was refused: {problem}"
            self.refused.append(text)
            raise ValidationLimitError(text)
        self.points.append(ValidationPoint(x, y, client_time, copies))

    def check(self) -> None:
        """@raise ValidationLimitError: when a point of this run was refused."""
        if self.refused:
            more = len(self.refused) - 1
            raise ValidationLimitError(
                self.refused[0]
                + (f" (and {more} more)" if more else "")
                + "; send validation_start and validate again"
            )

    def gather(self, samples: SessionSamples, display: Optional[DisplayArea]) -> "ValidationInput":
        """
        Copy the server's samples over each point's window from C{samples}
        (the get_data query); call this where the buffer and the recorder
        are owned (the reactor), after the recorder has flushed what the
        windows need.  The result's C{compute} may run anywhere.
        """
        gathering = self.gathering(samples, display)
        for _ in gathering.steps():
            pass
        return gathering.result()

    def gathering(
        self, samples: SessionSamples, display: Optional[DisplayArea]
    ) -> "WindowGathering":
        """L{gather} one point at a time: a step per point (for a reactor turn each)."""
        self.check()
        return WindowGathering(self, tuple(self.points), samples, display)

    def compute(self, buffer: GazeBuffer, display: Optional[DisplayArea]) -> dict:
        """L{gather} from C{buffer} alone and compute at once, on the calling thread."""
        return self.gather(SessionSamples.in_memory(buffer), display).compute()


#: Samples a step of L{WindowGathering} copies before it yields (about
#: 0.9 MB, well under a millisecond): a point's most, L{MAX_SAMPLES_PER_POINT}
#: and the one more that shows it was too many.
GATHER_STEP_SAMPLES = MAX_SAMPLES_PER_POINT + 1


class WindowGathering:
    """
    The copy of the server's samples over a validation's point windows, made
    in L{steps}: each step reads whole points until it has copied
    L{GATHER_STEP_SAMPLES}, so a run of many long windows never holds the
    reactor for long, and a usual one is read in one step.  L{result} once
    the steps are done.
    """

    def __init__(
        self,
        run: ValidationRun,
        points: Tuple[ValidationPoint, ...],
        samples: SessionSamples,
        display: Optional[DisplayArea],
    ):
        self._run = run
        self._points = points
        self._samples = samples
        self._display = display
        self._served: List[Optional[np.ndarray]] = []

    def steps(self) -> Iterator[None]:
        """Read the points' windows, yielding after each L{GATHER_STEP_SAMPLES} copied."""
        copied = 0
        for point in self._points[len(self._served) :]:
            window = _read_window(self._samples, point.window_us)
            self._served.append(window)
            copied += 0 if window is None else len(window)
            if copied >= GATHER_STEP_SAMPLES and len(self._served) < len(self._points):
                copied = 0
                yield None

    def result(self) -> "ValidationInput":
        run = self._run
        if len(self._served) != len(self._points):
            raise RuntimeError("WindowGathering.result before every point was read")
        return ValidationInput(
            self._points,
            tuple(self._served),
            self._display,
            run.skip_initial_ms,
            run.window_ms,
            tuple(run.notes),
        )


def _read_window(
    samples: SessionSamples, window_us: Optional[Tuple[int, int]]
) -> Optional[np.ndarray]:
    """
    The server's samples over C{window_us}, or None when the server does not
    hold all of them.  At most one more than L{MAX_SAMPLES_PER_POINT} are
    read, so that a window spanning hours costs no more than a full one.
    """
    if window_us is None or not samples.holds(window_us[0]):
        return None
    taken: List[np.ndarray] = []
    count = 0
    wanted = MAX_SAMPLES_PER_POINT + 1
    for chunk in samples.range(window_us[0], window_us[1], wanted, limit=wanted):
        taken.append(chunk[: MAX_SAMPLES_PER_POINT + 1 - count])
        count += len(taken[-1])
        if count > MAX_SAMPLES_PER_POINT:
            break
    return np.concatenate(taken) if taken else empty_gaze(0)


@dataclass(frozen=True)
class ValidationInput:
    """
    A validation's points and a copy of the server's samples over their
    windows: all a report needs, owned by nobody else.
    """

    points: Tuple[ValidationPoint, ...]
    #: per point, the server's samples over its window (None: not held)
    served: Tuple[Optional[np.ndarray], ...]
    display: Optional[DisplayArea]
    skip_initial_ms: float
    window_ms: float
    notes: Tuple[str, ...]

    def _samples_for(self, number: int, point: ValidationPoint):
        """The point's samples, where they came from, and the window used (µs)."""
        if point.window_us is None:
            return empty_gaze(0), "none", None
        start_us, end_us = point.window_us
        held = self.served[number - 1]
        if held is not None:
            source, samples = "server", held
        else:
            source, samples = "client", _as_gaze(point.copies.rows)
        span = windows.select_window(samples, start_us, end_us, 0)
        if len(span) > MAX_SAMPLES_PER_POINT:
            raise ValidationLimitError(
                f"validation point {number}: its window holds more than "
                f"{MAX_SAMPLES_PER_POINT} samples, at most "
                f"{MAX_SAMPLES_PER_POINT} per point (its gaze_samples span "
                f"{(end_us - start_us) / 1e6:.1f} s)"
            )
        skip, last = self.skip_initial_ms, self.window_ms
        window = windows.window_bounds_us(start_us, end_us, skip, last)
        return windows.select_window(span, start_us, end_us, skip, last), source, window

    def compute(self) -> dict:
        chosen = [(p, *self._samples_for(i, p)) for i, p in enumerate(self.points, 1)]
        report = quality.validation_summary([(p.x, p.y, s) for p, s, _, _ in chosen], self.display)
        for item, (_, _, source, window) in zip(report["pointData"], chosen):
            item["sampleSource"] = source
            item["window"] = (
                None
                if window is None
                else {"startMs": window[0] / 1000.0, "endMs": window[1] / 1000.0}
            )
        report["skipInitialMs"] = self.skip_initial_ms
        report["windowMs"] = self.window_ms
        report["definitions"]["window"] = _describe_window(self.skip_initial_ms, self.window_ms)
        if self.notes:
            report["notes"] = list(self.notes)
        return report


def _describe_window(skip_initial_ms: float, window_ms: float) -> str:
    skip = f"{skip_initial_ms:g} ms"
    if window_ms > 0:
        rule = f"the last {window_ms:g} ms of each point, leaving out its first {skip}"
    else:
        rule = f"each point from {skip} after its first sample to its last"
    return rule + " (pointData[].window: the bounds used, ms on the sample clock)"


def _client_copies(gaze_samples: Any) -> Tuple[Optional[Tuple[int, int]], np.ndarray]:
    """
    The client's copies reduced to their window (see
    L{ClientCopies.window_us}: every entry with a finite C{timestamp}
    counts) and the C{(time_us, x, y)} rows of those that also have finite
    C{x} and C{y}, in time order.  Entries of any other shape are ignored.
    This runs on the reactor: about 1 µs per entry.
    """
    if not isinstance(gaze_samples, (list, tuple)):
        return None, np.zeros((0, 3))
    entries = [e for e in gaze_samples if isinstance(e, dict)]
    t = _column([e.get("timestamp") for e in entries])
    x = _column([e.get("x") for e in entries])
    y = _column([e.get("y") for e in entries])
    timed = np.isfinite(t)
    if not timed.any():
        return None, np.zeros((0, 3))
    first, last = float(t[timed].min()), float(t[timed].max())
    window = (int(round(first * 1000.0)), int(round(last * 1000.0)))
    usable = timed & np.isfinite(x) & np.isfinite(y)
    rows = np.column_stack((np.round(t[usable] * 1000.0), x[usable], y[usable]))
    return window, rows[np.argsort(rows[:, 0], kind="stable")]


def _column(values: List[Any]) -> np.ndarray:
    """
    JSON values as floats: a number (not a boolean) within
    +-L{MAX_ABS_NUMBER} as itself, anything else as NaN.
    """
    return np.array([v if _is_number(v) else _NAN for v in values], dtype=float)


def _is_number(v: Any) -> bool:
    return (
        isinstance(v, (float, int))
        and not isinstance(v, bool)
        and -MAX_ABS_NUMBER <= v <= MAX_ABS_NUMBER
    )


_NAN = float("nan")


def _as_gaze(copies: np.ndarray) -> np.ndarray:
    """
    Binocular records rebuilt from the client's copies (x, y and time only);
    the fallback when the server's buffer no longer holds a point's window.
    """
    batch = empty_gaze(len(copies))
    if len(copies):
        batch["system_time_us"] = copies[:, 0].astype(np.int64)
        for eye in ("left", "right"):
            batch[f"{eye}_x"], batch[f"{eye}_y"] = copies[:, 1], copies[:, 2]
            batch[f"{eye}_gaze_valid"] = True
    assert batch.dtype == GAZE_DTYPE
    return batch
