"""
Tests for L{jspsych_tobii.logs}: the level filter, and the bridge to the
standard library's C{logging} that an asyncio program gets.
"""

import logging

from twisted.logger import Logger as TwistedLogger
from twisted.trial import unittest

from jspsych_tobii import logs


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


class StdlibBridgeTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.handler = Records()
        top = logging.getLogger("jspsych_tobii")
        level, propagate = top.level, top.propagate
        top.addHandler(self.handler)
        top.setLevel(logging.DEBUG)
        top.propagate = False  # the test's records only, not on stderr

        def restore():
            top.removeHandler(self.handler)
            top.setLevel(level)
            top.propagate = propagate

        self.addCleanup(restore)

    def seen(self):
        return [(r.name, r.levelname, r.getMessage()) for r in self.handler.records]

    def test_names_and_levels(self):
        """This package's events keep their names; Twisted's go under jspsych_tobii.twisted."""
        stop = logs.to_stdlib()
        self.addCleanup(stop)
        logs.Logger("jspsych_tobii.server.hub.GazeHub").warn("slow {who}", who="client")
        TwistedLogger(namespace="twisted.internet.tcp").info("port closed")
        self.assertEqual(
            self.seen(),
            [
                ("jspsych_tobii.server.hub.GazeHub", "WARNING", "slow client"),
                ("jspsych_tobii.twisted", "INFO", "port closed"),
            ],
        )

    def test_failure_has_its_traceback(self):
        stop = logs.to_stdlib()
        self.addCleanup(stop)
        try:
            raise ZeroDivisionError("a test")
        except ZeroDivisionError:
            logs.Logger("jspsych_tobii.x").failure("while dividing")
        self.flushLoggedErrors(ZeroDivisionError)
        (record,) = self.handler.records
        self.assertEqual(record.levelname, "CRITICAL")
        self.assertIs(record.exc_info[0], ZeroDivisionError)

    def test_shared_and_reversible(self):
        """Two servers: each event once; the bridge goes when both have stopped."""
        first, second = logs.to_stdlib(), logs.to_stdlib()
        logs.Logger("jspsych_tobii.x").info("one")
        first()
        first()  # twice is once
        logs.Logger("jspsych_tobii.x").info("two")
        second()
        logs.Logger("jspsych_tobii.x").info("three")
        self.assertEqual([m for _, _, m in self.seen()], ["one", "two"])


class EnabledTests(unittest.SynchronousTestCase):
    """L{logs.enabled} answers as the level filter decides."""

    def test_follows_the_level(self):
        from twisted.logger import LogLevel

        self.addCleanup(logs.set_level, "INFO")
        where = "jspsych_tobii.server.protocol.TobiiServerProtocol"
        logs.set_level("ERROR")
        self.assertEqual(
            [logs.enabled(level, where) for level in (LogLevel.debug, LogLevel.warn)],
            [False, False],
        )
        self.assertTrue(logs.enabled(LogLevel.error, where))
        logs.set_level("DEBUG")
        self.assertTrue(logs.enabled(LogLevel.debug, where))
