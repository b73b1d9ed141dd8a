# -*- test-case-name: tests.test_gate -*-
"""
L{SendGate}: the flow control between the server and one client socket.

Autobahn writes straight into the TCP transport, so a client that stops
reading would make the server buffer without bound.  The gate is registered
with the transport as a streaming producer: when the transport's buffer
fills, Twisted pauses it, and while paused the gate keeps a bounded backlog
of gaze frames (the oldest are dropped and counted) and the replies, which
are never dropped.  On resume it flushes the replies, then the gaze frames,
then tells the client how many frames it missed.  A client that lets replies
pile up past a limit (L{MAX_REPLY_BACKLOG} replies or
L{MAX_REPLY_BACKLOG_BYTES} bytes) is not reading at all: it is closed with
a close frame (1008, policy violation) and its backlog let go.  Pongs, which
Autobahn would write straight away for every ping, also pass the gate: while
it is paused only the newest is kept (as RFC 6455 allows), so a ping flood
from a client that does not read costs nothing.

Large replies are streamed (L{send_stream}): one WebSocket message sent as
a series of fragments, one fragment per reactor turn, only while the
transport takes data and no faster than L{STREAM_BYTES_PER_S}, so neither
encoding nor copying a large answer ever holds up the reactor, and its
burst does not crowd out the other clients' gaze.  Twisted's
L{task.Cooperator} takes the turns: each gate has one, scheduling with the
injected reactor and doing one unit of work per turn; a stream is a
L{task.CooperativeTask} that is paused and resumed with the gate, stopped
when the connection closes, and waits by itself for a piece made on
another thread, or for its pace (a Deferred).  One part stays by hand: a
piece that fails after the connection closed (the task already stopped)
is logged by the gate, since the Cooperator would try to complete the
stopped task a second time (and fail with AlreadyCalledError); for the
same reason a pace's wait is cancelled on close and never fires.
Streams go out one after another.  Nothing may be interleaved with a
fragmented message, so gaze frames and other replies for this client wait
in the backlog until it ends.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterator, List, Optional, Union

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from jspsych_tobii.core.gaze import dumps
from jspsych_tobii.logs import Logger

#: Gaze frames kept for a paused client: 2 s at 1200 Hz.
DEFAULT_GAZE_BACKLOG = 2400
#: Replies kept for a paused client before it is disconnected ...
MAX_REPLY_BACKLOG = 1000
#: ... or bytes of them.
MAX_REPLY_BACKLOG_BYTES = 64 * 1024 * 1024
#: The close code for a client that does not read: 1008, policy violation.
CLOSE_NOT_READING = 1008
#: Fastest a streamed message leaves, bytes per second: a 20 MB get_data
#: answer in ~175 ms (the target is 200).  Sent as fast as the socket took
#: it, the answer's burst (the server sending, the asker reading, both
#: cores busy) added a median of 2.4 to 3.4 ms to another client's longest
#: gaze gap on a 2-core machine; at 150 MB/s +2.16 and +2.33 ms; at this
#: pace +1.66 and +1.43 ms (bench/bench_get_data.py, which shows the same
#: for its floor: the same bytes from a process doing nothing else added
#: +2.3 to +3.5 ms at once, +0.03 to +0.54 ms spread out on a quiet machine).
STREAM_BYTES_PER_S = 120e6
#: A wait for the pace shorter than this is not taken (the reactor's timers
#: are whole milliseconds); the schedule makes it up at the next fragment.
STREAM_LEAST_WAIT_S = 0.001


@implementer(IPushProducer)
class SendGate:
    """
    @param channel: the connection, with C{send_prepared(prepared)} (a gaze
        frame framed once for all clients), C{send_prepared_batch(frames)}
        (several, in one write), C{send_bytes(payload)} (one text
        message), C{send_now(payload)} (one text message handed to the socket
        at once), C{begin_message()}, C{send_fragment(data)},
        C{end_message()} (a message in fragments), C{send_pong(payload)},
        C{send_close(code, reason)} (a close frame) and C{abort()}.
    @param reactor: provides C{callLater}, with which the gate's cooperator
        streams a fragment per turn.
    """

    log = Logger()

    def __init__(
        self,
        channel: Any,
        reactor: IReactorTime,
        peer: str = "?",
        gaze_backlog: int = DEFAULT_GAZE_BACKLOG,
        stream_rate: float = STREAM_BYTES_PER_S,
    ):
        self._channel = channel
        self._reactor = reactor
        self._stream_rate = stream_rate
        self._pace: Optional[IDelayedCall] = None  # a stream waiting for its pace
        self.peer = peer
        self.paused = False  # by the transport: its buffer is full
        self.closed = False
        self._gaze: collections.deque = collections.deque(maxlen=gaze_backlog)
        self._replies: collections.deque = collections.deque()
        self._reply_bytes = 0
        self._pong: Optional[bytes] = None  # the newest ping's, while paused
        self._streams: collections.deque = collections.deque()  # (pieces, deferred) waiting
        self._stream: Optional[defer.Deferred] = None  # fires when the current message is out
        self._sending: Optional[task.CooperativeTask] = None  # sending that message's pieces
        # one unit of work (one fragment) per reactor turn
        self._turns = task.Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda work: reactor.callLater(0, work),
        )
        self.dropped = 0  # gaze frames dropped, in all
        self._dropped_unreported = 0
        self.sent_gaze = 0

    @property
    def _held(self) -> bool:
        """Nothing else may go out now."""
        return self.paused or self._stream is not None

    # -- sending

    def send_gaze(self, prepared: Any) -> None:
        if self.closed:
            return
        # (self._held, inlined: this runs for every frame and client)
        if self.paused or self._stream is not None or self._gaze:
            self._keep(prepared)
            return
        self.sent_gaze += 1
        self._channel.send_prepared(prepared)

    def send_gaze_batch(self, frames: List[Any]) -> None:
        """
        Several gaze frames at once (a tracker handed over a batch): in one
        write, as one piece of data for the socket, when nothing holds them.
        """
        if self.closed:
            return
        if self.paused or self._stream is not None or self._gaze:
            for prepared in frames:
                self._keep(prepared)
            return
        self.sent_gaze += len(frames)
        self._channel.send_prepared_batch(frames)

    def _keep(self, prepared: Any) -> None:
        """Keep a gaze frame for later, dropping the oldest kept when full."""
        if len(self._gaze) == self._gaze.maxlen:
            self.dropped += 1
            self._dropped_unreported += 1
            if self._dropped_unreported == 1:
                self.log.warn(
                    "client {peer} is not reading fast enough; dropping gaze frames",
                    peer=self.peer,
                )
        self._gaze.append(prepared)

    def send_message(self, message: dict) -> None:
        self.send_bytes(dumps(message))

    def send_bytes(self, payload: bytes) -> None:
        if self.closed:
            return
        if self._held or self._replies:
            self._queue_reply(payload)
            return
        self._channel.send_bytes(payload)

    def send_clocked(self, render: Callable[[], bytes], size: int = 256) -> None:
        """
        A reply that carries the time it is sent (C{time_sync}'s
        C{serverTime}): C{render()} makes its text at the last moment, and
        it is handed to the socket at once, ahead of any gaze frames waiting
        here.  Only what must stay in order goes first: earlier replies, and
        a message being streamed (nothing may interleave with its fragments).
        While the client is not reading, it waits with the other replies,
        counted as C{size} bytes, and is rendered when it goes out.
        """
        if self.closed:
            return
        if self._held or self._replies:
            self._queue_reply(_ClockedReply(render, size))
            return
        self._channel.send_now(render())

    def _queue_reply(self, payload: Any) -> None:
        if (
            len(self._replies) >= MAX_REPLY_BACKLOG
            or self._reply_bytes + len(payload) > MAX_REPLY_BACKLOG_BYTES
        ):
            self._not_reading()
            return
        self._replies.append(payload)
        self._reply_bytes += len(payload)

    def send_pong(self, payload: bytes) -> None:
        """Answer a ping: now, or, while paused, with the newest ping's payload on resume."""
        if self.closed:
            return
        if self.paused:
            self._pong = payload
            return
        self._channel.send_pong(payload)

    def _not_reading(self) -> None:
        n, size = len(self._replies), self._reply_bytes
        self.log.warn(
            "client {peer} stopped reading ({n} replies, {mb:.1f} MB pending); closing it",
            peer=self.peer,
            n=n,
            mb=size / 1e6,
        )
        self.close()
        self._channel.send_close(
            CLOSE_NOT_READING,
            f"not reading: {n} replies ({size} bytes) waited, at most "
            f"{MAX_REPLY_BACKLOG} ({MAX_REPLY_BACKLOG_BYTES} bytes)",
        )

    def send_stream(self, pieces: Iterator[Union[bytes, defer.Deferred]]) -> defer.Deferred:
        """
        Send the pieces as one text message, a fragment per reactor turn;
        the pieces are produced (encoded) lazily, one per turn.  A piece may
        be a Deferred instead of bytes: the next piece is not ready (it is
        made on another thread), and is asked for once the Deferred fires.
        Fires when the message is sent, fails if the connection closed
        first.
        """
        d: defer.Deferred = defer.Deferred()
        if self.closed:
            d.errback(ConnectionError("the connection is closed"))
            return d
        self._streams.append((pieces, d))
        self._next_stream()
        return d

    @property
    def backlog(self) -> int:
        return len(self._gaze) + len(self._replies)

    def close(self) -> None:
        self.closed = True
        self._gaze.clear()
        self._replies.clear()
        self._reply_bytes = 0
        self._pong = None
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.stop()  # (see _stream_ended)
        pace, self._pace = self._pace, None
        if pace is not None and pace.active():
            pace.cancel()  # (its Deferred never fires: the stopped task stays paused)
        pending = ([self._stream] if self._stream else []) + [d for _, d in self._streams]
        self._stream = None
        self._streams.clear()
        for d in pending:
            d.errback(ConnectionError("the connection closed"))

    # -- streaming

    def _next_stream(self) -> None:
        if self._stream is not None or not self._streams or self.paused or self.closed:
            return
        pieces, self._stream = self._streams.popleft()
        self._channel.begin_message()
        self._sending = self._turns.cooperate(self._fragments(pieces))
        self._sending.whenDone().addBoth(self._stream_ended)

    def _fragments(
        self, pieces: Iterator[Union[bytes, defer.Deferred]]
    ) -> Iterator[Optional[defer.Deferred]]:
        """
        One piece per unit of work: sent, or a Deferred for the task to wait
        for (the piece, made on another thread; or the pace: a piece leaves
        no sooner than L{STREAM_BYTES_PER_S} allows after the first).
        """
        started = self._reactor.seconds()
        sent = 0
        for piece in pieces:
            if isinstance(piece, defer.Deferred):
                yield piece.addErrback(self._piece_failed)
                continue
            if piece:
                wait = started + sent / self._stream_rate - self._reactor.seconds()
                if wait >= STREAM_LEAST_WAIT_S:
                    paced: defer.Deferred[None] = defer.Deferred()
                    self._pace = self._reactor.callLater(wait, paced.callback, None)
                    yield paced
                    self._pace = None
                self._channel.send_fragment(piece)
                sent += len(piece)
            yield None

    def _stream_ended(self, result: object) -> None:
        self._sending = None
        if isinstance(result, Failure):
            # stopped by close(), which fails the stream's Deferred; or a piece
            # raised or failed
            if not result.check(task.TaskStopped):
                self._broken(result)
            return
        d, self._stream = self._stream, None
        self._channel.end_message()
        assert d is not None
        d.callback(None)
        self._flush()
        self._next_stream()

    def _piece_failed(self, failure: Failure) -> Optional[Failure]:
        """
        A piece failed instead of coming: the task fails with it (see
        L{_stream_ended}), unless close() stopped the task while it waited;
        a stopped task must not be completed again, so it is logged here.
        """
        if not self.closed:
            return failure
        self._broken(failure)
        return None

    def _broken(self, failure: Failure) -> None:
        # the producer promised to end its JSON itself; this is a bug
        self.log.failure("streaming a reply to {peer}", failure, peer=self.peer)
        if not self.closed:
            self.close()  # (the stream's Deferred fails: the reply was not sent)
            self._channel.abort()

    # -- IPushProducer

    def pauseProducing(self) -> None:
        if not self.paused and self._sending is not None:
            self._sending.pause()
        self.paused = True

    def resumeProducing(self) -> None:
        was_paused, self.paused = self.paused, False
        self._send_pong()
        if self._stream is not None:
            if was_paused and self._sending is not None:
                self._sending.resume()
        else:
            self._flush()
            self._next_stream()

    def stopProducing(self) -> None:
        self.close()

    def _send_pong(self) -> None:
        # a control frame: it may go out between the fragments of a stream
        if self._pong is not None and not self.paused and not self.closed:
            pong, self._pong = self._pong, None
            self._channel.send_pong(pong)

    def _flush(self) -> None:
        # The transport may pause us again from inside a write.
        self._send_pong()
        while self._replies and not self._held and not self.closed:
            payload = self._replies.popleft()
            self._reply_bytes -= len(payload)
            if isinstance(payload, _ClockedReply):  # rendered now, as it goes out
                self._channel.send_now(payload.render())
            else:
                self._channel.send_bytes(payload)
        while self._gaze and not self._held and not self.closed:
            self.sent_gaze += 1
            self._channel.send_prepared(self._gaze.popleft())
        if self._dropped_unreported and not self._gaze and not self._held and not self.closed:
            dropped, self._dropped_unreported = self._dropped_unreported, 0
            self.log.warn(
                "client {peer} is reading again; {n} gaze frames were dropped for it",
                peer=self.peer,
                n=dropped,
            )
            self._channel.send_bytes(
                dumps(
                    {
                        "type": "stream_status",
                        "status": "frames_dropped",
                        "dropped": dropped,
                        "droppedTotal": self.dropped,
                        "message": f"{dropped} gaze frames were dropped because this client "
                        "did not read them in time; get_data can fetch them from the buffer",
                    }
                )
            )


class _ClockedReply:
    """A reply of L{SendGate.send_clocked} waiting: rendered when it is sent."""

    __slots__ = ("render", "size")

    def __init__(self, render: Callable[[], bytes], size: int):
        self.render = render
        self.size = size

    def __len__(self) -> int:
        return self.size
