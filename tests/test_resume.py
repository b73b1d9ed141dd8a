"""
Tests for L{jspsych_tobii.server.resume}: after a drop, the stream goes back
to the client that dropped, and to no other page.

The whole server runs on a L{task.Clock} (Autobahn's timers too), and each
page is an Autobahn client connected in memory (L{iosim}) with the handshake
a browser page would send: its URL, Origin and User-Agent, from 127.0.0.1,
as on a one-PC lab.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from jspsych_tobii.server.resume import Fingerprint, ResumeRegistry

from .support import CHROME, FIREFOX, Lab


class ResumeTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.lab = Lab(self)
        self.hub = self.lab.server.state.hub
        self.resumes = self.lab.server.state.resumes

    def track(self, page):
        page.send("start_tracking")
        self.lab.run(0.05)
        self.assertIn("start_tracking", page.kinds())

    def test_dropped_page_gets_its_stream_back(self):
        page, _ = self.lab.open("ws://localhost:8080/?participant=7")
        self.track(page)
        self.lab.crash(page)
        self.assertEqual(self.resumes.held, 1)
        again, _ = self.lab.open("ws://localhost:8080/?participant=7")
        self.lab.run(0.5)
        self.assertEqual(again.kinds()[0], "tracking_resumed")
        self.assertEqual(len(again.gaze), 60)
        self.assertEqual(self.hub.session, 1, "the stream was not kept running")
        self.assertEqual(self.resumes.held, 0)

    def test_clean_close_releases_the_stream_at_once(self):
        page, _ = self.lab.open()
        self.track(page)
        self.lab.leave(page)
        self.assertEqual(page.close_status[0], True)
        self.assertEqual(self.resumes.held, 0)
        self.assertFalse(self.hub.running, "the stream outlived the page that closed")
        other, _ = self.lab.open()
        self.lab.run(0.5)
        self.assertEqual(other.gaze, [])
        self.assertNotIn("tracking_resumed", other.kinds())

    def test_other_page_first_gets_nothing_and_the_dropped_one_still_resumes(self):
        """
        The report of issue 10: on one PC every page is 127.0.0.1; a
        monitoring page connecting first must not take the experiment's
        stream, and the experiment page, coming second, must get it.
        """
        page, _ = self.lab.open("ws://localhost:8080/?participant=1")
        self.track(page)
        self.lab.crash(page)
        monitor, _ = self.lab.open(origin="null")
        self.lab.run(0.3)
        self.assertEqual(monitor.gaze, [])
        self.assertNotIn("tracking_resumed", monitor.kinds())
        again, _ = self.lab.open("ws://localhost:8080/?participant=1")
        self.lab.run(0.3)
        self.assertEqual(again.kinds()[0], "tracking_resumed")
        self.assertGreater(len(again.gaze), 30)

    def test_two_browsers_and_a_monitor_each_keep_their_own_stream(self):
        chrome, _ = self.lab.open("ws://localhost:8080/?participant=1", agent=CHROME)
        firefox, _ = self.lab.open("ws://localhost:8080/?participant=2", agent=FIREFOX)
        monitor, _ = self.lab.open(origin="null", agent=CHROME)
        for page in (chrome, firefox, monitor):
            self.track(page)
        # both experiment pages drop; they come back in the other order
        self.lab.crash(chrome)
        self.lab.crash(firefox)
        self.assertEqual(self.resumes.held, 2)
        firefox2, _ = self.lab.open("ws://localhost:8080/?participant=2", agent=FIREFOX)
        chrome2, _ = self.lab.open("ws://localhost:8080/?participant=1", agent=CHROME)
        before = len(monitor.gaze)
        self.lab.run(0.5)
        for page in (firefox2, chrome2):
            self.assertEqual(page.kinds()[0], "tracking_resumed")
            self.assertEqual(len(page.gaze), 60)
        self.assertEqual(len(monitor.gaze), before + 60)
        self.assertEqual(self.resumes.held, 0)
        # the monitor drops: only a page like it takes its stream back
        self.lab.crash(monitor)
        stranger, _ = self.lab.open("ws://localhost:8080/?participant=3", agent=CHROME)
        monitor2, _ = self.lab.open(origin="null", agent=CHROME)
        self.lab.run(0.2)
        self.assertEqual(stranger.gaze, [])
        self.assertEqual(monitor2.kinds()[0], "tracking_resumed")
        self.assertEqual(self.hub.subscriber_count, 3)

    def test_two_drops_alike_resume_neither(self):
        """Two held streams with one fingerprint: a page like them could be either."""
        a, _ = self.lab.open()
        b, _ = self.lab.open()
        self.track(a)
        self.track(b)
        self.lab.crash(a)
        self.lab.crash(b)
        again, _ = self.lab.open()
        self.lab.run(0.2)
        self.assertEqual(again.gaze, [])
        self.assertNotIn("tracking_resumed", again.kinds())
        self.lab.run(30.0, step=0.5)
        self.assertEqual(self.resumes.held, 0)
        self.assertFalse(self.hub.running)

    def test_no_resume_after_the_grace_period(self):
        """
        The dropped stream is kept for the grace period (30 s here) and no
        longer: the page that comes back after it gets nothing.
        """
        page, _ = self.lab.open("ws://localhost:8080/?participant=1")
        self.track(page)
        self.lab.crash(page)
        self.lab.run(29.5, step=0.5)
        self.assertEqual(self.resumes.held, 1)
        self.assertTrue(self.hub.running, "the stream stopped before the grace period ended")
        self.lab.run(0.6, step=0.1)
        self.assertEqual(self.resumes.held, 0)
        self.assertFalse(self.hub.running, "the stream outlived the grace period")
        again, _ = self.lab.open("ws://localhost:8080/?participant=1")
        self.lab.run(0.5)
        self.assertEqual(again.gaze, [])
        self.assertNotIn("tracking_resumed", again.kinds())

    def test_server_dropping_the_socket_is_a_drop(self):
        """The server loses the socket (e.g. a keepalive timeout): the stream is kept."""
        page, server = self.lab.open()
        self.track(page)
        server.dropConnection(abort=True)
        self.lab.flush()
        self.assertEqual(self.resumes.held, 1)

    def test_client_the_server_closed_is_not_waited_for(self):
        """A client the server closed with a close frame (it did not read) is not held."""
        page, server = self.lab.open()
        self.track(page)
        server.gate._not_reading()
        self.lab.run(2.0)  # the close handshake (or its timeout)
        self.assertIsNotNone(page.close_status)
        self.assertEqual(self.resumes.held, 0)
        self.assertFalse(self.hub.running)
        self.flushLoggedErrors()

    def test_page_with_other_user_agent_or_query_is_another_client(self):
        page, _ = self.lab.open("ws://localhost:8080/?participant=1", agent=CHROME)
        self.track(page)
        self.lab.crash(page)
        for url, agent in (
            ("ws://localhost:8080/?participant=1", FIREFOX),
            ("ws://localhost:8080/?participant=2", CHROME),
            ("ws://127.0.0.1:8080/?participant=1", CHROME),
        ):
            other, _ = self.lab.open(url, agent=agent)
            self.lab.run(0.1)
            self.assertEqual(other.gaze, [], (url, agent))
        self.assertEqual(self.resumes.held, 1)


class RegistryTests(unittest.SynchronousTestCase):
    """The registry alone, with a hub that counts holds."""

    class Hub:
        def __init__(self):
            from twisted.internet import defer

            self.defer = defer
            self.holds = set()

        def hold(self, token):
            self.holds.add(token)
            return self.defer.succeed(None)

        def release(self, token):
            self.holds.discard(token)
            return self.defer.succeed(None)

    def setUp(self):
        self.clock = Clock()
        self.hub = self.Hub()
        self.registry = ResumeRegistry(self.clock, self.hub, grace_period=10)

    def test_grace_period(self):
        who = Fingerprint("127.0.0.1", "null", "UA", "localhost:8080", "/")
        self.registry.dropped(who)
        self.clock.advance(9.9)
        self.assertEqual(len(self.hub.holds), 1)
        self.clock.advance(0.2)
        self.assertEqual(self.hub.holds, set())
        self.assertFalse(self.registry.claim(who))

    def test_claim_releases_after_the_claimant_subscribed(self):
        who = Fingerprint("127.0.0.1", "null", "UA", "localhost:8080", "/")
        self.registry.dropped(who)
        self.assertTrue(self.registry.claim(who))
        self.assertEqual(len(self.hub.holds), 1, "released before the claimant subscribed")
        self.clock.advance(0)
        self.assertEqual(self.hub.holds, set())
        self.assertFalse(self.registry.claim(who))

    def test_fingerprint_from_handshake(self):
        who = Fingerprint.of(
            "127.0.0.1",
            {"origin": "null", "user-agent": "UA", "host": "localhost:8080", "accept": "*/*"},
            "/?participant=1",
        )
        self.assertEqual(who, ("127.0.0.1", "null", "UA", "localhost:8080", "/?participant=1"))

    def test_the_log_never_shows_the_query(self):
        """The query may carry the access token (?token=...): the log line leaves it out."""
        who = Fingerprint("127.0.0.1", "null", "UA", "localhost:8080", "/?token=s3cret&p=1")
        self.assertNotIn("s3cret", who.describe())
        self.assertIn("127.0.0.1", who.describe())
