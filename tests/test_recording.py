"""
Tests for L{jspsych_tobii.recording.format} and L{jspsych_tobii.recording.writer}.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time

import numpy as np
from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.core.timesync import ServerClock, clock_from_seconds, monotonic_us
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    NotificationKind,
    TrackerNotification,
    empty_gaze,
)
from jspsych_tobii.recording import filewriter
from jspsych_tobii.recording import format as fmt
from jspsych_tobii.recording.format import (
    HEADER_SIZE,
    RecordingFormatError,
    count_records,
    encode_event,
    encode_header,
    events_path_for,
    gaze_path_for,
    make_header,
    read_events,
    read_gaze,
    read_header,
    session_stem,
    write_recording,
)
from jspsych_tobii.recording.writer import RecorderService, SessionRecorder
from jspsych_tobii.trackers.eyemodel import EyeModel
from jspsych_tobii.trackers.mock import MockTracker

#: 2026-11-24T08:15:00.123Z
T0_UNIX = 1795508100.123
T0_US = 5_000_000_000


def scratch(case) -> str:
    """A path for a new directory (not created yet), removed after the test."""
    base = tempfile.mkdtemp(prefix="jspsych-tobii-test-")
    case.addCleanup(shutil.rmtree, base, True)
    return os.path.join(base, "d")


def tracker_description() -> dict:
    """What the mock tracker says about itself, as a recording header holds it."""
    tracker = MockTracker(Clock(), monotonic_us, rate=600)
    return tracker.connect().result.to_dict()


def synthetic_samples(n: int, rate: float = 600.0, seed: int = 0, start_us: int = T0_US):
    """C{n} samples of the synthetic participant, with seq and server time filled in."""
    times = start_us + np.round(np.arange(n) * 1e6 / rate).astype(np.int64)
    samples = EyeModel(seed=seed).samples(times, 7_340_000_000)
    samples["seq"] = np.arange(n)
    samples["server_time_us"] = times + 1500
    return samples


def in_time_range(times: np.ndarray, start, end) -> np.ndarray:
    """Which of C{times} lie in C{start <= t <= end} (either bound may be None)."""
    keep = np.ones(len(times), dtype=bool)
    if start is not None:
        keep &= times >= start
    if end is not None:
        keep &= times <= end
    return keep


def batches_of(samples: np.ndarray, size: int = 3):
    return [samples[i : i + size].copy() for i in range(0, len(samples), size)]


class FormatTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = scratch(self)
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "a.gaze")

    def test_header_layout(self):
        """The header is 4096 bytes of JSON, spaces and a final newline, describing the records."""
        header = make_header(
            session=3,
            started_unix=T0_UNIX,
            started_us=T0_US,
            tracker=tracker_description(),
            server_version="9.9",
            events_file="a.events.jsonl",
        )
        raw = encode_header(header)
        self.assertEqual(len(raw), HEADER_SIZE)
        self.assertEqual(raw[-1:], b"\n")
        decoded = json.loads(raw)
        self.assertEqual(decoded["magic"], "jspsych-tobii-gaze")
        self.assertEqual(decoded["header_size"], HEADER_SIZE)
        self.assertEqual(decoded["record_size"], GAZE_DTYPE.itemsize)
        self.assertEqual(np.dtype([tuple(f) for f in decoded["dtype"]]), GAZE_DTYPE)
        self.assertEqual(decoded["started_utc"], "2026-11-24T08:15:00.123Z")
        self.assertEqual(decoded["tracker"]["model"], "Mock Tracker")
        self.assertFalse(decoded["complete"])

    def test_oversized_tracker_description_is_trimmed(self):
        """A huge tracker description cannot push the header past its size."""
        tracker = {"model": "big", "blob": ["x" * 100] * 100}
        raw = encode_header(make_header(session=1, started_unix=0, started_us=0, tracker=tracker))
        self.assertEqual(len(raw), HEADER_SIZE)
        decoded = json.loads(raw)
        self.assertEqual(decoded["tracker"], {"model": "big", "truncated": True})

    def test_round_trip(self):
        """Samples and events written are read back exactly; numpy reads the samples in one line."""
        samples = synthetic_samples(1000)
        events = [
            {"t_server_ms": 5_000_000.5, "kind": "marker", "label": "trial 1"},
            {"t_server_ms": 5_000_100.0, "kind": "calibration_result", "success": True},
        ]
        write_recording(self.path, samples, tracker=tracker_description(), events=events)
        self.assertEqual(read_gaze(self.path).tobytes(), samples.tobytes())
        self.assertEqual(
            np.fromfile(self.path, dtype=GAZE_DTYPE, offset=4096).tobytes(), samples.tobytes()
        )
        self.assertEqual(read_events(self.path), events)
        header = read_header(self.path)
        self.assertTrue(header["complete"])
        self.assertEqual(header["samples"], 1000)

    def test_one_line_without_the_package(self):
        """The header alone is enough to read the records: no import of this package needed."""
        samples = synthetic_samples(10)
        write_recording(self.path, samples)
        p = self.path
        # fmt: off
        data = np.fromfile(p, dtype=[tuple(f) for f in json.loads(open(p, "rb").read(4096))["dtype"]], offset=4096)  # noqa: E501
        # fmt: on
        self.assertEqual(data.tobytes(), samples.tobytes())

    def test_read_gaze_is_a_read_only_memmap(self):
        write_recording(self.path, synthetic_samples(10))
        data = read_gaze(self.path)
        self.assertIsInstance(data, np.memmap)
        self.assertFalse(data.flags.writeable)

    def test_empty_recording(self):
        write_recording(self.path, empty_gaze(0))
        self.assertEqual(len(read_gaze(self.path)), 0)
        self.assertEqual(read_gaze(self.path).dtype, GAZE_DTYPE)

    def test_truncated_record_left_out(self):
        """A record cut short by a crash is left out, by read_gaze and by np.fromfile."""
        samples = synthetic_samples(100)
        write_recording(self.path, samples)
        with open(self.path, "ab") as f:
            f.write(synthetic_samples(1).tobytes()[:77])
        self.assertEqual(count_records(self.path), (100, 77))
        self.assertEqual(read_gaze(self.path).tobytes(), samples.tobytes())
        self.assertEqual(len(np.fromfile(self.path, dtype=GAZE_DTYPE, offset=HEADER_SIZE)), 100)

    def assertBadFile(self, content, *words):
        with open(self.path, "wb") as f:
            f.write(content)
        with self.assertRaises(RecordingFormatError) as caught:
            read_gaze(self.path)
        message = str(caught.exception)
        self.assertIn(self.path, message)
        for word in words:
            self.assertIn(word, message)

    def test_bad_files(self):
        """Each kind of bad file gives a RecordingFormatError that names the file and the cause."""
        header = encode_header(make_header(session=1, started_unix=0, started_us=0))
        self.assertBadFile(b"", "empty")
        self.assertBadFile(header[:1000], "truncated header")
        self.assertBadFile(b"\x00\x01garbage" * 1000, "not a jspsych-tobii")
        self.assertBadFile(b"{" + b" " * 5000, "not valid JSON")
        other = json.loads(header)
        other["format_version"] = 99
        self.assertBadFile(json.dumps(other).encode().ljust(4096), "format version 99")
        other = json.loads(header)
        other["magic"] = "something else"
        self.assertBadFile(json.dumps(other).encode().ljust(4096), "not a jspsych-tobii")
        other = json.loads(header)
        other["record_size"] = 3
        self.assertBadFile(json.dumps(other).encode().ljust(4096), "records are")

    def test_missing_file(self):
        with self.assertRaises(RecordingFormatError) as caught:
            read_header(os.path.join(self.dir, "nothing.gaze"))
        self.assertIn("no such file", str(caught.exception))
        with self.assertRaises(RecordingFormatError):
            read_events(os.path.join(self.dir, "nothing.gaze"))

    def test_events_truncated_last_line(self):
        """A last event line cut short is left out; damage elsewhere is an error."""
        path = events_path_for(self.path)
        good = encode_event({"t_server_ms": 1.0, "kind": "marker"})
        with open(path, "wb") as f:
            f.write(good + good + b'{"t_server_ms": 3.0, "ki')
        self.assertEqual(len(read_events(path)), 2)
        with open(path, "wb") as f:
            f.write(good + good.rstrip(b"\n"))  # complete but for its newline
        self.assertEqual(len(read_events(path)), 2)
        with open(path, "wb") as f:
            f.write(good + b"not json\n" + good)
        with self.assertRaises(RecordingFormatError) as caught:
            read_events(path)
        self.assertIn("line 2", str(caught.exception))
        with open(path, "wb") as f:
            f.write(b"[1, 2]\n")
        self.assertRaises(RecordingFormatError, read_events, path)

    def test_event_encoding(self):
        """Events hold numpy values, records with to_dict, NaN (as null), one line each."""
        note = TrackerNotification(NotificationKind.CONNECTION_LOST, 5, "cable\nunplugged")
        line = encode_event(
            {
                "t_server_ms": 1.5,
                "kind": "k",
                "n": np.int64(3),
                "a": np.arange(3),
                "nan": float("nan"),
                "note": note,
                "caps": frozenset({"b", "a"}),
            }
        )
        self.assertEqual(line.count(b"\n"), 1)
        event = json.loads(line)
        self.assertEqual(event["n"], 3)
        self.assertEqual(event["a"], [0, 1, 2])
        self.assertIsNone(event["nan"])
        self.assertEqual(event["note"]["message"], "cable\nunplugged")
        self.assertEqual(event["caps"], ["a", "b"])

    def test_names(self):
        self.assertEqual(session_stem(T0_UNIX, 2), "20261124T081500.123Z-s2")
        self.assertEqual(gaze_path_for("d/x.events.jsonl"), "d/x.gaze")
        self.assertEqual(gaze_path_for("d/x.gaze"), "d/x.gaze")
        self.assertEqual(gaze_path_for("d/x"), "d/x.gaze")
        self.assertEqual(events_path_for("d/x.gaze"), "d/x.events.jsonl")
        self.assertEqual(fmt.utc_iso(86400.0016), "1970-01-02T00:00:00.002Z")


class FakeReactor:
    """Collects callFromThread calls, to run them on the test's thread."""

    def __init__(self):
        self.calls = []
        self._lock = threading.Lock()

    def callFromThread(self, f, *args, **kwargs):
        with self._lock:
            self.calls.append((f, args, kwargs))

    def run_calls(self):
        with self._lock:
            calls, self.calls = self.calls, []
        for f, args, kwargs in calls:
            f(*args, **kwargs)


class WriterTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = scratch(self)
        self.now_us = T0_US

    def recorder(self, **kwargs) -> SessionRecorder:
        kwargs.setdefault("wall_clock", lambda: T0_UNIX)
        kwargs.setdefault("clock_us", lambda: self.now_us)
        recorder = SessionRecorder(self.dir, **kwargs)
        self.addCleanup(recorder.close)
        return recorder

    def test_files_named_by_start_time(self):
        """A session's files are named by its UTC start time and number."""
        recorder = self.recorder()
        files = recorder.session_started(4, T0_US, tracker_description())
        recorder.close()
        self.assertEqual(os.path.basename(files.gaze_path), "20261124T081500.123Z-s4.gaze")
        self.assertEqual(
            os.path.basename(files.events_path), "20261124T081500.123Z-s4.events.jsonl"
        )
        header = read_header(files.gaze_path)
        self.assertEqual(header["session"], 4)
        self.assertEqual(header["started_us"], T0_US)
        self.assertEqual(header["tracker"]["serialNumber"], "MOCK-0001")
        self.assertEqual(header["events_file"], os.path.basename(files.events_path))

    def test_same_name_twice(self):
        """Two sessions starting in the same millisecond get distinct files."""
        recorder = self.recorder()
        first = recorder.session_started(1)
        recorder.session_ended()
        recorder.sync()
        recorder2 = self.recorder()
        second = recorder2.session_started(1)
        self.assertNotEqual(first.gaze_path, second.gaze_path)
        self.assertTrue(second.gaze_path.endswith("-s1-2.gaze"))

    def test_writes_every_sample_in_order(self):
        """Batches come out of the writer thread as one file, byte for byte."""
        samples = synthetic_samples(3000)
        recorder = self.recorder()
        files = recorder.session_started(1, T0_US)
        for batch in batches_of(samples, 7):
            recorder.write_batch(batch)
        recorder.session_ended()
        recorder.close()
        self.assertEqual(read_gaze(files.gaze_path).tobytes(), samples.tobytes())
        header = read_header(files.gaze_path)
        self.assertTrue(header["complete"])
        self.assertEqual(header["samples"], 3000)
        self.assertEqual(files.samples, 3000)
        self.assertEqual(files.flushed_records, 3000)
        self.assertEqual(files.flushed_until_us, samples["system_time_us"][-1])

    def test_flushed_within_interval(self):
        """
        Samples reach the file (the OS) after the flush interval, without any
        sync call.  How soon is bench/bench_recording.py's; the bound here
        only tells the interval (0.05 s) from one a hundred times longer.
        """
        recorder = self.recorder(flush_interval=0.05)
        files = recorder.session_started(1, T0_US)
        recorder.write_batch(synthetic_samples(5))
        recorder.sync()  # the file exists, with its header and these five
        batch = synthetic_samples(10, start_us=T0_US + 10_000)
        queued = time.monotonic()
        recorder.write_batch(batch)
        while os.path.getsize(files.gaze_path) < HEADER_SIZE + 15 * GAZE_DTYPE.itemsize:
            self.assertLess(time.monotonic() - queued, 5.0, "not flushed within 5 s")
            time.sleep(0.005)
        self.assertEqual(len(read_gaze(files.gaze_path)), 15)
        # meanwhile the header still says the session is open
        self.assertFalse(read_header(files.gaze_path)["complete"])

    def test_reactor_side_only_queues(self):
        """
        Handing a batch over queues it: the samples are written on the writer
        thread, never on the caller's (the reactor's).  What a batch costs
        the reactor is measured by bench/bench_recording.py.
        """
        threads = []
        write_gaze = filewriter.FileWriter.write_gaze

        def spy(writer, batches):
            threads.append(threading.current_thread())
            return write_gaze(writer, batches)

        self.patch(filewriter.FileWriter, "write_gaze", spy)
        recorder = self.recorder()
        files = recorder.session_started(1, T0_US)
        samples = synthetic_samples(3000)
        for batch in batches_of(samples, 3):
            recorder.write_batch(batch)
        recorder.close()
        self.assertTrue(threads, "no sample was written")
        self.assertNotIn(threading.current_thread(), threads)
        self.assertEqual(read_gaze(files.gaze_path).tobytes(), samples.tobytes())

    def test_wrong_dtype(self):
        recorder = self.recorder()
        recorder.session_started(1)
        self.assertRaises(TypeError, recorder.write_batch, np.zeros(3))

    def test_events(self):
        """Events go beside the samples, stamped on the server clock, in order."""
        recorder = self.recorder()
        recorder.write_event("client_connected", peer="tcp:127.0.0.1:5555")
        self.now_us = T0_US + 500
        files = recorder.session_started(1, T0_US + 1000, tracker_description())
        self.now_us = T0_US + 2000
        recorder.write_event("marker", label="trial 1", value=np.float64(2.5))
        recorder.write_event("marker", t_server_ms=5_000_002.5, label="explicit")
        recorder.session_ended(reason="no client tracking")
        recorder.close()
        events = read_events(files.events_path)
        kinds = [e["kind"] for e in events]
        self.assertEqual(
            kinds, ["client_connected", "session_started", "marker", "marker", "session_ended"]
        )
        self.assertEqual(events[0]["t_server_ms"], 5_000_000.0)
        self.assertEqual(events[1]["t_server_ms"], 5_000_001.0)
        self.assertEqual(events[1]["tracker"]["model"], "Mock Tracker")
        self.assertEqual(
            events[2],
            {"t_server_ms": 5_000_002.0, "kind": "marker", "label": "trial 1", "value": 2.5},
        )
        self.assertEqual(events[3]["t_server_ms"], 5_000_002.5)
        self.assertEqual(events[4]["reason"], "no client tracking")
        self.assertEqual(events[4]["samples"], 0)

    def test_sessions(self):
        """Each session gets its own pair of files; starting one ends the one open."""
        recorder = self.recorder()
        samples = synthetic_samples(30)
        first = recorder.session_started(1, T0_US)
        recorder.write_batch(samples[:10].copy())
        second = recorder.session_started(2, T0_US + 100_000)
        recorder.write_batch(samples[10:].copy())
        recorder.session_ended()
        recorder.write_event("client_disconnected", peer="x")
        recorder.close()
        self.assertEqual(len(read_gaze(first.gaze_path)), 10)
        self.assertEqual(len(read_gaze(second.gaze_path)), 20)
        self.assertTrue(read_header(first.gaze_path)["complete"])
        self.assertEqual(read_events(first.events_path)[-1]["reason"], "a new session started")
        # an event after the last session goes to a file of its own
        idle = [n for n in os.listdir(self.dir) if n.endswith("-s0.events.jsonl")]
        self.assertEqual(len(idle), 1)
        self.assertEqual(
            read_events(os.path.join(self.dir, idle[0]))[0]["kind"], "client_disconnected"
        )

    def test_unannounced_session(self):
        """Samples with no session open are not lost: they start one."""
        recorder = self.recorder()
        samples = synthetic_samples(10)
        recorder.write_batch(samples)
        self.assertIsNotNone(recorder.current)
        self.assertEqual(recorder.current.session, 1)
        self.assertEqual(recorder.current.started_us, T0_US)
        path = recorder.current.gaze_path
        recorder.close()
        self.assertEqual(read_gaze(path).tobytes(), samples.tobytes())

    def test_after_close(self):
        """Once closed, batches and events are ignored and close is idempotent."""
        recorder = self.recorder()
        recorder.close()
        recorder.write_event("marker")
        recorder.session_ended()
        self.assertIs(recorder.close(), recorder.close())
        self.assertIsNone(recorder.session_started(1))
        recorder.write_batch(synthetic_samples(3))
        self.assertEqual(os.listdir(self.dir), [])

    def test_close_with_reactor(self):
        """With a reactor, close returns a Deferred fired (on the reactor) once all is on disk."""
        reactor = FakeReactor()
        recorder = self.recorder(reactor=reactor)
        files = recorder.session_started(1, T0_US)
        recorder.write_batch(synthetic_samples(100))
        d = recorder.close()
        self.assertTrue(recorder._stopped.wait(5))
        self.assertNoResult(d)
        reactor.run_calls()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(read_header(files.gaze_path)["samples"], 100)

    def test_service(self):
        """Stopping the recorder service closes the recorder."""
        recorder = self.recorder()
        svc = RecorderService(recorder)
        svc.startService()
        files = recorder.session_started(1)
        self.successResultOf(svc.stopService())
        self.assertTrue(recorder.closed)
        self.assertTrue(read_header(files.gaze_path)["complete"])

    def test_write_failure_is_reported_not_raised(self):
        """A session whose files cannot be written fails alone, with the reason kept."""
        recorder = self.recorder()
        os.rmdir(self.dir)  # the files cannot be created
        files = recorder.session_started(1)
        recorder.write_batch(synthetic_samples(6))
        recorder.sync()
        self.assertIn("cannot create", files.error)
        self.assertEqual(files.dropped, 6)
        os.makedirs(self.dir)
        second = recorder.session_started(2)  # the next session works again
        recorder.close()
        self.assertIsNone(second.error)
        self.assertTrue(read_header(second.gaze_path)["complete"])


class QueryTests(unittest.SynchronousTestCase):
    """Reading a time range of the session back from the file."""

    def setUp(self):
        self.recorder = SessionRecorder(scratch(self))
        self.addCleanup(self.recorder.close)
        self.samples = synthetic_samples(6000, rate=1200)
        self.files = self.recorder.session_started(1, T0_US)
        for batch in batches_of(self.samples, 3):
            self.recorder.write_batch(batch)
        self.recorder.sync()
        self.times = self.samples["system_time_us"]

    def expected(self, start, end):
        return self.samples[in_time_range(self.times, start, end)]

    def test_ranges(self):
        t = self.times
        for start, end in [
            (None, None),
            (int(t[100]), int(t[200])),  # inclusive at both ends
            (int(t[100]) + 1, int(t[200]) - 1),
            (None, int(t[10])),
            (int(t[5990]), None),
            (int(t[-1]) + 1, None),  # after the end
            (None, int(t[0]) - 1),  # before the start
        ]:
            got = self.recorder.query(start, end)
            self.assertEqual(got.tobytes(), self.expected(start, end).tobytes(), (start, end))
            self.assertNotIsInstance(got, np.memmap)  # an in-memory copy

    def test_chunks(self):
        """A long range comes in bounded chunks that add up to the range."""
        start, end = int(self.times[7]), int(self.times[5000])
        chunks = list(self.recorder.query_chunks(start, end, chunk=1000))
        self.assertEqual([len(c) for c in chunks], [1000] * 4 + [994])
        self.assertEqual(np.concatenate(chunks).tobytes(), self.expected(start, end).tobytes())

    def test_only_flushed_records(self):
        """Records still queued are not answered yet (the in-memory buffer has them)."""
        recorder = SessionRecorder(scratch(self), flush_interval=1.0)
        self.addCleanup(recorder.close)
        recorder.session_started(1, T0_US)
        recorder.write_batch(self.samples[:100])
        recorder.sync()
        recorder.write_batch(self.samples[100:200])  # written at the next flush, up to 1 s away
        self.assertEqual(recorder.query().tobytes(), self.samples[:100].tobytes())
        recorder.sync()
        self.assertEqual(recorder.query().tobytes(), self.samples[:200].tobytes())

    def test_after_session_and_next(self):
        """The last session stays queryable until the next one starts."""
        self.recorder.session_ended()
        self.recorder.sync()
        self.assertEqual(len(self.recorder.query()), 6000)
        self.recorder.session_started(2)
        self.assertEqual(len(self.recorder.query()), 0)

    def test_read_range_of_a_file(self):
        """The format's ranged read: only the first count records, chunked, by time."""
        t = self.times
        path = self.files.gaze_path
        chunks = list(fmt.read_range(path, 3000, int(t[2990]), int(t[3500]), chunk=4))
        self.assertEqual([len(c) for c in chunks], [4, 4, 2])  # records 2990..2999
        self.assertEqual(np.concatenate(chunks).tobytes(), self.samples[2990:3000].tobytes())
        self.assertEqual(list(fmt.read_range(path, 0)), [])

    def test_span_is_the_sorted_search(self):
        """record_span finds what np.searchsorted finds, repeated times included."""
        path = os.path.join(os.path.dirname(self.files.gaze_path), "repeats.gaze")
        samples = self.samples[:500].copy()
        samples["system_time_us"] = T0_US + np.repeat(np.arange(250), 2) * 1000
        fmt.write_recording(path, samples, started_unix=T0_UNIX)
        times = samples["system_time_us"]
        for start, end in [
            (None, None),
            (T0_US, T0_US),
            (T0_US + 999, T0_US + 5000),
            (T0_US - 1, T0_US + 10**9),
            (T0_US + 10**9, None),
            (None, T0_US - 1),
        ]:
            lo = 0 if start is None else int(np.searchsorted(times, start, "left"))
            hi = 500 if end is None else int(np.searchsorted(times, end, "right"))
            self.assertEqual(fmt.record_span(path, 500, start, end), (lo, max(lo, hi)))

    def test_no_session(self):
        recorder = SessionRecorder(scratch(self))
        self.addCleanup(recorder.close)
        self.assertEqual(len(recorder.query()), 0)
        self.assertEqual(recorder.query().dtype, GAZE_DTYPE)


class HubIntegrationTests(unittest.SynchronousTestCase):
    """The recorder as a hub observer, fed by the mock tracker on a test clock."""

    def test_records_hub_stream(self):
        from jspsych_tobii.server.hub import GazeHub

        clock = Clock()
        clock.advance(1000)
        tracker = MockTracker(clock, clock_from_seconds(clock.seconds), rate=1200)
        tracker.connect()

        class Trackers:
            def require(self):
                return tracker

        server_clock = ServerClock(clock_from_seconds(clock.seconds))
        hub = GazeHub(Trackers(), server_clock, 10_000, lambda payload: payload)
        recorder = SessionRecorder(scratch(self), clock_us=server_clock.now_us)
        self.addCleanup(recorder.close)
        hub.observers.append(recorder.write_batch)
        token = object()
        hub.hold(token)
        files = recorder.session_started(
            hub.session, hub.session_started_us, tracker.info.to_dict()
        )
        for _ in range(500):
            clock.advance(0.002)
        recorder.write_event("marker", label="middle")
        hub.release(token)
        recorder.session_ended()
        recorder.close()
        recorded = read_gaze(files.gaze_path)
        self.assertEqual(len(recorded), 1200)
        self.assertEqual(recorded["seq"].tolist(), list(range(1200)))
        self.assertEqual(recorded.tobytes(), hub.buffer.snapshot().tobytes())
        self.assertEqual(read_events(files.events_path)[1]["t_server_ms"], 1001_000.0)
