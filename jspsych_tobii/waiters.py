# -*- test-case-name: tests.test_waiters -*-
"""
L{Waiters}: the Deferreds of everyone waiting for one outcome, fired
together, once.

It serves what several callers may wait for at the same time: a connect
under way (a second C{connect()} joins the first), a shutdown (a second
C{disconnect()} waits for the first), a child process's hello or its end.
Whoever asks after the outcome is known gets it at once.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["Waiters"]

_PENDING = object()


class Waiters:
    """
    Deferreds waiting for one outcome.  L{fire} gives it to each of them, in
    the order they asked, and to everyone who asks later.
    """

    def __init__(self) -> None:
        self._waiting: List[defer.Deferred] = []
        self._outcome: Any = _PENDING

    @property
    def fired(self) -> bool:
        """Is the outcome known?"""
        return self._outcome is not _PENDING

    def wait(self) -> defer.Deferred:
        """A Deferred firing with the outcome (failing, for a L{Failure})."""
        if self._outcome is _PENDING:
            d: defer.Deferred = defer.Deferred()
            self._waiting.append(d)
            return d
        if isinstance(self._outcome, Failure):
            return defer.fail(self._outcome)
        return defer.succeed(self._outcome)

    def fire(self, outcome: Any) -> None:
        """
        Give C{outcome} (a value, or a L{Failure}) to every waiter.

        @raise defer.AlreadyCalledError: it was given before.
        """
        if self._outcome is not _PENDING:
            raise defer.AlreadyCalledError("these waiters were fired before")
        self._outcome = outcome
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)
