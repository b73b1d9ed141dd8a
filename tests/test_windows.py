"""
Tests for L{jspsych_tobii.core.windows}: which samples belong to a validation point.
"""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from jspsych_tobii.core import windows
from jspsych_tobii.interfaces import empty_gaze
from tests.quality_support import make_samples


class SelectWindowTests(SynchronousTestCase):
    """Time windows over a sorted sample array."""

    def setUp(self):
        # One sample every 10 ms from 0 to 1000 ms.
        self.samples = make_samples([None] * 101, step_us=10_000)

    def test_skip(self):
        """
        [0, 500] ms skipping the first 300 ms keeps 300..500 ms, both ends
        included: 21 samples.
        """
        window = windows.select_window(self.samples, 0, 500_000)
        self.assertEqual(len(window), 21)
        self.assertEqual(window["system_time_us"][0], 300_000)
        self.assertEqual(window["system_time_us"][-1], 500_000)

    def test_no_skip(self):
        window = windows.select_window(self.samples, 105_000, 200_000, skip_initial_ms=0)
        self.assertEqual(list(window["system_time_us"]), [110_000 + 10_000 * i for i in range(10)])

    def test_fractional_skip(self):
        """A skip of 0.5 ms is 500 us."""
        window = windows.select_window(self.samples, 9_500, 30_000, skip_initial_ms=0.5)
        self.assertEqual(list(window["system_time_us"]), [10_000, 20_000, 30_000])

    def test_empty_windows(self):
        """A skip longer than the window, a window past the data, no data."""
        self.assertEqual(len(windows.select_window(self.samples, 0, 200_000)), 0)
        self.assertEqual(len(windows.select_window(self.samples, 2_000_000, 3_000_000)), 0)
        self.assertEqual(len(windows.select_window(empty_gaze(0), 0, 1_000_000)), 0)

    def test_view(self):
        """The window is a view of the array, with its dtype."""
        window = windows.select_window(self.samples, 0, 1_000_000)
        self.assertEqual(window.dtype, self.samples.dtype)
        self.assertTrue(np.shares_memory(window, self.samples))
        self.assertEqual(len(window), 71)

    def test_last_ms(self):
        """
        The last 200 ms of [0, 1000] ms after a 300 ms skip: 800..1000 ms,
        21 samples; the skip alone would keep 71.
        """
        window = windows.select_window(self.samples, 0, 1_000_000, 300, last_ms=200)
        self.assertEqual(len(window), 21)
        self.assertEqual(window["system_time_us"][0], 800_000)
        self.assertEqual(window["system_time_us"][-1], 1_000_000)
        self.assertEqual(windows.window_bounds_us(0, 1_000_000, 300, 200), (800_000, 1_000_000))

    def test_last_ms_never_reaches_into_the_skip(self):
        """
        The last 900 ms of a 1000 ms span with a 300 ms skip is 300..1000:
        the skip wins; with no skip it is 100..1000 ms.
        """
        self.assertEqual(windows.window_bounds_us(0, 1_000_000, 300, 900), (300_000, 1_000_000))
        window = windows.select_window(self.samples, 0, 1_000_000, 0, last_ms=900)
        self.assertEqual(window["system_time_us"][0], 100_000)
        self.assertEqual(len(window), 91)

    def test_last_ms_zero_is_everything_after_the_skip(self):
        self.assertEqual(windows.window_bounds_us(0, 1_000_000, 300, 0), (300_000, 1_000_000))
        self.assertEqual(len(windows.select_window(self.samples, 0, 1_000_000, 300, last_ms=0)), 71)
