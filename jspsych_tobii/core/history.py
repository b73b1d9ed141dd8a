# -*- test-case-name: tests.test_history -*-
"""
L{session_range}: the get_data query, a tracking session's samples in a
time range, joined from the session's recording (the older ones) and the
in-memory L{GazeBuffer} (the newer ones).  Pure: the recorder is whatever
reads the recorded records back (L{FlushedGaze}), here the
L{SessionRecorder<jspsych_tobii.recording.writer.SessionRecorder>}.
"""

from __future__ import annotations

from typing import Iterator, Optional, Protocol

import numpy as np

from jspsych_tobii.core.buffer import GazeBuffer


class FlushedGaze(Protocol):
    """What reads a session's records back from its recording."""

    def query_chunks(
        self, start_us: Optional[int], end_us: Optional[int], chunk: int
    ) -> Iterator[np.ndarray]: ...


def session_range(
    recorder: Optional[FlushedGaze],
    buffer: GazeBuffer,
    start_us: Optional[int] = None,
    end_us: Optional[int] = None,
    chunk: int = 500,
) -> Iterator[np.ndarray]:
    """
    The records of the whole current session with C{start_us <=
    system_time_us <= end_us}, in time order and in chunks of at most
    C{chunk}: those older than the in-memory C{buffer} from the recording,
    the rest from the buffer.  The buffer must span more than the recorder's
    flush interval (10 000 samples is 8 s at 1200 Hz).

    What is in memory is copied now, before the first chunk is taken: the
    caller may take the chunks over many reactor turns while the buffer
    moves on, and the two parts must meet without a gap.
    """
    oldest = buffer.oldest_time_us()
    recent = None
    if oldest is not None and (end_us is None or end_us >= oldest):
        recent = buffer.query(oldest if start_us is None else max(start_us, oldest), end_us)
    older: Iterator[np.ndarray] = iter(())
    if recorder is not None and (oldest is None or start_us is None or start_us < oldest):
        if oldest is None:
            file_end = end_us
        else:
            file_end = oldest - 1 if end_us is None else min(end_us, oldest - 1)
        older = recorder.query_chunks(start_us, file_end, chunk)
    return _chain(older, recent, max(1, int(chunk)))


def _chain(
    older: Iterator[np.ndarray], recent: Optional[np.ndarray], step: int
) -> Iterator[np.ndarray]:
    yield from older
    if recent is not None:
        for i in range(0, len(recent), step):
            yield recent[i : i + step]
