"""
Tests for L{jspsych_tobii.core.timesync}, driven by L{task.Clock}.
"""

import time

from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.core.timesync import (
    ClientClockModel,
    ServerClock,
    clock_from_seconds,
    monotonic_us,
)

from .support import assert_close


class ServerClockTests(unittest.SynchronousTestCase):
    def test_follows_injected_clock(self):
        clock = Clock()
        server = ServerClock(clock_from_seconds(clock.seconds), offset_us=250)
        self.assertEqual(server.now_us(), 250)
        clock.advance(1.5)
        self.assertEqual(server.now_us(), 1_500_250)
        self.assertEqual(server.now_ms(), 1500.25)

    def test_default_is_monotonic_microseconds(self):
        """The default clock is CLOCK_MONOTONIC in µs, like the SDK's system clock on Linux."""
        before = time.monotonic_ns() // 1000
        now = ServerClock().now_us()
        after = time.monotonic_ns() // 1000
        self.assertTrue(before <= now <= after)
        self.assertIsInstance(monotonic_us(), int)


class ClientClockModelTests(unittest.SynchronousTestCase):
    def test_best_bound(self):
        """The smallest server-minus-client difference is kept: offset plus least delay."""
        clock = Clock()
        model = ClientClockModel()
        self.assertIsNone(model.to_server_ms(1.0))
        for delay in (3.0, 0.4, 5.0):
            client = clock.seconds() * 1000.0
            clock.advance(delay / 1000.0)
            model.observe(client, clock.seconds() * 1000.0 + 700.0)
            clock.advance(0.1)
        assert_close(self, model.offset_ms, 700.4, 1e-6)
        assert_close(self, model.to_server_ms(10.0), 710.4, 1e-6)
        self.assertEqual(model.rounds, 3)
