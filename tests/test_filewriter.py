"""
Tests for L{jspsych_tobii.recording.filewriter}: what the writer thread does
to a session's files, run here on the test's own thread with a fake clock.
"""

from __future__ import annotations

import collections
import os

from twisted.trial import unittest

from jspsych_tobii.recording.filewriter import Command, FileWriter, SessionFiles
from jspsych_tobii.recording.format import make_header, read_events, read_gaze, read_header
from jspsych_tobii.recording.text import BLOCK, TextPaths

from .test_recording import T0_UNIX, T0_US, batches_of, scratch, synthetic_samples


class Clock:
    """A monotonic µs clock the test moves."""

    def __init__(self):
        self.now = 1_000_000

    def __call__(self):
        return self.now


class FileWriterTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.folder = scratch(self)
        os.makedirs(self.folder)
        self.reports = []
        self.clock = Clock()
        self.writer = FileWriter(
            lambda format, **fields: self.reports.append((format, fields)), 2.0, self.clock
        )
        self.fsyncs = []
        real_fsync = os.fsync
        self.patch(os, "fsync", lambda fd: self.fsyncs.append(fd) or real_fsync(fd))

    def files(self, stem="s1"):
        gaze = os.path.join(self.folder, stem + ".gaze")
        events = os.path.join(self.folder, stem + ".events.jsonl")
        header = make_header(
            session=1,
            started_unix=T0_UNIX,
            started_us=T0_US,
            tracker=None,
            server_version="test",
            events_file=os.path.basename(events),
        )
        return SessionFiles(1, stem, gaze, events, T0_US, T0_UNIX, header)

    def test_a_session_from_the_queue(self):
        files = self.files()
        samples = synthetic_samples(30)
        queue = collections.deque(
            [Command("open", files)]
            + batches_of(samples[:20], 7)
            + [Command("event", files, {"t_server_ms": 1.0, "kind": "marker"})]
            + batches_of(samples[20:], 4)
        )
        self.assertIs(self.writer.drain(queue), False)
        self.assertEqual(len(queue), 0)
        self.assertEqual(files.written, 30)
        self.assertEqual(files.flushed_records, 0)  # written, not yet flushed
        self.writer.flush()
        self.assertEqual(files.flushed_records, 30)
        self.assertEqual(files.flushed_until_us, int(samples["system_time_us"][-1]))
        queue.extend([Command("close", files, (T0_UNIX + 1, T0_US + 10)), Command("stop")])
        self.assertIs(self.writer.drain(queue), True)
        self.assertTrue(files.closed)
        self.assertEqual(read_gaze(files.gaze_path).tobytes(), samples.tobytes())
        header = read_header(files.gaze_path)
        self.assertIs(header["complete"], True)
        self.assertEqual((header["samples"], header["ended_us"]), (30, T0_US + 10))
        self.assertEqual([e["kind"] for e in read_events(files.events_path)], ["marker"])
        self.assertEqual(self.reports, [])

    def test_syncs_on_its_clock(self):
        """A sync every fsync_interval of the given clock, and one at the close."""
        files = self.files()
        self.writer.open(files)
        self.writer.write_gaze([synthetic_samples(5)])
        self.writer.flush()
        self.assertEqual(self.fsyncs, [])
        self.clock.now += 1_999_999
        self.writer.flush()
        self.assertEqual(self.fsyncs, [])
        self.clock.now += 1
        self.writer.flush()
        self.assertEqual(len(self.fsyncs), 2)  # the gaze and the events file
        self.clock.now += 1_000_000
        self.writer.flush()
        self.assertEqual(len(self.fsyncs), 2)  # the next one is 2 s after that
        self.writer.close(files, None, None)
        self.assertEqual(len(self.fsyncs), 4)

    def test_failure_is_reported_and_later_samples_dropped(self):
        files = self.files()
        os.rmdir(self.folder)  # the files cannot be created
        self.writer.open(files)
        self.assertIn("cannot create the recording files", files.error)
        self.assertEqual(len(self.reports), 1)
        self.assertEqual(self.reports[0][1]["n"], 1)
        self.writer.write_gaze([synthetic_samples(3)])
        self.assertEqual((files.written, files.dropped), (0, 3))

    def test_a_failed_recording_drops_its_text_cache(self):
        """When writing samples fails, the get_data text cache goes too (no stale text)."""
        files = self.files()
        files.text = TextPaths.for_session(self.folder, files.stem)
        self.writer.open(files)
        samples = synthetic_samples(BLOCK + 5)
        self.writer.write_gaze([samples])
        self.writer.flush()
        self.assertEqual(files.texts, BLOCK)
        self.assertTrue(os.path.exists(files.text.text))
        paths = files.text

        class Broken:
            def write(self, data):
                raise OSError(28, "No space left on device")

            def close(self):
                pass

        self.writer.gaze = Broken()
        self.writer.write_gaze([synthetic_samples(3)])
        self.assertIn("cannot write samples", files.error)
        self.assertIsNone(files.text)
        self.assertEqual(files.texts, 0)
        self.assertFalse(os.path.exists(paths.text))
        self.assertFalse(os.path.exists(paths.ends))
        self.assertEqual(len(self.reports), 1)  # the recording's failure, said once

    def test_a_bug_in_a_step_is_reported(self):
        def broken():
            raise ZeroDivisionError()

        self.writer.guarded(broken)
        self.assertEqual(self.reports[0][1]["step"], "broken")
        self.assertIsInstance(self.reports[0][1]["error"], ZeroDivisionError)

    def test_barriers_released_after_the_flush(self):
        released = []

        class Barrier:
            def set(self):
                released.append(True)

        self.writer.drain(collections.deque([Command("barrier", None, Barrier())]))
        self.assertEqual(released, [])
        self.writer.release_barriers()
        self.assertEqual(released, [True])
