# -*- test-case-name: tests.test_child_process -*-
"""
L{SDKProcessProtocol}: the server's end of the pipes of one SDK process.

It reads frames (L{jspsych_tobii.trackers.child.wire}) from the child's
stdout, writes requests to its stdin and matches the replies by id, waits
for the child's hello and checks it, relays the child's stderr lines into
the server's log (keeping the last ones for when it dies), and kills a
child that writes garbage to its frame pipe or does not say hello in time.
What the child says beyond that (gaze, info, user positions,
notifications) and its end go to whoever started it, an L{IChildEvents}.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Deque, Dict, Optional

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Interface

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.child.wire import (
    GAZE,
    PROTOCOL,
    FrameDecoder,
    WireError,
    decode_message,
    encode_message,
    error_from_wire,
    same_dtype,
)
from jspsych_tobii.waiters import Waiters

__all__ = ["IChildEvents", "SDKProcessProtocol"]

_log = Logger()

#: The levels the child puts at the start of each stderr line.
_LEVELS = {"debug": _log.debug, "info": _log.info, "warn": _log.warn, "error": _log.error}
_LEVELS["critical"] = _log.critical


class IChildEvents(Interface):
    """What the pipes of an SDK process report to the one who started it."""

    def gazeReceived(process: SDKProcessProtocol, payload: bytearray) -> None:
        """
        A gaze frame's payload (raw L{GAZE_DTYPE} records, not yet checked),
        after the hello.
        """

    def messageReceived(process: SDKProcessProtocol, kind: Any, message: dict) -> None:
        """A message that is neither a reply nor the hello, after the hello."""

    def processEnded(process: SDKProcessProtocol, reason: Failure) -> None:
        """The process ended (C{reason}: Twisted's L{Failure} of its exit)."""


class SDKProcessProtocol(protocol.ProcessProtocol):
    """
    The pipes of one SDK process.

    @param reactor: provides C{callLater}.
    @param clock_us: the server's microsecond clock (when it started).
    @param events: the L{IChildEvents} to tell.
    @param startTimeout: seconds the child has to say hello.
    @param tail_lines: how many of its last stderr lines to keep.

    @ivar hello: the child's hello, once it said a valid one.
    @ivar pid: its process id.
    @ivar startedAt: when it started, µs on C{clock_us}.
    @ivar ended: whether it ended.
    @ivar tail: its last stderr lines.
    @ivar brokenWire: why it was killed for writing garbage, if it was.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        clock_us: MicrosecondClock,
        events: IChildEvents,
        startTimeout: float,
        tail_lines: int = 20,
    ):
        self._reactor = reactor
        self._events = events
        self.startTimeout = startTimeout
        self.decoder = FrameDecoder()
        self.hello: Optional[dict] = None
        self.pid: Optional[int] = None
        self.startedAt = clock_us()
        self.ended = False
        self.tail: Deque[str] = collections.deque(maxlen=tail_lines)
        self.brokenWire: Optional[str] = None
        self._lastProblem = ""
        self._ids = itertools.count(1)
        self._pending: Dict[int, defer.Deferred] = {}
        self._ready = Waiters()
        self._end = Waiters()
        self._partialLine = b""
        self._helloTimer: Optional[IDelayedCall] = None

    # -- Twisted's side

    @property
    def _process(self) -> IProcessTransport:
        """The process's transport (given at once by C{spawnProcess})."""
        if self.transport is None:
            raise RuntimeError("the SDK process was not started")
        return self.transport

    def connectionMade(self) -> None:
        self.pid = self._process.pid
        self._helloTimer = self._reactor.callLater(self.startTimeout, self._helloTimedOut)

    def outReceived(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except WireError as e:
            self.breakWire(str(e))
            return
        for kind, payload in frames:
            if kind == GAZE:
                if self.hello is not None:
                    self._events.gazeReceived(self, payload)
                continue
            try:
                message = decode_message(payload)
            except WireError as e:
                self.breakWire(str(e))
                return
            self._message(message)

    def errReceived(self, data: bytes) -> None:
        lines = (self._partialLine + data).split(b"\n")
        self._partialLine = lines.pop()
        if len(self._partialLine) > 4096:  # no newline in sight: take it as a line
            lines.append(self._partialLine)
            self._partialLine = b""
        for line in lines:
            self._line(line)

    def processEnded(self, reason: Failure) -> None:
        if self._partialLine:
            self._line(self._partialLine)
            self._partialLine = b""
        self.ended = True
        if self._helloTimer is not None and self._helloTimer.active():
            self._helloTimer.cancel()
        self._events.processEnded(self, reason)
        self._end.fire(None)

    # -- requests and the process's life

    def request(self, op: str, **args: Any) -> defer.Deferred:
        """Ask the child to run C{op}; fires with its result, or fails with L{TrackerError}."""
        if self.ended:
            return defer.fail(TrackerError("the SDK process is not running"))
        request_id = next(self._ids)
        d: defer.Deferred = defer.Deferred()
        self._pending[request_id] = d
        self._process.write(
            encode_message({"type": "request", "id": request_id, "op": op, "args": args})
        )
        return d

    def whenReady(self) -> defer.Deferred:
        """Fires with this protocol once the child said hello."""
        if self.ended and not self._ready.fired:
            return defer.fail(TrackerError("the SDK process is not running"))
        return self._ready.wait()

    def whenEnded(self) -> defer.Deferred:
        """Fires with None once the process ended."""
        return self._end.wait()

    def failAll(self, reason: TrackerError) -> None:
        """Fail every request awaiting a reply, and every wait for the hello."""
        pending, self._pending = self._pending, {}
        if not self._ready.fired:
            self._ready.fire(Failure(reason))
        for d in pending.values():
            d.errback(Failure(reason))

    def closeStdin(self) -> None:
        """End of file on its stdin: the child releases the tracker and exits."""
        self._process.closeStdin()

    def kill(self) -> None:
        try:
            self._process.signalProcess("KILL")
        except (error.ProcessExitedAlready, OSError):
            pass

    def breakWire(self, why: str) -> None:
        """The child wrote something that is not a frame: it cannot be trusted."""
        if self.brokenWire is None:
            self.brokenWire = why
            _log.error(
                "the SDK process wrote garbage to its frame pipe ({why}); killing it", why=why
            )
            self.kill()

    def lastLine(self) -> str:
        """
        The last warning or error line the child wrote to stderr (a line
        without a level counts as one; traceback frames do not).
        """
        return self._lastProblem

    # -- what the child says

    def _message(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "reply":
            request_id = message.get("id")
            d = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
            if d is None:
                return
            if "error" in message:
                d.errback(Failure(error_from_wire(message["error"] or {})))
            else:
                d.callback(message.get("result"))
        elif kind == "hello":
            self._hello(message)
        elif self.hello is not None:
            self._events.messageReceived(self, kind, message)

    def _hello(self, message: dict) -> None:
        if self._helloTimer is not None and self._helloTimer.active():
            self._helloTimer.cancel()
        if self._ready.fired:
            return
        if message.get("protocol") != PROTOCOL or not same_dtype(message.get("dtype")):
            from jspsych_tobii import __version__

            self._ready.fire(
                Failure(
                    TrackerError(
                        f"the SDK process speaks another wire protocol or gaze record layout "
                        f"(jspsych-tobii {message.get('package')} there, {__version__} here)"
                    )
                )
            )
            self.kill()
        else:
            self.hello = message
            self._ready.fire(self)

    def _helloTimedOut(self) -> None:
        self._helloTimer = None
        if self.hello is None and not self.ended:
            self.failAll(
                TrackerError(f"the SDK process did not start within {self.startTimeout:g} s")
            )
            self.kill()

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        level, _, rest = text.partition(" ")
        if level not in _LEVELS:
            level, rest = "warn", text
        if not rest.strip():
            return
        self.tail.append(rest)
        if level in ("warn", "error", "critical") and not rest.startswith(" "):
            self._lastProblem = rest.strip()
        _LEVELS[level]("SDK process {pid}: {text}", pid=self.pid, text=rest)
