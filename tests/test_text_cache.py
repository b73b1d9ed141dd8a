"""
Tests for L{jspsych_tobii.recording.text}: the get_data text cache the
writer thread keeps beside a recording, and how get_data's reply uses it.
The text read back must be, byte for byte, what encoding the records gives.
"""

from __future__ import annotations

import json
import os

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.core.gaze import EncodedSamples, encode_objects, encode_rows
from jspsych_tobii.core.history import session_range, session_text_range
from jspsych_tobii.interfaces import GAZE_DTYPE
from jspsych_tobii.recording import text as text_module
from jspsych_tobii.recording.text import (
    BLOCK,
    MIN_FREE_BYTES,
    TEXT_DIR,
    CachedSession,
    TextPaths,
    TextWriter,
    clear_text_dir,
    read_text_range,
)
from jspsych_tobii.recording.writer import SessionRecorder
from jspsych_tobii.server.bulk import reply_pieces

from .support import capture_log
from .test_recording import T0_US, batches_of, in_time_range, scratch, synthetic_samples


def reply_text(chunks) -> bytes:
    return b"".join(reply_pieces({"type": "get_data"}, "samples", chunks))


def with_lost_eyes(samples: np.ndarray) -> np.ndarray:
    """Some samples with an eye, both eyes or a pupil lost (the general template)."""
    samples = samples.copy()
    samples["left_gaze_valid"][5::50] = False
    samples["right_gaze_valid"][7::50] = False
    samples["left_gaze_valid"][9::50] = False
    samples["right_gaze_valid"][9::50] = False
    samples["left_pupil_valid"][11::50] = False
    samples["right_x"][13::50] = np.nan
    return samples


class EncodeRowsTests(unittest.SynchronousTestCase):
    def test_same_text_as_encode_objects(self):
        """Each object with its comma, and each one's length: both encoders."""
        samples = with_lost_eyes(synthetic_samples(700))
        for n in (0, 1, 3, 255, 256, 700):
            batch = samples[:n]
            text, lengths = encode_rows(batch)
            self.assertEqual(text, b"," + encode_objects(batch) if n else b"", n)
            self.assertEqual(len(lengths), n)
            self.assertEqual(int(np.sum(lengths)), len(text))
            ends = np.cumsum(lengths)
            for i in (0, n // 2, n - 1) if n else ():
                start = int(ends[i - 1]) if i else 0
                row = json.loads(text[start + 1 : int(ends[i])])
                self.assertEqual(row["seq"], int(batch["seq"][i]))


class TextWriterTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = scratch(self)
        os.makedirs(self.dir)
        self.paths = TextPaths.for_session(self.dir, "s1")
        self.samples = with_lost_eyes(synthetic_samples(2 * BLOCK + 300, rate=1200))

    def write(self, writer, samples, size=120):
        for batch in batches_of(samples, size):
            writer.add(batch.tobytes())

    def test_whole_blocks_then_the_rest_on_finish(self):
        """Blocks are encoded as they fill; the rest when the session ends."""
        writer = TextWriter(self.paths)
        self.write(writer, self.samples)
        times = self.samples["system_time_us"]
        self.assertEqual(writer.flush(), (2 * BLOCK, int(times[2 * BLOCK - 1])))
        self.assertEqual(writer.flush(finish=True), (len(self.samples), int(times[-1])))
        writer.close()
        with open(self.paths.text, "rb") as f:
            self.assertEqual(f.read(), b"," + encode_objects(self.samples))
        ends = np.fromfile(self.paths.ends, "<u8")
        self.assertEqual(len(ends), len(self.samples))
        self.assertEqual(ends.tolist(), np.cumsum(encode_rows(self.samples)[1]).tolist())

    def test_stops_when_the_disk_is_nearly_full(self):
        """Under MIN_FREE_BYTES free the cache stops and its files are deleted."""
        free = [MIN_FREE_BYTES]
        writer = TextWriter(self.paths, free_bytes=lambda path: free[0])
        self.write(writer, self.samples[:BLOCK])
        self.assertEqual(writer.flush()[0], BLOCK)
        free[0] = MIN_FREE_BYTES - 1
        self.write(writer, self.samples[BLOCK : 2 * BLOCK])
        self.assertIn("free on the disk", writer.stopped)
        self.assertEqual(writer.flush(finish=True), (0, None))
        self.assertFalse(os.path.exists(self.paths.text))
        self.assertFalse(os.path.exists(self.paths.ends))

    def test_clear_keeps_only_the_one_asked(self):
        other = TextPaths.for_session(self.dir, "s0")
        for paths in (self.paths, other):
            TextWriter(paths).close()
        clear_text_dir(self.dir, keep=self.paths)
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.dir, TEXT_DIR))), ["s1.ends", "s1.text"]
        )
        clear_text_dir(self.dir)
        self.assertEqual(os.listdir(os.path.join(self.dir, TEXT_DIR)), [])


class ReadTextRangeTests(unittest.SynchronousTestCase):
    """The cached part comes as text, the rest as records; together, the same reply."""

    def setUp(self):
        self.dir = scratch(self)
        self.recorder = SessionRecorder(self.dir)
        self.addCleanup(self.recorder.close)
        self.samples = with_lost_eyes(synthetic_samples(3 * BLOCK + 100, rate=1200))
        self.recorder.session_started(1, T0_US)
        for batch in batches_of(self.samples, 3):
            self.recorder.write_batch(batch)
        self.recorder.sync()
        self.files = self.recorder.last
        self.times = self.samples["system_time_us"]

    def expected(self, start, end):
        return reply_text(iter([self.samples[in_time_range(self.times, start, end)]]))

    def test_blocks_cached_while_recording(self):
        self.assertEqual(self.files.texts, 3 * BLOCK)
        self.assertEqual(self.files.flushed_records, len(self.samples))

    def test_ranges(self):
        t = self.times
        for start, end, chunk in [
            (None, None, 2000),
            (int(t[10]), int(t[20]), 2000),  # text only
            (int(t[BLOCK - 5]), int(t[BLOCK + 5]), 3),  # text, pieces of 3
            (int(t[3 * BLOCK - 10]), None, 2000),  # text, then records
            (int(t[3 * BLOCK + 50]), None, 2000),  # records only
            (None, int(t[0]) - 1, 2000),  # nothing
        ]:
            chunks = list(self.recorder.query_text_chunks(start, end, chunk))
            sizes = [c.samples if isinstance(c, EncodedSamples) else len(c) for c in chunks]
            self.assertTrue(all(0 < s <= chunk for s in sizes), (start, end, sizes))
            self.assertEqual(reply_text(iter(chunks)), self.expected(start, end), (start, end))
        kinds = {type(c) for c in self.recorder.query_text_chunks(None, None, 2000)}
        self.assertEqual(kinds, {EncodedSamples, np.ndarray})

    def test_cache_gone_reads_records(self):
        """A cache deleted (or never made) is left out: the records are encoded instead."""
        self.files.text.remove()
        chunks = list(self.recorder.query_text_chunks(None, None, 2000))
        self.assertTrue(all(isinstance(c, np.ndarray) for c in chunks))
        self.assertEqual(reply_text(iter(chunks)), self.expected(None, None))
        cached = CachedSession(self.files.gaze_path, self.files.flushed_records, None, 0)
        self.assertEqual(reply_text(read_text_range(cached)), self.expected(None, None))

    def test_cache_cut_short_fails_the_read(self):
        """Text shorter than its index (damaged): an error, never wrong text."""
        with open(self.files.text.text, "r+b") as f:
            f.truncate(1000)
        reply = json.loads(reply_text(self.recorder.query_text_chunks(None, None, 2000)))
        self.assertFalse(reply["success"])
        self.assertIn("shorter than its index", reply["error"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_with_the_buffer(self):
        """session_text_range joins text, records and memory like session_range joins records."""
        buffer = GazeBuffer(1000)
        buffer.extend(self.samples[-1000:])
        t = self.times
        self.assertEqual(self.recorder.text_until_us(), int(t[3 * BLOCK - 1]))
        # from the recording, from the text of what memory holds too, from memory
        for start in (None, int(t[100]), int(t[-900]), int(t[3 * BLOCK + 20])):
            chunks = list(session_text_range(self.recorder, buffer, start, None, 2000))
            text = reply_text(iter(chunks))
            records = reply_text(session_range(self.recorder, buffer, start, None))
            self.assertEqual(text, records, start)
            self.assertEqual(text, self.expected(start, None))
            # memory gives only what the text does not hold: records from 3 * BLOCK on
            in_records = sum(len(c) for c in chunks if isinstance(c, np.ndarray))
            self.assertEqual(
                in_records, min(100, len(self.samples) - self.times.searchsorted(start or 0))
            )
        # a buffer that reaches back less far than the text: the text ends at its start
        short = GazeBuffer(50)
        short.extend(self.samples[-50:])
        chunks = list(session_text_range(self.recorder, short, None, None, 2000))
        self.assertEqual(reply_text(iter(chunks)), self.expected(None, None))


class RecorderCacheTests(unittest.SynchronousTestCase):
    """The recorder keeps the cache of the current or last session only."""

    def setUp(self):
        self.dir = scratch(self)
        self.samples = synthetic_samples(BLOCK + 10, rate=1200)

    def record(self, recorder, session):
        recorder.session_started(session, T0_US)
        for batch in batches_of(self.samples, 3):
            recorder.write_batch(batch)
        recorder.session_ended()
        recorder.sync()
        return recorder.last

    def cache_files(self):
        return sorted(os.listdir(os.path.join(self.dir, TEXT_DIR)))

    def test_kept_after_the_session_until_the_next(self):
        recorder = SessionRecorder(self.dir)
        self.addCleanup(recorder.close)
        first = self.record(recorder, 1)
        # ended: the whole session is text, for get_data after it
        self.assertEqual(first.texts, len(self.samples))
        self.assertEqual(self.cache_files(), [first.stem + ".ends", first.stem + ".text"])
        second = self.record(recorder, 2)
        self.assertEqual(self.cache_files(), [second.stem + ".ends", second.stem + ".text"])
        recorder.close()
        self.assertEqual(self.cache_files(), [])

    def test_left_by_a_dead_server_deleted(self):
        os.makedirs(os.path.join(self.dir, TEXT_DIR))
        with open(os.path.join(self.dir, TEXT_DIR, "old.text"), "wb") as f:
            f.write(b",{}")
        recorder = SessionRecorder(self.dir)
        self.addCleanup(recorder.close)
        files = self.record(recorder, 1)
        self.assertEqual(self.cache_files(), [files.stem + ".ends", files.stem + ".text"])

    def test_off(self):
        recorder = SessionRecorder(self.dir, text_cache=False)
        self.addCleanup(recorder.close)
        files = self.record(recorder, 1)
        self.assertIsNone(files.text)
        chunks = list(recorder.query_text_chunks(None, None, 2000))
        self.assertTrue(all(isinstance(c, np.ndarray) for c in chunks))

    def test_disk_full_stops_the_cache_not_the_recording(self):
        """The writer says why once; the recording holds every sample."""
        self.patch(text_module, "MIN_FREE_BYTES", 1 << 62)
        errors = capture_log(self, "jspsych_tobii.recording.writer.SessionRecorder")
        recorder = SessionRecorder(self.dir)
        self.addCleanup(recorder.close)
        files = self.record(recorder, 1)
        self.assertIsNone(files.text)
        self.assertEqual(files.texts, 0)
        self.assertEqual(files.flushed_records, len(self.samples))
        self.assertEqual(self.cache_files(), [])
        stopped = [e for e in errors if "get_data's text" in e["log_format"]]
        self.assertEqual(len(stopped), 1, errors)
        self.assertIn("free on the disk", stopped[0]["why"])
        got = np.fromfile(files.gaze_path, GAZE_DTYPE, offset=4096)
        self.assertEqual(got.tobytes(), self.samples.tobytes())
