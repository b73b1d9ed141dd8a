"""
Tests for L{jspsych_tobii.server.bulk}: a large reply's JSON in pieces.
"""

import json

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.core.gaze import sample_dicts
from jspsych_tobii.interfaces import empty_gaze
from jspsych_tobii.server.bulk import reply_pieces


def records(n, start=0):
    batch = empty_gaze(n)
    batch["system_time_us"] = np.arange(start, start + n) * 1000
    batch["seq"] = np.arange(start, start + n)
    batch["left_x"] = batch["left_y"] = 0.25
    batch["left_gaze_valid"] = True
    return batch


HEAD = {"type": "get_data", "requestId": "r"}


class ReplyPiecesTests(unittest.SynchronousTestCase):
    def test_pieces_make_one_reply(self):
        pieces = list(reply_pieces(HEAD, "samples", iter([records(1000)]), slice_size=300))
        self.assertEqual(len(pieces), 1 + 4 + 1)  # head, 4 slices, tail
        reply = json.loads(b"".join(pieces))
        self.assertEqual(reply["samples"], sample_dicts(records(1000)))
        self.assertEqual((reply["count"], reply["success"]), (1000, True))
        self.assertEqual((reply["type"], reply["requestId"]), ("get_data", "r"))

    def test_lazy(self):
        """Nothing is encoded before it is asked for."""
        taken = []

        def chunks():
            for i in range(3):
                taken.append(i)
                yield records(2, start=2 * i)

        pieces = reply_pieces(HEAD, "samples", chunks(), slice_size=2)
        next(pieces)
        self.assertEqual(taken, [])
        next(pieces)
        self.assertEqual(taken, [0])
        next(pieces)
        self.assertEqual(taken, [0, 1])

    def test_several_chunks_and_empty_ones(self):
        chunks = iter([records(3), records(0), records(2, start=3)])
        reply = json.loads(b"".join(reply_pieces(HEAD, "samples", chunks, slice_size=2)))
        self.assertEqual([s["seq"] for s in reply["samples"]], [0, 1, 2, 3, 4])

    def test_chunks_regrouped_in_slices(self):
        """Chunks as the recording yields them (500) become slices of slice_size."""
        chunks = iter([records(500, start=i) for i in range(0, 2000, 500)])
        pieces = list(reply_pieces(HEAD, "samples", chunks, slice_size=800))
        self.assertEqual(len(pieces), 1 + 3 + 1)  # head, 800 + 800 + 400, tail
        reply = json.loads(b"".join(pieces))
        self.assertEqual([s["seq"] for s in reply["samples"]], list(range(2000)))

    def test_empty(self):
        reply = json.loads(b"".join(reply_pieces({}, "samples", iter([]))))
        self.assertEqual(reply, {"samples": [], "count": 0, "success": True})

    def test_read_error_still_valid_json(self):
        def broken():
            yield records(2)
            raise OSError("disk gone")

        reply = json.loads(b"".join(reply_pieces(HEAD, "samples", broken())))
        self.assertEqual(len(reply["samples"]), 2)
        self.assertIs(reply["success"], False)
        self.assertIn("disk gone", reply["error"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
