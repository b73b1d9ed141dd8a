# -*- test-case-name: tests.test_bulk -*-
"""
Large replies without stalling anyone.  A C{get_data} answer can hold a
whole session (tens of MB); encoding it, or even joining it into one string,
would hold up the reactor for tens of ms.  L{reply_pieces} produces the
reply's JSON text in pieces, for
L{SendGate.send_stream<jspsych_tobii.server.gate.SendGate.send_stream>} to
send as the fragments of one WebSocket message.

Given a C{run} that calls a function on a worker thread, the samples are
read and encoded there, one slice of L{SLICE} at a time, each slice while
the previous one is being written: the reactor only hands finished text to
the socket, so a turn of its work stays short whatever the reply's size,
and the encoding (numpy, which lets go of the GIL for most of it) overlaps
the writing.  Without C{run}, a slice is encoded on the spot when its piece
is asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Union

import numpy as np
from twisted.internet import defer
from twisted.python.failure import Failure

from jspsych_tobii.core.gaze import EncodedSamples, dumps, encode_objects
from jspsych_tobii.core.history import Chunk
from jspsych_tobii.logs import Logger

#: Samples per slice (one piece of text, one WebSocket fragment, one job on
#: a worker thread): about 560 kB of JSON and 1-2 ms of encoding.
SLICE = 2000

#: Calls a function on a worker thread; the Deferred fires with its result
#: on the reactor (L{ClientSession.run_job}).
Runner = Callable[..., "defer.Deferred[Any]"]

#: A piece of the reply: its text, or a Deferred that fires (with nothing)
#: once the next piece is ready to be asked for.
Piece = Union[bytes, "defer.Deferred[None]"]

_log = Logger()


@dataclass
class StreamedReply:
    """
    A handler's answer whose C{key} is a long array of samples, streamed:
    C{chunks} are records, or samples encoded already.
    """

    chunks: Iterator[Chunk]
    key: str = "samples"
    fields: Dict[str, Any] = field(default_factory=dict)


def reply_pieces(
    head: Dict[str, Any],
    key: str,
    chunks: Iterator[Chunk],
    slice_size: int = SLICE,
    run: Optional[Runner] = None,
) -> Iterator[Piece]:
    """
    The JSON text of C{head} plus C{key}: an array of the samples in
    C{chunks}, then C{count} and C{success}, in pieces of at most
    C{slice_size} samples (a chunk encoded already is one piece, as it
    is).  If taking a chunk fails (a recording that cannot be read), the
    array ends there and the reply says C{success: false} with the error:
    the text is always one valid JSON object.

    @param run: calls a function on a worker thread (see L{Runner}); then
        C{chunks} is taken and encoded there, a slice ahead of what has been
        sent, and a piece that is not ready yet is a Deferred.  If the
        encoding itself fails (a bug), asking for the next piece raises.
    """
    slices = _SliceEncoder(chunks, slice_size)
    job = _Job(slices, run) if run is not None else None  # the first slice, at once
    opening = dumps(head)
    yield opening[:-1] + (b"," if len(opening) > 2 else b"") + json.dumps(key).encode() + b":["
    while True:
        if job is None:
            done = slices.encode_next()
        else:
            while not job.ready:
                yield job.wait()
            done = job.slice()
            if not done.last:
                job = job.next()  # the next slice, while this one is written
        if done.failure is not None:
            _log.failure("reading samples for a reply", done.failure)
        if done.text:
            yield done.text
        if done.last:
            break
    if done.failure is not None:
        error = json.dumps(f"could not read all samples: {done.failure.value}").encode()
        yield b'],"count":%d,"success":false,"error":%s}' % (done.total, error)
        return
    yield b'],"count":%d,"success":true}' % done.total


class _Slice(NamedTuple):
    """One slice's text, and what was known once it was made."""

    text: bytes
    total: int  # records in this and the earlier slices
    last: bool  # no slices after this one
    failure: Optional[Failure]  # (in the last slice) why the records ended early


class _SliceEncoder:
    """
    Takes records from C{chunks}, whatever their lengths, and encodes them
    a slice of C{size} at a time, each slice's text with its leading comma
    (but the first's).  A chunk of samples encoded already is a slice of its
    own.  Used by one thread at a time.
    """

    def __init__(self, chunks: Iterator[Chunk], size: int):
        self.chunks = chunks
        self.size = max(1, int(size))
        self.pending: List[np.ndarray] = []
        self.held = 0
        self.encoded: Optional[EncodedSamples] = None  # taken, after the records pending
        self.count = 0  # records encoded so far
        self.finished = False  # the chunks ended, or failed
        self.failure: Optional[Failure] = None  # why the chunks ended early

    def encode_next(self) -> _Slice:
        """The next slice (its text is empty if no records were left)."""
        while self.held < self.size and not self.finished and self.encoded is None:
            try:
                chunk = next(self.chunks, None)
            except Exception:
                self.failure = Failure()
                self.finished = True
                break
            if chunk is None:
                self.finished = True
            elif isinstance(chunk, EncodedSamples):
                if chunk.samples:
                    self.encoded = chunk
            elif len(chunk):
                self.pending.append(chunk)
                self.held += len(chunk)
        batch = self._take()
        text = b""
        if batch is not None:
            text = encode_objects(batch, b"," if self.count else b"")
            self.count += len(batch)
        elif self.encoded is not None:
            text = self.encoded.text if self.count else self.encoded.text[1:]
            self.count += self.encoded.samples
            self.encoded = None
        last = self.finished and not self.held and self.encoded is None
        return _Slice(text, self.count, last, self.failure if last else None)

    def _take(self) -> Optional[np.ndarray]:
        if not self.held:
            return None
        pending = self.pending
        batch = pending[0] if len(pending) == 1 else np.concatenate(pending)
        rest = batch[self.size :]
        self.pending = [rest] if len(rest) else []
        self.held = len(rest)
        return batch[: self.size]


class _Job:
    """The next slice's text, being made by C{run}."""

    def __init__(self, slices: _SliceEncoder, run: Runner):
        self._slices = slices
        self._run = run
        self.ready = False
        self._result: Union[_Slice, Failure, None] = None
        self._waiting: Optional[defer.Deferred[None]] = None
        run(slices.encode_next).addBoth(self._done)

    def _done(self, result: Union[_Slice, Failure]) -> None:
        if isinstance(result, Failure):
            # logged here too: the reply may have been given up already
            _log.failure("encoding samples for a reply", result)
        self.ready = True
        self._result = result
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def next(self) -> _Job:
        """The job for the slice after this one, started now."""
        return _Job(self._slices, self._run)

    def wait(self) -> defer.Deferred[None]:
        """Fires (with nothing) when the text is ready."""
        if self._waiting is None:
            self._waiting = defer.Deferred()
        return self._waiting

    def slice(self) -> _Slice:
        """The slice; raises what making it raised."""
        result = self._result
        if isinstance(result, Failure):
            result.raiseException()
        assert isinstance(result, _Slice)
        return result
