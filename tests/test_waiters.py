"""
Tests for L{jspsych_tobii.waiters}.
"""

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.trial import unittest

from jspsych_tobii.waiters import Waiters


class WaitersTests(unittest.SynchronousTestCase):
    def test_every_waiter_gets_the_outcome_in_order(self):
        waiters = Waiters()
        seen = []
        first, second = waiters.wait(), waiters.wait()
        first.addCallback(lambda value: seen.append(("first", value)))
        second.addCallback(lambda value: seen.append(("second", value)))
        self.assertNoResult(first)
        self.assertFalse(waiters.fired)
        waiters.fire(42)
        self.assertTrue(waiters.fired)
        self.assertEqual(seen, [("first", 42), ("second", 42)])

    def test_late_waiter_gets_it_at_once(self):
        waiters = Waiters()
        waiters.fire("done")
        self.assertEqual(self.successResultOf(waiters.wait()), "done")

    def test_failure(self):
        waiters = Waiters()
        early = waiters.wait()
        waiters.fire(Failure(ValueError("no")))
        self.failureResultOf(early, ValueError)
        self.failureResultOf(waiters.wait(), ValueError)

    def test_fired_once(self):
        waiters = Waiters()
        waiters.fire(None)
        self.assertRaises(defer.AlreadyCalledError, waiters.fire, None)

    def test_none_is_an_outcome(self):
        waiters = Waiters()
        waiters.fire(None)
        self.assertTrue(waiters.fired)
        self.assertIsNone(self.successResultOf(waiters.wait()))
