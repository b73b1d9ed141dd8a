"""
Tests for L{jspsych_tobii.trackers.child.supervisor}: starting the SDK
process, its death, restarts with backoff, stopping it.  No process runs
here: a L{task.Clock} that records C{spawnProcess} stands in for the
reactor, so every delay is exact and no real time passes.  (Real children
die and come back in L{tests.test_child}.)
"""

from __future__ import annotations

import os
import signal
import sys

from twisted.internet import defer, error, task
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jspsych_tobii.core.timesync import clock_from_seconds
from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.trackers.child import wire
from jspsych_tobii.trackers.child.launch import child_command
from jspsych_tobii.trackers.child.process import IChildEvents
from jspsych_tobii.trackers.child.supervisor import ISupervised, SDKSupervisor

from .support import capture_log
from .test_child_process import FakeTransport, hello


class ProcessReactor(task.Clock):
    """A L{task.Clock} whose C{spawnProcess} connects the protocol to a L{FakeTransport}."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env=None, **kwargs):
        transport = FakeTransport()
        transport.pid = 1000 + len(self.spawned)
        self.spawned.append((protocol, executable, args, env))
        protocol.makeConnection(transport)
        return transport


@implementer(ISupervised)
class Tracker:
    """What the supervisor tells; C{restore} connects the new child when it says hello."""

    def __init__(self):
        self.supervisor = None
        self.events = []
        self.restoreFails = False

    def gazeReceived(self, payload):
        self.events.append(("gaze", len(payload)))

    def messageReceived(self, kind, message):
        self.events.append(("message", kind))

    def processGone(self):
        self.events.append(("gone",))

    def processLost(self, status, data):
        self.events.append(("lost", status, data["restartIn"], data["signal"]))

    def restore(self):
        self.events.append(("restore",))
        if self.restoreFails:
            return defer.fail(TrackerError("no tracker there"))
        return self.supervisor.ready()


def killed(signal_number=signal.SIGKILL):
    return Failure(error.ProcessTerminated(signal=signal_number))


class SupervisorTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.reactor = ProcessReactor()
        self.tracker = Tracker()
        self.supervisor = SDKSupervisor(
            self.reactor,
            clock_from_seconds(self.reactor.seconds),
            sys.executable,
            self.tracker,
            sdk_module="tests.x:sdk",
            python_path=["/somewhere"],
            env={"EXTRA": "1"},
            restart_delay=0.05,
            restart_max_delay=0.4,
        )
        self.tracker.supervisor = self.supervisor
        self.lines = capture_log(self, "jspsych_tobii.trackers.child.supervisor")

    def started(self):
        """Start a child, and let it say hello."""
        ready = self.supervisor.ready()
        self.supervisor.process.outReceived(hello())
        return self.successResultOf(ready)

    def die(self, reason=None):
        self.supervisor.process.processEnded(reason or killed())

    def lost(self):
        return [event for event in self.tracker.events if event[0] == "lost"]

    def test_interfaces(self):
        self.assertTrue(verifyObject(IChildEvents, self.supervisor))
        self.assertTrue(verifyObject(ISupervised, self.tracker))

    def test_spawn(self):
        """The child command line, in the server's environment plus the extra variables."""
        process = self.started()
        [(protocol, executable, args, env)] = self.reactor.spawned
        self.assertIs(protocol, process)
        self.assertEqual(executable, sys.executable)
        self.assertEqual(args, child_command(sys.executable, "tests.x:sdk", ["/somewhere"]))
        self.assertEqual(env["EXTRA"], "1")
        self.assertEqual(env.get("PATH"), os.environ.get("PATH"))
        self.assertEqual(self.supervisor.pid, 1000)
        self.assertIs(self.successResultOf(self.supervisor.ready()), process)  # the same child

    def test_missing_python(self):
        supervisor = SDKSupervisor(
            self.reactor, lambda: 0, "/nonexistent/bin/python3.10", self.tracker
        )
        failure = self.failureResultOf(supervisor.ready(), TrackerError)
        self.assertIn("/nonexistent/bin/python3.10", failure.getErrorMessage())
        self.assertIn("--sdk-python", failure.getErrorMessage())

    def test_requests_go_to_the_running_child(self):
        self.failureResultOf(self.supervisor.request("clock"), TrackerError)
        process = self.started()
        self.supervisor.request("clock")
        [request] = [m for m in map(wire.decode_message, self.sent(process))]
        self.assertEqual(request["op"], "clock")

    def sent(self, process):
        return [
            payload for _, payload in wire.FrameDecoder().feed(b"".join(process.transport.written))
        ]

    def test_what_the_child_says_goes_to_the_tracker(self):
        process = self.started()
        process.outReceived(wire.encode_message({"type": "info", "info": {}}))
        process.outReceived(wire.encode_gaze(wire.decode_gaze(bytearray(0))))
        self.assertEqual(self.tracker.events, [("message", "info"), ("gaze", 0)])

    def test_no_restart_before_keep_alive(self):
        """A child that dies before the tracker was connected is not started again."""
        ready = self.supervisor.ready()
        self.die(Failure(error.ProcessTerminated(exitCode=3)))
        self.failureResultOf(ready, TrackerError)
        self.assertEqual(self.tracker.events, [("gone",)])
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(self.supervisor.restarts, 0)
        self.assertIsNone(self.supervisor.pid)
        self.flushLoggedErrors()

    def test_restart_with_backoff(self):
        """Each death in a row doubles the wait, up to the maximum; a restart says hello."""
        self.started()
        self.supervisor.keepAlive()
        delays = []
        for round in range(5):
            self.die()
            [(_, status, delay, number)] = self.lost()[round:]
            self.assertEqual((status, number), ("was killed by signal 9 (SIGKILL)", 9))
            delays.append(delay)
            self.reactor.advance(delay - 0.001)
            self.assertEqual(len(self.reactor.spawned), round + 1)
            self.reactor.advance(0.002)
            self.assertEqual(len(self.reactor.spawned), round + 2)
            self.supervisor.process.outReceived(hello())  # the restore completes
        self.assertEqual(delays, [0.05, 0.1, 0.2, 0.4, 0.4])
        self.assertEqual(self.supervisor.restarts, 5)
        self.assertEqual(self.tracker.events.count(("gone",)), 5)
        self.assertEqual(self.tracker.events.count(("restore",)), 5)
        self.flushLoggedErrors()

    def test_a_stable_child_resets_the_backoff(self):
        self.started()
        self.supervisor.keepAlive()
        self.die()
        self.reactor.advance(0.05)
        self.supervisor.process.outReceived(hello())
        self.die()
        self.assertEqual(self.lost()[-1][2], 0.1)
        self.reactor.advance(0.1)
        self.supervisor.process.outReceived(hello())
        self.reactor.advance(self.supervisor.stableSeconds)
        self.die()
        self.assertEqual(self.lost()[-1][2], 0.05)
        self.flushLoggedErrors()

    def test_a_failed_restore_tries_again_later(self):
        self.started()
        self.supervisor.keepAlive()
        self.tracker.restoreFails = True
        self.die()
        self.reactor.advance(0.05)
        self.assertEqual(self.tracker.events[-1], ("restore",))
        self.reactor.advance(0.1 - 0.001)
        self.assertEqual(self.tracker.events.count(("restore",)), 1)
        self.reactor.advance(0.002)
        self.assertEqual(self.tracker.events.count(("restore",)), 2)
        self.assertEqual(len(self.lost()), 1)  # the clients were told once
        warnings = [
            e for e in self.lines if "could not take the eye tracker back" in e["log_format"]
        ]
        self.assertEqual(len(warnings), 2)
        self.flushLoggedErrors()

    def test_a_death_during_a_restore_is_left_to_the_restore(self):
        self.started()
        self.supervisor.keepAlive()
        self.die()
        self.reactor.advance(0.05)  # restore() waits for the new child's hello
        self.die(Failure(error.ProcessTerminated(exitCode=1)))
        self.assertEqual(len(self.lost()), 1)
        self.assertEqual(self.tracker.events[-1], ("gone",))
        self.reactor.advance(0.1)  # the restore failed: it tries again
        self.assertEqual(self.tracker.events.count(("restore",)), 2)
        self.flushLoggedErrors()

    def test_a_dead_child_is_not_heard(self):
        """Output of a child read after its end (and a new child's start) is dropped."""
        old = self.started()
        self.supervisor.keepAlive()
        self.die()
        self.reactor.advance(0.05)
        self.tracker.events.clear()
        old.outReceived(wire.encode_message({"type": "info", "info": {}}))
        self.assertEqual(self.tracker.events, [])
        self.flushLoggedErrors()

    def test_stop(self):
        """Stdin closed; a child that does not exit is killed after stopTimeout."""
        process = self.started()
        self.supervisor.keepAlive()
        stopped = self.supervisor.stop()
        self.assertTrue(process.transport.stdinClosed)
        self.reactor.advance(self.supervisor.stopTimeout - 0.01)
        self.assertEqual(process.transport.signals, [])
        self.assertNoResult(stopped)
        self.reactor.advance(0.02)
        self.assertEqual(process.transport.signals, ["KILL"])
        self.die()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertIsNone(self.successResultOf(self.supervisor.stop()))
        self.assertEqual(self.lost(), [])  # no restart after a stop
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_stop_cancels_a_restart(self):
        self.started()
        self.supervisor.keepAlive()
        self.die()
        self.successResultOf(self.supervisor.stop())
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.flushLoggedErrors()

    def test_stop_without_a_child(self):
        self.assertIsNone(self.successResultOf(self.supervisor.stop()))


class GazeFromTheChildTests(unittest.SynchronousTestCase):
    """
    What L{ChildTracker} hands the hub from a gaze frame: the frame's bytes
    as they came (no numpy call), less what was captured before startGaze.
    """

    def setUp(self):
        from jspsych_tobii.trackers.child.tracker import ChildTracker

        self.tracker = ChildTracker(ProcessReactor(), lambda: 0, sys.executable)
        self.received = []
        self.tracker._gazeReceiver = self.received.append  # as startGaze leaves it
        self.tracker._gazeSince = 2 * 833

    def payload(self, first, n):
        from .test_child_wire import gaze

        return bytearray(gaze(n, first).tobytes())

    def test_bytes_handed_over(self):
        payload = self.payload(2, 3)
        self.tracker.gazeReceived(payload)
        self.assertEqual(len(self.received), 1)
        self.assertIs(self.received[0], payload)

    def test_older_samples_left_out(self):
        self.tracker.gazeReceived(self.payload(0, 2))  # all before startGaze
        self.tracker.gazeReceived(self.payload(1, 3))
        [batch] = self.received
        self.assertEqual(batch["system_time_us"].tolist(), [2 * 833, 3 * 833])

    def test_not_whole_records_break_the_wire(self):
        broken = []
        self.patch(self.tracker.supervisor, "breakWire", broken.append)
        self.tracker.gazeReceived(self.payload(2, 2)[:-3])
        self.assertEqual(self.received, [])
        self.assertEqual(len(broken), 1)
