"""
Tests for L{jspsych_tobii.core.buffer.GazeBuffer}.
"""

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.interfaces import empty_gaze


def batch(times):
    b = empty_gaze(len(times))
    b["system_time_us"] = times
    b["seq"] = times
    return b


class GazeBufferTests(unittest.SynchronousTestCase):
    def test_empty(self):
        buffer = GazeBuffer(5)
        self.assertEqual(len(buffer), 0)
        self.assertIsNone(buffer.latest())
        self.assertEqual(len(buffer.query(0, 10)), 0)
        self.assertIsNone(buffer.oldest_time_us())

    def test_rejects_zero_capacity(self):
        self.assertRaises(ValueError, GazeBuffer, 0)

    def test_wraps_and_keeps_newest(self):
        buffer = GazeBuffer(5)
        for start in range(0, 12, 3):
            buffer.extend(batch(np.arange(start, start + 3)))
        self.assertEqual(len(buffer), 5)
        self.assertEqual(buffer.appended, 12)
        self.assertEqual(buffer.snapshot()["seq"].tolist(), [7, 8, 9, 10, 11])
        self.assertEqual(int(buffer.latest()["seq"]), 11)
        self.assertEqual(buffer.oldest_time_us(), 7)

    def test_batch_larger_than_capacity(self):
        buffer = GazeBuffer(4)
        buffer.extend(batch(np.arange(10)))
        self.assertEqual(buffer.snapshot()["seq"].tolist(), [6, 7, 8, 9])

    def test_query_inclusive_across_wrap(self):
        buffer = GazeBuffer(6)
        buffer.extend(batch(np.arange(0, 40, 10)))  # 0 10 20 30
        buffer.extend(batch(np.arange(40, 80, 10)))  # wraps: 20..70 kept
        self.assertEqual(buffer.query(30, 60)["seq"].tolist(), [30, 40, 50, 60])
        self.assertEqual(buffer.query(25, 35)["seq"].tolist(), [30])
        self.assertEqual(buffer.query(None, 30)["seq"].tolist(), [20, 30])
        self.assertEqual(buffer.query(55, None)["seq"].tolist(), [60, 70])
        self.assertEqual(buffer.query(None, None)["seq"].tolist(), [20, 30, 40, 50, 60, 70])
        self.assertEqual(len(buffer.query(71, 100)), 0)

    def test_query_matches_brute_force(self):
        rng = np.random.default_rng(1)
        buffer = GazeBuffer(97)
        times = np.cumsum(rng.integers(1, 5, 500))
        for chunk in np.array_split(times, 37):
            buffer.extend(batch(chunk))
        kept = times[-97:]
        for _ in range(200):
            lo, hi = sorted(rng.integers(times[0] - 5, times[-1] + 5, 2))
            expected = kept[(kept >= lo) & (kept <= hi)]
            self.assertEqual(
                buffer.query(int(lo), int(hi))["system_time_us"].tolist(), expected.tolist()
            )

    def test_query_returns_copy(self):
        buffer = GazeBuffer(4)
        buffer.extend(batch([1, 2]))
        result = buffer.query()
        result["seq"] = 99
        self.assertEqual(buffer.snapshot()["seq"].tolist(), [1, 2])

    def test_clear(self):
        buffer = GazeBuffer(4)
        buffer.extend(batch([1, 2, 3]))
        buffer.clear()
        self.assertEqual(len(buffer), 0)
        self.assertEqual(buffer.appended, 0)
        self.assertIsNone(buffer.latest())
