# -*- test-case-name: tests.test_history -*-
"""
L{session_range}: the get_data query, a tracking session's samples in a
time range, joined from the session's recording (the older ones) and the
in-memory L{GazeBuffer} (the newer ones); L{session_text_range}, the same
with what the recording holds as text already given as that text (for
get_data's reply); L{SessionSamples}: that query
bound to one session, with the time from which it answers whole (what a
validation reads its points' samples through).  Pure: the recorder is
whatever reads the recorded records back (L{FlushedGaze}), here the
L{SessionRecorder<jspsych_tobii.recording.writer.SessionRecorder>}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Protocol, Tuple, Union

import numpy as np

from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.core.gaze import EncodedSamples

#: A piece of L{session_text_range}'s answer: records, or samples encoded already.
Chunk = Union[np.ndarray, EncodedSamples]


class FlushedGaze(Protocol):
    """What reads a session's records back from its recording."""

    def query_chunks(
        self, start_us: Optional[int], end_us: Optional[int], chunk: int
    ) -> Iterator[np.ndarray]: ...


class FlushedText(FlushedGaze, Protocol):
    """A recorder that may also give the recorded samples as their text."""

    def text_until_us(self) -> Optional[int]:
        """The C{system_time_us} up to which every sample's text is kept, if any."""
        ...

    def query_text_chunks(
        self, start_us: Optional[int], end_us: Optional[int], chunk: int
    ) -> Iterator[Chunk]: ...


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
    recent, from_file, file_end = _split(recorder, buffer, start_us, end_us, limit)
    older = (
        recorder.query_chunks(start_us, file_end, chunk)
        if recorder is not None and from_file
        else ()
    )
    return _chain(iter(older), recent, max(1, int(chunk)))


def session_text_range(
    recorder: Optional[FlushedText],
    buffer: GazeBuffer,
    start_us: Optional[int] = None,
    end_us: Optional[int] = None,
    chunk: int = 500,
) -> Iterator[Chunk]:
    """
    L{session_range} for a caller that only sends the samples on: what the
    recording holds as text already comes as L{EncodedSamples} (also what
    memory still holds: the text is read rather than the records encoded),
    the rest as records.
    """
    until = None if recorder is None else recorder.text_until_us()
    recent, from_file, file_end = _split(recorder, buffer, start_us, end_us, None, until)
    older = (
        recorder.query_text_chunks(start_us, file_end, chunk)
        if recorder is not None and from_file
        else ()
    )
    return _chain(iter(older), recent, max(1, int(chunk)))


def _split(
    recorder: Optional[FlushedGaze],
    buffer: GazeBuffer,
    start_us: Optional[int],
    end_us: Optional[int],
    limit: Optional[int],
    file_until_us: Optional[int] = None,
) -> Tuple[Optional[np.ndarray], bool, Optional[int]]:
    """
    The buffer's part of the range, copied now; whether the recording holds
    part of it; and where that part ends (None: no end).  The recording's
    part ends where the buffer's begins: at the buffer's oldest sample, or
    after C{file_until_us} if that is later (the recording is preferred up
    to there).
    """
    seam = buffer.oldest_time_us()
    if seam is not None and recorder is not None and file_until_us is not None:
        seam = max(seam, file_until_us + 1)
    recent = None
    if seam is not None and (end_us is None or end_us >= seam):
        start = seam if start_us is None else max(start_us, seam)
        recent = buffer.query(start, end_us, limit)
    if recorder is None or not (seam is None or start_us is None or start_us < seam):
        return recent, False, None
    if seam is None:
        return recent, True, end_us
    return recent, True, seam - 1 if end_us is None else min(end_us, seam - 1)


def _chain(older: Iterator[Any], recent: Optional[np.ndarray], step: int) -> Iterator[Any]:
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
