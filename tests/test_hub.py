"""
Tests for L{jspsych_tobii.server.hub}: the shared gaze stream, on a fake
clock with the mock tracker, in memory.
"""

from twisted.trial import unittest

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
