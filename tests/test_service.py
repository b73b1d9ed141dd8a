"""
Tests for L{jspsych_tobii.server.service}: the tracker's lifecycle, on a
fake clock, with a mock tracker that is absent until a test plugs it in.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.core.timesync import clock_from_seconds
from jspsych_tobii.interfaces import NoTrackerError, TrackerError
from jspsych_tobii.trackers.mock import MockTracker

from .support import FakeServer, capture_log

SERVICE_LOG = "jspsych_tobii.server.service.TrackerService"


class AbsentTracker(MockTracker):
    """The mock, not plugged in until C{present} is set; notes when it was looked for."""

    present = False
    error = NoTrackerError()

    def __init__(self, clock, **kwargs):
        super().__init__(clock, clock_from_seconds(clock.seconds), **kwargs)
        self.looked_at = []

    def connect(self):
        self.looked_at.append(self._reactor.seconds())
        if not self.present:
            self.failNext("connect", self.error)
        return super().connect()


def gaps(times):
    return [round(b - a, 6) for a, b in zip(times, times[1:])]


class RetryTests(unittest.SynchronousTestCase):
    def setUp(self):
        clock = Clock()
        self.tracker = AbsentTracker(clock)
        self.server = FakeServer(clock=clock, start=False, tracker=self.tracker)
        self.lines = capture_log(self, SERVICE_LOG)

    def run_for(self, seconds):
        for _ in range(int(seconds)):
            self.server.clock.advance(1.0)

    def test_an_hour_without_a_tracker(self):
        """
        One warning, not one every 5 s (720 an hour); retries back off from
        5 s to 60 s and go on forever; the connection is one more line.
        """
        self.server.trackers.startService()
        self.run_for(3600)
        looked = self.tracker.looked_at
        self.assertEqual(gaps(looked)[:5], [5.0, 10.0, 20.0, 40.0, 60.0])
        self.assertEqual(set(gaps(looked)[4:]), {60.0})
        self.assertEqual(len(looked), 63)
        [warning] = self.lines
        self.assertEqual(warning["log_level"].name, "warn")
        text = warning["log_format"].format(**warning)
        self.assertIn("no eye tracker connected", text)
        self.assertIn("every 60 s at most", text)

        self.run_for(10 * 3600)  # still looking, once a minute
        self.assertEqual(len(self.tracker.looked_at), 63 + 600)
        self.assertEqual(len(self.lines), 1)

        self.tracker.present = True
        self.run_for(60)
        self.assertTrue(self.server.trackers.available)
        self.assertEqual(len(self.lines), 2)
        connected = self.lines[1]["log_format"].format(**self.lines[1])
        self.assertIn("eye tracker connected: Mock Tracker", connected)
        self.assertIn(f"after {len(self.tracker.looked_at)} attempts", connected)
        self.run_for(3600)
        self.assertEqual(len(self.tracker.looked_at), 63 + 600 + 1)

    def test_a_changed_failure_is_logged(self):
        self.server.trackers.startService()
        self.run_for(100)
        self.assertEqual(len(self.lines), 1)
        self.tracker.error = NoTrackerError("no eye tracker at tobii-prp://X; found: Y")
        self.run_for(60)
        self.assertEqual(len(self.lines), 2)
        self.assertIn("found: Y", self.lines[1]["log_format"].format(**self.lines[1]))
        self.run_for(600)
        self.assertEqual(len(self.lines), 2)


class NoTrackerMessageTests(unittest.SynchronousTestCase):
    """What a client is told while there is no tracker: said once, not twice."""

    def ask(self, error):
        clock = Clock()
        tracker = AbsentTracker(clock)
        tracker.error = error
        server = FakeServer(clock=clock, start=False, tracker=tracker)
        server.trackers.startService()
        client = server.client()
        reply = client.request("start_tracking")
        self.assertEqual(reply["type"], "error")
        self.assertEqual(client.request("get_status")["trackerError"], str(error))
        return reply["error"]

    def test_none_found(self):
        self.assertEqual(self.ask(NoTrackerError()), "no eye tracker connected")

    def test_not_at_the_address(self):
        error = NoTrackerError("no eye tracker at tobii-prp://X (gone); eye trackers found: none")
        self.assertEqual(self.ask(error), str(error))

    def test_other_failure(self):
        self.assertEqual(
            self.ask(TrackerError("the SDK is broken")),
            "no eye tracker connected (the SDK is broken)",
        )
