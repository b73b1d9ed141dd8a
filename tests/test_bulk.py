"""
Tests for L{jspsych_tobii.server.bulk}: a large reply's JSON in pieces.
"""

import json

import numpy as np
from twisted.internet import defer, reactor
from twisted.trial import unittest

from jspsych_tobii.core.gaze import EncodedSamples, encode_rows, sample_dicts
from jspsych_tobii.interfaces import empty_gaze
from jspsych_tobii.server.bulk import reply_pieces
from jspsych_tobii.server.work import WorkerPool


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

    def test_encoded_chunks_sent_as_they_are(self):
        """Samples encoded already are a piece each, after the records before them."""
        first, second, third = records(5), records(4, start=5), records(3, start=9)
        encoded = EncodedSamples(encode_rows(second)[0], 4)
        empty = EncodedSamples(b"", 0)
        for chunks, piece in (
            ([first, encoded, empty, third], encoded.text),
            ([encoded, third], encoded.text[1:]),  # the array's first: no comma
            ([first, encoded], encoded.text),
        ):
            pieces = list(reply_pieces(HEAD, "samples", iter(chunks), slice_size=100))
            self.assertEqual(pieces.count(piece), 1)
            # the opening, a piece per chunk that is not empty, the close
            self.assertEqual(len(pieces), 2 + sum(1 for c in chunks if c is not empty))
            reply = json.loads(b"".join(pieces))
            want = np.concatenate([second if c is encoded else c for c in chunks if c is not empty])
            self.assertEqual(reply["samples"], sample_dicts(want))
            self.assertEqual(reply["count"], len(want))

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


class Jobs:
    """A worker thread stand-in: C{run} queues a job, C{finish} runs the oldest."""

    def __init__(self):
        self.queued = []
        self.ran = 0

    def run(self, f, *args):
        d = defer.Deferred()
        self.queued.append((f, args, d))
        return d

    def finish(self):
        f, args, d = self.queued.pop(0)
        self.ran += 1
        try:
            result = f(*args)
        except Exception:
            d.errback()
        else:
            d.callback(result)


def drive(pieces, jobs):
    """All the text, finishing a job whenever the pieces wait for one."""
    out = []
    for piece in pieces:
        if isinstance(piece, defer.Deferred):
            fired = []
            piece.addCallback(fired.append)
            jobs.finish()
            assert fired == [None], "a job's end wakes the stream"
        else:
            out.append(piece)
    return out


class ThreadedReplyPiecesTests(unittest.SynchronousTestCase):
    """With C{run}: slices made off the reactor, one ahead of what is written."""

    def test_same_text(self):
        batch = records(1000)
        jobs = Jobs()
        threaded = drive(reply_pieces(HEAD, "samples", iter([batch]), 300, jobs.run), jobs)
        plain = list(reply_pieces(HEAD, "samples", iter([batch]), 300))
        self.assertEqual(b"".join(threaded), b"".join(plain))
        self.assertEqual(threaded, plain)  # the same pieces, too
        self.assertEqual(jobs.ran, 4)  # 300, 300, 300, 100
        self.assertEqual(jobs.queued, [])

    def test_one_slice_ahead(self):
        """The first slice is started before the opening is sent; then one ahead, not more."""
        taken = []

        def chunks():
            for i in range(4):
                taken.append(i)
                yield records(2, start=2 * i)

        jobs = Jobs()
        pieces = reply_pieces(HEAD, "samples", chunks(), slice_size=2, run=jobs.run)
        self.assertTrue(next(pieces).startswith(b'{"type":"get_data"'))
        self.assertEqual((len(jobs.queued), taken), (1, []))  # queued, not run here
        waiting = next(pieces)
        self.assertIsInstance(waiting, defer.Deferred)
        self.assertIs(next(pieces), waiting)  # asked again: still the same wait
        jobs.finish()
        self.assertEqual(taken, [0])
        first = next(pieces)
        self.assertEqual(json.loads(b"[" + first + b"]")[0]["seq"], 0)
        self.assertEqual(len(jobs.queued), 1)  # the second slice, while the first is sent
        self.assertEqual(taken, [0])
        self.assertIsInstance(next(pieces), defer.Deferred)
        jobs.finish()
        self.assertEqual(next(pieces)[:1], b",")
        self.assertEqual((len(jobs.queued), taken), (1, [0, 1]))

    def test_read_error_still_valid_json(self):
        def broken():
            yield records(3)
            raise OSError("disk gone")

        jobs = Jobs()
        text = b"".join(drive(reply_pieces(HEAD, "samples", broken(), 2, jobs.run), jobs))
        reply = json.loads(text)
        self.assertEqual([s["seq"] for s in reply["samples"]], [0, 1, 2])
        self.assertEqual((reply["count"], reply["success"]), (3, False))
        self.assertIn("disk gone", reply["error"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_encoding_failure_raises(self):
        """A slice that cannot be encoded (a bug) is not turned into a valid reply."""
        jobs = Jobs()
        wrong = np.zeros(3, dtype=[("seq", "<i8")])
        pieces = reply_pieces(HEAD, "samples", iter([wrong]), run=jobs.run)
        next(pieces)
        next(pieces)
        jobs.finish()
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)  # logged when it failed
        self.assertRaises(TypeError, next, pieces)


class WorkerThreadTests(unittest.TestCase):
    """On real worker threads, the reply is the same text."""

    @defer.inlineCallbacks
    def test_on_a_worker_pool(self):
        pool = WorkerPool(reactor)
        pool.startService()
        self.addCleanup(pool.stopService)
        chunks = [records(700, start=i) for i in range(0, 7000, 700)]
        pieces = reply_pieces(HEAD, "samples", iter(chunks), 2000, pool.run)
        out = []
        for piece in pieces:
            if isinstance(piece, defer.Deferred):
                yield piece
            else:
                out.append(piece)
        reply = json.loads(b"".join(out))
        self.assertEqual([s["seq"] for s in reply["samples"]], list(range(7000)))
        self.assertEqual(len(out), 1 + 4 + 1)
