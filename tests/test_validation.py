"""
Tests for L{jspsych_tobii.core.validation}: a run's limits, what it keeps of
the client's copies, and the split between gathering (on the thread that
owns the buffer) and computing (anywhere).
"""

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.core.history import SessionSamples
from jspsych_tobii.core.validation import (
    GATHER_STEP_SAMPLES,
    MAX_SAMPLES_PER_POINT,
    MAX_VALIDATION_POINTS,
    ClientCopies,
    ValidationLimitError,
    ValidationRun,
)
from jspsych_tobii.interfaces import empty_gaze


def recorded(times_ms, x=0.5, y=0.5):
    """Binocular records at these times, both eyes at (x, y)."""
    batch = empty_gaze(len(times_ms))
    batch["system_time_us"] = np.round(np.asarray(times_ms) * 1000).astype(np.int64)
    for eye in ("left", "right"):
        batch[f"{eye}_x"], batch[f"{eye}_y"] = x, y
        batch[f"{eye}_gaze_valid"] = True
    return batch


def copies(times_ms, x=0.5, y=0.5):
    return [{"x": x, "y": y, "timestamp": t} for t in times_ms]


class LimitTests(unittest.SynchronousTestCase):
    def test_points_per_run(self):
        run = ValidationRun()
        for _ in range(MAX_VALIDATION_POINTS):
            run.add_point(0.5, 0.5, None, [])
        with self.assertRaises(ValidationLimitError) as caught:
            run.add_point(0.5, 0.5, None, [])
        self.assertIn(f"at most {MAX_VALIDATION_POINTS} points", str(caught.exception))
        self.assertEqual(len(run.points), MAX_VALIDATION_POINTS)
        self.assertRaises(ValidationLimitError, run.check)
        self.assertRaises(
            ValidationLimitError, run.gather, SessionSamples.in_memory(GazeBuffer(10)), None
        )

    def test_samples_per_point(self):
        run = ValidationRun()
        run.add_point(0.5, 0.5, None, copies(range(MAX_SAMPLES_PER_POINT)))
        with self.assertRaises(ValidationLimitError) as caught:
            run.add_point(0.5, 0.5, None, copies(range(MAX_SAMPLES_PER_POINT + 1)))
        self.assertIn(f"{MAX_SAMPLES_PER_POINT + 1} gaze_samples", str(caught.exception))
        self.assertEqual(len(run.points), 1)
        with self.assertRaises(ValidationLimitError) as caught:
            run.check()
        self.assertIn("validation_point 2 was refused", str(caught.exception))

    def test_server_samples_per_point(self):
        """Two copies spanning a long time would select too many of the server's samples."""
        buffer = GazeBuffer(20000)
        buffer.extend(recorded(np.arange(0, 12000, 1.0)))  # 12 s at 1000 Hz
        run = ValidationRun()
        run.add_point(0.5, 0.5, None, copies([100.0, 11000.0]))
        job = run.gather(SessionSamples.in_memory(buffer), None)
        self.assertEqual(len(job.served[0]), MAX_SAMPLES_PER_POINT + 1)  # no more is read
        with self.assertRaises(ValidationLimitError) as caught:
            job.compute()
        self.assertIn("validation point 1", str(caught.exception))
        self.assertIn(f"at most {MAX_SAMPLES_PER_POINT}", str(caught.exception))


class ClientCopiesTests(unittest.SynchronousTestCase):
    def test_only_times_and_positions_are_kept(self):
        run = ValidationRun()
        samples = [
            {"x": 0.25, "y": 0.75, "timestamp": 12.5, "leftValid": True, "pad": "x" * 100},
            {"x": None, "y": None, "timestamp": 10.0},  # lost: counts for the window only
            {"x": 0.5, "y": 0.5, "timestamp": True},  # a boolean is not a time
            {"x": 0.5, "y": 0.5, "timestamp": 10**400},  # nor a number beyond 1e15
            "junk",
            {"x": 0.5, "y": 0.5, "timestamp": 11.0},
        ]
        run.add_point(0.5, 0.5, 1.0, samples)
        point = run.points[0]
        self.assertEqual(point.window_us, (10000, 12500))
        self.assertEqual(point.copies.rows.tolist(), [[11000, 0.5, 0.5], [12500, 0.25, 0.75]])
        self.assertEqual(point.copies.count, 6)

    def test_window_of_the_copies_ignores_garbage(self):
        """Every entry with a finite numeric timestamp counts for the window; nothing else."""
        gaze_samples = [
            {"timestamp": 1000.5, "x": 0.5, "y": 0.5},
            {"timestamp": float("nan")},
            {"timestamp": float("inf")},
            {"timestamp": "1500"},
            {"timestamp": True},
            {"timestamp": None},
            {"x": 0.4},
            None,
            7,
            "text",
            [1, 2],
            {"timestamp": 1200.25},
            {"timestamp": 999},
        ]
        copies = ClientCopies.reduce(gaze_samples)
        self.assertEqual(copies.window_us, (999_000, 1_200_250))
        self.assertEqual(copies.count, len(gaze_samples))
        self.assertEqual(copies.rows.tolist(), [[1_000_500, 0.5, 0.5]])

    def test_window_rounds_to_microseconds(self):
        """1234.567 ms is 1234567 µs although 1234.567 * 1000 is not exact."""
        copies = ClientCopies.reduce([{"timestamp": 1234.567}, {"timestamp": 1234.568}])
        self.assertEqual(copies.window_us, (1_234_567, 1_234_568))

    def test_no_window(self):
        for nothing in ([], [{"timestamp": "x"}, None], None, {"timestamp": 5}):
            self.assertIsNone(ClientCopies.reduce(nothing).window_us, nothing)

    def test_client_copies_used_when_the_buffer_moved_on(self):
        buffer = GazeBuffer(100)
        buffer.extend(recorded(np.arange(5000, 5100, 1.0)))
        run = ValidationRun(skip_initial_ms=0)
        run.add_point(0.5, 0.5, None, copies(np.arange(0, 50, 1.0), x=0.6))
        report = run.compute(buffer, None)
        item = report["pointData"][0]
        self.assertEqual(item["sampleSource"], "client")
        self.assertEqual(item["numSamples"], 50)
        self.assertAlmostEqual(item["meanGaze"]["x"], 0.6)


class GatherTests(unittest.SynchronousTestCase):
    def test_compute_reads_only_its_copy(self):
        """After gather, the buffer may change (the reactor goes on): the report does not."""
        buffer = GazeBuffer(1000)
        buffer.extend(recorded(np.arange(0, 1000, 1.0), x=0.4))
        run = ValidationRun(skip_initial_ms=0)
        run.add_point(0.5, 0.5, None, copies([100.0, 199.0]))
        run.add_point(0.5, 0.5, None, copies([300.0, 349.0]))
        job = run.gather(SessionSamples.in_memory(buffer), None)
        buffer.extend(recorded(np.arange(1000, 2000, 1.0), x=0.9))  # overwrites everything
        run.add_point(0.5, 0.5, None, [])  # a later point is not in this job
        report = job.compute()
        self.assertEqual(report["numPoints"], 2)
        self.assertEqual([p["numSamples"] for p in report["pointData"]], [100, 50])
        for item in report["pointData"]:
            self.assertEqual(item["sampleSource"], "server")
            self.assertAlmostEqual(item["meanGaze"]["x"], 0.4)

    def test_each_window_is_copied(self):
        """Each point's window is its own copy of the server's samples."""
        buffer = GazeBuffer(1000)
        buffer.extend(recorded(np.arange(0, 1000, 1.0)))
        run = ValidationRun()
        run.add_point(0.5, 0.5, None, copies([100.0, 199.0]))
        run.add_point(0.5, 0.5, None, copies([150.0, 400.0]))
        job = run.gather(SessionSamples.in_memory(buffer), None)
        self.assertEqual([len(s) for s in job.served], [100, 251])
        for served in job.served:
            self.assertFalse(np.shares_memory(served, buffer._data))

    def test_gathering_reads_in_bounded_steps(self):
        """Each step (a reactor turn) copies about one full point, and no more of a window."""
        buffer = GazeBuffer(20_000)
        buffer.extend(recorded(np.arange(0, 20_000, 1.0), x=0.4))
        run = ValidationRun(skip_initial_ms=0)
        for start in (0.0, 3000.0):
            run.add_point(0.5, 0.5, None, copies([start, start + 2999.0]))  # 3,000 each
        run.add_point(0.5, 0.5, None, copies([7000.0, 7009.0]))  # 10
        run.add_point(0.5, 0.5, None, copies([0.0, 19_999.0]))  # 20,000
        run.add_point(0.5, 0.5, None, copies([100.0, 109.0]))
        gathering = run.gathering(SessionSamples.in_memory(buffer), None)
        self.assertRaises(RuntimeError, gathering.result)
        read_by_step = [len(gathering._served) for _ in gathering.steps()]
        self.assertEqual(read_by_step, [2, 4])  # 6,000, then 5,011, then the last point
        served = [len(w) for w in gathering.result().served]
        self.assertEqual(served, [3000, 3000, 10, GATHER_STEP_SAMPLES, 10])
        self.assertRaises(ValidationLimitError, gathering.result().compute)  # 20,000 > 5,000


class SessionSamplesTests(unittest.SynchronousTestCase):
    """Validation reads the server's samples through the get_data query."""

    def test_windows_older_than_memory_come_from_the_query(self):
        buffer = GazeBuffer(100)
        buffer.extend(recorded(np.arange(5000, 5100, 1.0), x=0.9))
        older = recorded(np.arange(0, 5000, 1.0), x=0.3)
        asked = []

        class Recording:
            def query_chunks(self, start_us, end_us, chunk):
                asked.append((start_us, end_us))
                times = older["system_time_us"]
                yield older[(times >= start_us) & (times <= end_us)]

        samples = SessionSamples(Recording(), buffer, 0)
        run = ValidationRun(skip_initial_ms=0)
        run.add_point(0.5, 0.5, None, copies(np.arange(1000, 1050, 1.0), x=0.6))
        run.add_point(0.5, 0.5, None, copies(np.arange(5050, 5060, 1.0), x=0.6))
        report = run.gather(samples, None).compute()
        first, second = report["pointData"]
        self.assertEqual(first["sampleSource"], "server")
        self.assertEqual(first["numSamples"], 50)
        self.assertAlmostEqual(first["meanGaze"]["x"], 0.3)
        self.assertEqual(second["sampleSource"], "server")
        self.assertEqual(second["numSamples"], 10)
        self.assertAlmostEqual(second["meanGaze"]["x"], 0.9)
        self.assertEqual(asked, [(1_000_000, 1_049_000)])  # the memory part is not asked

    def test_a_window_before_what_is_whole_uses_the_copies(self):
        buffer = GazeBuffer(100)
        buffer.extend(recorded(np.arange(5000, 5100, 1.0), x=0.9))
        samples = SessionSamples(None, buffer, 4000_000)
        self.assertTrue(samples.holds(4000_000))
        self.assertFalse(samples.holds(3999_999))
        run = ValidationRun(skip_initial_ms=0)
        run.add_point(0.5, 0.5, None, copies(np.arange(3990, 4010, 1.0), x=0.6))
        item = run.gather(samples, None).compute()["pointData"][0]
        self.assertEqual(item["sampleSource"], "client")
        self.assertAlmostEqual(item["meanGaze"]["x"], 0.6)
