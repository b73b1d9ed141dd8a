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

The worker threads keep the reactor's scheduling priority.  A lower one
(a nice value of 10, tried) made things worse: a worker holding the GIL was
preempted by the other busy processes and kept the reactor and the
tracker's threads from the GIL until it got a core back.  While a 20 MB
C{get_data} reply was encoded, another client's longest gap between gaze
frames grew by a median of +4.0 ms with it and +2.4 ms without
(bench/bench_get_data.py, 7 runs each).

A job in pure Python also holds the GIL, and would hold up the reactor far
longer than its share: each time the reactor thread gives the GIL up for
a system call (epoll, every socket write), it waits for the interpreter's
switch interval (5 ms by default) to get it back, so one turn that writes
to a few sockets takes tens of ms while a job runs (bench/bench_hostile.py,
C{validation_refused}).  While the pool runs, the switch interval is
L{SWITCH_INTERVAL_S}: the reactor, and a tracker's thread handing over a
sample, get the GIL back within about that.  0.1 ms rather than 0.5 ms took
the median added gap above from +2.5 to +1.9 ms (7 runs each) without
slowing the answer (a median of 125 ms against 136 ms).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

from jspsych_tobii.logs import Logger

#: Threads for heavy work; the machine's other core runs the reactor.
DEFAULT_THREADS = 2

#: The interpreter's switch interval while the pool runs, seconds: how long
#: a worker's Python code may keep the GIL from the reactor thread.
SWITCH_INTERVAL_S = 0.0001


class WorkerPool(service.Service):
    name = "work"  # type: ignore[assignment]  # Twisted declares it None

    log = Logger()

    def __init__(self, reactor: IReactorFromThreads, threads: int = DEFAULT_THREADS):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="jspsych-tobii-work")
        self._saved_interval: Optional[float] = None
        self._ours = 0.0

    def startService(self) -> None:
        super().startService()
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            self._saved_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            self._ours = sys.getswitchinterval()  # as the interpreter stores it
        self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        self._pool.stop()
        if self._saved_interval is not None:
            # the interpreter's own setting again, unless someone changed it since
            if sys.getswitchinterval() == self._ours:
                sys.setswitchinterval(self._saved_interval)
            self._saved_interval = None

    def run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        """Call C{f(*args, **kwargs)} on a worker thread; the Deferred fires on the reactor."""
        return threads.deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)
