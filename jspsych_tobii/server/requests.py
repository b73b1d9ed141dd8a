# -*- test-case-name: tests.test_requests -*-
"""
L{RequestRunner}: how one connection's frames become requests and replies,
whatever the requests do.

Each text frame is parsed with L{jspsych_tobii.core.messages} and handed to
the handler the connection names for its type (L{ClientSession
<jspsych_tobii.server.session.ClientSession>} holds them); exactly one reply
carrying the request's C{requestId} goes out, whether the handler returned
a dict, one of the reply kinds here (L{ClockedReply}, L{SplicedReply}, a
L{StreamedReply<jspsych_tobii.server.bulk.StreamedReply>}), a Deferred of
one, or failed.  A handler's failure never escapes: the client gets an
error reply and the connection stays usable.

What one connection can make the server do is bounded.  Its requests take
at most L{TURN_BUDGET_S} of a reactor turn (the rest wait for the next
turn).  A frame larger than L{DECODE_INLINE_BYTES} is decoded on a worker
thread (the connection's later frames wait for it; while frames wait, its
socket is not read), heavy maths runs there too, one job per connection at
a time, and at most L{MAX_PENDING_REPLIES} slow requests (L{SLOW_REQUESTS})
may await their replies at once.
"""

from __future__ import annotations

import collections
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure

from jspsych_tobii.core import messages
from jspsych_tobii.core.gaze import dumps
from jspsych_tobii.core.messages import Request, RequestError
from jspsych_tobii.core.timesync import ServerClock
from jspsych_tobii.core.validation import ClientCopies
from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.logs import Logger
from jspsych_tobii.server.bulk import StreamedReply, reply_pieces
from jspsych_tobii.server.calibration import CalibrationError
from jspsych_tobii.server.gate import SendGate

if TYPE_CHECKING:  # only for the annotations
    from jspsych_tobii.server.state import ServerState

#: What answers one request: its reply's fields (or a reply kind), or a
#: Deferred of them.
Handler = Callable[[Request, float], Any]


class ClockedReply:
    """
    A handler's answer with one field, C{key}, that is the server's time
    when the reply is written (C{time_sync}'s C{serverTime}): the reply is
    encoded once with a placeholder, and the time is put in at the last
    moment, just before the write (L{SendGate.send_clocked}).
    """

    _PLACEHOLDER = "\x00clocked"
    _ENCODED = json.dumps(_PLACEHOLDER).encode()

    def __init__(self, fields: dict, key: str):
        self.fields = fields
        self.key = key

    def renderer(self, request: Request, clock: ServerClock):
        """The reply's C{render()} (its text, with the time now) and its largest size."""
        message = messages.reply(request, **self.fields)
        message[self.key] = self._PLACEHOLDER
        # the placeholder is the last field written: a request id that
        # happens to hold the same text comes before it
        head, _, tail = dumps(message).rpartition(self._ENCODED)
        now_ms = clock.now_ms

        def render() -> bytes:
            # a float's repr is what json.dumps writes for it
            return head + repr(now_ms()).encode() + tail

        return render, len(head) + len(tail) + 24  # and its size, at most


#: Errors whose message is shown to the client as is; anything else is a bug,
#: logged with its traceback and reported as an internal error.
EXPECTED_ERRORS = (RequestError, TrackerError, CalibrationError, ValueError)

#: Frames larger than this are decoded on a worker thread (the C decoder
#: takes ~4 ms for 256 KiB; a 1 s validation point at 1200 Hz is ~360 KB).
DECODE_INLINE_BYTES = 256 * 1024
#: Time one connection's requests may take in one reactor turn: the frames
#: after that wait for the next turn, and its socket is not read meanwhile
#: (64 KB of tiny requests would otherwise take ~50 ms at once).
TURN_BUDGET_S = 0.005
#: Slow requests of one connection that may await their replies at once.
MAX_PENDING_REPLIES = 8
#: The requests that count against L{MAX_PENDING_REPLIES}: their replies
#: take tracker time, worker time, or a stream of the whole buffer.
SLOW_REQUESTS = frozenset(
    {
        "get_data",
        "validation_compute",
        "calibration_start",
        "calibration_point",
        "calibration_discard_point",
        "calibration_compute",
        "calibration_stop",
    }
)


class LargeMessage:
    """
    A message larger than L{DECODE_INLINE_BYTES} as the pieces it arrived
    in, joined on the worker that decodes it: joining 8 MB on the reactor
    took it 4 to 30 ms (the fresh memory's page faults; a virtual machine's
    are costly), bench/bench_hostile.py C{validation_refused}.
    """

    def __init__(self, pieces: List[bytes], size: int):
        self.pieces = pieces
        self.size = size

    def join(self) -> bytes:
        return b"".join(self.pieces)


Payload = Union[bytes, LargeMessage]


@dataclass
class SplicedReply:
    """A reply whose C{key} is an array of items already encoded as JSON."""

    key: str
    items: List[bytes]
    fields: dict = field(default_factory=dict)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _our_sentence(failure: Failure) -> bool:
    """
    Whether the failure's message is one this server wrote for the client:
    an expected error, with a message, raised by this package's code (a
    ValueError from Python or numpy is a bug, not a sentence for the client).
    """
    error = failure.value
    if not isinstance(error, EXPECTED_ERRORS) or not str(error):
        return False
    if not failure.frames:  # built, not raised: by our own code
        return True
    raised_in = os.path.abspath(failure.frames[-1][1])
    return raised_in.startswith(_PACKAGE + os.sep)


class RequestRunner:
    """
    One connection's incoming frames, answered in order within the bounds
    above.

    @param app: the shared server state: its reactor (the next turn), its
        clock (when a frame arrived; a L{ClockedReply}'s time) and its
        worker pool (L{run_job}).
    @param gate: this connection's L{SendGate}, where the replies go.
    @param peer: the connection's address, for the log.
    @param handler_for: the handler of a request type; it is asked only for
        the types L{jspsych_tobii.core.messages} accepts.
    @param reader: the connection's incoming side (the transport), paused
        while frames wait; or None.
    """

    log = Logger()

    def __init__(
        self,
        app: ServerState,
        gate: SendGate,
        peer: str,
        handler_for: Callable[[str], Handler],
        reader: Optional[IPushProducer] = None,
    ):
        self.app = app
        self.gate = gate
        self.peer = peer
        self.handler_for = handler_for
        self.reader = reader
        self.closed = False
        self.pending = 0  # requests whose reply is not yet handed to the gate
        self._decoding = False  # a frame is being decoded on a worker thread
        #: frames waiting for that decode, or for the next reactor turn
        self._inbox: collections.deque = collections.deque()
        self._jobs = defer.DeferredLock()  # this connection's worker jobs, one at a time
        #: measures the time spent answering (tests may replace it)
        self.work_clock: Callable[[], float] = time.perf_counter
        self._spent = 0.0  # in this reactor turn
        self._turn: Optional[IDelayedCall] = None  # starts the next turn's count
        self._reading_paused = False

    def handle(self, payload: Payload, is_binary: bool = False) -> Optional[defer.Deferred]:
        """Answer one frame; returns the Deferred of a pending reply, if any."""
        received_ms = self.app.clock.now_ms()
        if self._decoding or self._inbox or self._spent >= TURN_BUDGET_S:
            self._inbox.append((payload, is_binary, received_ms))
            self._pause_reading()
            return None
        return self._timed(payload, is_binary, received_ms)

    def _timed(
        self, payload: Payload, is_binary: bool, received_ms: float
    ) -> Optional[defer.Deferred]:
        started = self.work_clock()
        try:
            return self._handle(payload, is_binary, received_ms)
        finally:
            self._spent += self.work_clock() - started
            if self._turn is None and not self.closed:
                self._turn = self.app.reactor.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        self._spent = 0.0
        self._drain()

    def _pause_reading(self) -> None:
        if self.reader is not None and not self._reading_paused:
            self._reading_paused = True
            self.reader.pauseProducing()

    def _handle(
        self, payload: Payload, is_binary: bool, received_ms: float
    ) -> Optional[defer.Deferred]:
        if isinstance(payload, LargeMessage) or len(payload) > DECODE_INLINE_BYTES:
            self._decode_aside(payload, is_binary, received_ms)
            return None
        try:
            request = messages.parse_request(payload, is_binary)
        except RequestError as e:
            self._send_error(str(e), e.request_id, e.request_type)
            return None
        return self._dispatch(request, received_ms)

    def _decode_aside(self, payload: Payload, is_binary: bool, received_ms: float) -> None:
        """Decode a large frame on a worker thread; the frames after it wait."""
        self._decoding = True
        self._pause_reading()

        def decoded(request):
            self._decoding = False
            try:
                if not self.closed:
                    self._dispatch(request, received_ms)
            finally:
                self._drain()

        def failed(failure):
            self._decoding = False
            try:
                if failure.check(RequestError):
                    error = failure.value
                    self._send_error(str(error), error.request_id, error.request_type)
                else:
                    self.log.failure("{peer}: decoding a large frame", failure, peer=self.peer)
                    self._send_error(
                        "internal server error decoding a frame; the server's log has the details",
                        None,
                        None,
                    )
            finally:
                self._drain()

        self.run_job(decode_large, payload, is_binary).addCallbacks(decoded, failed)

    def _drain(self) -> None:
        """
        Answer the frames that waited, until another decode starts or this
        turn's budget is spent (then the next turn goes on).
        """
        while (
            self._inbox and not self._decoding and not self.closed and self._spent < TURN_BUDGET_S
        ):
            self._timed(*self._inbox.popleft())
        if not self._inbox and not self._decoding and not self.closed and self._reading_paused:
            self._reading_paused = False
            if self.reader is not None:
                self.reader.resumeProducing()

    def run_job(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        """
        Run C{f} on a worker thread, after this connection's earlier jobs: a
        connection uses one worker at a time, so no client can make another
        wait for more than one of its jobs.
        """
        work = self.app.work
        if work is None:
            return defer.maybeDeferred(f, *args, **kwargs)
        return self._jobs.run(work.run, f, *args, **kwargs)

    def _dispatch(self, request: Request, received_ms: float) -> Optional[defer.Deferred]:
        if request.type in SLOW_REQUESTS and self.pending >= MAX_PENDING_REPLIES:
            self._send_error(
                f"{request.type}: this connection already has {self.pending} requests in "
                f"progress (at most {MAX_PENDING_REPLIES}); wait for their replies",
                request.request_id,
                request.type,
            )
            return None
        handler = self.handler_for(request.type)
        try:
            result = handler(request, received_ms)
        except Exception:
            self._failed(Failure(), request)
            return None
        if isinstance(result, defer.Deferred):
            self.pending += 1
            result.addCallbacks(
                self._send_reply, self._failed, callbackArgs=(request,), errbackArgs=(request,)
            )
            result.addBoth(self._settled)
            return result
        self._send_reply(result, request)
        return None

    def _settled(self, result: Any) -> None:
        self.pending -= 1

    def _send_reply(self, fields, request: Request) -> Optional[defer.Deferred]:
        if self.closed:
            return None
        if isinstance(fields, StreamedReply):
            head = messages.reply(request, **fields.fields)
            # read and encoded on a worker thread, while the reactor writes
            pieces = reply_pieces(head, fields.key, fields.chunks, run=self.run_job)
            sent = self.gate.send_stream(pieces)
            # the request stays pending until its reply is out
            return sent.addErrback(self._unsent, request)
        if isinstance(fields, SplicedReply):
            spliced = dumps(messages.reply(request, **fields.fields))
            key = json.dumps(fields.key).encode()
            self.gate.send_bytes(
                spliced[:-1] + b"," + key + b":[" + b",".join(fields.items) + b"]}"
            )
            return None
        if isinstance(fields, ClockedReply):
            render, size = fields.renderer(request, self.app.clock)
            self.gate.send_clocked(render, size)
            return None
        self.gate.send_message(messages.reply(request, **fields))
        return None

    def _unsent(self, failure: Failure, request: Request) -> None:
        if failure.check(ConnectionError):
            self.log.info(
                "{peer}: the connection closed before its {type} reply was sent",
                peer=self.peer,
                type=request.type,
            )
        else:
            self.log.failure(
                "{peer}: sending the {type} reply", failure, peer=self.peer, type=request.type
            )

    def _failed(self, failure: Failure, request: Request) -> None:
        error = failure.value
        if _our_sentence(failure):
            text = str(error)
            self.log.info(
                "{peer}: {type} failed: {error}", peer=self.peer, type=request.type, error=text
            )
        else:
            self.log.failure(
                "{peer}: internal error handling {type}", failure, peer=self.peer, type=request.type
            )
            # the exception's text is Python's (or a library's), not ours to show
            text = (
                f"internal server error while handling {request.type}; "
                "the server's log has the details"
            )
        self._send_error(text, request.request_id, request.type)

    def _send_error(self, text: str, request_id: Any, request_type: Optional[str]) -> None:
        if not self.closed:
            self.gate.send_message(messages.error_reply(text, request_id, request_type))

    def close(self) -> None:
        """The connection is gone: release what it held."""
        self.closed = True
        self._inbox.clear()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None


def decode_large(payload: Payload, is_binary: bool) -> Request:
    """
    On a worker thread: join (a L{LargeMessage}) and decode a large frame so
    that the reactor thread can run meanwhile, and reduce a validation
    point's samples there too (the rest of its handling is then cheap, on
    the reactor).
    """
    if isinstance(payload, LargeMessage):
        payload = payload.join()
    request = messages.parse_request(payload, is_binary, yielding=True)
    if request.type == "validation_point":
        # the decoded samples are freed here too: freeing 40,000 dicts takes ms
        request.params["gaze_samples"] = ClientCopies.reduce(request.params["gaze_samples"])
        request.raw = {k: v for k, v in request.raw.items() if k != "gaze_samples"}
    return request
