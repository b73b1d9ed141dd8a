# -*- test-case-name: tests.test_intake -*-
"""
L{Intake}: how much of one connection's input the reactor parses per turn.

Twisted reads a socket 64 KiB at a time, and Autobahn parses every frame of
a read before it returns: ~1,500 small requests, or ~11,000 empty frames,
in one go, 25 to 75 ms of every client's gaze held up (each frame costs
Autobahn 7 to 20 us).  Instead, Autobahn's parser asks the connection's
L{Intake} before each step (a frame's header, or a piece of its payload:
two steps a frame), and after L{MAX_STEPS_PER_TURN} steps in one reactor
turn the rest of what was read waits, in Autobahn's buffer, for the next
turn; so does everything while the connection's session holds its input
(it has requests waiting to be answered, or a large frame being decoded).
While anything waits, the socket is not read: a client that sends faster
than this is slowed down by TCP, not held in the server's memory.  The
steps of a frame's payload take Twisted's reads whole (64 KiB each), so a
large message costs no more turns than it has reads.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: Parsing steps (a frame's header, a piece of a frame's payload) one
#: connection may take in one reactor turn: ~64 frames, 0.5 to 1.5 ms.
MAX_STEPS_PER_TURN = 128


@implementer(IPushProducer)
class Intake:
    """
    @param transport: the connection's transport (an C{IPushProducer}),
        paused while input waits.
    @param consume: parses what is buffered (Autobahn's C{consumeData}),
        asking L{may_step} before each step.
    @param reactor: for the next turn (C{callLater(0, ...)}).
    """

    def __init__(self, transport: Any, consume: Callable[[], None], reactor: Any):
        self._transport = transport
        self._consume = consume
        self._reactor = reactor
        self.steps = 0  # taken in this turn
        self.held = False  # by the session
        self.waiting = False  # buffered input stopped for a later turn
        self._paused = False  # the transport, by us
        self._turn: Optional[Any] = None
        self.stopped = False
        #: turns that ended with input left for a later one (the budget was spent)
        self.postponed = 0

    def may_step(self) -> bool:
        """
        Whether the parser may take one more step now; if not, what is
        buffered waits for a later turn, and the socket is not read meanwhile.
        """
        if self.stopped:
            return True
        if self.held or self.steps >= MAX_STEPS_PER_TURN:
            if not self.held and not self.waiting:
                self.postponed += 1
            self.waiting = True
            self._schedule()
            self._settle()
            return False
        self.steps += 1
        self._schedule()
        return True

    # the session's side: an IPushProducer's pause and resume

    def pauseProducing(self) -> None:
        """The session holds the input: no frame is parsed until it resumes."""
        if not self.stopped:
            self.held = True
            self._settle()

    def resumeProducing(self) -> None:
        """The session takes input again: what waits is parsed from the next turn."""
        if self.stopped or not self.held:
            return
        self.held = False
        if self.waiting:
            self._schedule()
        self._settle()

    def stopProducing(self) -> None:
        """The connection is gone."""
        self.stop(resume=False)

    def stop(self, resume: bool = True) -> None:
        """
        The connection failed (C{resume}: its socket is read again, what
        comes is dropped) or is gone: no more pacing.
        """
        self.stopped = True
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        if self._paused and resume:
            self._paused = False
            self._transport.resumeProducing()

    def _schedule(self) -> None:
        if self._turn is None:
            self._turn = self._reactor.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        self.steps = 0
        if self.waiting and not self.held:
            self.waiting = False
            self._consume()
        self._settle()

    def _settle(self) -> None:
        """The socket is read exactly when nothing waits and the session does not hold."""
        if self.stopped:
            return
        pause = self.held or self.waiting
        if pause != self._paused:
            self._paused = pause
            if pause:
                self._transport.pauseProducing()
            else:
                self._transport.resumeProducing()
