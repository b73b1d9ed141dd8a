# -*- test-case-name: tests.test_bulk -*-
"""
Large replies without stalling anyone: L{encode_samples} turns any number of
gaze records into the JSON array of a C{get_data} reply a slice at a time,
one slice per reactor turn, so the gaze streams of every client keep flowing
while a long range is encoded.  The result is spliced into the reply as
pre-encoded JSON (L{EncodedReply}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
from twisted.internet import defer

from jspsych_tobii.core.gaze import GazeView

#: Records encoded per reactor turn: about 1-2 ms of work.
SLICE = 400


@dataclass
class EncodedReply:
    """A reply whose C{key} holds JSON text that was encoded already."""

    key: str
    raw: bytes
    fields: dict = field(default_factory=dict)


def encode_samples(
    reactor: Any, chunks: Iterator[np.ndarray] | np.ndarray, slice_size: int = SLICE
) -> defer.Deferred:
    """
    Encode records as a JSON array, C{slice_size} per reactor turn.

    @param chunks: one array of GAZE_DTYPE records, or an iterator of them
        (for example successive reads from a recording), in time order.
    @return: a Deferred firing with C{(json_bytes, count)}.
    """
    if isinstance(chunks, np.ndarray):
        chunks = iter((chunks,))
    parts: list = []
    done: defer.Deferred = defer.Deferred()
    state = {"chunk": None, "at": 0, "count": 0}

    def step() -> None:
        try:
            while True:
                chunk = state["chunk"]
                if chunk is None or state["at"] >= len(chunk):
                    chunk = next(chunks, None)
                    if chunk is None:
                        done.callback((b"[" + b",".join(parts) + b"]", state["count"]))
                        return
                    state["chunk"], state["at"] = chunk, 0
                    continue
                piece = chunk[state["at"] : state["at"] + slice_size]
                state["at"] += len(piece)
                state["count"] += len(piece)
                parts.extend(GazeView(piece).encode_samples())
                reactor.callLater(0, step)
                return
        except Exception:
            done.errback()

    reactor.callLater(0, step)
    return done


def splice(reply: dict, encoded: EncodedReply, dumps: Callable[[dict], bytes]) -> bytes:
    """The reply's JSON with the pre-encoded value added under its key."""
    head = dumps(reply)
    assert head.endswith(b"}")
    key = dumps({encoded.key: None})[1:-5]  # '"key":'
    separator = b"," if len(head) > 2 else b""
    return head[:-1] + separator + key + encoded.raw + b"}"
