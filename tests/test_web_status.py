"""
The status page's facts (L{jspsych_tobii.web.status}): what C{/status.json}
reports, that watching changes nothing, and the preview over HTTP.
"""

import json
import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii import __version__
from jspsych_tobii.config import ServerConfig
from jspsych_tobii.core.timesync import clock_from_seconds
from jspsych_tobii.interfaces import GAZE_DTYPE, NotificationKind, TrackerError
from jspsych_tobii.recording.format import HEADER_SIZE, write_recording
from jspsych_tobii.trackers.replay import ReplayTracker

from .httpclient import request
from .support import FakeServer, assert_close, mock_tracker, serve, wait
from .test_calibration import POINTS
from .test_recording import synthetic_samples, tracker_description
from .wsclient import connect


def board_of(server):
    return server.service.site.board


class SnapshotTests(unittest.SynchronousTestCase):
    """The snapshot on a fake clock, with the mock tracker."""

    def setUp(self):
        self.server = FakeServer(rate=120)
        self.board = board_of(self.server)

    def test_tracker_and_server(self):
        self.server.advance(2.0)
        status = self.board.snapshot()
        self.assertIs(status["ok"], True)
        tracker = status["tracker"]
        self.assertEqual(tracker["state"], "connected")
        self.assertEqual(tracker["source"], "mock")
        self.assertIn("MOCK TRACKER", tracker["warning"])
        self.assertEqual(tracker["model"], "Mock Tracker")
        self.assertEqual(tracker["serial"], "MOCK-0001")
        self.assertEqual(tracker["address"], "mock://tracker")
        self.assertEqual(tracker["frequency"], 120.0)
        self.assertEqual(status["server"]["version"], __version__)
        assert_close(self, status["server"]["uptimeSeconds"], 2.0, 0.01)
        self.assertIsNone(status["recording"])
        self.assertEqual(status["gaze"], {"source": None, "points": [], "latest": None})
        # the head position comes from the tracker even while nothing streams
        position = status["position"]
        self.assertIs(position["leftValid"], True)
        assert_close(self, position["leftZ"], 0.5, 0.2)
        json.dumps(status, allow_nan=False)

    def test_session_rate_loss_and_gaze(self):
        client = self.server.client()
        client.request("start_tracking")
        client.request("mock_look_at", point={"x": 0.25, "y": 0.75})
        self.server.advance(2.0)
        status = self.board.snapshot()
        session = status["session"]
        self.assertEqual(session["number"], 1)
        self.assertIs(session["running"], True)
        self.assertEqual(session["trackingPages"], 1)
        self.assertEqual(session["samples"], len(client.gaze))
        assert_close(self, session["rateHz"], 120.0, 0.5)
        self.assertTrue(0.0 <= session["dataLoss"] < 0.5)
        assert_close(self, session["durationSeconds"], 2.0, 0.05)
        gaze = status["gaze"]
        self.assertEqual(gaze["source"], "session")
        self.assertLessEqual(len(gaze["points"]), 120)
        self.assertGreater(len(gaze["points"]), 60)
        ages = [p[0] for p in gaze["points"]]
        self.assertEqual(ages, sorted(ages, reverse=True))
        self.assertEqual(ages[-1], 0.0)
        self.assertLessEqual(ages[0], 1000.0)
        # the participant looks at (0.25, 0.75), and that is what the plot shows
        assert_close(self, gaze["latest"]["x"], 0.25, 0.02)
        assert_close(self, gaze["latest"]["y"], 0.75, 0.02)
        client.request("stop_tracking")
        stopped = self.board.snapshot()
        self.assertIs(stopped["session"]["running"], False)
        self.assertIsNone(stopped["gaze"]["source"])

    def test_calibration_and_validation_per_eye(self):
        client = self.server.client()
        client.request("start_tracking")
        self.server.advance(100.0, step=0.05)
        client.send({"type": "calibration_start"})
        for x, y in POINTS:
            client.request("calibration_point", advance=1.0, point={"x": x, "y": y})
        calibration = client.request("calibration_compute", advance=0.5)
        self.assertIs(calibration["success"], True)
        client.send({"type": "validation_start"})
        for x, y in POINTS:
            client.request("mock_look_at", point={"x": x, "y": y})
            start = len(client.gaze)
            self.server.advance(1.0)
            client.send(
                {
                    "type": "validation_point",
                    "point": {"x": x, "y": y},
                    "gaze_samples": client.gaze[start:],
                }
            )
        validation = client.request("validation_compute")
        self.server.advance(3.0)
        status = self.board.snapshot()
        shown = status["calibration"]
        self.assertIs(shown["success"], True)
        self.assertEqual(shown["peer"], "127.0.0.1")
        self.assertTrue(shown["atUtc"].endswith("Z"))
        assert_close(self, shown["ageSeconds"], 8.0, 0.5)  # 5 validation points, then 3 s
        for eye in ("left", "right"):
            self.assertEqual(shown["accuracyDeg"][eye], calibration[eye]["averageAccuracyDeg"], eye)
            self.assertEqual(
                shown["precisionNorm"][eye], calibration[eye]["averagePrecisionNorm"], eye
            )
        self.assertEqual(shown["accuracyDeg"]["average"], calibration["averageAccuracyDeg"])
        checked = status["validation"]
        for eye in ("left", "right"):
            for name, key in (
                ("accuracyDeg", "averageAccuracyDeg"),
                ("precisionRmsS2SDeg", "averagePrecisionRmsS2SDeg"),
                ("precisionStdDeg", "averagePrecisionStdDeg"),
                ("dataLoss", "averageDataLoss"),
            ):
                self.assertEqual(checked[name][eye], validation[eye][key], (name, eye))
                self.assertIsInstance(checked[name][eye], float, (name, eye))
        assert_close(self, checked["ageSeconds"], 3.0, 0.1)

    def test_no_tracker(self):
        tracker = mock_tracker(rate=120)
        tracker.failNext("connect", TrackerError("no eye tracker found"))
        server = FakeServer(clock=tracker._reactor, tracker=tracker)
        status = board_of(server).snapshot()
        self.assertIs(status["ok"], False)
        self.assertEqual(status["tracker"]["state"], "none")
        self.assertEqual(status["tracker"]["error"], "no eye tracker found")
        self.assertIsNone(status["tracker"]["model"])
        self.assertIsNone(status["position"])
        self.assertEqual(status["session"]["number"], 0)
        for call in server.clock.getDelayedCalls():
            call.cancel()

    def test_lost_tracker(self):
        self.server.tracker.notify(NotificationKind.CONNECTION_LOST, "cable pulled")
        status = self.board.snapshot()
        self.assertIs(status["ok"], False)
        self.assertEqual(status["tracker"]["state"], "lost")
        self.assertEqual(status["tracker"]["model"], "Mock Tracker")

    def test_replay_is_announced(self):
        folder = tempfile.mkdtemp(prefix="jspsych-tobii-status-")
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "pilot.gaze")
        write_recording(path, synthetic_samples(600, rate=600), tracker=tracker_description())
        clock = Clock()
        server = FakeServer(
            clock=clock,
            tracker=ReplayTracker(clock, clock_from_seconds(clock.seconds), path),
            mock=False,
            replay=path,
        )
        tracker = board_of(server).snapshot()["tracker"]
        self.assertEqual(tracker["source"], "replay")
        self.assertIn("REPLAY of pilot.gaze", tracker["warning"])
        self.assertTrue(tracker["model"].startswith("Replay of"))


class Spy:
    """Stands where the recorder stands, and keeps everything it is given."""

    directory = "/nowhere"
    current = last = None

    def __init__(self):
        self.log = []

    def session_started(self, number, started_us, info):
        self.log.append(("session_started", number, started_us))

    def session_ended(self, reason):
        self.log.append(("session_ended", reason))

    def write_batch(self, batch):
        self.log.append(("batch", batch.tobytes()))

    def write_event(self, kind, **fields):
        self.log.append(("event", kind, json.dumps(fields, sort_keys=True, default=str)))


class WatchingChangesNothingTests(unittest.SynchronousTestCase):
    def run_experiment(self, watch):
        """
        Two pages track, calibrate and stop, on a fake clock; with C{watch}
        the status is read five times a second all along.  Returns what the
        pages received and what the recorder was given.
        """
        server = FakeServer(rate=300)
        spy = Spy()
        state = server.state
        state.recorder = spy
        state.hub.observers.append(spy.write_batch)
        state.hub.session_listeners.append(spy)
        board = board_of(server)
        a, b = server.client("10.0.0.1"), server.client("10.0.0.2")
        steps = []

        def step(seconds):
            for _ in range(int(round(seconds / 0.2))):
                server.advance(0.2)
                if watch:
                    steps.append(json.dumps(board.snapshot(), allow_nan=False))

        a.request("start_tracking")
        step(1.0)
        b.request("start_tracking")
        a.send({"type": "calibration_start"})
        for x, y in POINTS[:3]:
            a.request("calibration_point", point={"x": x, "y": y})
            step(1.0)
        a.request("calibration_compute")
        step(1.0)
        a.request("stop_tracking")
        step(1.0)
        b.request("stop_tracking")
        step(0.4)
        if watch:
            self.assertEqual(len(steps), 32)

        def replies(page):  # request ids count on across runs
            return [{k: v for k, v in m.items() if k != "requestId"} for m in page.messages]

        return a.gaze, b.gaze, replies(a), replies(b), spy.log

    def test_pages_and_recording_identical_with_and_without_the_status_page(self):
        unwatched = self.run_experiment(watch=False)
        watched = self.run_experiment(watch=True)
        self.assertGreater(len(unwatched[0]), 1000)
        self.assertTrue(any(entry[0] == "batch" for entry in unwatched[4]))
        for name, without, with_ in zip(
            ("page a gaze", "page b gaze", "page a replies", "page b replies", "recorder"),
            unwatched,
            watched,
        ):
            self.assertEqual(without, with_, name)


class StatusOverHTTPTests(unittest.TestCase):
    timeout = 60

    def start(self, **settings):
        settings.setdefault("mock", True)
        config = ServerConfig(port="tcp:0:interface=127.0.0.1", **settings)
        self.service, self.port = serve(self, config, make_tracker=settings.pop("make", None))
        self.state = self.service.state

    @defer.inlineCallbacks
    def status(self, expect=200):
        response = yield request(self.port, "/status.json")
        self.assertEqual(response.code, expect)
        self.assertEqual(response.header("content-type"), "application/json")
        self.assertEqual(response.header("cache-control"), "no-store")
        return json.loads(response.body)

    @defer.inlineCallbacks
    def test_200_with_a_tracker(self):
        self.start(mock_rate=600)
        status = yield self.status(200)
        self.assertIs(status["ok"], True)
        self.assertEqual(status["tracker"]["state"], "connected")

    @defer.inlineCallbacks
    def test_503_without_a_tracker(self):
        def no_tracker():
            raise TrackerError("the Tobii Pro SDK is not installed")

        config = ServerConfig(port="tcp:0:interface=127.0.0.1")
        self.service, self.port = serve(self, config, make_tracker=no_tracker)
        status = yield self.status(503)
        self.assertIs(status["ok"], False)
        self.assertEqual(status["tracker"]["state"], "none")
        self.assertIn("not installed", status["tracker"]["error"])
        self.assertEqual(status["tracker"]["source"], "device")
        self.assertIsNone(status["tracker"]["warning"])
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_pages_and_their_streams(self):
        self.start(mock_rate=600)
        tracking = yield connect(self.port, origin="http://localhost:8000")
        self.addCleanup(tracking.dropConnection, abort=True)
        calibrating = yield connect(self.port)
        self.addCleanup(calibrating.dropConnection, abort=True)
        yield tracking.request("start_tracking")
        calibrating.send_only("calibration_start")
        yield wait(0.5)
        status = yield self.status()
        pages = status["pages"]
        self.assertEqual(len(pages), 2)
        first, second = pages
        self.assertEqual(first["origin"], "http://localhost:8000")
        self.assertIs(first["tracking"], True)
        self.assertIs(first["calibrating"], False)
        self.assertGreater(first["framesSent"], 200)
        self.assertEqual(first["framesDropped"], 0)
        self.assertEqual(first["backlog"], 0)
        self.assertIsNone(second["origin"])
        self.assertIs(second["tracking"], False)
        self.assertIs(second["calibrating"], True)
        self.assertEqual(second["framesSent"], 0)
        self.assertIn(f"127.0.0.1:{tracking.transport.getHost().port}", first["peer"])
        self.assertEqual(status["session"]["trackingPages"], 1)
        yield wait(0.3)
        later = yield self.status()
        self.assertGreater(later["pages"][0]["framesSent"], first["framesSent"] + 100)
        tracking.dropConnection(abort=True)
        yield tracking.closed
        yield wait(0.05)
        gone = yield self.status()
        self.assertEqual(len(gone["pages"]), 1)

    @defer.inlineCallbacks
    def test_recording(self):
        folder = tempfile.mkdtemp(prefix="jspsych-tobii-status-")
        self.addCleanup(shutil.rmtree, folder, True)
        self.start(mock_rate=600, record_dir=folder)
        status = yield self.status()
        self.assertEqual(status["recording"], {"directory": folder, "active": False, "file": None})
        page = yield connect(self.port)
        self.addCleanup(page.dropConnection, abort=True)
        yield page.request("start_tracking")
        yield wait(0.6)
        status = yield self.status()
        recording = status["recording"]
        self.assertIs(recording["active"], True)
        self.assertTrue(recording["file"].endswith("-s1.gaze"))
        self.assertTrue(os.path.isfile(os.path.join(folder, recording["file"])))
        self.assertEqual(
            recording["bytes"], HEADER_SIZE + recording["written"] * GAZE_DTYPE.itemsize
        )
        self.assertGreater(recording["flushed"], 100)
        self.assertLess(recording["lastFlushedSampleAgeSeconds"], 1.0)
        self.assertIsNone(recording["error"])
        self.assertEqual(recording["dropped"], 0)

    @defer.inlineCallbacks
    def post_preview(self, body, headers=None):
        headers = headers if headers is not None else {"Content-Type": "application/json"}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = yield request(self.port, "/preview", method="POST", headers=headers, body=data)
        return response.code, json.loads(response.body)

    @defer.inlineCallbacks
    def test_preview_shows_gaze_and_records_nothing(self):
        folder = tempfile.mkdtemp(prefix="jspsych-tobii-status-")
        self.addCleanup(shutil.rmtree, folder, True)
        self.start(mock_rate=600, record_dir=folder)
        page = yield connect(self.port)
        self.addCleanup(page.dropConnection, abort=True)
        code, answer = yield self.post_preview(
            {"id": "page1", "on": True},
            {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{self.port}"},
        )
        self.assertEqual((code, answer), (200, {"ok": True, "preview": True}))
        yield wait(0.5)
        status = yield self.status()
        self.assertIs(status["preview"]["active"], True)
        self.assertEqual(status["gaze"]["source"], "preview")
        self.assertGreater(len(status["gaze"]["points"]), 50)
        self.assertIs(status["session"]["running"], False)
        self.assertEqual(status["session"]["number"], 0)
        self.assertEqual(page.gaze, [])
        code, answer = yield self.post_preview({"id": "page1", "on": False})
        self.assertEqual((code, answer), (200, {"ok": True, "preview": False}))
        status = yield self.status()
        self.assertIs(status["preview"]["active"], False)
        self.assertEqual(status["recording"]["file"], None)
        self.assertEqual([f for f in os.listdir(folder) if f.endswith(".gaze")], [])

    @defer.inlineCallbacks
    def test_preview_refuses_what_is_not_the_status_page(self):
        self.start(mock_rate=120)
        ok = {"id": "page1", "on": True}
        code, answer = yield self.post_preview(
            ok, {"Content-Type": "application/json", "Origin": "http://evil.example"}
        )
        self.assertEqual(code, 403)
        self.assertIs(answer["ok"], False)
        code, answer = yield self.post_preview(ok, {"Content-Type": "text/plain"})
        self.assertEqual(code, 415)
        for bad in (b"{not json", b"[]", json.dumps({"id": "x"}).encode()):
            code, answer = yield self.post_preview(bad)
            self.assertEqual(code, 400, bad)
        for bad in ({"id": "../x", "on": True}, {"id": "p", "on": "yes"}, {"id": "", "on": True}):
            code, answer = yield self.post_preview(bad)
            self.assertEqual(code, 400, bad)
            self.assertIn("id:", answer["error"])
        code, answer = yield self.post_preview({"id": "p", "on": True, "pad": "x" * 2000})
        self.assertEqual(code, 413)
        self.assertIs(self.state.hub.previewing, False)
        get = yield request(self.port, "/preview")
        self.assertEqual(get.code, 405)

    @defer.inlineCallbacks
    def test_preview_without_a_tracker(self):
        def no_tracker():
            raise TrackerError("no eye tracker found")

        config = ServerConfig(port="tcp:0:interface=127.0.0.1")
        self.service, self.port = serve(self, config, make_tracker=no_tracker)
        code, answer = yield self.post_preview({"id": "page1", "on": True})
        self.assertEqual(code, 503)
        self.assertIn("no eye tracker", answer["error"])
        self.flushLoggedErrors()
