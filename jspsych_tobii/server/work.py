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

On Linux, where each thread has its own scheduling priority, the worker
threads run at a lower one than the reactor (L{WORKER_NICE}): when the
cores are busy, the reactor and the tracker's threads, which wake up for
every sample, take a core from a long job at once instead of waiting for
their turn, so a job (encoding a 20 MB C{get_data} reply, say) does not
lengthen the gaps in other clients' gaze streams.

A job in pure Python also holds the GIL, and would hold up the reactor far
longer than its share: each time the reactor thread gives the GIL up for
a system call (epoll, every socket write), it waits for the interpreter's
switch interval (5 ms by default) to get it back, so one turn that writes
to a few sockets takes tens of ms while a job runs (bench/bench_hostile.py,
C{validation_refused}).  While the pool runs, the switch interval is
L{SWITCH_INTERVAL_S}: the reactor gets the GIL back within about that.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

from jspsych_tobii.logs import Logger

#: Threads for heavy work; the machine's other core runs the reactor.
DEFAULT_THREADS = 2
#: How much lower the worker threads' priority is than the reactor's: a
#: nice increment (Linux only; 0 leaves it as it is).
WORKER_NICE = 10

#: Whether this platform gives each thread a priority of its own (elsewhere
#: setpriority would change the whole process's).
_PER_THREAD_PRIORITY = sys.platform.startswith("linux")

#: The interpreter's switch interval while the pool runs, seconds: how long
#: a worker's Python code may keep the GIL from the reactor thread.
SWITCH_INTERVAL_S = 0.0005


class WorkerPool(service.Service):
    name = "work"  # type: ignore[assignment]  # Twisted declares it None

    log = Logger()

    def __init__(
        self, reactor: IReactorFromThreads, threads: int = DEFAULT_THREADS, nice: int = WORKER_NICE
    ):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="jspsych-tobii-work")
        self._nice = nice if _PER_THREAD_PRIORITY else 0
        self._lowered = threading.local()  # whether this worker thread's priority is set
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
        return threads.deferToThreadPool(self._reactor, self._pool, self._call, f, args, kwargs)

    def _call(self, f: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if self._nice and not getattr(self._lowered, "done", False):
            self._lowered.done = True
            self._lower_priority()
        return f(*args, **kwargs)

    def _lower_priority(self) -> None:
        """This thread's priority, L{WORKER_NICE} below what it inherited."""
        tid = threading.get_native_id()
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + self._nice))
        except OSError as e:
            self.log.warn("cannot lower a worker thread's priority: {error}", error=e)
