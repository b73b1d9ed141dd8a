"""
Tests for L{jspsych_tobii.trackers.child.tracker}: the SDK adapter in a
child process, with real children.  The child runs this interpreter with
the fake SDK of L{tests.fake_tobii_research} (real threads, up to 1200 Hz),
built in the child by L{tests.fake_sdk_child} from options passed in the environment;
one class runs a Python 3.10 with the real tobii-research when
C{JSPSYCH_TOBII_SDK_PYTHON} names one.  The parts are tested on their own,
without a process, in L{tests.test_child_supervisor} (restarts, backoff,
stopping, on a L{task.Clock}), L{tests.test_child_process} (the pipes),
L{tests.test_child_main} (the child's side), L{tests.test_child_wire} and
L{tests.test_child_launch}.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import unittest as pyunittest

import numpy as np
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jspsych_tobii.core.timesync import monotonic_us
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    ITracker,
    NotificationKind,
    NoTrackerError,
    TrackerError,
)
from jspsych_tobii.trackers.child import launch as child_launch
from jspsych_tobii.trackers.child.supervisor import ISupervised
from jspsych_tobii.trackers.child.tracker import ChildTracker

from . import fake_tobii_research as fake
from .fake_sdk_child import FAKE, FAKE_ENV, ROOT
from .support import batches_into, capture_log, serve_tracker, wait, wait_for
from .tracker_contract import TrackerContractMixin

#: A Python 3.10 with tobii-research (2.x or 1.x), Twisted, numpy, zope.interface (CI
#: sets it, once for each SDK line).
SDK_PYTHON_ENV = "JSPSYCH_TOBII_SDK_PYTHON"


def connection(notes):
    """The notifications about the connection, in order."""
    kinds = (NotificationKind.CONNECTION_LOST, NotificationKind.CONNECTION_RESTORED)
    return [note for note in notes if note.kind in kinds]


def child_is_gone(pid: int) -> bool:
    """True once C{pid} has exited (a zombie counts: nobody may reap orphans here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:  # pragma: no cover - no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def make_child(python=None, sdk_module=FAKE, python_path=(ROOT,), **options):
    """A ChildTracker on this interpreter with the fake SDK, set up by C{options}."""
    settings = {
        key: options.pop(key)
        for key in list(options)
        if key in ("address", "frequency", "restart_delay", "restart_max_delay")
    }
    settings.setdefault("restart_delay", 0.05)
    return ChildTracker(
        reactor,
        monotonic_us,
        python or sys.executable,
        sdk_module=sdk_module,
        python_path=python_path,
        env={FAKE_ENV: json.dumps(options)},
        **settings,
    )


class ChildTestCase(unittest.TestCase):
    timeout = 20

    def capture_log(self, namespace):
        return capture_log(self, namespace)

    def tracker(self, **options):
        tracker = make_child(**options)
        self.addCleanup(tracker.disconnect)
        return tracker

    @defer.inlineCallbacks
    def connected(self, **options):
        tracker = self.tracker(**options)
        notes = []
        tracker.setNotificationReceiver(notes.append)
        info = yield tracker.connect()
        return tracker, info, notes


class ContractTests(TrackerContractMixin, unittest.TestCase):
    """The ITracker contract, through the child, with the fake 2.x SDK."""

    timeout = 20
    version = "2.x"

    def makeTracker(self):
        return make_child(version=self.version), None


class Contract1xTests(ContractTests):
    """The ITracker contract with the fake 1.x SDK (user positions from the track box)."""

    version = "1.x"


class StreamTests(ChildTestCase):
    @defer.inlineCallbacks
    def test_1200hz_none_lost(self):
        """Half a second at 1200 Hz through the pipes: every sample, in order, in batches."""
        tracker, info, notes = yield self.connected(frequency=1200.0)
        self.assertEqual(info.frequency, 1200.0)
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait(0.5)
        yield tracker.stopGaze()
        samples = np.concatenate(batches)
        self.assertEqual(samples.dtype, GAZE_DTYPE)
        self.assertGreater(len(samples), 500)
        steps = np.diff(samples["system_time_us"])
        period = 1e6 / 1200.0
        # every step is one period (833 or 834 µs): nothing lost, nothing repeated
        self.assertEqual(int(steps.min()), int(period))
        self.assertEqual(int(steps.max()), int(period) + 1)
        self.assertTrue(np.all(samples["left_gaze_valid"]))
        self.assertTrue(np.all(np.isfinite(samples["left_x"])))
        # the server stamps seq and its own time into delivered batches
        batches[0]["seq"] = 1
        self.assertLessEqual(len(batches), len(samples))

    @defer.inlineCallbacks
    def test_frequency_and_info(self):
        """A new frequency reaches the server's copy of the info, and survives a restart."""
        tracker, info, notes = yield self.connected()
        current = yield tracker.setGazeOutputFrequency(300)
        self.assertEqual(current, 300.0)
        self.assertEqual(tracker.info.frequency, 300.0)
        os.kill(tracker.pid, signal.SIGKILL)
        yield wait_for(lambda: len(connection(notes)) >= 2, what="the restart")
        self.assertEqual(tracker.info.frequency, 300.0)

    @defer.inlineCallbacks
    def test_clock_offset(self):
        """
        The SDK clock's offset from the server's monotonic clock is measured
        across the pipes: 0 where they are one clock (Linux), the difference
        where they differ, and it stays through info updates from the child.
        """
        tracker, info, notes = yield self.connected()
        self.assertEqual(info.system_clock_offset_us, 0)
        other, info, notes = yield self.connected(clock_offset_us=2_500_000_123)
        self.assertLess(abs(info.system_clock_offset_us - 2_500_000_123), 1000)
        offset = info.system_clock_offset_us
        yield other.setGazeOutputFrequency(300)
        self.assertEqual(other.info.frequency, 300.0)
        self.assertEqual(other.info.system_clock_offset_us, offset)
        # gaze is stamped on the SDK's clock; startGaze filters by that clock too
        batches = []
        yield other.startGaze(batches_into(batches))
        yield wait_for(lambda: batches, what="gaze")
        lag = monotonic_us() + offset - batches[0]["system_time_us"][0]
        # a wrong offset is off by its 2500 s; the lag itself is bench/'s
        self.assertLess(abs(lag), 1_000_000)

    @defer.inlineCallbacks
    def test_sdk_notifications_forwarded(self):
        """The tracker's own connection loss and restore (in the child) reach the server."""
        tracker, info, notes = yield self.connected(signals=True)
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait_for(lambda: batches, what="gaze")
        os.kill(tracker.pid, signal.SIGUSR1)
        yield wait_for(lambda: connection(notes), what="the loss")
        os.kill(tracker.pid, signal.SIGUSR2)
        yield wait_for(lambda: len(connection(notes)) >= 2, what="the restore")
        lost, restored = connection(notes)
        self.assertEqual(lost.kind, NotificationKind.CONNECTION_LOST)
        self.assertEqual(restored.kind, NotificationKind.CONNECTION_RESTORED)
        self.assertIn("lost the connection", lost.message)
        self.assertIn(NotificationKind.STREAM_ERROR, [note.kind for note in notes])
        count = sum(len(b) for b in batches)
        yield wait(0.2)
        self.assertGreater(sum(len(b) for b in batches), count + 50)
        self.assertEqual(tracker.restarts, 0)

    @defer.inlineCallbacks
    def test_unreadable_records_reported(self):
        """
        Records the child cannot read (a field missing) reach the server as
        a stream_error naming the stream, and the child's log of it, with
        its traceback, reaches the server's log.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        tracker, info, notes = yield self.connected(
            missing_fields={fake.EYETRACKER_GAZE_DATA: ["left_gaze_origin_validity"]}
        )
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait_for(
            lambda: [n for n in notes if n.kind == NotificationKind.STREAM_ERROR],
            what="the stream error",
        )
        [note] = [n for n in notes if n.kind == NotificationKind.STREAM_ERROR]
        self.assertEqual(note.data["stream"], "gaze")
        self.assertEqual(note.data["error"], "KeyError: 'left_gaze_origin_validity'")

        def relayed():
            return [e for e in events if "left_gaze_origin_validity" in e.get("text", "")]

        yield wait_for(relayed, what="the relayed traceback")
        self.assertEqual(relayed()[0]["log_level"].name, "error")
        self.assertEqual(batches, [])

    @defer.inlineCallbacks
    def test_child_log_relayed(self):
        """The child's log lines reach the server's log, at their level, with its pid."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        tracker, info, notes = yield self.connected()
        yield wait_for(
            lambda: any("connected to Tobii Pro Spectrum" in e.get("text", "") for e in events),
            what="the relayed line",
        )
        [event] = [e for e in events if "connected to Tobii Pro Spectrum" in e.get("text", "")]
        self.assertEqual(event["pid"], tracker.pid)
        self.assertEqual(event["log_level"].name, "info")

    @defer.inlineCallbacks
    def test_stdout_noise_cannot_break_frames(self):
        """print() and writes to descriptor 1 in the child go to stderr, not between frames."""
        tracker, info, notes = yield self.connected(noisy=True)
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait(0.2)
        self.assertTrue(batches)
        process = tracker.supervisor.process
        self.assertIsNone(process.brokenWire)
        self.assertIn("a print() from the SDK", list(process.tail))


class RestartTests(ChildTestCase):
    @defer.inlineCallbacks
    def test_killed_mid_stream(self):
        """
        SIGKILL mid-stream: CONNECTION_LOST, a new child, CONNECTION_RESTORED,
        and gaze flows again to the same receiver.
        """
        tracker, info, notes = yield self.connected(frequency=1200.0)
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait(0.2)
        first = tracker.pid
        os.kill(first, signal.SIGKILL)
        yield wait_for(lambda: connection(notes), what="CONNECTION_LOST")
        lost = connection(notes)[0]
        self.assertEqual(lost.kind, NotificationKind.CONNECTION_LOST)
        self.assertIn("signal 9 (SIGKILL)", lost.message)
        self.assertEqual(lost.data["signal"], signal.SIGKILL)
        self.assertEqual(lost.data["restartIn"], 0.05)
        self.assertIsNone(tracker.getUserPosition())
        yield self.assertFailure(tracker.enterCalibration(), TrackerError)
        count = sum(len(b) for b in batches)
        yield wait_for(lambda: len(connection(notes)) >= 2, what="CONNECTION_RESTORED")
        self.assertEqual(connection(notes)[1].kind, NotificationKind.CONNECTION_RESTORED)
        self.assertNotEqual(tracker.pid, first)
        self.assertEqual(tracker.restarts, 1)
        yield wait(0.3)
        resumed = np.concatenate(batches)[count:]
        self.assertGreater(len(resumed), 250)
        self.assertTrue(np.all(np.diff(resumed["system_time_us"]) > 0))
        yield tracker.stopGaze()

    @defer.inlineCallbacks
    def test_calibration_fails_cleanly_during_restart(self):
        tracker, info, notes = yield self.connected(restart_delay=0.5)
        yield tracker.enterCalibration()
        collecting = tracker.collectCalibrationData(0.5, 0.5)
        os.kill(tracker.pid, signal.SIGKILL)
        error = yield self.assertFailure(collecting, TrackerError)
        self.assertIn("SIGKILL", str(error))
        yield tracker.leaveCalibration()  # a no-op while the child is down
        yield tracker.stopGaze()

    @defer.inlineCallbacks
    def test_no_restart_after_disconnect(self):
        tracker, info, notes = yield self.connected()
        pid = tracker.pid
        yield tracker.disconnect()
        yield wait(0.2)
        self.assertEqual(connection(notes), [])
        self.assertIsNone(tracker.pid)
        self.assertTrue(child_is_gone(pid))


class LifecycleTests(ChildTestCase):
    @defer.inlineCallbacks
    def test_no_tracker(self):
        tracker = self.tracker(devices=0)
        error = yield self.assertFailure(tracker.connect(), NoTrackerError)
        self.assertEqual(str(error), "no eye tracker connected")
        self.assertIsNone(tracker.info)
        pid = tracker.pid
        # the service retries on the same object: the same child answers again
        yield self.assertFailure(tracker.connect(), NoTrackerError)
        self.assertEqual(tracker.pid, pid)

    @defer.inlineCallbacks
    def test_concurrent_connects(self):
        tracker = self.tracker()
        first, second = tracker.connect(), tracker.connect()
        info = yield first
        self.assertIs((yield second), info)
        self.assertIs((yield tracker.connect()), info)

    @defer.inlineCallbacks
    def test_disconnect_ends_child(self):
        tracker, info, notes = yield self.connected()
        yield tracker.startGaze(lambda batch: None)
        pid = tracker.pid
        lines = self.capture_log("jspsych_tobii.trackers.child.supervisor")
        yield tracker.disconnect()
        self.assertTrue(child_is_gone(pid))
        # it let go and exited by itself, without being killed
        [line] = [event["log_format"].format(**event) for event in lines]
        self.assertEqual(line, f"the SDK process (pid {pid}) exited with status 0")
        yield tracker.disconnect()
        yield self.assertFailure(tracker.connect(), TrackerError)

    @defer.inlineCallbacks
    def test_disconnect_while_connecting(self):
        tracker = self.tracker()
        connecting = tracker.connect()
        yield tracker.disconnect()
        yield self.assertFailure(connecting, TrackerError)

    @defer.inlineCallbacks
    def test_deaf_child_is_killed(self):
        """A child that does not exit when its stdin closes is killed after stopTimeout."""
        tracker = self.tracker(deaf=True)
        tracker.supervisor.stopTimeout = 0.3
        yield tracker.supervisor.ready()
        pid = tracker.pid
        lines = self.capture_log("jspsych_tobii.trackers.child.supervisor")
        yield tracker.disconnect()
        self.assertTrue(child_is_gone(pid))
        told = [event["log_format"].format(**event) for event in lines]
        self.assertEqual(
            told,
            [
                "the SDK process did not exit within 0.3 s; killing it",
                f"the SDK process (pid {pid}) was killed by signal 9 (SIGKILL)",
            ],
        )
        self.flushLoggedErrors()

    def test_child_dies_with_the_server(self):
        """The server killed with SIGKILL: its SDK process sees its stdin close and exits."""
        script = (
            "import sys, json\n"
            "from twisted.internet import reactor\n"
            "from jspsych_tobii.trackers.child.tracker import ChildTracker\n"
            "from jspsych_tobii.core.timesync import monotonic_us\n"
            "t = ChildTracker(reactor, monotonic_us, sys.executable, sdk_module=sys.argv[1],"
            " python_path=[sys.argv[2]])\n"
            "def ok(info):\n"
            "    print(t.pid, flush=True)\n"
            "reactor.callWhenRunning(lambda: t.connect().addCallback(ok))\n"
            "reactor.run()\n"
        )
        server = subprocess.Popen(
            [sys.executable, "-c", script, FAKE, ROOT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            line = server.stdout.readline()
            pid = int(line)
            self.assertFalse(child_is_gone(pid))
        finally:
            server.kill()
            server.wait(10)
            server.stdout.close()
        deadline = time.monotonic() + 5
        while not child_is_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(child_is_gone(pid), "the SDK process outlived the server")

    @defer.inlineCallbacks
    def test_missing_python(self):
        tracker = self.tracker(python="/nonexistent/bin/python3.10")
        error = yield self.assertFailure(tracker.connect(), TrackerError)
        self.assertIn("/nonexistent/bin/python3.10", str(error))
        self.assertIn("--sdk-python", str(error))

    @defer.inlineCallbacks
    def test_sdk_not_importable(self):
        """A child Python without the SDK: one line that says what to do."""
        tracker = self.tracker(sdk_module="tobii_research_not_here")
        error = yield self.assertFailure(tracker.connect(), TrackerError)
        message = str(error)
        self.assertIn("tobii_research_not_here cannot be imported by", message)
        self.assertIn("jspsych-tobii-sdk-setup", message)
        self.assertNotIn("\n", message)

    @defer.inlineCallbacks
    def test_crash_at_start(self):
        """A child whose SDK aborts while loading: connect fails naming the signal."""
        tracker = self.tracker(sdk_module="os:abort", python_path=())
        error = yield self.assertFailure(tracker.connect(), TrackerError)
        self.assertIn("signal 6 (SIGABRT)", str(error))
        self.assertIsNone(tracker.pid)
        self.assertEqual(tracker.restarts, 0)

    def test_needs_a_python(self):
        with self.assertRaises(TrackerError):
            ChildTracker(Clock(), monotonic_us, "")

    def test_interfaces(self):
        """What the server and what the supervisor see of it."""
        tracker = ChildTracker(Clock(), monotonic_us, sys.executable)
        self.assertTrue(verifyObject(ITracker, tracker))
        self.assertTrue(verifyObject(ISupervised, tracker))


class ServerTests(ChildTestCase):
    """The whole server over a real socket, with its tracker in a child."""

    @defer.inlineCallbacks
    def test_tracking_client_survives_a_crash(self):
        """
        A tracking client is told the tracker is unavailable when the SDK
        process dies, and gets its gaze stream back, without a new
        start_tracking, once the process is restarted.
        """
        tracker = make_child(frequency=600.0)
        _, client = yield serve_tracker(self, tracker)
        reply = yield client.request("start_tracking")
        self.assertIs(reply["success"], True)
        yield wait_for(lambda: len(client.gaze) > 100, what="gaze")
        os.kill(tracker.pid, signal.SIGKILL)

        def statuses():
            return [m["status"] for m in client.other if m.get("type") == "tracker_status"]

        yield wait_for(lambda: "connection_lost" in statuses(), what="connection_lost")
        reply = yield client.request("get_current_gaze")
        count = len(client.gaze)
        yield wait_for(lambda: "connection_restored" in statuses(), what="connection_restored")
        yield wait_for(lambda: len(client.gaze) > count + 100, what="gaze after the restart")
        self.assertEqual(statuses()[-2:], ["connection_lost", "connection_restored"])
        status = yield client.request("get_status")
        self.assertIs(status["tracking"], True)


def _sdk_python():
    path = os.environ.get(SDK_PYTHON_ENV)
    if not path:
        return None
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


SDK_PYTHON = _sdk_python()


def installed_sdk(python: str) -> str:
    """The version of the tobii-research distribution installed for C{python}."""
    code = "from importlib.metadata import version; print(version('tobii-research'))"
    result = subprocess.run(
        [python, "-I", "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()


@pyunittest.skipIf(not SDK_PYTHON, f"set {SDK_PYTHON_ENV} to a Python 3.10 with tobii-research")
class RealSDKChildTests(unittest.TestCase):
    """A child on Python 3.10 with the real tobii-research, and no tracker attached."""

    timeout = 20

    @defer.inlineCallbacks
    def test_no_tracker(self):
        tracker = ChildTracker(reactor, monotonic_us, SDK_PYTHON)
        self.addCleanup(tracker.disconnect)
        error = yield self.assertFailure(tracker.connect(), NoTrackerError)
        self.assertEqual(str(error), "no eye tracker connected")
        hello = tracker.supervisor.process.hello
        self.assertTrue(hello["python"].startswith("3.10."), hello["python"])
        # either SDK line (2.x, or 1.x for older trackers): the one installed there
        installed = installed_sdk(SDK_PYTHON)
        self.assertRegex(installed, r"^[12]\.")
        self.assertTrue(hello["sdk"].startswith(installed), (hello["sdk"], installed))
        self.assertIsNone(hello["sdkError"])

    def test_list_trackers(self):
        self.assertEqual(child_launch.find_trackers_in(SDK_PYTHON), [])

    @defer.inlineCallbacks
    def test_fake_through_python310(self):
        """The wire between Python versions: 1200 Hz from a 3.10 child, none lost."""
        tracker = make_child(python=SDK_PYTHON, frequency=1200.0)
        self.addCleanup(tracker.disconnect)
        yield tracker.connect()
        batches = []
        yield tracker.startGaze(batches_into(batches))
        yield wait(0.5)
        yield tracker.stopGaze()
        samples = np.concatenate(batches)
        self.assertGreater(len(samples), 500)
        self.assertLessEqual(int(np.diff(samples["system_time_us"]).max()), 834)
