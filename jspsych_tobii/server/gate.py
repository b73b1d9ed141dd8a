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
pile up past a limit is disconnected: it is not reading at all.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from jspsych_tobii.core.gaze import dumps
from jspsych_tobii.logs import Logger

#: Gaze frames kept for a paused client: 2 s at 1200 Hz.
DEFAULT_GAZE_BACKLOG = 2400
#: Replies kept for a paused client before it is disconnected.
MAX_REPLY_BACKLOG = 1000


@implementer(IPushProducer)
class SendGate:
    """
    @param send_prepared: sends a prepared gaze message (Autobahn's
        C{sendPreparedMessage}).
    @param send_bytes: sends one text message (C{sendMessage}).
    @param abort: drops the connection.
    """

    log = Logger()

    def __init__(
        self,
        send_prepared: Callable[[Any], None],
        send_bytes: Callable[[bytes], None],
        abort: Callable[[], None],
        peer: str = "?",
        gaze_backlog: int = DEFAULT_GAZE_BACKLOG,
    ):
        self._send_prepared = send_prepared
        self._send_bytes = send_bytes
        self._abort = abort
        self.peer = peer
        self.paused = False
        self.closed = False
        self._gaze: collections.deque = collections.deque(maxlen=gaze_backlog)
        self._replies: collections.deque = collections.deque()
        self.dropped = 0  # gaze frames dropped, in all
        self._dropped_unreported = 0
        self.sent_gaze = 0

    # -- sending

    def send_gaze(self, prepared: Any) -> None:
        if self.closed:
            return
        if self.paused or self._gaze:
            if len(self._gaze) == self._gaze.maxlen:
                self.dropped += 1
                self._dropped_unreported += 1
                if self._dropped_unreported == 1:
                    self.log.warn(
                        "client {peer} is not reading fast enough; dropping gaze frames",
                        peer=self.peer,
                    )
            self._gaze.append(prepared)
            return
        self.sent_gaze += 1
        self._send_prepared(prepared)

    def send_message(self, message: dict) -> None:
        self.send_bytes(dumps(message))

    def send_bytes(self, payload: bytes) -> None:
        if self.closed:
            return
        if self.paused or self._replies:
            if len(self._replies) >= MAX_REPLY_BACKLOG:
                self.log.warn(
                    "client {peer} stopped reading ({n} replies pending); disconnecting",
                    peer=self.peer,
                    n=len(self._replies),
                )
                self.close()
                self._abort()
                return
            self._replies.append(payload)
            return
        self._send_bytes(payload)

    @property
    def backlog(self) -> int:
        return len(self._gaze) + len(self._replies)

    def close(self) -> None:
        self.closed = True
        self._gaze.clear()
        self._replies.clear()

    # -- IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._flush()

    def stopProducing(self) -> None:
        self.close()

    def _flush(self) -> None:
        # The transport may pause us again from inside a write.
        while self._replies and not self.paused and not self.closed:
            self._send_bytes(self._replies.popleft())
        while self._gaze and not self.paused and not self.closed:
            self.sent_gaze += 1
            self._send_prepared(self._gaze.popleft())
        if self._dropped_unreported and not self._gaze and not self.paused and not self.closed:
            dropped, self._dropped_unreported = self._dropped_unreported, 0
            self.log.warn(
                "client {peer} is reading again; {n} gaze frames were dropped for it",
                peer=self.peer,
                n=dropped,
            )
            self._send_bytes(
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
