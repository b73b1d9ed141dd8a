"""
Tests for L{jspsych_tobii.server.hub}: the shared gaze stream, on a fake
clock with the mock tracker, in memory; and its preview, the tracker's
stream run for the status page without a tracking session.
"""

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.interfaces import NotificationKind, TrackerError, empty_gaze

from .support import FakeServer, capture_log


class ObserverTests(unittest.SynchronousTestCase):
    """One failing observer (the recorder) costs no client its gaze."""

    def test_failing_observer(self):
        server = FakeServer(rate=120)
        a, b = server.client("10.0.0.1"), server.client("10.0.0.2")
        seen = []

        def recorder(batch):
            seen.append(len(batch))
            raise OSError("No space left on device")

        healthy = []
        hub = server.state.hub
        hub.observers[:0] = [recorder]
        hub.observers.append(lambda batch: healthy.append(len(batch)))
        lines = capture_log(self, "jspsych_tobii.server.hub.GazeHub")
        a.request("start_tracking")
        b.request("start_tracking")
        server.advance(1.0)
        self.assertEqual([g["seq"] for g in a.gaze], list(range(120)))
        self.assertEqual(b.gaze, a.gaze)
        self.assertEqual(sum(healthy), 120, "the next observer still sees every batch")
        self.assertEqual(sum(seen), 120)
        self.assertGreater(len(seen), 1)
        # its first failure is logged with the traceback, the others counted
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(hub.observer_failures, {recorder: len(seen)})
        a.request("stop_tracking")
        b.request("stop_tracking")
        failures = [e for e in lines if e["log_level"].name in ("error", "critical")]
        self.assertEqual(len(failures), 2)
        summary = failures[1]["log_format"].format(**failures[1])
        self.assertIn(f"failed on {len(seen)} gaze batches of tracking session 1", summary)
        self.assertEqual(hub.observer_failures, {})
        # the next session logs its first failure again
        a.request("start_tracking")
        server.advance(0.1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class Listener:
    """Stands where the recorder stands: told sessions, handed batches."""

    def __init__(self):
        self.events = []
        self.samples = 0

    def session_started(self, number, started_us, info):
        self.events.append(("started", number))

    def session_ended(self, reason):
        self.events.append(("ended", reason))

    def write_batch(self, batch):
        self.samples += len(batch)


class PreviewTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.server = FakeServer(rate=120)
        self.hub = self.server.state.hub
        self.listener = Listener()
        self.hub.session_listeners.append(self.listener)
        self.hub.observers.append(self.listener.write_batch)

    def test_preview_streams_without_a_session(self):
        """No session, nothing recorded, nothing sent: samples go to the preview buffer only."""
        watcher = self.server.client()
        d = self.hub.preview("page")
        self.server.advance(1.0)
        self.successResultOf(d)
        self.assertTrue(self.hub.previewing)
        self.assertFalse(self.hub.running)
        self.assertEqual(self.hub.session, 0)
        self.assertEqual(self.listener.events, [])
        self.assertEqual(self.listener.samples, 0)
        self.assertEqual(watcher.gaze, [])
        self.assertEqual(len(self.hub.buffer), 0)
        self.assertGreater(len(self.hub.preview_buffer), 100)
        # the client contract: no sample of a session that is not running
        self.assertIsNone(watcher.request("get_current_gaze")["gaze"])
        self.assertEqual(watcher.request("get_status")["streaming"], False)

    def test_tracking_during_a_preview_starts_a_session_on_the_same_stream(self):
        self.hub.preview("page")
        self.server.advance(0.5)
        page = self.server.client()
        reply = page.request("start_tracking", advance=0.5)
        self.assertIs(reply["success"], True)
        self.assertEqual(reply["session"], 1)
        self.assertEqual(self.listener.events, [("started", 1)])
        seqs = [g["seq"] for g in page.gaze]
        self.assertEqual(seqs, list(range(len(seqs))))
        self.assertGreater(len(seqs), 50)
        self.assertEqual(self.listener.samples, len(seqs))
        self.assertTrue(self.hub.running)
        self.assertFalse(self.hub.previewing)
        # the experiment stops: the session ends, the preview goes on
        page.request("stop_tracking", advance=0.1)
        self.assertEqual(self.listener.events, [("started", 1), ("ended", "no client tracking")])
        recorded, previewed = self.listener.samples, self.hub.preview_buffer.appended
        self.server.advance(0.5)
        self.assertTrue(self.hub.previewing)
        self.assertEqual(self.listener.samples, recorded)
        self.assertGreater(self.hub.preview_buffer.appended, previewed + 50)
        # the preview ends: the stream stops
        self.successResultOf(self.hub.end_preview("page"))
        self.assertFalse(self.hub.previewing)
        previewed = self.hub.preview_buffer.appended
        self.server.advance(0.5)
        self.assertEqual(self.hub.preview_buffer.appended, previewed)

    def test_preview_during_a_session_changes_nothing(self):
        page = self.server.client()
        page.request("start_tracking", advance=0.5)
        before = len(page.gaze)
        self.successResultOf(self.hub.preview("page"))
        self.server.advance(0.5)
        self.successResultOf(self.hub.end_preview("page"))
        self.server.advance(0.5)
        self.assertTrue(self.hub.running)
        self.assertEqual(self.listener.events, [("started", 1)])
        seqs = [g["seq"] for g in page.gaze]
        self.assertEqual(seqs, list(range(len(seqs))))
        self.assertGreater(len(seqs), before + 100)

    def test_preview_without_a_tracker_fails_and_holds_nothing(self):
        server = FakeServer(rate=120, start=False)
        d = server.state.hub.preview("page")
        self.assertIsInstance(self.failureResultOf(d).value, TrackerError)
        self.assertEqual(server.state.hub.preview_count, 0)

    def test_tracker_lost_during_a_preview_is_no_session_event(self):
        self.hub.preview("page")
        self.server.advance(0.2)
        self.server.tracker.notify(NotificationKind.CONNECTION_LOST, "cable")
        self.assertFalse(self.hub.previewing)
        self.server.tracker.notify(NotificationKind.CONNECTION_RESTORED, "cable")
        self.server.advance(0.2)
        self.assertTrue(self.hub.previewing)
        self.assertEqual(self.listener.events, [])


class FanOutTests(unittest.SynchronousTestCase):
    """Each batch is stamped, kept and sent as complete frames, few or many at once."""

    def check(self, step, observe):
        server = FakeServer(rate=1200)
        hub = server.state.hub
        seen = []
        if observe:
            hub.observers.append(lambda batch: seen.extend(batch["seq"].tolist()))
        a, b = server.client("10.0.0.1"), server.client("10.0.0.2")
        a.request("start_tracking")
        b.request("start_tracking")
        server.clock.advance(0.0)
        for _ in range(3):
            server.clock.advance(step)  # 2 ms: 2-3 samples; 0.5 s: 600 at once
        for client in (a, b):
            seqs = [g["seq"] for g in client.gaze]
            self.assertEqual(seqs, list(range(len(seqs))))
            self.assertGreater(len(seqs), 3 * step * 1200 - 3)
            received = {g["server_timestamp"] for g in client.gaze}
            self.assertTrue(received <= {t * 1000.0 for t in (step, 2 * step, 3 * step)})
        self.assertEqual(hub.buffer.snapshot()["seq"].tolist(), seqs)
        if observe:
            self.assertEqual(seen, seqs)
        latest = a.request("get_current_gaze")["gaze"]
        self.assertEqual(latest, a.gaze[-1])

    def test_few_per_batch(self):
        self.check(0.002, observe=False)

    def test_a_batch_in_one_send_per_client(self):
        """Samples handed over together go to each client in one send; single ones alone."""
        server = FakeServer(rate=1200)
        a, b = server.client("10.0.0.1"), server.client("10.0.0.2")
        a.request("start_tracking")
        b.request("start_tracking")
        server.clock.advance(0.0)
        server.clock.advance(0.005)  # 6 samples at once
        self.assertEqual((a.batches, b.batches), ([6], [6]))
        server.clock.advance(1 / 1200)  # one
        self.assertEqual((a.batches, len(a.gaze)), ([6], 7))
        self.assertEqual([g["seq"] for g in b.gaze], list(range(7)))

    def test_many_per_batch(self):
        self.check(0.5, observe=False)

    def test_many_per_batch_with_an_observer(self):
        self.check(0.5, observe=True)

    def test_few_per_batch_with_an_observer(self):
        self.check(0.002, observe=True)


class RecordBytesTests(unittest.SynchronousTestCase):
    """
    A tracker may hand over its records' bytes instead of an array
    (L{jspsych_tobii.interfaces.GazeBatch}): the clients, the buffer and the
    observers see the same samples either way.
    """

    def setUp(self):
        self.server = FakeServer(rate=120)
        self.hub = self.server.state.hub
        self.seen = []
        self.hub.observers.append(lambda batch: self.seen.append(batch.copy()))
        self.client = self.server.client()
        self.client.request("start_tracking")
        self.server.clock.advance(0.0)
        self.server.trackers.tracker.stopGaze()  # only the batches below arrive

    def batch(self, n, first_us=1_000_000):
        batch = empty_gaze(n)
        batch["system_time_us"] = first_us + np.arange(n) * 833
        batch["device_time_us"] = batch["system_time_us"] + 5
        for side, x in (("left", 0.25), ("right", 0.75)):
            batch[f"{side}_gaze_valid"] = True
            batch[f"{side}_x"] = x
            batch[f"{side}_y"] = 0.5
        return batch

    def test_bytes_and_array_alike(self):
        as_array, as_bytes = self.batch(3), self.batch(3, first_us=2_000_000)
        self.hub._on_gaze(as_array)
        self.hub._on_gaze(bytearray(as_bytes.tobytes()))
        self.hub._on_gaze(bytearray(self.batch(1, first_us=3_000_000).tobytes()))
        gaze = self.client.gaze
        self.assertEqual([g["seq"] for g in gaze], list(range(7)))
        self.assertEqual([g["timestamp"] for g in gaze[3:6]], [2000.0, 2000.833, 2001.666])
        self.assertEqual(
            [
                {k: v for k, v in g.items() if k not in ("seq", "timestamp", "deviceTimestamp")}
                for g in gaze[:3]
            ],
            [
                {k: v for k, v in g.items() if k not in ("seq", "timestamp", "deviceTimestamp")}
                for g in gaze[3:6]
            ],
        )
        self.assertEqual(gaze[3]["x"], 0.5)
        self.assertEqual([len(b) for b in self.seen], [3, 3, 1])
        self.assertEqual(self.seen[1]["seq"].tolist(), [3, 4, 5])
        self.assertEqual(self.hub.buffer.snapshot()["seq"].tolist(), list(range(7)))

    def test_not_whole_records(self):
        records = bytearray(self.batch(2).tobytes())
        self.assertRaises(ValueError, self.hub._on_gaze, records[:-1])
        self.assertEqual(self.client.gaze, [])

    def test_another_dtype(self):
        self.assertRaises(TypeError, self.hub._on_gaze, np.zeros(2, dtype="f8"))
