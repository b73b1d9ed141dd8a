"""
Tests for L{jspsych_tobii.server.state} and the wiring L{makeService} does:
each part is given what it uses when built, through the interfaces.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jspsych_tobii.interfaces import (
    IEventSink,
    IGazeObserver,
    ISessionListener,
    ITrackerListener,
    ITrackerProvider,
    NotificationKind,
    NoTrackerError,
)
from jspsych_tobii.server.service import TrackerSlot
from jspsych_tobii.server.state import EventLog

from .support import FakeServer, temp_path


class Sink:
    def __init__(self):
        self.events = []

    def write_event(self, kind, **fields):
        self.events.append((kind, fields))


class EventLogTests(unittest.SynchronousTestCase):
    def test_recorder_and_sinks_get_each_event(self):
        recorder, sink = Sink(), Sink()
        events = EventLog(recorder, [sink])
        events.record("marker", label="a")
        self.assertEqual(recorder.events, [("marker", {"label": "a"})])
        self.assertEqual(sink.events, [("marker", {"label": "a"})])

    def test_without_recorder(self):
        sink = Sink()
        EventLog(None, [sink]).record("marker")
        self.assertEqual(sink.events, [("marker", {})])


class WiringTests(unittest.SynchronousTestCase):
    def test_parts_provide_their_interfaces(self):
        server = FakeServer(rate=120, record_dir=temp_path(self, "rec"))
        state = server.state
        for part in (state.trackers, state.trackers.slot):
            self.assertTrue(verifyObject(ITrackerProvider, part))
        self.assertTrue(verifyObject(ITrackerListener, state.hub))
        recorder = state.recorder
        self.assertTrue(verifyObject(ISessionListener, recorder))
        self.assertTrue(verifyObject(IGazeObserver, recorder))
        self.assertTrue(verifyObject(IEventSink, recorder))
        self.assertTrue(verifyObject(IEventSink, server.service.site.board))
        self.assertIn(recorder, state.hub.session_listeners)
        self.assertIn(recorder.write_batch, state.hub.observers)

    def test_nothing_is_missing_after_construction(self):
        """makeService hands every part its collaborators: no field is None."""
        state = FakeServer(rate=120, start=False).state
        for name, value in vars(state).items():
            self.assertIsNotNone(value, name)
        self.assertIs(state.trackers.slot, state.hub._trackers)
        self.assertIs(state.trackers._listener, state.hub)
        self.assertEqual(state.trackers.record_event, state.events.record)

    def test_hub_hears_of_the_tracker_through_the_listener(self):
        """The service tells the hub it is given; the hub broadcasts to every client."""
        server = FakeServer(rate=120)
        client = server.client()
        server.tracker.notify(NotificationKind.CONNECTION_LOST, "unplugged")
        statuses = [m for m in client.messages if m.get("type") == "tracker_status"]
        self.assertEqual(statuses[-1]["status"], "connection_lost")
        self.assertFalse(server.state.trackers.slot.available)


class TrackerSlotTests(unittest.SynchronousTestCase):
    def test_empty(self):
        slot = TrackerSlot()
        self.assertIsNone(slot.info())
        self.assertIsNone(slot.display_area())
        self.assertRaises(NoTrackerError, slot.require)

    def test_with_a_tracker(self):
        from .support import mock_tracker

        tracker = mock_tracker(Clock())
        tracker.connect()
        slot = TrackerSlot()
        slot.tracker, slot.available = tracker, True
        self.assertIs(slot.require(), tracker)
        self.assertEqual(slot.display_area(), tracker.info.display_area)
