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

    def test_records_as_bytes(self):
        """The live path appends records as bytes: the same as appending arrays."""
        by_bytes, by_array = GazeBuffer(5), GazeBuffer(5)
        for start in (0, 1, 3, 4, 6, 9):
            b = batch(np.arange(start, start + (2 if start % 3 == 0 else 1)))
            by_bytes.extend_records(bytearray(b.tobytes()))
            by_array.extend(b)
        self.assertEqual(by_bytes.snapshot().tobytes(), by_array.snapshot().tobytes())
        self.assertEqual((by_bytes.appended, len(by_bytes)), (by_array.appended, 5))
        by_bytes.extend_records(batch(np.arange(20, 27)).tobytes())  # more than it holds
        self.assertEqual(by_bytes.snapshot()["seq"].tolist(), [22, 23, 24, 25, 26])

    def test_stamp(self):
        """Sequence numbers and receipt time written into records as bytes."""
        from jspsych_tobii.core.gaze import stamp
        from jspsych_tobii.interfaces import GAZE_DTYPE

        records = bytearray(batch([5, 6, 7]).tobytes())
        stamp(records, 40, 123_456)
        stamped = np.frombuffer(records, GAZE_DTYPE)
        self.assertEqual(stamped["seq"].tolist(), [40, 41, 42])
        self.assertEqual(stamped["server_time_us"].tolist(), [123_456] * 3)
        self.assertEqual(stamped["system_time_us"].tolist(), [5, 6, 7])

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

    def test_query_limit_takes_the_first_across_wrap(self):
        buffer = GazeBuffer(6)
        buffer.extend(batch(np.arange(0, 10)))  # wrapped: 4..9, split in two segments
        self.assertEqual(buffer.query(5, None, limit=3)["seq"].tolist(), [5, 6, 7])
        self.assertEqual(buffer.query(None, 8, limit=10)["seq"].tolist(), [4, 5, 6, 7, 8])
        self.assertEqual(buffer.query(7, None, limit=0)["seq"].tolist(), [])

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
