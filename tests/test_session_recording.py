"""
The recorder wired into the server: each tracking session is recorded with
its events, get_data answers from memory and the recording together, and
markers are converted between clocks.
"""

import os
import shutil
import tempfile
import threading

from twisted.internet import defer
from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.core.gaze import encode_objects, sample_dicts
from jspsych_tobii.recording.format import read_events, read_gaze, read_header
from jspsych_tobii.recording.text import BLOCK
from jspsych_tobii.server import bulk

from .support import FakeServer, assert_close, serve, wait, wait_for
from .wsclient import connect


class RecordingServerTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="jspsych-tobii-rec-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1",
            mock=True,
            mock_rate=1200,
            buffer_size=300,  # a quarter second in memory: older samples come from disk
            record_dir=self.folder,
        )
        self.service, self.port = serve(self, config)
        self.state = self.service.state

    @defer.inlineCallbacks
    def test_session_recorded_and_queried_across_memory_and_disk(self):
        client = yield connect(self.port)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.sync_time(rounds=3, interval=0.01)
        yield client.request("start_tracking")
        yield wait(1.0)
        marker = yield client.request(
            "marker", label="stimulus_on", timestamp=client.now(), data={"trial": 3}
        )
        self.assertIs(marker["success"], True)
        # the whole session: 1 s at 1200 Hz, far more than the 300 in memory
        everything = yield client.request("get_data", timeout=30)
        seqs = [s["seq"] for s in everything["samples"]]
        self.assertGreater(len(seqs), 1000)
        self.assertEqual(seqs, list(range(len(seqs))))
        self.assertIs(everything["truncated"], False)
        self.assertLess(
            self.state.hub.buffer.oldest_time_us() / 1000.0, everything["samples"][-1]["timestamp"]
        )
        # a range that starts on disk and ends in memory
        first, last = everything["samples"][100], everything["samples"][-50]
        part = yield client.request(
            "get_data", start_time=first["timestamp"], end_time=last["timestamp"]
        )
        self.assertEqual(part["samples"], everything["samples"][100:-49])
        self.assertIs(part["truncated"], False)
        # a recording that failed (as the writer thread marks a full disk)
        # no longer makes a range older than memory whole
        self.state.recorder.last.error = "cannot write samples: No space left on device"
        broken = yield client.request("get_data", start_time=first["timestamp"])
        self.assertIs(broken["truncated"], True)
        self.assertGreater(broken["availableFrom"], first["timestamp"])
        self.state.recorder.last.error = None
        # the pushed samples equal the stored ones
        pushed = {g["seq"]: g for g in client.gaze}
        for sample in everything["samples"][::97]:
            if sample["seq"] in pushed:
                got = dict(pushed[sample["seq"]])
                got.pop("_received")
                self.assertEqual(got, sample)
        yield client.request("stop_tracking")
        yield self.service.getServiceNamed("recorder").stopService()

        gaze_files = [f for f in _files(self.folder) if f.endswith(".gaze")]
        self.assertEqual(len(gaze_files), 1)
        header = read_header(gaze_files[0])
        self.assertIs(header["complete"], True)
        records = read_gaze(gaze_files[0])
        self.assertEqual(records["seq"].tolist()[: len(seqs)], seqs)
        events = read_events(gaze_files[0].replace(".gaze", ".events.jsonl"))
        kinds = [e["kind"] for e in events]
        self.assertIn("client_connected", kinds)
        self.assertIn("session_ended", kinds)
        recorded = [e for e in events if e["kind"] == "marker"][0]
        self.assertEqual(recorded["label"], "stimulus_on")
        self.assertEqual(recorded["data"], {"trial": 3})
        assert_close(self, recorded["t_server_ms"], marker["serverTime"], 1e-6)

    @defer.inlineCallbacks
    def test_validation_reads_the_recording_like_get_data(self):
        """
        A validation point whose window left memory is computed from the
        recording, over the same samples get_data answers for that window;
        once the recording fails, the client's copies are used instead.
        """
        client = yield connect(self.port)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.request("start_tracking")
        yield wait(1.5)
        everything = yield client.request("get_data", timeout=30)
        samples = everything["samples"]
        self.assertGreater(len(samples), 1600)  # 1.3 s and more at 1200 Hz; 600 in memory
        old = samples[50:950]  # 750 ms (300 of them skipped), long gone from memory
        oldest_ms = self.state.hub.buffer.oldest_time_us() / 1000.0
        self.assertLess(old[-1]["timestamp"], oldest_ms)
        # the client's copies: the right times, but somewhere else on screen
        copies = [{"x": 0.05, "y": 0.95, "timestamp": s["timestamp"]} for s in old]
        yield client.request("validation_start")
        yield client.request("validation_point", point={"x": 0.5, "y": 0.5}, gaze_samples=copies)
        report = yield client.request("validation_compute", timeout=30)
        item = report["pointData"][0]
        self.assertEqual(item["sampleSource"], "server")
        window = item["window"]
        expected = yield client.request(
            "get_data", start_time=window["startMs"], end_time=window["endMs"]
        )
        self.assertEqual(item["numSamplesTotal"], len(expected["samples"]))
        self.assertEqual(
            item["numSamples"], sum(1 for s in expected["samples"] if s["x"] is not None)
        )
        self.assertGreater(item["numSamples"], 400)
        # get_data's positions are rounded to 6 decimals
        assert_close(self, item["meanGaze"]["x"], _mean(expected["samples"], "x"), 1e-6)
        assert_close(self, item["meanGaze"]["y"], _mean(expected["samples"], "y"), 1e-6)
        # a failed recording no longer holds the window: the copies are used
        self.state.recorder.last.error = "cannot write samples: No space left on device"
        self.addCleanup(setattr, self.state.recorder.last, "error", None)
        report = yield client.request("validation_compute", timeout=30)
        item = report["pointData"][0]
        self.assertEqual(item["sampleSource"], "client")
        assert_close(self, item["meanGaze"]["x"], 0.05, 1e-9)
        yield client.request("stop_tracking")

    @defer.inlineCallbacks
    def test_get_data_encoded_on_a_worker_thread(self):
        """The reply's samples are read and encoded off the reactor thread."""
        threads = []

        def encode(batch, lead=b""):
            threads.append(threading.current_thread())
            return encode_objects(batch, lead)

        self.patch(bulk, "encode_objects", encode)
        client = yield connect(self.port)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.request("start_tracking")
        yield wait(1.0)
        reply = yield client.request("get_data", timeout=30)
        self.assertGreater(reply["count"], 600)  # older than memory: from the recording
        self.assertEqual(len(threads), -(-reply["count"] // bulk.SLICE))
        self.assertNotIn(threading.main_thread(), threads)
        self.assertTrue(all("jspsych-tobii-work" in t.name for t in threads))

    @defer.inlineCallbacks
    def test_get_data_sends_the_text_the_writer_kept(self):
        """
        Past a block of samples the writer thread keeps their text, and
        get_data sends it, during the session and after: the same samples
        as encoding the recording gives.
        """
        recorder = self.state.recorder
        encoded = []  # samples encoded for a reply (not sent as kept text)

        def encode(batch, lead=b""):
            encoded.append(len(batch))
            return encode_objects(batch, lead)

        self.patch(bulk, "encode_objects", encode)
        client = yield connect(self.port)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.request("start_tracking")
        yield wait_for(
            lambda: recorder.last is not None and recorder.last.texts >= BLOCK,
            timeout=30,
            what="a block of text",
        )
        files = recorder.last
        during = yield client.request("get_data", timeout=30)
        self.assertLessEqual(sum(encoded), during["count"] - BLOCK)
        yield client.request("stop_tracking")
        del encoded[:]
        after = yield client.request("get_data", timeout=30)
        self.assertEqual(encoded, [])  # all of it kept as text once the session ended
        self.assertEqual(files.texts, files.flushed_records)  # the session's end finished it
        expected = sample_dicts(read_gaze(files.gaze_path))
        self.assertEqual(after["samples"], expected)
        self.assertGreater(during["count"], BLOCK)
        self.assertEqual(during["samples"], expected[: during["count"]])
        self.assertTrue(os.path.exists(files.text.text))
        # the next session's start deletes this one's text
        yield client.request("start_tracking")
        yield wait_for(lambda: not os.path.exists(files.text.text), what="the old text gone")
        yield client.request("stop_tracking")


def _mean(samples, key):
    values = [s[key] for s in samples if s[key] is not None]
    return sum(values) / len(values)


def _files(folder):
    import os

    return sorted(os.path.join(folder, name) for name in os.listdir(folder))


class MarkerTests(unittest.SynchronousTestCase):
    def test_marker_times_under_fake_clock(self):
        """A browser time is converted with this connection's time sync."""
        server = FakeServer(rate=120)
        client = server.client()
        server.clock.advance(100.0)  # server time 100 000 ms
        # the browser clock runs 60 000 ms behind; the request takes 2 ms to arrive
        browser_now = server.clock.seconds() * 1000.0 - 60000.0
        server.clock.advance(0.002)
        client.request("time_sync", clientTime=browser_now)
        reply = client.request("marker", label="go", timestamp=browser_now + 500.0)
        assert_close(self, reply["serverTime"], 100500.0 + 2.0, 1e-6)
        self.assertEqual(reply["trackerTime"], reply["serverTime"])
        self.assertEqual(reply["timeSource"], "time_sync")
        self.assertEqual(client.request("get_markers")["markers"][0]["label"], "go")

    def test_marker_without_time_sync(self):
        server = FakeServer()
        client = server.client()
        reply = client.request("marker", label="x", timestamp=5.0)
        self.assertEqual(reply["type"], "error")
        self.assertIn("time_sync", reply["error"])
        server.clock.advance(3.0)
        reply = client.request("marker", label="x")
        self.assertEqual(reply["serverTime"], 3000.0)
        self.assertEqual(reply["timeSource"], "server_receipt")

    def test_bad_marker(self):
        client = FakeServer().client()
        for fields in (
            {},
            {"label": 3},
            {"label": "a", "data": [1]},
            {"label": "a", "timestamp": "t"},
        ):
            reply = client.request("marker", **fields)
            self.assertEqual(reply["type"], "error", fields)


class ReplayServerTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_server_replays_a_recording(self):
        """--replay serves a recording's samples, with their timing, as the tracker."""
        import numpy as np

        from jspsych_tobii.recording.format import write_recording
        from jspsych_tobii.tap import Options
        from jspsych_tobii.trackers.eyemodel import EyeModel

        folder = tempfile.mkdtemp(prefix="jspsych-tobii-replay-")
        self.addCleanup(shutil.rmtree, folder, True)
        path = f"{folder}/s1.gaze"
        recorded = EyeModel(seed=5).samples(np.arange(600) * 1667 + 10_000_000)  # 600 Hz, 1 s
        write_recording(path, recorded)
        options = Options()
        options.parseOptions(
            ["--replay", path, "--speed", "2", "--port", "tcp:0:interface=127.0.0.1"]
        )
        service, port = serve(self, options)
        client = yield connect(port)
        self.addCleanup(client.dropConnection, abort=True)
        info = yield client.request("get_tracker_info")
        self.assertNotIn("calibration", info["tracker"]["capabilities"])
        yield client.request("start_tracking")
        yield wait(0.8)  # twice as fast: the whole second of data
        got = client.gaze
        self.assertGreater(len(got), 550)
        for sample, original in zip(got, recorded):
            left_x = float(original["left_x"])
            expected = None if np.isnan(left_x) or not original["left_gaze_valid"] else left_x
            if expected is None:
                self.assertIsNone(sample["leftX"])
            else:
                self.assertAlmostEqual(sample["leftX"], expected, places=6)
            self.assertEqual(sample["deviceTimestamp"], original["device_time_us"] / 1000.0)
        # the timing is the recording's, at twice the speed
        step = (got[100]["timestamp"] - got[0]["timestamp"]) / 100
        self.assertAlmostEqual(step, 1.667 / 2, places=2)
        reply = yield client.request("calibration_start")
        self.assertEqual(reply["type"], "error")
