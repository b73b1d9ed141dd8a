# -*- test-case-name: tests.test_history -*-
"""
L{session_range}: the get_data query, a tracking session's samples in a
time range, joined from the session's recording (the older ones) and the
in-memory L{GazeBuffer} (the newer ones); L{SessionSamples}: that query
bound to one session, with the time from which it answers whole (what a
validation reads its points' samples through).  Pure: the recorder is
whatever reads the recorded records back (L{FlushedGaze}), here the
L{SessionRecorder<jspsych_tobii.recording.writer.SessionRecorder>}.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    limit: Optional[int] = None,
) -> Iterator[np.ndarray]:
    """
    The records of the whole current session with C{start_us <=
    system_time_us <= end_us}, in time order and in chunks of at most
    C{chunk}: those older than the in-memory C{buffer} from the recording,
    the rest from the buffer.  The buffer must span more than the recorder's
    flush interval (10 000 samples is 8 s at 1200 Hz).

    What is in memory is copied now, before the first chunk is taken: the
    caller may take the chunks over many reactor turns while the buffer
    moves on, and the two parts must meet without a gap.  With C{limit},
    at most the first C{limit} records in memory are copied (a caller that
    wants no more than C{limit} records in all stops there).
    """
    oldest = buffer.oldest_time_us()
    recent = None
    if oldest is not None and (end_us is None or end_us >= oldest):
        start = oldest if start_us is None else max(start_us, oldest)
        recent = buffer.query(start, end_us, limit)
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


@dataclass(frozen=True)
class SessionSamples:
    """
    The get_data query over one tracking session's recording and buffer.

    @ivar whole_from_us: the sample-clock time from which L{range} answers
        every sample of the session (the buffer's oldest sample, or the
        session's start when the buffer or a whole recording holds all of
        it); None when there is nothing to answer.
    """

    recorder: Optional[FlushedGaze]
    buffer: GazeBuffer
    whole_from_us: Optional[int]

    @classmethod
    def in_memory(cls, buffer: GazeBuffer) -> "SessionSamples":
        """The buffer alone: whole from its oldest sample."""
        return cls(None, buffer, buffer.oldest_time_us())

    def holds(self, start_us: int) -> bool:
        """Whether L{range} answers every sample of the session from C{start_us}."""
        return self.whole_from_us is not None and start_us >= self.whole_from_us

    def range(
        self,
        start_us: Optional[int],
        end_us: Optional[int],
        chunk: int = 500,
        limit: Optional[int] = None,
    ) -> Iterator[np.ndarray]:
        """L{session_range} over this session (the buffer's part is copied now)."""
        return session_range(self.recorder, self.buffer, start_us, end_us, chunk, limit)
