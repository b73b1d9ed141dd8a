"""
Tests for calibration and validation flows (L{jspsych_tobii.server.calibration}
and the validation handlers), as the jsPsych plugins run them.
"""

from twisted.trial import unittest

from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.server.calibration import MAX_CALIBRATION_POINTS

from .support import FakeServer, HeldWork, assert_close, mock_tracker

POINTS = [(0.1, 0.1), (0.9, 0.1), (0.5, 0.5), (0.1, 0.9), (0.9, 0.9)]


class CalibrationFlowTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.server = FakeServer(rate=120)
        self.client = self.server.client()

    def calibrate(self, client):
        client.send({"type": "calibration_start"})  # fire-and-forget
        replies = []
        for x, y in POINTS:
            replies.append(client.request("calibration_point", advance=1.0, point={"x": x, "y": y}))
        return replies, client.request("calibration_compute", advance=0.5)

    def test_plugin_flow(self):
        replies, result = self.calibrate(self.client)
        self.assertTrue(all(r["success"] is True for r in replies))
        self.assertEqual(result["type"], "calibration_compute")
        self.assertIs(result["success"], True)
        self.assertEqual(len(result["pointData"]), len(POINTS))
        again = self.client.request("get_calibration_data")
        self.assertIs(again["success"], True)
        self.assertEqual(again["pointData"], result["pointData"])
        self.assertIsNone(self.server.state.calibration.owner)

    def test_get_calibration_data_does_not_recompute(self):
        self.calibrate(self.client)
        computed = []
        original = self.server.tracker.computeCalibration
        self.server.tracker.computeCalibration = lambda: computed.append(1) or original()
        self.client.request("get_calibration_data")
        self.assertEqual(computed, [])

    def test_no_calibration_yet(self):
        reply = self.client.request("get_calibration_data")
        self.assertIs(reply["success"], False)
        self.assertIn("no calibration", reply["error"])

    def test_collection_does_not_block_gaze(self):
        """While a point is being collected, other clients' gaze keeps streaming."""
        watcher = self.server.client("10.1.1.1")
        watcher.request("start_tracking")
        self.client.send({"type": "calibration_start"})
        self.server.advance(0.1)
        self.client.send(
            {"type": "calibration_point", "point": {"x": 0.5, "y": 0.5}, "requestId": "p"}
        )
        before = len(watcher.gaze)
        self.server.advance(0.5)
        self.assertIsNone(self.client.reply("p"), "collection should still be running")
        self.assertEqual(len(watcher.gaze), before + 60)
        self.server.advance(0.5)
        self.assertIs(self.client.reply("p")["success"], True)
        # during collection the mock participant looked at the target
        recent = [g for g in watcher.gaze[before + 10 : before + 60] if g["x"] is not None]
        self.assertTrue(all(abs(g["x"] - 0.5) < 0.02 for g in recent))

    def test_one_owner_at_a_time(self):
        other = self.server.client("10.1.1.2")
        self.client.send({"type": "calibration_start"})
        self.server.advance(0.1)
        reply = other.request("calibration_start")
        self.assertEqual(reply["type"], "error")
        self.assertIn("another client is calibrating", reply["error"])
        reply = other.request("calibration_point", point={"x": 0.5, "y": 0.5})
        self.assertIn("another client is calibrating", reply["error"])
        # the owner leaves: calibration mode is left and the other may calibrate
        self.client.close()
        self.server.advance(0.1)
        self.assertIsNone(self.server.state.calibration.owner)
        self.assertFalse(self.server.tracker._calibrating)
        replies, result = self.calibrate(other)
        self.assertIs(result["success"], True)

    def test_failed_start_surfaces_on_next_request(self):
        self.server.tracker.failNext("enterCalibration", TrackerError("device refused calibration"))
        self.client.send({"type": "calibration_start"})
        reply = self.client.request("calibration_point", advance=1.0, point={"x": 0.5, "y": 0.5})
        self.assertEqual(reply["type"], "error")
        self.assertIn("calibration could not start: device refused calibration", reply["error"])
        reply = self.client.request("calibration_compute", advance=1.0)
        self.assertIn("device refused calibration", reply["error"])

    def test_point_without_start(self):
        reply = self.client.request("calibration_point", point={"x": 0.5, "y": 0.5})
        self.assertIn("calibration_start", reply["error"])

    def test_discard_and_recollect_point(self):
        self.client.send({"type": "calibration_start"})
        for x, y in POINTS:
            self.client.request("calibration_point", advance=1.0, point={"x": x, "y": y})
        reply = self.client.request(
            "calibration_discard_point", advance=0.1, point={"x": 0.5, "y": 0.5}
        )
        self.assertIs(reply["success"], True)
        result = self.client.request("calibration_compute", advance=0.5)
        self.assertEqual(len(result["pointData"]), len(POINTS) - 1)

    def test_calibration_points_limit(self):
        """
        At most MAX_CALIBRATION_POINTS targets; the same target again, or one
        in the place of a discarded one, is fine.
        """
        self.client.send({"type": "calibration_start"})
        targets = [
            ((i % 10) / 10 + 0.05, (i // 10) / 10 + 0.05) for i in range(MAX_CALIBRATION_POINTS)
        ]
        for x, y in targets:
            reply = self.client.request("calibration_point", advance=1.0, point={"x": x, "y": y})
            self.assertIs(reply["success"], True)
        reply = self.client.request("calibration_point", advance=1.0, point={"x": 0.99, "y": 0.99})
        self.assertEqual(reply["type"], "error")
        self.assertEqual(reply["requestId"], self.client.messages[-1]["requestId"])
        self.assertIn(f"at most {MAX_CALIBRATION_POINTS} calibration points", reply["error"])
        x, y = targets[0]
        again = self.client.request("calibration_point", advance=1.0, point={"x": x, "y": y})
        self.assertIs(again["success"], True)
        self.client.request("calibration_discard_point", advance=0.1, point={"x": x, "y": y})
        reply = self.client.request("calibration_point", advance=1.0, point={"x": 0.99, "y": 0.99})
        self.assertIs(reply["success"], True)
        result = self.client.request("calibration_compute", advance=1.0)
        self.assertEqual(len(result["pointData"]), MAX_CALIBRATION_POINTS)
        # a new calibration starts with none
        self.client.send({"type": "calibration_start"})
        reply = self.client.request("calibration_point", advance=1.0, point={"x": 0.5, "y": 0.5})
        self.assertIs(reply["success"], True)

    def test_summary_runs_as_a_worker_job(self):
        work = HeldWork()
        self.server = FakeServer(rate=120, work=work)
        self.client = self.server.client()
        self.client.send({"type": "calibration_start"})
        for x, y in POINTS:
            self.client.request("calibration_point", advance=1.0, point={"x": x, "y": y})
        self.client.send({"type": "calibration_compute", "requestId": "c"})
        self.server.advance(1.0)
        self.assertIsNone(self.client.reply("c"))
        self.assertEqual(len(work.queue), 1)
        work.run_next()
        self.assertIs(self.client.reply("c")["success"], True)


class ValidationFlowTests(unittest.SynchronousTestCase):
    def test_plugin_flow(self):
        """validation_start, start_tracking, points with the client's samples, compute."""
        server = FakeServer(rate=120)
        client = server.client()
        client.send({"type": "validation_start"})
        client.request("start_tracking")
        for x, y in POINTS:
            server.tracker.lookAt(x, y)
            start = len(client.gaze)
            server.advance(1.0)
            samples = client.gaze[start:]
            client.send(
                {
                    "type": "validation_point",
                    "point": {"x": x, "y": y},
                    "timestamp": 0,
                    "gaze_samples": samples,
                }
            )
        server.tracker.lookAt(None)
        client.request("stop_tracking")
        report = client.request("validation_compute")
        self.assertIs(report["success"], True)
        self.assertLess(report["averageAccuracyNorm"], 0.05)
        self.assertIsInstance(report["averagePrecisionNorm"], float)
        self.assertEqual(len(report["pointData"]), len(POINTS))
        for item, (x, y) in zip(report["pointData"], POINTS):
            self.assertEqual(item["point"], {"x": x, "y": y})
            self.assertEqual(item["sampleSource"], "server")
        self.assertLess(report["averageAccuracyDeg"], 0.5)

    def test_garbage_samples_do_not_crash(self):
        server = FakeServer(rate=120)
        client = server.client()
        client.send({"type": "validation_start"})
        client.send(
            {
                "type": "validation_point",
                "point": {"x": 0.5, "y": 0.5},
                "gaze_samples": [1, None, "x", {"timestamp": "a"}, {"x": 0.5}],
            }
        )
        report = client.request("validation_compute")
        self.assertIs(report["success"], False)
        self.assertEqual(report["pointData"][0]["point"], {"x": 0.5, "y": 0.5})


class KnownTruthTests(unittest.SynchronousTestCase):
    def test_validation_reports_the_mock_truth(self):
        """
        A mock with a 0.5 deg systematic error and 0.1 deg noise, told where
        each target is (mock_look_at), is validated through the protocol:
        accuracy comes back as 0.5 deg within 0.05 deg, per-eye STD as 0.1.
        """
        tracker = mock_tracker(rate=300, offset_deg=0.5, noise_deg=0.1, blinks=False)
        server = FakeServer(clock=tracker._reactor, tracker=tracker, validation_skip_ms=300)
        client = server.client()
        client.send({"type": "validation_start"})
        client.request("start_tracking")
        for x, y in POINTS:
            self.assertIs(client.request("mock_look_at", point={"x": x, "y": y})["success"], True)
            start = len(client.gaze)
            server.advance(1.0)
            client.send(
                {
                    "type": "validation_point",
                    "point": {"x": x, "y": y},
                    "gaze_samples": client.gaze[start:],
                }
            )
        client.request("mock_look_at")
        report = client.request("validation_compute")
        assert_close(self, report["averageAccuracyDeg"], 0.5, 0.05)
        for eye in ("left", "right"):
            assert_close(self, report[eye]["averagePrecisionStdDeg"], 0.1, 0.02)
        # 700 ms of each 1 s window is used: the first 300 ms are skipped
        for item in report["pointData"]:
            assert_close(self, item["numSamples"], 210, 2)

    def test_calibration_degrees_use_measured_eye_position(self):
        server = FakeServer(rate=120)
        client = server.client()
        client.request("start_tracking")
        client.send({"type": "calibration_start"})
        for x, y in POINTS:
            client.request("calibration_point", advance=1.0, point={"x": x, "y": y})
        result = client.request("calibration_compute", advance=0.5)
        self.assertIs(result["eyePositionAssumed"], False)
        self.assertTrue(550 < result["eyePositionMm"]["z"] < 750)
        self.assertIsInstance(result["averageAccuracyDeg"], float)
