"""
Tests for L{jspsych_tobii.server.bulk}: large replies a slice per reactor turn.
"""

import json

import numpy as np
from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.core.gaze import dumps, sample_dicts
from jspsych_tobii.interfaces import empty_gaze
from jspsych_tobii.server.bulk import EncodedReply, encode_samples, splice


def records(n, start=0):
    batch = empty_gaze(n)
    batch["system_time_us"] = np.arange(start, start + n) * 1000
    batch["seq"] = np.arange(start, start + n)
    batch["left_x"] = batch["left_y"] = 0.25
    batch["left_gaze_valid"] = True
    return batch


class Turns:
    """A reactor stand-in whose C{turn()} runs one scheduled call."""

    def __init__(self):
        self.pending = []

    def callLater(self, delay, f, *args):
        self.pending.append((f, args))

    def turn(self):
        f, args = self.pending.pop(0)
        f(*args)


class EncodeSamplesTests(unittest.SynchronousTestCase):
    def test_one_slice_per_turn(self):
        reactor = Turns()
        d = encode_samples(reactor, records(1000), slice_size=300)
        turns = 0
        while not d.called:
            self.assertEqual(len(reactor.pending), 1)
            reactor.turn()
            turns += 1
        self.assertEqual(turns, 5)  # 4 slices, then the join
        raw, count = self.successResultOf(d)
        self.assertEqual(count, 1000)
        decoded = json.loads(raw)
        self.assertEqual(decoded, sample_dicts(records(1000)))

    def test_iterator_of_chunks(self):
        clock = Clock()
        d = encode_samples(clock, iter([records(3), records(0), records(2, start=3)]), 2)
        for _ in range(10):
            clock.advance(0)
        raw, count = self.successResultOf(d)
        self.assertEqual([s["seq"] for s in json.loads(raw)], [0, 1, 2, 3, 4])
        self.assertEqual(count, 5)

    def test_empty(self):
        clock = Clock()
        d = encode_samples(clock, records(0))
        clock.advance(0)
        self.assertEqual(self.successResultOf(d), (b"[]", 0))

    def test_error_fails_deferred(self):
        clock = Clock()

        def broken():
            yield records(2)
            raise OSError("disk gone")

        d = encode_samples(clock, broken())
        for _ in range(5):
            clock.advance(0)
        self.failureResultOf(d, OSError)


class SpliceTests(unittest.SynchronousTestCase):
    def test_splice(self):
        payload = splice(
            {"type": "get_data_response", "requestId": "r"},
            EncodedReply("samples", b"[1,2]"),
            dumps,
        )
        self.assertEqual(
            json.loads(payload), {"type": "get_data_response", "requestId": "r", "samples": [1, 2]}
        )

    def test_splice_into_empty_object(self):
        self.assertEqual(json.loads(splice({}, EncodedReply("k", b"{}"), dumps)), {"k": {}})
