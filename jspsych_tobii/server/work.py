# -*- test-case-name: tests.test_work -*-
"""
L{WorkerPool}: where CPU-heavy, pure work runs, off the reactor.

Validation and calibration maths on large input, and decoding a large
request frame, take from tens of ms to seconds; on the reactor that would
freeze every client's gaze stream meanwhile.  They run here instead, on a
small thread pool the service owns (two threads: one busy client cannot
take them both, see L{ClientSession<jspsych_tobii.server.session.ClientSession>},
which gives each connection one job at a time).

A job must only read what it was given: its inputs are copied on the
reactor before it is queued (a slice of the gaze buffer, the points of a
validation) and nothing else touches them afterwards.  The result comes
back to the reactor through the Deferred that L{WorkerPool.run} returns.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

#: Threads for heavy work; the machine's other core runs the reactor.
DEFAULT_THREADS = 2


class WorkerPool(service.Service):
    name = "work"  # type: ignore[assignment]  # Twisted declares it None

    def __init__(self, reactor: IReactorFromThreads, threads: int = DEFAULT_THREADS):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="jspsych-tobii-work")

    def startService(self):
        super().startService()
        self._pool.start()

    def stopService(self):
        super().stopService()
        self._pool.stop()

    def run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        """Call C{f(*args, **kwargs)} on a worker thread; the Deferred fires on the reactor."""
        return threads.deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)
