"""
Tests for L{jspsych_tobii.tap} and the twistd plugin.
"""

from twisted.application.service import IServiceCollection, IServiceMaker
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from jspsych_tobii.tap import Options, makeService
from jspsych_tobii.trackers.mock import MockTracker


class PluginTests(unittest.SynchronousTestCase):
    def test_discoverable(self):
        """twistd finds a service maker called jspsych-tobii pointing at this tap."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("jspsych-tobii", makers)
        maker = makers["jspsych-tobii"]
        self.assertIs(maker.options, Options)
        self.assertIs(maker.makeService, makeService)


class OptionsTests(unittest.SynchronousTestCase):
    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options.config

    def test_defaults(self):
        config = self.parse()
        self.assertEqual(config.host, "localhost")
        self.assertEqual(config.port, "8080")
        self.assertEqual(config.endpoint, "tcp:8080:interface=localhost")
        self.assertIsNone(config.tracker)
        self.assertEqual(config.buffer_size, 10000)
        self.assertEqual(config.log_level, "INFO")
        self.assertFalse(config.mock)
        self.assertEqual(config.mock_rate, 120.0)

    def test_all_options(self):
        config = self.parse(
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--tracker",
            "tobii-prp://TPSP1-0101",
            "--buffer-size",
            "500",
            "--log-level",
            "debug",
            "--log-file",
            "x.log",
            "--mock",
            "--mock-rate",
            "1200",
            "--reconnect-grace",
            "5",
        )
        self.assertEqual(config.endpoint, "tcp:9000:interface=0.0.0.0")
        self.assertEqual(config.tracker, "tobii-prp://TPSP1-0101")
        self.assertEqual(config.buffer_size, 500)
        self.assertEqual(config.log_level, "DEBUG")
        self.assertEqual(config.log_file, "x.log")
        self.assertTrue(config.mock)
        self.assertEqual(config.mock_rate, 1200.0)
        self.assertEqual(config.reconnect_grace, 5.0)

    def test_endpoint_strings(self):
        for port in ("tcp:8080:interface=0.0.0.0", "systemd:domain=INET:name=web", "unix:/tmp/s"):
            self.assertEqual(self.parse("--port", port).endpoint, port)

    def test_ipv6_host(self):
        self.assertEqual(self.parse("--host", "::1").endpoint, "tcp:8080:interface=\\:\\:1")

    def test_bad_values(self):
        for argv, fragment in [
            (("--port", "99999"), "--port"),
            (("--port", "http"), "--port"),
            (("--buffer-size", "0"), "--buffer-size"),
            (("--buffer-size", "ten"), "--buffer-size"),
            (("--log-level", "LOUD"), "--log-level"),
            (("--mock-rate", "0"), "--mock-rate"),
            (("--mock-rate", "nan"), "--mock-rate"),
            (("--mock-rate", "5000"), "--mock-rate"),
            (("--host", "bad host"), "--host"),
            (("--frequency", "x"), "--frequency"),
            (("--tracker", " "), "--tracker"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*argv)
            self.assertIn(fragment, str(caught.exception), argv)
            self.assertNotIn("\n", str(caught.exception))


class MakeServiceTests(unittest.SynchronousTestCase):
    def test_service_tree(self):
        options = Options()
        options.parseOptions(["--mock", "--port", "tcp:0:interface=127.0.0.1"])
        clock = Clock()
        top = makeService(options, clock, make_tracker=lambda: MockTracker(clock))
        self.assertTrue(IServiceCollection.providedBy(top))
        names = {s.name for s in top}
        self.assertEqual(names, {"tracker", "resumes", "websocket"})


class ListTrackersTests(unittest.SynchronousTestCase):
    def test_list_trackers(self):
        """Without the SDK: a one-line error; with it and no tracker: 'no eye tracker found'."""
        import io

        from jspsych_tobii.tap import list_trackers

        try:
            import tobii_research  # noqa: F401
        except ImportError:
            have_sdk = False
        else:
            have_sdk = True
        out = io.StringIO()
        status = list_trackers(out)
        if have_sdk:
            self.assertEqual((status, out.getvalue()), (0, "no eye tracker found\n"))
        else:
            self.assertEqual((status, out.getvalue()), (1, ""))

    def test_mock_truth_options(self):
        options = Options()
        options.parseOptions(
            [
                "--mock",
                "--mock-offset-deg",
                "0.5",
                "--mock-noise-deg",
                "0.1",
                "--validation-skip-ms",
                "250",
            ]
        )
        config = options.config
        self.assertEqual(
            (config.mock_offset_deg, config.mock_noise_deg, config.validation_skip_ms),
            (0.5, 0.1, 250.0),
        )
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--mock-noise-deg", "-1"])


class OriginOptionTests(unittest.SynchronousTestCase):
    def test_allowed_origins(self):
        options = Options()
        options.parseOptions(["--allowed-origins", "http://localhost:*, null"])
        self.assertEqual(options.config.origin_patterns, ["http://localhost:*", "null"])
        default = Options()
        default.parseOptions([])
        self.assertEqual(default.config.origin_patterns, ["*"])
        for bad in ("", " , ", "localhost"):
            with self.assertRaises(usage.UsageError):
                Options().parseOptions(["--allowed-origins", bad])
