"""
Tests for L{jspsych_tobii.core.timesync}, driven by L{task.Clock}.
"""

import time

from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.core.timesync import (
    ClientClockModel,
    ServerClock,
    TimeSyncEstimator,
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


class EstimatorTests(unittest.SynchronousTestCase):
    def simulate(self, offset_ms, delays, clock=None):
        """
        The client's 10 rounds, 100 ms apart, against a server clock that is
        C{offset_ms} ahead, with the given (up, down) network delays.
        """
        clock = clock or Clock()
        estimator = TimeSyncEstimator()

        def client_ms():
            return clock.seconds() * 1000.0

        for up, down in delays:
            t0 = client_ms()
            clock.advance(up / 1000.0)
            server_time = client_ms() + offset_ms
            clock.advance(down / 1000.0)
            estimator.add_round(t0, server_time, client_ms())
            clock.advance(0.1)
        return estimator.estimate()

    def test_symmetric_delays_exact(self):
        estimate = self.simulate(5000.0, [(2.0, 2.0)] * 10)
        assert_close(self, estimate.offset, 5000.0, 1e-6)
        assert_close(self, estimate.rtt, 4.0, 1e-6)
        self.assertEqual(estimate.rounds, 10)

    def test_asymmetry_bounded_by_half_rtt(self):
        estimate = self.simulate(-1234.5, [(3.0, 1.0)] * 10)
        assert_close(self, estimate.offset, -1234.5, 1.0 + 1e-9)

    def test_outlier_rounds_ignored(self):
        delays = [(0.5, 0.5)] * 7 + [(80.0, 1.0), (1.0, 120.0), (60.0, 60.0)]
        estimate = self.simulate(42.0, delays)
        assert_close(self, estimate.offset, 42.0, 1e-6)

    def test_no_rounds(self):
        self.assertIsNone(TimeSyncEstimator().estimate())

    def test_round_cannot_end_before_start(self):
        self.assertRaises(ValueError, TimeSyncEstimator().add_round, 10.0, 0.0, 9.0)


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
