# -*- test-case-name: tests.test_slices -*-
"""
L{ShortSlices}: the server's threads get a core soon after they wake.

The server's threads (the reactor, the tracker's, the Tobii SDK's) wake for
each sample or message, work for tens of microseconds and sleep again.  On a
busy machine (two cores, a browser, a client reading a 20 MB C{get_data}
answer) a thread that wakes may find both cores taken.  Linux's scheduler
(EEVDF, since 6.6) then lets the running task finish its time slice, by
default 0.7 ms times (1 + log2 of the cores), 1.4 ms on two cores, and with
several tasks queued a sample can wait a few of those.

Since Linux 6.12 a thread of the normal policies may ask for its own slice
(C{sched_setattr} with C{sched_runtime}, 0.1 to 100 ms, no privilege
needed).  A shorter slice gives the thread an earlier deadline, so the
scheduler picks it sooner when it wakes and lets it preempt a task running
on a longer slice; its share of the CPU stays what it was.  L{ShortSlices}
asks for L{SLICE_NS} for every thread of the process when the server starts;
threads and processes started later (the worker pool, the tracker's and the
SDK's threads, the C{--sdk-python} child) inherit it.  On stop the threads
still on that slice get back the one the process had.

With it, while a 20 MB C{get_data} answer was sent, another client's
longest gap between gaze frames grew by less (bench/bench_get_data.py, 9 runs
per series, series alternated with and without): medians +2.34, +2.04,
+2.34, +2.92, +2.92 and +1.85 ms against +2.69, +2.81, +1.94, +3.71, +3.60
and +2.66 ms; the answer took no longer.

Elsewhere (not Linux, an older kernel, a machine where the call is refused)
nothing changes and the log says why, once.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
import threading
from typing import Callable, Iterable, List, NamedTuple, Optional

from twisted.application import service

from jspsych_tobii.logs import Logger

#: The time slice asked for, ns: the shortest the kernel takes.
SLICE_NS = 100_000

#: The scheduling policies whose threads take a slice of their own
#: (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE); real-time threads are left alone.
FAIR_POLICIES = frozenset({0, 3, 5})

#: The one C{sched_flags} bit kept when a thread's attributes are written back.
SCHED_FLAG_RESET_ON_FORK = 0x01

#: (sched_setattr, sched_getattr) system call numbers, by machine.
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}


class Sched(NamedTuple):
    """A thread's scheduling attributes, as C{sched_getattr} reads them."""

    policy: int
    flags: int
    nice: int
    priority: int
    runtime: int  # ns; for the normal policies, the slice (0: the kernel's)


class _Attr(ctypes.Structure):
    # struct sched_attr up to sched_period (SCHED_ATTR_SIZE_VER0, 48 bytes)
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("policy", ctypes.c_uint32),
        ("flags", ctypes.c_uint64),
        ("nice", ctypes.c_int32),
        ("priority", ctypes.c_uint32),
        ("runtime", ctypes.c_uint64),
        ("deadline", ctypes.c_uint64),
        ("period", ctypes.c_uint64),
    ]


class SchedCalls:
    """
    C{sched_getattr} and C{sched_setattr} for one thread (a tid; 0 is the
    calling thread).  Both raise C{OSError} as the kernel fails them.
    Construction raises C{OSError(ENOSYS)} where they do not exist.
    """

    def __init__(self) -> None:
        numbers = _SYSCALLS.get(platform.machine()) if sys.platform == "linux" else None
        if numbers is None:
            raise OSError(errno.ENOSYS, f"no sched_setattr on {sys.platform} {platform.machine()}")
        self._set_nr, self._get_nr = numbers
        self._libc = ctypes.CDLL(None, use_errno=True)

    def get(self, tid: int) -> Sched:
        attr = _Attr()
        if self._libc.syscall(self._get_nr, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0):
            code = ctypes.get_errno()
            raise OSError(code, f"sched_getattr: {os.strerror(code)}")
        return Sched(attr.policy, attr.flags, attr.nice, attr.priority, attr.runtime)

    def set(self, tid: int, sched: Sched) -> None:
        attr = _Attr(
            size=ctypes.sizeof(_Attr),
            policy=sched.policy,
            flags=sched.flags,
            nice=sched.nice,
            priority=sched.priority,
            runtime=sched.runtime,
        )
        if self._libc.syscall(self._set_nr, tid, ctypes.byref(attr), 0):
            code = ctypes.get_errno()
            raise OSError(code, f"sched_setattr: {os.strerror(code)}")


def process_threads() -> List[int]:
    """The ids of this process's threads (Linux; none if /proc cannot say)."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return []


class SliceChange(NamedTuple):
    """What L{set_slices} did: the threads changed, or why none was."""

    changed: List[int]
    previous: int  # the calling thread's slice before (ns; 0: the kernel's)
    refused: Optional[str]  # why nothing changed; None if it did


def set_slices(calls: SchedCalls, threads: Iterable[int], slice_ns: int, me: int) -> SliceChange:
    """
    Give every thread of a normal policy in C{threads} a slice of
    C{slice_ns}, its policy, nice value and priority kept.  The calling
    thread (C{me}) goes first and is read back: a kernel without custom
    slices (before 6.12) takes the call and ignores C{sched_runtime}, and
    then no other thread is touched.
    """
    try:
        mine = calls.get(me)
    except OSError as e:
        return SliceChange([], 0, f"the scheduler's attributes cannot be read ({e.strerror})")
    if mine.policy not in FAIR_POLICIES:
        return SliceChange([], 0, f"the server runs under a real-time policy ({mine.policy})")
    try:
        calls.set(me, _with_runtime(mine, slice_ns))
        kept = calls.get(me).runtime
    except OSError as e:
        return SliceChange([], mine.runtime, f"the kernel refused ({e.strerror})")
    if kept != slice_ns:
        return SliceChange(
            [], mine.runtime, "this kernel has no per-thread time slices (Linux 6.12 and later)"
        )
    changed = [me]
    for tid in threads:
        if tid == me:
            continue
        if _set_runtime(calls, tid, slice_ns, unless=None):
            changed.append(tid)
    return SliceChange(changed, mine.runtime, None)


def restore_slices(calls: SchedCalls, threads: Iterable[int], slice_ns: int, previous: int) -> int:
    """
    Give the threads still on C{slice_ns} the slice C{previous} again; the
    number of threads changed back.
    """
    return sum(1 for tid in threads if _set_runtime(calls, tid, previous, unless=slice_ns))


def _set_runtime(calls: SchedCalls, tid: int, runtime: int, unless: Optional[int]) -> bool:
    """
    Set C{tid}'s slice to C{runtime} if it has a normal policy (and, with
    C{unless}, only if its slice is C{unless} now).  A thread that ended
    meanwhile, or that the kernel will not change, is left out.
    """
    try:
        sched = calls.get(tid)
        if sched.policy not in FAIR_POLICIES:
            return False
        if unless is not None and sched.runtime != unless:
            return False
        calls.set(tid, _with_runtime(sched, runtime))
    except OSError:
        return False
    return True


def _with_runtime(sched: Sched, runtime: int) -> Sched:
    return sched._replace(flags=sched.flags & SCHED_FLAG_RESET_ON_FORK, runtime=runtime)


class ShortSlices(service.Service):
    """
    Asks for L{SLICE_NS} time slices for the process's threads on start,
    gives the old ones back on stop.

    @param calls: makes a L{SchedCalls} (tests pass a fake); if it raises
        C{OSError}, the system has none and nothing changes.
    @param threads: lists the process's thread ids.
    @param me: the calling thread's id.
    """

    name = "slices"  # type: ignore[assignment]  # Twisted declares it None

    log = Logger()

    def __init__(
        self,
        calls: Callable[[], SchedCalls] = SchedCalls,
        threads: Callable[[], List[int]] = process_threads,
        me: Callable[[], int] = threading.get_native_id,
        slice_ns: int = SLICE_NS,
    ):
        self._calls_factory = calls
        self._threads = threads
        self._me = me
        self.slice_ns = slice_ns
        self.change: Optional[SliceChange] = None
        self._calls: Optional[SchedCalls] = None

    def startService(self) -> None:
        super().startService()
        try:
            self._calls = self._calls_factory()
        except OSError as e:
            self.change = SliceChange([], 0, e.strerror or str(e))
        else:
            self.change = set_slices(self._calls, self._threads(), self.slice_ns, self._me())
        if self.change.refused is None:
            self.log.info(
                "the server's threads run on {slice:g} ms CPU time slices: they get a core "
                "sooner when the machine is busy ({count} threads now, new ones inherit it)",
                slice=self.slice_ns / 1e6,
                count=len(self.change.changed),
            )
        else:
            self.log.info(
                "the kernel's CPU time slices are left as they are: {why}",
                why=self.change.refused,
            )

    def stopService(self) -> None:
        super().stopService()
        change, self.change = self.change, None
        if change is not None and change.refused is None and self._calls is not None:
            restore_slices(self._calls, self._threads(), self.slice_ns, change.previous)
