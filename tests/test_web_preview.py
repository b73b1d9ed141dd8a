"""
Tests for L{jspsych_tobii.web.preview}: the preview leases on a fake clock
(the C{POST /preview} resource is tested over HTTP in L{tests.test_web_status}).
"""

from twisted.trial import unittest

from jspsych_tobii.web.preview import MAX_PREVIEWS, PREVIEW_LEASE_SECONDS, PreviewLeases

from .support import FakeServer


class PreviewLeaseTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.server = FakeServer(rate=120)
        self.hub = self.server.state.hub
        self.leases = PreviewLeases(self.hub, self.server.clock)

    def test_lapses_unless_renewed(self):
        self.successResultOf(self.leases.start("page1"))
        self.assertTrue(self.hub.previewing)
        for _ in range(4):  # renewed every 3 s for 12 s
            self.server.advance(3.0, step=0.05)
            self.successResultOf(self.leases.start("page1"))
            self.assertTrue(self.hub.previewing)
        self.server.advance(PREVIEW_LEASE_SECONDS - 0.1, step=0.05)
        self.assertTrue(self.hub.previewing)
        self.server.advance(0.2, step=0.05)
        self.assertFalse(self.hub.previewing)
        self.assertEqual(len(self.leases), 0)
        self.assertEqual(self.hub.session, 0)

    def test_stop_and_several_pages(self):
        self.successResultOf(self.leases.start("page1"))
        self.successResultOf(self.leases.start("page2"))
        self.successResultOf(self.leases.stop("page1"))
        self.assertTrue(self.hub.previewing, "page2 still previews")
        self.successResultOf(self.leases.stop("page2"))
        self.assertFalse(self.hub.previewing)
        self.successResultOf(self.leases.stop("never-started"))

    def test_limit(self):
        for i in range(MAX_PREVIEWS):
            self.successResultOf(self.leases.start(f"p{i}"))
        failure = self.failureResultOf(self.leases.start("one-too-many"))
        self.assertIn(f"at most {MAX_PREVIEWS}", failure.getErrorMessage())
        self.successResultOf(self.leases.start("p0"))  # renewing is not a new one
        self.leases.stop_all()
        self.assertFalse(self.hub.previewing)
        self.assertEqual(len(self.leases), 0)

    def test_no_tracker(self):
        server = FakeServer(rate=120, start=False)
        leases = PreviewLeases(server.state.hub, server.clock)
        failure = self.failureResultOf(leases.start("page1"))
        self.assertIn("no eye tracker", failure.getErrorMessage())
        self.assertEqual(len(leases), 0)
        self.assertEqual(server.clock.getDelayedCalls(), [])
