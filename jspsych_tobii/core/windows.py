# -*- test-case-name: tests.test_windows -*-
"""
Which samples belong to a validation point: the part of its time span that
is used (L{window_bounds_us}, L{select_window}).  The span itself is what
the client's own copies cover (L{ClientCopies
<jspsych_tobii.core.validation.ClientCopies>}).  Plain numpy.
"""

from __future__ import annotations

import numpy as np

#: Samples dropped at the start of a validation point's window, while the
#: participant's eyes land on the target.
DEFAULT_SKIP_INITIAL_MS = 300.0


def window_bounds_us(
    start_us: int,
    end_us: int,
    skip_initial_ms: float = DEFAULT_SKIP_INITIAL_MS,
    last_ms: float = 0.0,
) -> tuple[int, int]:
    """
    The part of a point's time span C{[start_us, end_us]} whose samples are
    used: from C{skip_initial_ms} after its start (the saccade to the
    target) to its end; with C{last_ms} > 0, only the last C{last_ms} of the
    span (as Titta does: 500 ms in MATLAB, 300 ms in Python), still never
    reaching into the skipped start.  The first bound may exceed the second:
    then the window is empty.
    """
    first = int(start_us) + round(float(skip_initial_ms) * 1000.0)
    last = int(end_us)
    if last_ms > 0:
        first = max(first, last - round(float(last_ms) * 1000.0))
    return first, last


def select_window(
    samples: np.ndarray,
    start_us: int,
    end_us: int,
    skip_initial_ms: float = DEFAULT_SKIP_INITIAL_MS,
    last_ms: float = 0.0,
) -> np.ndarray:
    """
    The samples whose C{system_time_us} lies in the window
    L{window_bounds_us} gives (both ends included), from an array sorted by
    C{system_time_us}.  Returns a view (an empty one when the window is
    empty).
    """
    first, last = window_bounds_us(start_us, end_us, skip_initial_ms, last_ms)
    if len(samples) == 0 or first > last:
        return samples[:0]
    times = samples["system_time_us"]
    lo = int(np.searchsorted(times, first, side="left"))
    hi = int(np.searchsorted(times, last, side="right"))
    return samples[lo:hi]
