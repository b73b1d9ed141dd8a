"""
Tests for L{jspsych_tobii.tap} and the twistd plugin.
"""

import io
import json
import os
import shlex
import sys

from twisted.application.service import IServiceCollection, IServiceMaker
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.core.timesync import clock_from_seconds, monotonic_us
from jspsych_tobii.tap import TOKEN_ENV, Options, makeService

from . import fake_tobii_research as fake
from .support import (
    FakeServer,
    assert_close,
    handshake_status,
    mock_tracker,
    serve,
    temp_path,
    wait,
    wait_for,
)
from .test_cli import make_temp_dir
from .wsclient import connect


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
            "--frequency",
            "600",
            "--reconnect-grace",
            "5",
        )
        self.assertEqual(config.endpoint, "tcp:9000:interface=0.0.0.0")
        self.assertEqual(config.tracker, "tobii-prp://TPSP1-0101")
        self.assertEqual(config.buffer_size, 500)
        self.assertEqual(config.log_level, "DEBUG")
        self.assertEqual(config.log_file, "x.log")
        self.assertFalse(config.mock)
        self.assertEqual(config.frequency, 600.0)
        self.assertEqual(config.reconnect_grace, 5.0)
        mock = self.parse("--mock", "--mock-rate", "1200", "--mock-seed", "7")
        self.assertTrue(mock.mock)
        self.assertEqual((mock.mock_rate, mock.mock_seed), (1200.0, 7))

    def test_every_option_fills_the_config(self):
        """An option missing from CONFIG_OPTIONS would parse and then do nothing."""
        from jspsych_tobii.tap import CONFIG_OPTIONS

        names = {p[0] for p in Options.optParameters} | {f[0] for f in Options.optFlags}
        self.assertEqual(set(CONFIG_OPTIONS), names - {"version"})

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


class IgnoredOptionsTests(unittest.SynchronousTestCase):
    """An option the others would make the server ignore is refused, in one line."""

    def setUp(self):
        import os

        from jspsych_tobii.recording.format import write_recording

        from .test_recording import T0_US, scratch, synthetic_samples, tracker_description

        folder = scratch(self)
        os.makedirs(folder)
        self.recording = os.path.join(folder, "s1.gaze")
        write_recording(
            self.recording, synthetic_samples(10), started_us=T0_US, tracker=tracker_description()
        )

    def refused(self, *argv):
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(list(argv))
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def test_refused(self):
        replay = ("--replay", self.recording)
        for argv, start in [
            (("--mock", "--tracker", "tobii-prp://X"), "--tracker: cannot be combined with --mock"),
            (("--mock", "--frequency", "600"), "--frequency: cannot be combined with --mock"),
            (replay + ("--frequency", "600"), "--frequency: cannot be combined with --replay"),
            (("--mock", "--speed", "2"), "--speed: applies to --replay only"),
            (("--speed", "2"), "--speed: applies to --replay only"),
            (("--replay-loop",), "--replay-loop: applies to --replay only"),
            (("--mock", "--replay-loop"), "--replay-loop: applies to --replay only"),
            (("--mock-rate", "600"), "--mock-rate: applies to --mock only"),
            (replay + ("--mock-seed", "3"), "--mock-seed: applies to --mock only"),
            (("--mock-offset-deg", "1"), "--mock-offset-deg: applies to --mock only"),
            (("--mock-noise-deg", "0.1"), "--mock-noise-deg: applies to --mock only"),
            (("--host", "0.0.0.0", "--port", "tcp:8080"), "--host: applies only when --port"),
            (("--mock", "--list-trackers"), "--list-trackers: cannot be combined with --mock"),
        ]:
            self.assertTrue(self.refused(*argv).startswith(start), argv)

    def test_given_defaults_are_refused_too(self):
        """What the user gave counts, even when it equals the default."""
        self.assertIn("--speed", self.refused("--speed", "1"))
        self.assertIn("--mock-rate", self.refused("--mock-rate", "120"))
        self.assertIn("--host", self.refused("--host", "localhost", "--port", "unix:/tmp/s"))

    def test_defaults_are_not_given(self):
        for argv in [
            (),
            ("--mock",),
            ("--replay", self.recording),
            ("--port", "systemd:domain=INET:name=web"),
            ("--tracker", "tobii-prp://X", "--frequency", "600"),
        ]:
            options = Options()
            options.parseOptions(list(argv))
            self.assertEqual(options.config.replay_speed, 1.0)
            self.assertEqual(options.config.host, "localhost")

    def test_programmatic(self):
        """TobiiServer's door: a setting that differs from its default counts as given."""
        from jspsych_tobii.config import ConfigError, ServerConfig

        with self.assertRaises(ConfigError) as caught:
            ServerConfig(mock=True, tracker="tobii-prp://X")
        self.assertIn("--tracker", str(caught.exception))
        with self.assertRaises(ConfigError):
            ServerConfig(replay_speed=2.0)
        ServerConfig(mock=True, mock_rate=120.0, replay_speed=1.0)


class MakeServiceTests(unittest.SynchronousTestCase):
    def test_service_tree(self):
        options = Options()
        options.parseOptions(["--mock", "--port", "tcp:0:interface=127.0.0.1"])
        clock = Clock()
        top = makeService(
            options,
            clock,
            make_tracker=lambda: mock_tracker(clock),
            clock_us=clock_from_seconds(clock.seconds),
        )
        self.assertTrue(IServiceCollection.providedBy(top))
        names = {s.name for s in top}
        self.assertEqual(names, {"slices", "work", "tracker", "resumes", "websocket", "heap"})
        self.assertIs(top.state.work, top.getServiceNamed("work"))

    def test_clock_source_is_given(self):
        """The server clock is the source passed in, whatever the reactor is."""
        clock = Clock()
        clock.advance(7.0)
        driven = makeService(
            ServerConfig(mock=True, port="0"),
            clock,
            make_tracker=lambda: mock_tracker(clock),
            clock_us=clock_from_seconds(clock.seconds),
        )
        self.assertEqual(driven.state.clock.now_us(), 7_000_000)
        clock.advance(1.5)
        self.assertEqual(driven.state.clock.now_us(), 8_500_000)
        # by default the monotonic clock, even on a fake reactor
        default = makeService(ServerConfig(mock=True, port="0"), clock)
        before = monotonic_us()
        now = default.state.clock.now_us()
        self.assertTrue(before <= now <= monotonic_us())


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
        self.assertEqual(default.config.origin_patterns, ["local"])
        for bad in ("", " , ", "localhost", "http://localhost:port"):
            with self.assertRaises(usage.UsageError):
                Options().parseOptions(["--allowed-origins", bad])


# -- every option of the README's table, from the parsed flag to its effect
# in the running service

POINTS = [(0.1, 0.1), (0.9, 0.1), (0.5, 0.5), (0.1, 0.9), (0.9, 0.9)]


def validate(server, seconds=1.0):
    """The validation plugin's flow, the mock participant told where each target is."""
    client = server.client()
    client.send({"type": "validation_start"})
    client.request("start_tracking")
    for x, y in POINTS:
        client.request("mock_look_at", point={"x": x, "y": y})
        start = len(client.gaze)
        server.advance(seconds)
        client.send(
            {
                "type": "validation_point",
                "point": {"x": x, "y": y},
                "gaze_samples": client.gaze[start:],
            }
        )
    client.request("mock_look_at")
    return client.request("validation_compute")


class FlagEffectTests(unittest.SynchronousTestCase):
    """The service built from options, on a fake clock, with in-memory clients."""

    def test_mock(self):
        server = FakeServer(command_line=["--mock"])
        info = server.client().request("get_tracker_info")["tracker"]
        self.assertEqual((info["model"], info["address"]), ("Mock Tracker", "mock://tracker"))

    def test_mock_offset_deg(self):
        """--mock-offset-deg 2: a validation through the protocol measures 2 degrees."""
        report = validate(FakeServer(command_line=["--mock", "--mock-offset-deg", "2"]))
        assert_close(self, report["averageAccuracyDeg"], 2.0, 0.1)
        baseline = validate(FakeServer(command_line=["--mock"]))
        self.assertLess(baseline["averageAccuracyDeg"], 0.1)

    def test_mock_noise_deg(self):
        report = validate(FakeServer(command_line=["--mock", "--mock-noise-deg", "0.3"]))
        for eye in ("left", "right"):
            assert_close(self, report[eye]["averagePrecisionStdDeg"], 0.3, 0.05)
        baseline = validate(FakeServer(command_line=["--mock"]))
        self.assertLess(baseline["left"]["averagePrecisionStdDeg"], 0.05)

    def test_mock_rate(self):
        server = FakeServer(command_line=["--mock", "--mock-rate", "250"])
        client = server.client()
        self.assertEqual(client.request("get_tracker_info")["tracker"]["frequency"], 250.0)
        client.request("start_tracking")
        server.advance(1.0)
        self.assertEqual(len(client.gaze), 251)  # at 0, 4, ..., 1000 ms
        steps = {
            round(b["timestamp"] - a["timestamp"], 3) for a, b in zip(client.gaze, client.gaze[1:])
        }
        self.assertEqual(steps, {4.0})

    def test_mock_seed(self):
        def gaze(*argv):
            server = FakeServer(command_line=["--mock", *argv])
            client = server.client()
            client.request("start_tracking")
            server.advance(0.5)
            return [(g["leftX"], g["leftY"]) for g in client.gaze]

        seven = gaze("--mock-seed", "7")
        self.assertEqual(len(seven), 60)
        self.assertEqual(gaze("--mock-seed", "7"), seven)
        self.assertNotEqual(gaze("--mock-seed", "8"), seven)
        self.assertNotEqual(gaze(), seven)

    def test_validation_skip_ms(self):
        """Each 1 s point at 120 Hz: 84 samples after the default 300 ms, 60 after 500."""
        default = validate(FakeServer(command_line=["--mock"]))
        report = validate(FakeServer(command_line=["--mock", "--validation-skip-ms", "500"]))
        self.assertEqual((default["skipInitialMs"], report["skipInitialMs"]), (300.0, 500.0))
        for item in default["pointData"]:
            assert_close(self, item["numSamplesTotal"], 84, 1)
        for item in report["pointData"]:
            assert_close(self, item["numSamplesTotal"], 60, 1)

    def test_buffer_size(self):
        server = FakeServer(command_line=["--mock", "--buffer-size", "50"])
        client = server.client()
        client.request("start_tracking")
        server.advance(1.0)
        self.assertEqual(client.request("get_status")["bufferedSamples"], 50)
        reply = client.request("get_data", advance=0.01)
        self.assertEqual((reply["count"], reply["truncated"]), (50, True))

    def test_reconnect_grace(self):
        """A tracking client's dropped stream is kept --reconnect-grace seconds."""
        for grace in (5.0, 0.0):
            server = FakeServer(command_line=["--mock", "--reconnect-grace", f"{grace:g}"])
            client = server.client()
            client.request("start_tracking")
            client.drop()
            server.advance(grace - 0.1 if grace else 0.1)
            self.assertIs(server.state.hub.running, bool(grace), grace)
            server.advance(0.2)
            self.assertIs(server.state.hub.running, False, grace)

    def test_replay_speed_and_loop(self):
        """--replay plays a recording, --speed 2 in half the time, --replay-loop again and again."""
        path = recording(self, seconds=0.5, rate=600)  # 300 samples
        for argv, played in (
            ([], 0.5),
            (["--speed", "2"], 0.25),
            (["--speed", "2", "--replay-loop"], None),
        ):
            server = FakeServer(command_line=["--replay", path, *argv])
            client = server.client()
            client.request("start_tracking")
            server.advance(0.75)
            count = len(client.gaze)
            if played is None:  # 0.75 s at twice the speed: three passes
                assert_close(self, count, 900, 3)
            else:
                self.assertEqual(count, 300, argv)
                span = (client.gaze[-1]["timestamp"] - client.gaze[0]["timestamp"]) / 1000
                assert_close(self, span, played, 0.01, argv)

    def test_log_level(self):
        """--log-level WARNING shows the mock's warning, ERROR hides it."""
        from twisted.logger import globalLogPublisher

        from jspsych_tobii import logs

        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.addCleanup(logs.set_level, "INFO")

        def warned(level):
            del seen[:]
            FakeServer(command_line=["--mock", "--log-level", level])
            return any("MOCK" in e.get("log_format", "") for e in seen)

        self.assertTrue(warned("warning"))
        self.assertFalse(warned("ERROR"))


def recording(case, seconds, rate):
    """A session file of C{seconds} of synthetic gaze at C{rate}, removed after the test."""
    import shutil
    import tempfile

    import numpy as np

    from jspsych_tobii.recording.format import write_recording
    from jspsych_tobii.trackers.eyemodel import EyeModel

    folder = tempfile.mkdtemp(prefix="jspsych-tobii-tap-")
    case.addCleanup(shutil.rmtree, folder, True)
    path = f"{folder}/s1.gaze"
    period = int(round(1e6 / rate))
    write_recording(path, EyeModel(seed=1).samples(np.arange(int(seconds * rate)) * period))
    return path


class FlagEffectLoopbackTests(unittest.TestCase):
    """The service built from options on the real reactor: sockets, files, threads, processes."""

    timeout = 60

    def served(self, *argv):
        options = Options()
        options.parseOptions([*argv, "--port", "tcp:0:interface=127.0.0.1"])
        return serve(self, options)

    @defer.inlineCallbacks
    def client(self, port):
        client = yield connect(port)
        self.addCleanup(client.dropConnection, abort=True)
        return client

    def fake_sdk(self, devices=2):
        """The fake tobii_research, importable as the SDK for this test."""
        sdk = fake.make_sdk("2.x")
        for _ in range(devices):
            sdk.add_device(frequency=600.0)
        previous = sys.modules.get("tobii_research")
        sys.modules["tobii_research"] = sdk

        def restore():
            if previous is None:
                sys.modules.pop("tobii_research", None)
            else:
                sys.modules["tobii_research"] = previous

        self.addCleanup(sdk.shutdown)
        self.addCleanup(restore)
        return sdk

    def sdk_python(self, devices=2):
        """
        An interpreter for --sdk-python: this Python, running the fake SDK
        with C{devices} trackers in the child (as a Python 3.10 with
        tobii-research would run the real one).
        """
        from .fake_sdk_child import FAKE, FAKE_ENV, ROOT

        folder = make_temp_dir(self)
        path = os.path.join(folder, "python")
        self.python_runs = os.path.join(folder, "runs")
        with open(path, "w") as f:
            f.write(
                f"#!/bin/sh\necho run >> {shlex.quote(self.python_runs)}\n"
                f'exec {shlex.quote(sys.executable)} "$@" '
                f"--path {shlex.quote(ROOT)} --sdk {FAKE}\n"
            )
        os.chmod(path, 0o755)
        previous = os.environ.get(FAKE_ENV)
        os.environ[FAKE_ENV] = json.dumps({"devices": devices, "frequency": 600.0})

        def restore():
            if previous is None:
                os.environ.pop(FAKE_ENV, None)
            else:
                os.environ[FAKE_ENV] = previous

        self.addCleanup(restore)
        return path

    @defer.inlineCallbacks
    def connected_tracker_info(self, service, port):
        trackers = service.getServiceNamed("tracker")
        yield wait_for(lambda: trackers.available, timeout=20, what="the tracker")
        client = yield self.client(port)
        reply = yield client.request("get_tracker_info")
        return reply["tracker"]

    @defer.inlineCallbacks
    def test_tracker_and_frequency_reach_the_sdk(self):
        """--tracker opens that tracker (not the first found), --frequency sets its rate."""
        sdk = self.fake_sdk()
        first, second = sdk._devices.values()
        service, port = self.served("--tracker", second.address, "--frequency", "1200")
        info = yield self.connected_tracker_info(service, port)
        self.assertEqual((info["address"], info["frequency"]), (second.address, 1200.0))
        self.assertEqual((first.frequency, second.frequency), (600.0, 1200.0))

    @defer.inlineCallbacks
    def test_sdk_python_tracker_and_frequency(self):
        """--sdk-python runs the SDK in that Python; --tracker and --frequency reach it there."""
        python = self.sdk_python()
        address = "tobii-prp://TPSP1-010109245102"  # the child's second fake tracker
        service, port = self.served(
            "--sdk-python", python, "--tracker", address, "--frequency", "1200"
        )
        info = yield self.connected_tracker_info(service, port)
        self.assertEqual((info["address"], info["frequency"]), (address, 1200.0))
        self.assertIsNotNone(service.getServiceNamed("tracker").tracker.pid)
        with open(self.python_runs) as f:
            self.assertEqual(f.read(), "run\n", "the SDK did not run in the --sdk-python")

    def test_list_trackers(self):
        """--list-trackers prints every tracker found, in this Python or the --sdk-python one."""
        sdk = self.fake_sdk()
        for argv in (["--list-trackers"], ["--list-trackers", "--sdk-python", self.sdk_python()]):
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            with self.assertRaises(SystemExit) as exit:
                Options().parseOptions(argv)
            self.assertEqual(exit.exception.code, 0)
            lines = out.getvalue().splitlines()
            self.assertEqual(len(lines), 2, lines)
            for line, device in zip(lines, sdk._devices.values()):
                self.assertTrue(line.startswith(device.address + " "), line)
                self.assertIn("Tobii Pro Spectrum", line)

    @defer.inlineCallbacks
    def test_record_dir(self):
        from jspsych_tobii.recording.format import read_gaze

        folder = make_temp_dir(self)
        service, port = self.served("--mock", "--mock-rate", "600", "--record-dir", folder)
        client = yield self.client(port)
        yield client.request("start_tracking")
        yield wait(0.3)
        yield client.request("stop_tracking")
        yield service.getServiceNamed("recorder").stopService()
        [gaze] = [name for name in os.listdir(folder) if name.endswith(".gaze")]
        recorded = read_gaze(os.path.join(folder, gaze))["seq"].tolist()
        self.assertGreater(len(recorded), 100)
        self.assertEqual(recorded, [g["seq"] for g in client.gaze])

    @defer.inlineCallbacks
    def test_allowed_origins(self):
        from twisted.internet.threads import deferToThread

        service, port = self.served("--mock", "--allowed-origins", "http://localhost:*")
        for origin, status in (
            ("http://localhost:8000", 101),
            ("http://evil.example", 403),
            ("null", 403),
        ):
            self.assertEqual((yield deferToThread(handshake_status, port, origin)), status)

    @defer.inlineCallbacks
    def test_host_and_port(self):
        """--host with a port number, and a port that is an endpoint (a UNIX socket)."""
        from autobahn.twisted.websocket import WebSocketClientFactory
        from twisted.internet import endpoints, reactor

        from .wsclient import ExtensionClient

        options = Options()
        options.parseOptions(["--mock", "--host", "127.0.0.1", "--port", "0"])
        service, port = serve(self, options)
        listening = service.listening.port.getHost()
        self.assertEqual(listening.host, "127.0.0.1")
        client = yield self.client(port)
        self.assertIs((yield client.request("get_status"))["success"], True)

        path = os.path.join(make_temp_dir(self), "tobii.sock")
        options = Options()
        options.parseOptions(["--mock", "--port", f"unix:{path}"])
        service = makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        factory = WebSocketClientFactory("ws://localhost/")
        factory.protocol = ExtensionClient
        client = yield endpoints.UNIXClientEndpoint(reactor, path).connect(factory)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.opened
        self.assertIs((yield client.request("get_status"))["success"], True)


TOKEN = "tok-EN_0123456789~abc.d"


class TokenOptionTests(unittest.SynchronousTestCase):
    def setUp(self):
        environ = dict(os.environ)
        environ.pop(TOKEN_ENV, None)
        self.patch(os, "environ", environ)

    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options.config

    def refused(self, *argv):
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(list(argv))
        return str(caught.exception)

    def token_file(self, text):
        path = temp_path(self, "token")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_no_token_by_default(self):
        self.assertIsNone(self.parse().secret)

    def test_token(self):
        config = self.parse("--token", TOKEN)
        self.assertEqual(config.secret, TOKEN)
        self.assertNotIn(TOKEN, repr(config), "the token stays out of reprs")

    def test_token_file(self):
        path = self.token_file(TOKEN + "\n")
        self.assertEqual(self.parse("--token-file", path).secret, TOKEN)

    def test_environment(self):
        os.environ[TOKEN_ENV] = TOKEN
        self.assertEqual(self.parse().secret, TOKEN)
        self.assertEqual(self.parse("--token", "other-token").secret, "other-token")
        path = self.token_file("from-file")
        self.assertEqual(self.parse("--token-file", path).secret, "from-file")

    def test_bad_tokens_named_never_shown(self):
        secretish = "has space-" + TOKEN
        message = self.refused("--token", secretish)
        self.assertIn("--token:", message)
        self.assertNotIn(secretish, message)
        self.assertIn(
            "--token-file: the token is empty", self.refused("--token-file", self.token_file("\n"))
        )
        missing = temp_path(self, "missing")
        self.assertIn("--token-file: cannot read", self.refused("--token-file", missing))
        self.assertIn(
            "not both",
            self.refused("--token", TOKEN, "--token-file", self.token_file(TOKEN)),
        )
        os.environ[TOKEN_ENV] = "a&b"
        self.assertIn(TOKEN_ENV, self.refused())


class PingOptionTests(unittest.SynchronousTestCase):
    def test_ping_options(self):
        options = Options()
        options.parseOptions([])
        self.assertEqual((options.config.ping_interval, options.config.ping_timeout), (10.0, 10.0))
        options = Options()
        options.parseOptions(["--ping-interval", "2.5", "--ping-timeout", "0"])
        self.assertEqual((options.config.ping_interval, options.config.ping_timeout), (2.5, 0.0))
        for bad in (
            ["--ping-interval", "-1"],
            ["--ping-timeout", "x"],
            ["--ping-interval", "nan"],
            ["--ping-interval", "0", "--ping-timeout", "5"],  # no pings to time out
        ):
            with self.assertRaises(usage.UsageError):
                Options().parseOptions(bad)
