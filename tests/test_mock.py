"""
Tests for L{jspsych_tobii.trackers.mock} and its L{EyeModel}.
"""

import threading

import numpy as np
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.core import quality
from jspsych_tobii.core.timesync import monotonic_us
from jspsych_tobii.interfaces import GAZE_DTYPE, NotificationKind, TrackerError
from jspsych_tobii.tap import Options
from jspsych_tobii.trackers import mock
from jspsych_tobii.trackers.eyemodel import EyeModel
from jspsych_tobii.trackers.mock import MockTracker
from jspsych_tobii.trackers.paced import IPacing, ISampleSource, ThreadPacing, TimerPacing

from .support import assert_close, capture_log, mock_tracker, serve, wait
from .tracker_contract import ClockContractMixin, TrackerContractMixin
from .wsclient import connect


class MockContractTests(ClockContractMixin, unittest.TestCase):
    def makeTracker(self):
        return MockTracker(self.clock, self.clock_us, rate=600), None


class MockPerSampleContractTests(TrackerContractMixin, unittest.TestCase):
    """The mock as the server runs it: each sample handed over from a pacing thread."""

    def setUp(self):
        super().setUp()
        # the pacing thread is what runs in real time here; collecting a
        # calibration point need not take a real tracker's 0.7 s
        self.patch(mock, "CALIBRATION_COLLECT_SECONDS", 0.05)

    def makeTracker(self):
        pacing = ThreadPacing(reactor, monotonic_us)
        return MockTracker(reactor, monotonic_us, rate=600, pacing=pacing), None


def stream(tracker, clock, seconds, step=0.002):
    batches = []
    tracker.connect()
    tracker.startGaze(batches.append)
    for _ in range(int(round(seconds / step))):
        clock.advance(step)
    tracker.stopGaze()
    return np.concatenate(batches) if batches else np.zeros(0, GAZE_DTYPE)


class MockTrackerTests(unittest.SynchronousTestCase):
    def test_rate_and_timing(self):
        """At 1200 Hz, 2 s of simulated time gives 2400 samples 833-834 µs apart."""
        clock = Clock()
        samples = stream(mock_tracker(clock, rate=1200), clock, 2.0)
        self.assertEqual(len(samples), 2400)
        gaps = np.diff(samples["system_time_us"])
        self.assertEqual(set(gaps.tolist()), {833, 834})
        # capture times are never in the future of delivery
        self.assertLessEqual(samples["system_time_us"][-1], clock.seconds() * 1e6)

    def test_deterministic(self):
        """The same seed and clock give the same samples; another seed does not."""
        runs = []
        for seed in (3, 3, 4):
            clock = Clock()
            runs.append(stream(mock_tracker(clock, rate=300, seed=seed), clock, 3.0))
        self.assertTrue(runs[0].tobytes() == runs[1].tobytes())
        self.assertFalse(runs[0].tobytes() == runs[2].tobytes())

    def test_plausible_behaviour(self):
        """Over a minute: saccades, blinks and one-eye losses happen, gaze stays on screen."""
        clock = Clock()
        samples = stream(mock_tracker(clock, rate=120, seed=1), clock, 60.0, step=0.05)
        left, right = samples["left_gaze_valid"], samples["right_gaze_valid"]
        self.assertTrue(np.any(~left & ~right), "no blink")
        self.assertTrue(np.any(left ^ right), "no one-eye track loss")
        self.assertGreater(np.mean(left & right), 0.8)
        both = left & right
        x = samples["left_x"][both]
        self.assertGreater(x.max() - x.min(), 0.4, "gaze never moved across the screen")
        speed = np.abs(np.diff(samples["left_x"])) * 120
        self.assertGreater(np.nanmax(speed), 3.0, "no saccade")
        # eyes ~65 cm away, pupils 2-5 mm
        self.assertTrue(550 < np.nanmean(samples["left_origin_z"]) < 750)
        self.assertTrue(2.0 < np.nanmean(samples["left_pupil"]) < 5.0)
        # the 3D gaze point lies on the display: consistent with normalised x, y
        model = EyeModel()
        on = samples[both][:50]
        expected = model.display_point(on["left_x"], on["left_y"])
        got = np.stack([on["left_point_x"], on["left_point_y"], on["left_point_z"]], axis=-1)
        self.assertTrue(np.allclose(expected, got, atol=1e-6))

    def test_look_at_and_known_offset(self):
        """A fixed target with a known offset and noise is measured back in degrees."""
        clock = Clock()
        tracker = mock_tracker(clock, rate=600, offset_deg=0.5, noise_deg=0.1, blinks=False)
        tracker.lookAt(0.3, 0.6)
        samples = stream(tracker, clock, 2.0)
        metrics = quality.validation_summary([(0.3, 0.6, samples)], tracker.info.display_area)
        assert_close(self, metrics["averageAccuracyDeg"], 0.5, 0.05)
        # each eye carries the noise put in; averaging two eyes divides it by ~sqrt(2)
        for eye in ("left", "right"):
            assert_close(self, metrics[eye]["averagePrecisionStdDeg"], 0.1, 0.02)

    def test_look_at_needs_both_coordinates(self):
        """An x without a y is refused; None alone frees the gaze."""
        model = EyeModel(blinks=False)
        with self.assertRaises(TypeError):
            model.look_at(0.3)
        model.look_at(0.3, 0.6)
        model.look_at(None)
        times = np.arange(600) * 5000
        gaze = model.samples(times)
        self.assertGreater(np.nanstd(gaze["left_x"]), 0.05)  # moving again, not fixed at 0.3

    def test_calibration_collects_at_target_with_delay(self):
        clock = Clock()
        tracker = mock_tracker(clock, rate=120)
        tracker.connect()
        results = []
        tracker.enterCalibration()
        clock.advance(0.1)
        d = tracker.collectCalibrationData(0.2, 0.8)
        d.addCallback(results.append)
        clock.advance(0.3)
        self.assertEqual(results, [], "collection should take a realistic time")
        clock.advance(0.5)
        self.assertEqual(results, [True])
        d = tracker.computeCalibration()
        clock.advance(0.5)
        result = self.successResultOf(d)
        point = result.points[0]
        mean_x = np.mean([s.x for s in point.left])
        assert_close(self, mean_x, 0.2, 0.01)

    def test_collect_outside_calibration_fails(self):
        clock = Clock()
        tracker = mock_tracker(clock)
        tracker.connect()
        self.failureResultOf(tracker.collectCalibrationData(0.5, 0.5), TrackerError)

    def test_fail_next(self):
        clock = Clock()
        tracker = mock_tracker(clock)
        tracker.failNext("connect", TrackerError("boom"))
        self.failureResultOf(tracker.connect(), TrackerError)
        self.successResultOf(tracker.connect())

    def test_frequency_change_notifies(self):
        clock = Clock()
        tracker = mock_tracker(clock, rate=120)
        notes = []
        tracker.setNotificationReceiver(notes.append)
        tracker.connect()
        self.assertEqual(self.successResultOf(tracker.setGazeOutputFrequency(600)), 600.0)
        self.assertEqual(notes[-1].kind, NotificationKind.FREQUENCY_CHANGED)
        samples = stream(tracker, clock, 1.0)
        self.assertEqual(len(samples), 600)

    def test_rejects_bad_rate(self):
        self.assertRaises(TrackerError, mock_tracker, Clock(), rate=0)

    def test_user_position_centered(self):
        """The synthetic head sits near the middle of the head box."""
        clock = Clock()
        position = mock_tracker(clock).getUserPosition()
        assert_close(self, position.left[2], 0.5, 0.15)
        self.assertLess(position.left[0], position.right[0])


class ManualPacing:
    """A pacing a test drives: C{tick()} is one take and hand-over."""

    running = False

    def start(self, source, deliver, start_us, period_us):
        self.running, self.period_us = True, period_us
        self.source, self.deliver = source, deliver

    def stop(self):
        self.running = False

    def tick(self):
        batch = self.source.take()
        if batch is not None:
            self.deliver(batch)


class CountingSource:
    """An L{ISampleSource} whose samples are numbered records; it logs its calls."""

    def __init__(self, counts=()):
        self.counts = iter(counts)
        self.calls = []
        self.taken = 0

    def take(self):
        n = next(self.counts, 0)
        self.calls.append(("take", n))
        if not n:
            return None
        batch = np.zeros(n, GAZE_DTYPE)
        batch["system_time_us"] = np.arange(self.taken, self.taken + n)
        self.taken += n
        return batch

    def prepare(self):
        self.calls.append(("prepare",))


class PacingTests(unittest.SynchronousTestCase):
    def test_delivers_what_is_due_coalescing_only_the_late(self):
        """Each hand-over delivers the samples due by then: one when on time, all when late."""
        clock, pacing = Clock(), ManualPacing()
        tracker = mock_tracker(clock, rate=1000, pacing=pacing)
        batches = []
        tracker.connect()
        tracker.startGaze(batches.append)
        self.assertEqual(pacing.period_us, 1000.0)
        pacing.tick()  # sample 0 is due at the start
        clock.advance(0.001)
        pacing.tick()
        clock.advance(0.0043)  # the hand-over came late: samples 2..5 are due
        pacing.tick()
        pacing.tick()  # nothing new is due
        self.assertEqual([len(b) for b in batches], [1, 1, 4])
        times = np.concatenate(batches)["system_time_us"]
        self.assertEqual(times.tolist(), [0, 1000, 2000, 3000, 4000, 5000])
        tracker.stopGaze()
        self.assertFalse(pacing.running)

    def test_pacing_thread_ticks_at_due_times(self):
        """
        The thread waits for each due time, takes what is due then (the late
        ones in one take), hands over their bytes, and prepares between samples.
        """
        times = iter([0, 400, 1000, 5300, 5800, 6000])
        stop = threading.Event()  # set at the fourth hand-over
        waits, puts = [], []

        class Stop:
            def is_set(self):
                return stop.is_set()

            def wait(self, seconds):
                waits.append(round(seconds * 1e6))

        def clock():
            return next(times)

        class Handoff:
            def put(self, records):
                puts.append(np.frombuffer(records, GAZE_DTYPE)["system_time_us"].tolist())
                if len(puts) == 3:
                    stop.set()

        source = CountingSource([1, 0, 1, 4])
        pacing = ThreadPacing(reactor, clock)
        pacing._run(source, Handoff(), Stop(), 0, 1000.0)
        self.assertEqual(puts, [[0], [1], [2, 3, 4, 5]])
        self.assertEqual(waits, [600, 200])
        self.assertEqual(pacing.ticks, 4)
        self.assertEqual(
            source.calls,
            [("take", 1), ("prepare",), ("take", 0), ("prepare",)]
            + [("take", 1), ("prepare",), ("take", 4), ("prepare",)],
        )

    def test_thread_pacing_hands_over_on_the_reactor(self):
        """
        A real pacing thread's samples reach C{deliver} on the reactor thread,
        as the records' bytes, until stopped.
        """
        pacing = ThreadPacing(reactor, monotonic_us)
        calls = []

        class Reactor:
            def callFromThread(self, f, *args):
                calls.append(threading.current_thread())
                f(*args)
                pacing.stop()

        pacing._reactor = Reactor()
        delivered = []
        done = threading.Event()

        def deliver(batch):
            delivered.append(batch)
            done.set()

        pacing.start(CountingSource([2]), deliver, monotonic_us(), 1000.0)
        self.assertTrue(done.wait(5.0))
        self.assertFalse(pacing.running)
        self.assertIsNot(calls[0], threading.current_thread())
        self.assertIsInstance(delivered[0], bytearray)
        self.assertEqual(np.frombuffer(delivered[0], GAZE_DTYPE)["system_time_us"].tolist(), [0, 1])

    def test_a_failing_source_is_logged_on_the_reactor_and_ends_the_stream(self):
        """
        A source that raises (a bug) stops the pacing thread; the failure,
        with its traceback, is logged through the reactor, not lost on the thread.
        """
        lines = capture_log(self, "jspsych_tobii.trackers.paced")
        done = threading.Event()
        threads = []

        class Reactor:
            def callFromThread(self, f, *args, **kwargs):
                threads.append(threading.current_thread())
                f(*args, **kwargs)
                done.set()

        class Broken(CountingSource):
            def take(self):
                raise ZeroDivisionError("a bug in the source")

        pacing = ThreadPacing(Reactor(), monotonic_us, name="test stream")
        delivered = []
        pacing.start(Broken(), delivered.append, monotonic_us(), 1000.0)
        self.assertTrue(done.wait(5.0))
        pacing.stop()
        [event] = lines
        self.assertIn("making samples failed", event["log_format"])
        self.assertEqual(event["name"], "test stream")
        self.assertIsInstance(event["log_failure"].value, ZeroDivisionError)
        self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual((delivered, pacing.ticks), ([], 1))
        self.assertIsNot(threads[0], threading.current_thread())

    def test_pacings_provide_ipacing(self):
        self.assertTrue(verifyObject(IPacing, TimerPacing(Clock())))
        self.assertTrue(verifyObject(IPacing, ThreadPacing(reactor, monotonic_us)))

    def test_thread_pacing_needs_thread_calls(self):
        """On a task.Clock, per-sample delivery is refused, with the way out."""
        with self.assertRaises(TrackerError) as caught:
            ThreadPacing(Clock(), monotonic_us)
        self.assertIn("--mock-delivery batched", str(caught.exception))

    def test_timer_pacing_batches(self):
        """On each tick of its timer the pacing takes what is due and delivers it, if any."""
        clock = Clock()
        pacing = TimerPacing(clock)
        calls = []
        source = CountingSource([2, 0, 3, 1])
        pacing.start(source, lambda batch: calls.append((clock.seconds(), len(batch))), 0, 833.3)
        clock.pump([0.002] * 3)
        self.assertEqual(calls, [(0.002, 2), (0.006, 3)])
        pacing.stop()
        clock.advance(1)
        self.assertEqual(len(calls), 2)
        self.assertFalse(pacing.running)


class MockSamplesTests(unittest.SynchronousTestCase):
    """The mock's L{ISampleSource}, which the pacing thread takes samples from."""

    def setUp(self):
        self.clock = Clock()
        self.model = EyeModel(seed=3)
        self.made = []
        samples = self.model.samples
        self.patch(
            self.model,
            "samples",
            lambda times, *a: self.made.append(len(times)) or samples(times, *a),
        )
        self.source = mock.MockSamples(
            self.model, threading.Lock(), lambda: int(self.clock.seconds() * 1e6), 0, 1000.0
        )

    def test_prepared_samples_are_taken_without_synthesis(self):
        """
        Samples are made C{SYNTHESIS_SECONDS} ahead; once those are taken,
        C{prepare()} makes the next ones, so taking them when due makes none.
        """
        self.assertTrue(verifyObject(ISampleSource, self.source))
        ahead = int(1000 * mock.SYNTHESIS_SECONDS)
        self.assertEqual(len(self.source.take()), 1)  # sample 0, at the start
        self.assertEqual(self.made, [ahead])
        self.source.prepare()  # what was made ahead is not used up: nothing more
        self.clock.advance((ahead - 1) / 1000)
        self.assertEqual(len(self.source.take()), ahead - 1)
        self.assertEqual(self.made, [ahead])
        self.source.prepare()
        self.assertEqual(self.made, [ahead, ahead])
        self.clock.advance(0.002)
        batch = self.source.take()
        self.assertEqual(batch["system_time_us"].tolist(), [ahead * 1000, (ahead + 1) * 1000])
        self.assertEqual(self.made, [ahead, ahead])
        self.assertIsNone(self.source.take())  # nothing new is due

    def test_a_model_change_discards_what_was_made_ahead(self):
        self.source.take()
        self.source.prepare()
        self.model.look_at(0.25, 0.75)
        self.source.discard_ahead()
        self.clock.advance(0.003)
        batch = self.source.take()
        self.assertEqual(len(batch), 3)
        assert_close(self, np.nanmean((batch["left_x"] + batch["right_x"]) / 2), 0.25, 0.02)

    def test_nothing_is_taken_after_close(self):
        """A pacing thread still ending after a restart takes nothing from the old run."""
        self.source.close()
        self.clock.advance(0.01)
        self.assertIsNone(self.source.take())
        self.source.prepare()
        self.assertEqual(self.made, [])


class MockDeliveryOptionTests(unittest.TestCase):
    """--mock-delivery chooses how the server's mock hands samples over."""

    def test_option(self):
        for argv, expected in (
            ([], "per-sample"),
            (["--mock-delivery", "batched"], "batched"),
            (["--mock-delivery", "per-sample"], "per-sample"),
        ):
            options = Options()
            options.parseOptions(["--mock", *argv])
            self.assertEqual(options.config.mock_delivery, expected)
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--mock", "--mock-delivery", "sometimes"])
        self.assertIn("--mock-delivery", str(caught.exception))
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--mock-delivery", "batched"])
        self.assertIn("--mock-delivery: applies to --mock only", str(caught.exception))

    @defer.inlineCallbacks
    def check_server(self, delivery, pacing_class):
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1",
            mock=True,
            mock_rate=1200,
            mock_delivery=delivery,
            mock_offset_deg=0.5,
            mock_noise_deg=0.1,
        )
        service, port = serve(self, config)
        client = yield connect(port)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.request("start_tracking")
        yield wait(0.3)
        yield client.request("stop_tracking")
        tracker = service.state.trackers.tracker
        self.assertIsInstance(tracker._pacing, pacing_class)
        self.assertEqual((tracker.model.offset_deg, tracker.model.noise_deg), (0.5, 0.1))
        seqs = [g["seq"] for g in client.gaze]
        self.assertGreater(len(seqs), 100)
        self.assertEqual(seqs, list(range(len(seqs))))
        return tracker

    @defer.inlineCallbacks
    def test_server_per_sample(self):
        tracker = yield self.check_server("per-sample", ThreadPacing)
        self.assertGreater(tracker._pacing.ticks, 0)
        self.assertFalse(tracker._pacing.running)

    def test_server_batched(self):
        return self.check_server("batched", TimerPacing)
