"""
Tests for L{jspsych_tobii.server.work.WorkerPool}: jobs run on its threads,
results come back on the reactor, and the service starts and stops it.
"""

import os
import sys
import threading

from twisted.internet import defer, reactor
from twisted.trial import unittest

from jspsych_tobii.server.work import SWITCH_INTERVAL_S, WorkerPool


class WorkerPoolTests(unittest.TestCase):
    def setUp(self):
        self.pool = WorkerPool(reactor)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    @defer.inlineCallbacks
    def test_job_runs_on_a_worker_and_returns_on_the_reactor(self):
        seen = []
        name = yield self.pool.run(lambda: threading.current_thread().name)
        seen.append(threading.current_thread())
        self.assertIn("jspsych-tobii-work", name)
        self.assertIs(seen[0], threading.main_thread())

    @defer.inlineCallbacks
    def test_failure_comes_back(self):
        def broken():
            raise ValueError("bad input")

        with self.assertRaises(ValueError):
            yield self.pool.run(broken)

    @defer.inlineCallbacks
    def test_at_most_two_threads(self):
        """Three jobs that wait for each other: only two run at once."""
        running, release = [], threading.Event()
        lock = threading.Lock()
        peak = []

        def job():
            with lock:
                running.append(1)
                peak.append(len(running))
            release.wait(10)
            with lock:
                running.pop()

        jobs = [self.pool.run(job) for _ in range(3)]
        while len(peak) < 2:
            yield _turn()
        yield _turn()
        release.set()
        yield defer.gatherResults(jobs)
        self.assertEqual(max(peak), 2)

    def priority(self):
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    @defer.inlineCallbacks
    def test_workers_keep_the_reactors_priority(self):
        """
        Not lower: a worker holding the GIL must not wait for a core while
        the reactor waits for the GIL (see the module's docstring).
        """
        ours = self.priority()
        theirs = yield self.pool.run(self.priority)
        self.assertEqual(theirs, ours)


def _turn():
    d = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d


class SwitchIntervalTests(unittest.TestCase):
    """While the pool runs, a worker keeps the GIL from the reactor for at most ~0.5 ms."""

    def setUp(self):
        saved = sys.getswitchinterval()
        self.addCleanup(sys.setswitchinterval, saved)
        sys.setswitchinterval(0.005)  # CPython's default

    def test_shortened_while_running_and_restored_after(self):
        pool = WorkerPool(reactor)
        pool.startService()
        self.assertAlmostEqual(sys.getswitchinterval(), SWITCH_INTERVAL_S)
        pool.stopService()
        self.assertEqual(sys.getswitchinterval(), 0.005)

    def test_a_shorter_interval_is_kept(self):
        sys.setswitchinterval(0.0001)
        shorter = sys.getswitchinterval()  # as the interpreter stores it
        pool = WorkerPool(reactor)
        pool.startService()
        self.assertEqual(sys.getswitchinterval(), shorter)
        pool.stopService()
        self.assertEqual(sys.getswitchinterval(), shorter)

    def test_a_change_made_meanwhile_is_not_undone(self):
        pool = WorkerPool(reactor)
        pool.startService()
        sys.setswitchinterval(0.002)
        pool.stopService()
        self.assertEqual(sys.getswitchinterval(), 0.002)
