"""
Tests for L{jspsych_tobii.core.markers}: measuring a marker without encoding
a huge one, and the bounded log of a session's markers.
"""

from twisted.trial import unittest

from jspsych_tobii.core.gaze import dumps
from jspsych_tobii.core.markers import MarkerLog, json_size


class JsonSizeTests(unittest.SynchronousTestCase):
    def test_exact_for_what_the_decoder_makes(self):
        for value in (
            {},
            [],
            "",
            {"a": 1},
            [1, 2.5, -0.0, 1e300, 10**30],
            {"nested": [{"x": None, "y": True, "z": False}], "text": 'quote " and \\ and é\x01'},
            "plain ascii",
            [[], [{}], ""],
        ):
            self.assertEqual(json_size(value, 10**9), len(dumps(value)), value)

    def test_stops_once_past_the_limit(self):
        """A value far larger than the limit is not walked to its end."""
        huge = [[1] * 10_000] * 1000  # 20 MB of JSON text (one inner list, shared)
        size = json_size(huge, 65536)
        self.assertGreater(size, 65536)
        self.assertLess(size, 65536 + 20_001)
        self.assertGreater(json_size("x" * 10**7, 65536), 65536)


class MarkerLogTests(unittest.SynchronousTestCase):
    def test_count_limit(self):
        log = MarkerLog(max_count=3, max_bytes=10**6)
        for i in range(5):
            log.add(b"%d" % i)
        self.assertEqual(log.encoded(), [b"2", b"3", b"4"])
        self.assertEqual(log.evicted, 2)
        self.assertEqual(log.bytes, 3)

    def test_byte_limit(self):
        log = MarkerLog(max_count=100, max_bytes=10)
        log.add(b"aaaa")
        log.add(b"bbbb")
        log.add(b"cccc")
        self.assertEqual(log.encoded(), [b"bbbb", b"cccc"])
        self.assertEqual(log.bytes, 8)
        self.assertEqual(log.evicted, 1)

    def test_clear(self):
        log = MarkerLog(max_count=1)
        log.add(b"a")
        log.add(b"b")
        log.clear()
        self.assertEqual((len(log), log.bytes, log.evicted), (0, 0, 0))
