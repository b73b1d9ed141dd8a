# -*- test-case-name: tests.test_bulk -*-
"""
Large replies without stalling anyone.  A C{get_data} answer can hold a
whole session (tens of MB); encoding it, or even joining it into one string,
would hold up the reactor for tens of ms.  L{reply_pieces} produces the
reply's JSON text lazily, one slice of samples per piece, for
L{SendGate.send_stream<jspsych_tobii.server.gate.SendGate.send_stream>} to
send a piece per reactor turn as the fragments of one WebSocket message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from jspsych_tobii.core.gaze import dumps, encode_objects
from jspsych_tobii.logs import Logger

#: Samples encoded per piece (per reactor turn): about 0.5 ms of work.
SLICE = 500

_log = Logger()


@dataclass
class StreamedReply:
    """A handler's answer whose C{key} is a long array of samples, streamed."""

    chunks: Iterator[np.ndarray]
    key: str = "samples"
    fields: dict = field(default_factory=dict)


def reply_pieces(
    head: dict, key: str, chunks: Iterator[np.ndarray], slice_size: int = SLICE
) -> Iterator[bytes]:
    """
    The JSON text of C{head} plus C{key}: an array of the samples in
    C{chunks}, then C{count} and C{success}, in pieces of at most
    C{slice_size} samples.  If taking a chunk fails (a recording that cannot
    be read), the array ends there and the reply says C{success: false} with
    the error: the text is always one valid JSON object.
    """
    opening = dumps(head)
    yield opening[:-1] + (b"," if len(opening) > 2 else b"") + dumps(key) + b":["
    count = 0
    slices = _Slices(slice_size)
    failure = None
    try:
        for chunk in chunks:
            for piece in slices.feed(chunk):
                yield b"," + encode_objects(piece) if count else encode_objects(piece)
                count += len(piece)
    except Exception as e:
        _log.failure("reading samples for a reply")
        failure = e
    piece = slices.rest()
    if piece is not None:
        yield b"," + encode_objects(piece) if count else encode_objects(piece)
        count += len(piece)
    if failure is not None:
        error = json.dumps(f"could not read all samples: {failure}").encode()
        yield b'],"count":%d,"success":false,"error":%s}' % (count, error)
        return
    yield b'],"count":%d,"success":true}' % count


class _Slices:
    """Records regrouped in slices of C{size}, whatever the chunks they come in."""

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self.pending: list = []
        self.held = 0

    def feed(self, chunk: np.ndarray) -> Iterator[np.ndarray]:
        while len(chunk):
            take = chunk[: self.size - self.held]
            chunk = chunk[len(take) :]
            self.pending.append(take)
            self.held += len(take)
            if self.held == self.size:
                yield self._take()

    def rest(self):
        return self._take() if self.held else None

    def _take(self) -> np.ndarray:
        pending, self.pending, self.held = self.pending, [], 0
        return pending[0] if len(pending) == 1 else np.concatenate(pending)
