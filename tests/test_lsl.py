"""
Tests for L{jspsych_tobii.server.lsl} (C{--lsl}): a pylsl inlet in the test
pulls from the server's outlets over this machine's loopback (see
L{tests.lsl_support}, imported first: it confines liblsl to this machine).
"""

from __future__ import annotations

# isort: off
from . import lsl_support  # noqa: F401  (first: it configures liblsl before pylsl loads)

# isort: on
import dataclasses
import io
import json
import os
import sys
import time
import uuid
from unittest import mock

import numpy as np
import pylsl
from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest

from jspsych_tobii import cli
from jspsych_tobii.config import ConfigError, ServerConfig
from jspsych_tobii.core.timesync import clock_from_seconds, monotonic_us
from jspsych_tobii.server.lsl import GAZE_CHANNELS, ClockMapping, gaze_chunk, source_ids
from jspsych_tobii.tap import Options, makeService
from jspsych_tobii.trackers import mock as mock_module
from jspsych_tobii.trackers.mock import MockTracker

from .support import FakeServer, serve, wait, wait_for
from .test_recording import synthetic_samples, tracker_description
from .wsclient import connect


class NamedMock(MockTracker):
    """
    The mock tracker with a serial number of its own: LSL streams are seen by
    every process of this machine, and tests running side by side (trial -j,
    another checkout's suite) must not resolve each other's streams.
    """

    def __init__(self, *args, serial, **kwargs):
        super().__init__(*args, **kwargs)
        self.serial = serial

    def connect(self):
        d = super().connect()

        def renamed(info):
            self.info = dataclasses.replace(info, serial_number=self.serial)
            return self.info

        return d.addCallback(renamed)


def new_serial():
    return f"TEST-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def stream_ids(serial):
    """The (gaze, markers) source ids of a NamedMock."""
    return source_ids({"model": "Mock Tracker", "serialNumber": serial})


def fake_server(case, rate=1200.0):
    """A FakeServer with --lsl and a NamedMock; its outlets are closed when the test ends."""
    from twisted.internet.task import Clock

    clock = Clock()
    serial = new_serial()
    server = FakeServer(
        clock,
        rate=rate,
        lsl=True,
        tracker=NamedMock(clock, clock_from_seconds(clock.seconds), rate=rate, serial=serial),
    )
    case.addCleanup(server.service.getServiceNamed("lsl").stopService)
    server.gaze_id, server.marker_id = stream_ids(serial)
    return server


#: How long a test waits for LSL to find a stream or deliver samples.
LSL_TIMEOUT = 10.0


def open_inlet(case, source_id):
    """
    Resolve a stream of this machine by source_id and open an inlet on it
    (blocking); closed when the test ends, before the server's cleanup.
    """
    found = pylsl.resolve_byprop("source_id", source_id, minimum=1, timeout=LSL_TIMEOUT)
    if not found:
        raise AssertionError(f"no LSL stream with source_id {source_id!r}")
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=True)
    inlet.open_stream(timeout=LSL_TIMEOUT)
    case.addCleanup(inlet.close_stream)
    return inlet


def pull(inlet, until, timeout=LSL_TIMEOUT):
    """Pull chunks until C{until(samples)} holds or the timeout passes (blocking)."""
    samples, stamps = [], []
    deadline = time.monotonic() + timeout
    while not until(samples) and time.monotonic() < deadline:
        data, times = inlet.pull_chunk(timeout=0.2)
        samples.extend(data)
        stamps.extend(times)
    return samples, stamps


def last_sample(count):
    """Until the sample numbered C{count - 1} (a session's last) has arrived."""
    return lambda samples: bool(samples) and samples[-1][-1] == count - 1


def captured(case):
    """Collect the log events of the test (the publisher logs its clock mapping)."""
    events = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class ChannelTests(unittest.SynchronousTestCase):
    def test_gaze_chunk(self):
        """Channels in order: averaged and per-eye positions, pupils, validities, seq."""
        batch = synthetic_samples(4)
        batch["right_gaze_valid"][1] = False
        batch["right_x"][1] = np.nan
        chunk = gaze_chunk(batch)
        self.assertEqual(chunk.shape, (4, len(GAZE_CHANNELS)))
        labels = [c[0] for c in GAZE_CHANNELS]
        self.assertEqual(chunk[0, 0], (batch["left_x"][0] + batch["right_x"][0]) / 2)
        self.assertEqual(chunk[1, 0], batch["left_x"][1])  # the valid eye only
        self.assertEqual(chunk[2, labels.index("right_pupil")], batch["right_pupil"][2])
        self.assertEqual(chunk[1, labels.index("right_gaze_valid")], 0.0)
        self.assertEqual(list(chunk[:, labels.index("seq")]), [0, 1, 2, 3])

    def test_measured_offset(self):
        """The tightest bracket of the server clock around LSL's clock sets the offset."""
        readings = iter([1_000_000, 1_000_400, 2_000_000, 2_000_010, 3_000_000, 3_000_200])
        lsl = iter([51.0002, 52.000_005, 53.0001])
        mapping = ClockMapping.measure(lambda: next(readings), lambda: next(lsl), rounds=3)
        self.assertFalse(mapping.exact)
        self.assertAlmostEqual(mapping.offset_s, 50.0, places=9)
        self.assertAlmostEqual(mapping.uncertainty_s, 5e-6, places=12)
        self.assertEqual(list(mapping.seconds(np.array([2_500_000]))), [52.5])


class WithoutPylslTests(unittest.SynchronousTestCase):
    message = '--lsl needs pylsl, the Lab Streaming Layer library: pip install "jspsych-tobii[lsl]"'

    def setUp(self):
        patcher = mock.patch.dict(sys.modules, {"pylsl": None})
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_options(self):
        """--lsl without pylsl fails at start-up with one line naming the extra."""
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--mock", "--lsl"])
        self.assertEqual(str(caught.exception), self.message)

    def test_cli(self):
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["--mock", "--lsl"]), 2)
        self.assertEqual(err.getvalue().splitlines()[0], f"jspsych-tobii-server: {self.message}")

    def test_embedding(self):
        """TobiiServer and makeService with a ServerConfig get the same message."""
        with self.assertRaises(ConfigError) as caught:
            makeService(ServerConfig(mock=True, lsl=True, port="0"))
        self.assertEqual(str(caught.exception), self.message)

    def test_without_flag(self):
        """Without --lsl nothing needs pylsl."""
        Options().parseOptions(["--mock"])


class MeasuredClockTests(unittest.SynchronousTestCase):
    """
    On a test clock the server clock is not LSL's: the offset is measured at
    session start, logged, and every stamp is the capture time plus it.
    """

    def setUp(self):
        self.log = captured(self)
        self.server = fake_server(self)
        self.client = self.server.client()

    def test_samples_markers_and_metadata(self):
        server, client = self.server, self.client
        self.assertTrue(client.request("start_tracking", advance=0.01)["success"])
        gaze = open_inlet(self, server.gaze_id)  # the outlets opened with the first session
        markers = open_inlet(self, server.marker_id)
        client.request("stop_tracking", advance=0.01)
        # a second session: the inlets were there before it started
        self.assertTrue(client.request("start_tracking", advance=0.002)["success"])
        publisher = server.state.event_sinks[0]
        mapping = publisher.mapping
        self.assertFalse(mapping.exact)
        logged = [e for e in self.log if "measured offset" in e.get("log_format", "")]
        self.assertEqual(logged[-1]["offset"], mapping.offset_s)
        # the mapping is LSL's clock: the session started "now" on both clocks
        session_start = server.state.hub.session_started_us / 1e6 + mapping.offset_s
        self.assertLess(abs(session_start - pylsl.local_clock()), 5.0)

        client.request("time_sync", clientTime=1000.0)
        reply = client.request("marker", label="stimulus_on", timestamp=1000.0, data={"n": 1})
        server.advance(1.0)
        client.request("stop_tracking", advance=0.01)
        truth = server.state.hub.buffer.query(None, None)
        count = len(truth)
        self.assertGreaterEqual(count, 1200)

        samples, stamps = pull(gaze, last_sample(count))
        samples, stamps = np.array(samples), np.array(stamps)
        seq = samples[:, [c[0] for c in GAZE_CHANNELS].index("seq")]
        session2 = np.flatnonzero(seq == 0)[-1]  # the second session's first sample
        seq, stamps, samples = seq[session2:], stamps[session2:], samples[session2:]
        self.assertEqual(list(seq), list(range(count)))
        np.testing.assert_allclose(
            stamps, truth["system_time_us"] / 1e6 + mapping.offset_s, rtol=0, atol=1e-6
        )
        np.testing.assert_allclose(samples, gaze_chunk(truth), rtol=0, atol=1e-12)

        events, event_stamps = pull(markers, lambda s: any("session_ended" in e[0] for e in s[2:]))
        kinds = [json.loads(e[0])["kind"] for e in events]
        self.assertIn("marker", kinds)
        marker = json.loads(events[kinds.index("marker")][0])
        self.assertEqual((marker["label"], marker["data"]), ("stimulus_on", {"n": 1}))
        self.assertAlmostEqual(
            event_stamps[kinds.index("marker")],
            reply["trackerTime"] / 1000.0 + mapping.offset_s,
            delta=1e-6,
        )

        info = gaze.info()
        self.assertEqual(info.source_id(), server.gaze_id)
        self.assertEqual(info.type(), "Gaze")
        self.assertEqual(info.nominal_srate(), 1200.0)
        self.assertEqual(info.channel_count(), len(GAZE_CHANNELS))
        channel = info.desc().child("channels").child("channel")
        described = []
        for _ in GAZE_CHANNELS:
            described.append(
                tuple(channel.child_value(k) for k in ("label", "eye", "type", "unit"))
            )
            channel = channel.next_sibling()
        self.assertEqual(described, list(GAZE_CHANNELS))
        acquisition = info.desc().child("acquisition")
        self.assertEqual(acquisition.child_value("serial_number"), server.tracker.serial)
        self.assertEqual(markers.info().type(), "Markers")


class RealClockTests(unittest.TestCase):
    """
    The whole server on the real reactor, at 1200 Hz, driven by a WebSocket
    client as a jsPsych page drives it.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_every_sample_and_marker_arrives(self):
        """
        Every sample of a 1200 Hz session arrives once, in order, stamped with
        its capture time (to 0.1 ms; on Linux exactly); markers and the
        calibration and validation results arrive with their tracker time.
        """
        log = captured(self)
        # the stream is what runs in real time; collecting the calibration
        # point need not take a real tracker's 0.7 s
        self.patch(mock_module, "CALIBRATION_COLLECT_SECONDS", 0.05)
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1", mock=True, mock_rate=1200.0, lsl=True
        )
        serial = new_serial()
        gaze_id, marker_id = stream_ids(serial)
        service, port = serve(
            self,
            config,
            make_tracker=lambda: NamedMock(reactor, monotonic_us, rate=1200.0, serial=serial),
        )
        client = yield connect(port)
        self.addCleanup(client.dropConnection, abort=True)
        # the page's connecting opened the streams (the tracker is known): an inlet can
        # connect before the experiment starts tracking
        gaze = yield threads.deferToThread(open_inlet, self, gaze_id)
        markers = yield threads.deferToThread(open_inlet, self, marker_id)

        yield client.request("start_tracking")
        yield client.sync_time(rounds=5, interval=0.02)
        reply = yield client.request("marker", label="trial 1", timestamp=client.now())
        yield client.request("calibration_start")
        yield client.request("calibration_point", point={"x": 0.5, "y": 0.5})
        calibration = yield client.request("calibration_compute")
        yield client.request("calibration_stop")
        yield wait_for(lambda: len(client.gaze) > 1300, what="1300 samples")
        copies = [{k: g[k] for k in ("x", "y", "timestamp")} for g in client.gaze[-900:]]
        yield client.request("validation_start")
        yield client.request(
            "validation_point",
            point={"x": 0.5, "y": 0.5},
            timestamp=copies[0]["timestamp"],
            gaze_samples=copies,
        )
        validation = yield client.request("validation_compute")
        self.assertTrue(validation["success"], validation)
        yield client.request("stop_tracking")
        yield wait(0.1)
        state = service.state
        truth = state.hub.buffer.query(None, None)
        count = len(truth)
        self.assertGreater(count, 1200)

        samples, stamps = yield threads.deferToThread(pull, gaze, last_sample(count))
        received_at = pylsl.local_clock()
        samples, stamps = np.array(samples), np.array(stamps)
        seq = samples[:, -1]
        self.assertEqual(list(seq), list(range(count)))  # the whole session, once each, in order
        capture = truth["system_time_us"] / 1e6
        self.assertLess(
            float(np.max(np.abs(stamps - capture - state.event_sinks[0].mapping.offset_s))), 1e-4
        )
        if sys.platform.startswith("linux"):
            self.assertTrue(state.event_sinks[0].mapping.exact)
            np.testing.assert_array_equal(stamps, capture)
            self.assertTrue(any("are the capture times" in e.get("log_format", "") for e in log))
        # on LSL's clock: captured in the last few seconds before it was pulled
        self.assertLess(received_at - stamps[-1], 5.0)
        self.assertGreater(received_at, stamps[-1])
        # the WebSocket client saw the same capture times
        by_seq = {g["seq"]: g["timestamp"] for g in client.gaze}
        for s, t in zip(seq[::100], stamps[::100]):
            self.assertAlmostEqual(by_seq[int(s)] / 1000.0, t, delta=1e-4)

        events, event_stamps = yield threads.deferToThread(
            pull, markers, lambda s: any("session_ended" in e[0] for e in s)
        )
        decoded = [json.loads(e[0]) for e in events]
        kinds = [e["kind"] for e in decoded]
        for kind in (
            "session_started",
            "marker",
            "calibration_result",
            "validation_result",
            "session_ended",
        ):
            self.assertIn(kind, kinds)
        i = kinds.index("marker")
        self.assertEqual(decoded[i]["label"], "trial 1")
        self.assertAlmostEqual(event_stamps[i], reply["trackerTime"] / 1000.0, delta=1e-4)
        result = decoded[kinds.index("calibration_result")]["result"]
        self.assertEqual(result["success"], calibration["success"])
        result = decoded[kinds.index("validation_result")]["result"]
        self.assertEqual(result["averageAccuracyNorm"], validation["averageAccuracyNorm"])


class RestartTests(unittest.SynchronousTestCase):
    def start(self, serial):
        from twisted.internet.task import Clock

        clock = Clock()
        server = FakeServer(
            clock,
            rate=1200.0,
            lsl=True,
            tracker=NamedMock(clock, clock_from_seconds(clock.seconds), rate=1200.0, serial=serial),
        )
        self.addCleanup(server.service.getServiceNamed("lsl").stopService)
        client = server.client()
        self.assertTrue(client.request("start_tracking", advance=0.01)["success"])
        return server

    def test_source_ids(self):
        """The streams are named by the tracker's model and serial number, nothing else."""
        tracker = tracker_description()
        self.assertEqual(source_ids(tracker), source_ids(dict(tracker, address="elsewhere")))
        other = source_ids(dict(tracker, serialNumber="MOCK-0002"))
        self.assertNotEqual(other[0], source_ids(tracker)[0])
        self.assertEqual(source_ids(tracker)[0], "jspsych-tobii:Mock Tracker:MOCK-0001:gaze")

    def test_restart_is_the_same_source(self):
        """After the server restarts, an inlet of the old outlet gets the new one's samples."""
        serial = new_serial()
        first = self.start(serial)
        gaze = open_inlet(self, stream_ids(serial)[0])
        first.advance(0.1)
        before, _ = pull(gaze, lambda s: len(s) >= 100)
        self.assertGreaterEqual(len(before), 100)
        first.service.getServiceNamed("lsl").stopService()  # the server stops

        second = self.start(serial)  # and starts again, with the same tracker
        after = []
        deadline = time.monotonic() + LSL_TIMEOUT
        while not after and time.monotonic() < deadline:  # liblsl recovers by source_id
            second.advance(0.05)
            data, _ = gaze.pull_chunk(timeout=0.05)
            after.extend(data)
        self.assertTrue(after, "the inlet did not recover the restarted stream")
        self.assertEqual(gaze.info().source_id(), stream_ids(serial)[0])


class FlagTests(unittest.SynchronousTestCase):
    def test_flag_wires_the_publisher(self):
        """--lsl on the command line puts the publisher on the hub and the event path."""
        from twisted.internet.task import Clock

        options = Options()
        options.parseOptions(["--mock", "--lsl", "--port", "0"])
        self.assertTrue(options.config.lsl)
        service = makeService(options, Clock())
        publisher = service.getServiceNamed("lsl").publisher
        # beside the status page's board, which every server has
        self.assertEqual(service.state.event_sinks, [publisher, service.site.board])
        self.assertIn(publisher.write_batch, service.state.hub.observers)
        self.assertIn(publisher, service.state.hub.session_listeners)
        from zope.interface.verify import verifyObject

        from jspsych_tobii.interfaces import IEventSink, IGazeObserver, ISessionListener

        for interface in (IEventSink, IGazeObserver, ISessionListener):
            self.assertTrue(verifyObject(interface, publisher))
        options = Options()
        options.parseOptions(["--mock", "--port", "0"])
        service = makeService(options, Clock())
        self.assertEqual(service.state.event_sinks, [service.site.board])

    def test_not_with_list_trackers(self):
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--list-trackers", "--lsl"])
        self.assertEqual(str(caught.exception), "--lsl: does nothing with --list-trackers")
