"""
Tests for L{jspsych_tobii.server.slices}: every thread of a normal policy
gets the short slice with its policy and nice value kept; real-time threads,
threads that end meanwhile and kernels without custom slices are handled;
stopping gives the old slice back; the server starts it before anything
else; and, on this machine's kernel, the slice really is in force, for
threads and processes started later too.
"""

import errno
import os
import platform
import re
import subprocess
import sys
import threading

from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.server.slices import (
    SLICE_NS,
    Sched,
    SchedCalls,
    ShortSlices,
    restore_slices,
    set_slices,
)
from jspsych_tobii.tap import makeService

from .support import capture_log

LOG = "jspsych_tobii.server.slices.ShortSlices"
OTHER, FIFO, BATCH = 0, 1, 3


class FakeCalls:
    """Threads' attributes in a dict; a kernel that may ignore or refuse slices."""

    def __init__(self, threads, ignores_runtime=False, refuse=None, gone=()):
        self.threads = dict(threads)
        self.ignores_runtime = ignores_runtime
        self.refuse = refuse  # an errno for every set
        self.gone = set(gone)  # threads that ended before they were read
        self.sets = []

    def get(self, tid):
        if tid in self.gone:
            raise OSError(errno.ESRCH, "no such thread")
        return self.threads[tid]

    def set(self, tid, sched):
        if self.refuse is not None:
            raise OSError(self.refuse, os.strerror(self.refuse))
        self.sets.append((tid, sched))
        if self.ignores_runtime:
            sched = sched._replace(runtime=0)
        self.threads[tid] = sched


def normal(nice=0, runtime=0, policy=OTHER, flags=0):
    return Sched(policy=policy, flags=flags, nice=nice, priority=0, runtime=runtime)


class SetSlicesTests(unittest.TestCase):
    def test_every_normal_thread_gets_the_slice_with_its_policy_and_nice_kept(self):
        calls = FakeCalls(
            {
                1: normal(nice=0),
                2: normal(nice=5, policy=BATCH),
                3: Sched(policy=FIFO, flags=0, nice=0, priority=10, runtime=0),
            }
        )
        change = set_slices(calls, [1, 2, 3], 100_000, me=1)
        self.assertIsNone(change.refused)
        self.assertEqual(change.changed, [1, 2])
        self.assertEqual(calls.threads[1], normal(nice=0, runtime=100_000))
        self.assertEqual(calls.threads[2], normal(nice=5, runtime=100_000, policy=BATCH))
        # the real-time thread is not touched
        self.assertEqual(calls.threads[3].runtime, 0)
        self.assertNotIn(3, [tid for tid, _ in calls.sets])

    def test_only_the_reset_on_fork_flag_is_written_back(self):
        calls = FakeCalls({1: normal(flags=0x01 | 0x20)})
        set_slices(calls, [1], 100_000, me=1)
        self.assertEqual(calls.threads[1].flags, 0x01)

    def test_a_thread_that_ended_meanwhile_is_left_out(self):
        calls = FakeCalls({1: normal(), 2: normal(), 3: normal()}, gone={2})
        change = set_slices(calls, [1, 2, 3], 100_000, me=1)
        self.assertEqual(change.changed, [1, 3])

    def test_without_a_thread_list_the_calling_thread_still_gets_it(self):
        calls = FakeCalls({1: normal()})
        change = set_slices(calls, [], 100_000, me=1)
        self.assertEqual(change.changed, [1])
        self.assertEqual(calls.threads[1].runtime, 100_000)

    def test_a_kernel_without_custom_slices_changes_nothing_else(self):
        calls = FakeCalls({1: normal(), 2: normal()}, ignores_runtime=True)
        change = set_slices(calls, [1, 2], 100_000, me=1)
        self.assertEqual(change.changed, [])
        self.assertIn("Linux 6.12", change.refused)
        self.assertEqual([tid for tid, _ in calls.sets], [1])  # the probe only

    def test_a_refusal_is_said(self):
        calls = FakeCalls({1: normal()}, refuse=errno.EPERM)
        change = set_slices(calls, [1], 100_000, me=1)
        self.assertEqual(change.changed, [])
        self.assertIn("refused", change.refused)
        self.assertIn(os.strerror(errno.EPERM), change.refused)

    def test_a_real_time_server_is_left_alone(self):
        calls = FakeCalls({1: Sched(policy=FIFO, flags=0, nice=0, priority=10, runtime=0)})
        change = set_slices(calls, [1], 100_000, me=1)
        self.assertIn("real-time", change.refused)
        self.assertEqual(calls.sets, [])

    def test_restore_gives_back_the_old_slice_to_threads_still_on_ours(self):
        calls = FakeCalls({1: normal(runtime=2_000_000), 2: normal(), 3: normal()})
        change = set_slices(calls, [1, 2, 3], 100_000, me=1)
        self.assertEqual(change.previous, 2_000_000)
        calls.threads[3] = normal(runtime=500_000)  # someone else's choice since
        calls.threads[4] = normal(runtime=100_000)  # started later: inherited ours
        restored = restore_slices(calls, [1, 2, 3, 4], 100_000, change.previous)
        self.assertEqual(restored, 3)
        self.assertEqual(calls.threads[1].runtime, 2_000_000)
        self.assertEqual(calls.threads[2].runtime, 2_000_000)
        self.assertEqual(calls.threads[3].runtime, 500_000)
        self.assertEqual(calls.threads[4].runtime, 2_000_000)


class ShortSlicesServiceTests(unittest.TestCase):
    def setUp(self):
        self.lines = capture_log(self, LOG)

    def service(self, calls, threads):
        return ShortSlices(calls=lambda: calls, threads=lambda: list(threads), me=lambda: 1)

    def test_start_sets_logs_and_stop_restores(self):
        calls = FakeCalls({1: normal(), 2: normal()})
        slices = self.service(calls, [1, 2])
        slices.startService()
        self.assertEqual([s.runtime for s in calls.threads.values()], [SLICE_NS, SLICE_NS])
        self.assertEqual(len(self.lines), 1)
        self.assertIn("0.1 ms", self.lines[0]["log_format"].format(**self.lines[0]))
        slices.stopService()
        self.assertEqual([s.runtime for s in calls.threads.values()], [0, 0])

    def test_a_system_without_the_call_starts_and_says_why(self):
        def missing():
            raise OSError(errno.ENOSYS, "no sched_setattr on darwin arm64")

        slices = ShortSlices(calls=missing, threads=lambda: [1], me=lambda: 1)
        slices.startService()
        self.assertTrue(slices.running)
        text = self.lines[0]["log_format"].format(**self.lines[0])
        self.assertIn("left as they are: no sched_setattr on darwin arm64", text)
        slices.stopService()  # nothing to restore, and no error

    def test_an_old_kernel_is_said_once_and_nothing_restored(self):
        calls = FakeCalls({1: normal(), 2: normal()}, ignores_runtime=True)
        slices = self.service(calls, [1, 2])
        slices.startService()
        self.assertEqual(len(self.lines), 1)
        self.assertIn("Linux 6.12", self.lines[0]["why"])
        calls.sets.clear()
        slices.stopService()
        self.assertEqual(calls.sets, [])

    def test_the_server_starts_it_first(self):
        top = makeService(ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True))
        names = [s.name for s in top]
        self.assertEqual(names[0], "slices")
        self.assertIsInstance(top.getServiceNamed("slices"), ShortSlices)


def kernel_has_custom_slices():
    """Linux 6.12 or later, by its release string."""
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    return (
        sys.platform == "linux" and found is not None and tuple(map(int, found.groups())) >= (6, 12)
    )


class RealKernelTests(unittest.TestCase):
    """On this machine's kernel: in force where it can be, said where it cannot."""

    def test_the_slice_is_in_force_for_threads_and_processes_started_later(self):
        lines = capture_log(self, LOG)
        if not kernel_has_custom_slices():
            slices = ShortSlices()
            slices.startService()
            self.addCleanup(slices.stopService)
            self.assertIsNotNone(slices.change.refused)
            self.assertIn("left as they are", lines[0]["log_format"])
            return
        calls = SchedCalls()
        me = threading.get_native_id()
        original = calls.get(me)
        slices = ShortSlices()
        slices.startService()
        self.addCleanup(lambda: slices.running and slices.stopService())
        self.assertIsNone(slices.change.refused)
        self.assertIn(me, slices.change.changed)
        self.assertEqual(calls.get(me).runtime, SLICE_NS)
        seen = []
        thread = threading.Thread(target=lambda: seen.append(calls.get(0).runtime))
        thread.start()
        thread.join()
        self.assertEqual(seen, [SLICE_NS])
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            self.assertEqual(calls.get(child.pid).runtime, SLICE_NS)
        finally:
            child.kill()
            child.wait()
        slices.stopService()
        self.assertEqual(calls.get(me), original)
