"""
Tests for L{jspsych_tobii.core.history}: the get_data query joins the
recording (older samples) and the in-memory buffer (recent ones).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.core.history import SessionSamples, session_range
from jspsych_tobii.interfaces import GAZE_DTYPE
from jspsych_tobii.recording.writer import SessionRecorder

from .test_recording import T0_US, batches_of, scratch, synthetic_samples


class SessionRangeTests(unittest.SynchronousTestCase):
    """A time range of the whole session: the recording for old samples, memory for recent."""

    def setUp(self):
        self.recorder = SessionRecorder(scratch(self))
        self.addCleanup(self.recorder.close)
        self.buffer = GazeBuffer(1000)
        self.samples = synthetic_samples(5000, rate=1200)
        self.recorder.session_started(1, T0_US)
        for batch in batches_of(self.samples, 3):
            self.buffer.extend(batch)
            self.recorder.write_batch(batch)
        self.recorder.sync()
        self.times = self.samples["system_time_us"]

    def check(self, start, end, chunk=500):
        chunks = list(session_range(self.recorder, self.buffer, start, end, chunk))
        self.assertTrue(all(len(c) <= chunk for c in chunks))
        got = np.concatenate(chunks) if chunks else np.zeros(0, GAZE_DTYPE)
        keep = np.ones(len(self.times), dtype=bool)
        if start is not None:
            keep &= self.times >= start
        if end is not None:
            keep &= self.times <= end
        self.assertEqual(got.tobytes(), self.samples[keep].tobytes(), (start, end))
        return chunks

    def test_ranges(self):
        t = self.times
        self.check(None, None)
        self.check(int(t[10]), int(t[20]))  # from the recording only
        self.check(int(t[4500]), int(t[4600]))  # from memory only
        self.check(int(t[3000]), int(t[4999]))  # across the two
        self.check(int(t[3999]), int(t[4000]))  # at the seam
        self.check(None, int(t[100]))
        self.check(int(t[-1]) + 1, None)
        self.check(int(t[100]), None, chunk=7)

    def test_without_recorder(self):
        got = np.concatenate(list(session_range(None, self.buffer)))
        self.assertEqual(got.tobytes(), self.samples[-1000:].tobytes())


class Flushed:
    """Recorded records, read back in chunks (what a recorder gives)."""

    def __init__(self, samples):
        self.samples = samples
        self.asked = []

    def query_chunks(self, start_us, end_us, chunk):
        self.asked.append((start_us, end_us))
        times = self.samples["system_time_us"]
        keep = np.ones(len(times), dtype=bool)
        if start_us is not None:
            keep &= times >= start_us
        if end_us is not None:
            keep &= times <= end_us
        picked = self.samples[keep]
        for i in range(0, len(picked), chunk):
            yield picked[i : i + chunk]


class PureQueryTests(unittest.SynchronousTestCase):
    """The query needs no file and no Twisted: anything with query_chunks."""

    def test_file_part_ends_before_memory(self):
        samples = synthetic_samples(300, rate=1200)
        buffer = GazeBuffer(100)
        buffer.extend(samples[200:])
        flushed = Flushed(samples)
        got = np.concatenate(list(session_range(flushed, buffer, chunk=64)))
        self.assertEqual(got.tobytes(), samples.tobytes())
        oldest = int(samples["system_time_us"][200])
        self.assertEqual(flushed.asked, [(None, oldest - 1)])

    def test_recent_range_reads_no_file(self):
        samples = synthetic_samples(300, rate=1200)
        buffer = GazeBuffer(100)
        buffer.extend(samples[200:])
        flushed = Flushed(samples)
        start = int(samples["system_time_us"][250])
        got = np.concatenate(list(session_range(flushed, buffer, start)))
        self.assertEqual(got.tobytes(), samples[250:].tobytes())
        self.assertEqual(flushed.asked, [])

    def test_empty(self):
        self.assertEqual(list(session_range(None, GazeBuffer(10))), [])
        self.assertEqual(GazeBuffer(10).query(None, None).dtype, GAZE_DTYPE)


class SessionSamplesTests(unittest.SynchronousTestCase):
    """The query bound to one session, and from when it answers whole."""

    def test_range_is_the_query(self):
        samples = synthetic_samples(300, rate=1200)
        buffer = GazeBuffer(100)
        buffer.extend(samples[200:])
        flushed = Flushed(samples)
        bound = SessionSamples(flushed, buffer, int(samples["system_time_us"][0]))
        start, end = (int(t) for t in samples["system_time_us"][[150, 250]])
        got = np.concatenate(list(bound.range(start, end, chunk=16)))
        self.assertEqual(got.tobytes(), samples[150:251].tobytes())
        self.assertEqual(flushed.asked, [(start, int(samples["system_time_us"][200]) - 1)])

    def test_holds(self):
        bound = SessionSamples(None, GazeBuffer(10), 1000)
        self.assertTrue(bound.holds(1000))
        self.assertFalse(bound.holds(999))
        self.assertFalse(SessionSamples(None, GazeBuffer(10), None).holds(0))

    def test_in_memory_is_whole_from_the_oldest_sample(self):
        samples = synthetic_samples(300, rate=1200)
        buffer = GazeBuffer(100)
        self.assertIsNone(SessionSamples.in_memory(buffer).whole_from_us)
        buffer.extend(samples)
        bound = SessionSamples.in_memory(buffer)
        self.assertIsNone(bound.recorder)
        self.assertEqual(bound.whole_from_us, int(samples["system_time_us"][200]))


class NoTwistedTests(unittest.TestCase):
    """The pure parts of the recording load without Twisted."""

    def test_export_history_and_pure_parts_import_no_twisted(self):
        code = (
            "import sys\n"
            "import jspsych_tobii.recording.export, jspsych_tobii.recording.format\n"
            "import jspsych_tobii.core.history, jspsych_tobii.core.validation\n"
            "import jspsych_tobii.core.calibration_quality, jspsych_tobii.core.jsonsafe\n"
            "import jspsych_tobii.recording.filewriter, jspsych_tobii.recording.bids\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out.strip(), "[]")
