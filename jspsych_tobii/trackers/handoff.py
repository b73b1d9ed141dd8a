# -*- test-case-name: tests.test_handoff -*-
"""
Hand-off of stream data from a foreign thread to the reactor.

A tracker SDK calls back on its own thread, often while holding a lock, and
swallows any exception raised there.  L{ThreadHandoff.put} is the only thing
such a callback should do: it appends an already-copied record to a deque and
schedules one C{callFromThread} if none is pending.  On the reactor,
L{ThreadHandoff._drain} clears the pending flag first, then empties the deque
and passes everything that arrived as one list to the consumer, so a burst of
samples costs one hand-off.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, List

from twisted.internet.interfaces import IReactorFromThreads


class ThreadHandoff:
    """
    @param reactor: provides C{callFromThread}.
    @param consumer: called on the reactor with a non-empty list of records.
    """

    def __init__(self, reactor: IReactorFromThreads, consumer: Callable[[List[Any]], Any]):
        self._reactor = reactor
        self._consumer = consumer
        self._items: collections.deque = collections.deque()
        self._pending = False
        self._lock = threading.Lock()
        self.handoffs = 0
        self.items = 0

    def put(self, item: Any) -> None:
        """Called on any thread.  Never raises for a closed reactor."""
        self._items.append(item)
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            self._reactor.callFromThread(self._drain)
        except Exception:
            # The reactor is gone (shutdown); nothing can consume the data.
            with self._lock:
                self._pending = False

    def _drain(self) -> None:
        with self._lock:
            self._pending = False
        items = self._items
        batch = []
        popleft = items.popleft
        while items:
            batch.append(popleft())
        if batch:
            self.handoffs += 1
            self.items += len(batch)
            self._consumer(batch)
