"""
Tests for L{jspsych_tobii.trackers.handoff}: records put on foreign threads
reach the reactor's consumer in order, a burst in one hand-off.  The reactor
is a stand-in that keeps what C{callFromThread} was given until the test runs
it; the adapters' threads are in L{tests.test_tobii_callbacks} and
L{tests.test_tobii}.
"""

import threading

from twisted.trial import unittest

from jspsych_tobii.trackers.handoff import ThreadHandoff


class HeldReactor:
    """C{callFromThread} keeps the calls; L{run} runs them on the test's thread."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()
        self.stopped = False

    def callFromThread(self, f, *args):
        if self.stopped:
            raise RuntimeError("the reactor is not running")
        with self.lock:
            self.calls.append((f, args))

    def run(self):
        with self.lock:
            calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)
        return len(calls)


class ThreadHandoffTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.reactor = HeldReactor()
        self.batches = []
        self.handoff = ThreadHandoff(self.reactor, self.batches.append)

    def test_a_burst_is_one_handoff(self):
        for item in range(5):
            self.handoff.put(item)
        self.assertEqual(len(self.reactor.calls), 1)
        self.assertEqual(self.reactor.run(), 1)
        self.assertEqual(self.batches, [[0, 1, 2, 3, 4]])
        self.assertEqual((self.handoff.handoffs, self.handoff.items), (1, 5))

    def test_next_put_after_a_drain_schedules_again(self):
        self.handoff.put("a")
        self.reactor.run()
        self.handoff.put("b")
        self.assertEqual(len(self.reactor.calls), 1)
        self.reactor.run()
        self.assertEqual(self.batches, [["a"], ["b"]])

    def test_nothing_left_calls_no_consumer(self):
        """A drain that finds the deque empty (an earlier one took it all) hands nothing."""
        self.handoff.put("a")
        [(drain, _)] = self.reactor.calls
        self.reactor.run()
        drain()
        self.assertEqual(self.batches, [["a"]])
        self.assertEqual(self.handoff.handoffs, 1)

    def test_many_threads_every_item_once_in_each_threads_order(self):
        def produce(name):
            for k in range(2000):
                self.handoff.put((name, k))

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            self.reactor.run()
        for thread in threads:
            thread.join()
        self.reactor.run()
        items = [item for batch in self.batches for item in batch]
        self.assertEqual(len(items), 8000)
        for n in range(4):
            self.assertEqual([k for name, k in items if name == n], list(range(2000)))
        self.assertEqual(self.handoff.items, 8000)
        self.assertEqual(self.handoff.handoffs, len(self.batches))

    def test_stopped_reactor(self):
        """put() never raises when the reactor is gone, and tries again next time."""
        self.reactor.stopped = True
        self.handoff.put("lost")
        self.assertEqual(self.reactor.calls, [])
        self.reactor.stopped = False
        self.handoff.put("next")
        self.assertEqual(len(self.reactor.calls), 1)
        self.reactor.run()
        self.assertEqual(self.batches, [["lost", "next"]])
