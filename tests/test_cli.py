"""
Tests of the command lines, run as a user would: in a subprocess.
"""

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial import unittest

import jspsych_tobii

PYTHON = sys.executable
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*argv, timeout=30):
    return subprocess.run(
        [PYTHON, "-m", "jspsych_tobii.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


@functools.lru_cache(maxsize=None)
def help_output():
    """C{jspsych-tobii-server --help}, run once for the tests that read it."""
    return run_cli("--help")


def start_cli(*argv):
    """jspsych-tobii-server in the background, its output captured as text."""
    return subprocess.Popen(
        [PYTHON, "-m", "jspsych_tobii.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        text=True,
    )


def wait_listening(port, process, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start listening")


def websocket_roundtrip(port, message):
    """A minimal WebSocket client (stdlib only) sending one text frame and
    returning the reply that carries its requestId (a tracker_status the
    server pushes meanwhile is passed over)."""
    from .rawws import handshake, read_json, send_json

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        handshake(s, "127.0.0.1", port)
        send_json(s, message)
        while True:
            reply = read_json(s)
            if "requestId" not in message or reply.get("requestId") == message["requestId"]:
                return reply


def make_temp_dir(case):
    """A fresh directory removed after the test (works under trial and pytest)."""
    path = tempfile.mkdtemp(prefix="jspsych-tobii-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class ConsoleScriptTests(unittest.TestCase):
    def mktemp_dir(self):
        return make_temp_dir(self)

    def test_version(self):
        result = run_cli("--version")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout.strip(), f"jspsych-tobii {jspsych_tobii.__version__}")

    def test_help_lists_options(self):
        result = help_output()
        self.assertEqual(result.returncode, 0)
        for option in (
            "--host",
            "--port",
            "--tracker",
            "--buffer-size",
            "--log-level",
            "--log-file",
            "--mock",
            "--mock-rate",
            "--version",
        ):
            self.assertIn(option, result.stdout)

    def test_help_starts_with_usage(self):
        result = help_output()
        self.assertEqual(result.stdout.splitlines()[0], "Usage: jspsych-tobii-server [options]")

    def test_help_into_a_closed_pipe(self):
        """jspsych-tobii-server --help | head -1: the reader has gone; no traceback."""
        for argv in (("--help",), ("--version",)):
            read, write = os.pipe()
            os.close(read)  # whatever the command writes meets a closed pipe
            try:
                result = subprocess.run(
                    [PYTHON, "-m", "jspsych_tobii.cli", *argv],
                    stdout=write,
                    stderr=subprocess.PIPE,
                    text=True,
                    timeout=30,
                    env=ENV,
                )
            finally:
                os.close(write)
            self.assertEqual(result.stderr, "", argv)
            self.assertEqual(result.returncode, 1, argv)

    def test_ignored_option_refused(self):
        result = run_cli("--speed", "2", "--port", "0")
        self.assertEqual(result.returncode, 2)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(
            result.stderr.splitlines()[0],
            "jspsych-tobii-server: --speed: applies to --replay only",
        )

    def test_bad_value_one_line_no_traceback(self):
        result = run_cli("--mock", "--port", "notaport")
        self.assertEqual(result.returncode, 2)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn("--port", result.stderr.splitlines()[0])

    def test_port_in_use(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            result = run_cli("--mock", "--host", "127.0.0.1", "--port", str(port))
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn("cannot start", result.stderr)

    def test_serves_and_stops_on_sigterm(self):
        port = free_port()
        log_file = os.path.join(self.mktemp_dir(), "server.log")
        process = start_cli(
            "--mock",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-file",
            log_file,
            "--log-level",
            "warning",
        )
        try:
            wait_listening(port, process)
            reply = websocket_roundtrip(
                port, {"type": "time_sync", "clientTime": 1, "requestId": "r"}
            )
            self.assertEqual(reply["requestId"], "r")
            self.assertIsInstance(reply["serverTime"], float)
        finally:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
        self.assertEqual(process.returncode, 0)
        # prompt, not a hang until communicate's timeout (a loaded 2-core CI machine)
        self.assertLess(time.monotonic() - started, 8.0)
        self.assertNotIn("Traceback", err + out)
        # WARNING level: the per-connection INFO lines are filtered out
        self.assertNotIn("connected", out)
        # --log-file: the same log, at the same level, in the file
        with open(log_file, encoding="utf-8") as f:
            logged = f.read()
        self.assertIn("using the MOCK tracker", logged)
        self.assertNotIn("serving the jsPsych client", logged)

    def test_no_silent_mock(self):
        """Without --mock and without the SDK, the server says so and uses no fake data."""
        port = free_port()
        process = start_cli("--host", "127.0.0.1", "--port", str(port))
        try:
            wait_listening(port, process)
            reply = websocket_roundtrip(port, {"type": "start_tracking", "requestId": "s"})
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
        self.assertEqual(reply["type"], "error")
        self.assertIn("eye tracker", reply["error"])
        self.assertNotIn("Mock", out)


# twistd finds plugins in twisted/plugins/ of every sys.path entry: this
# checkout's, put on the path, serves whether the package was installed with
# `pip install .` or with an editable install (whose default mode hides the
# plugin from twistd; see the README).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD_ENV = dict(ENV, PYTHONPATH=ROOT)


class TwistdTests(unittest.TestCase):
    def test_twistd_serves(self):
        port = free_port()
        log_file = os.path.join(self.mktemp_dir(), "server.log")
        process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "twisted",
                "jspsych-tobii",
                "--mock",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-file",
                log_file,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=TWISTD_ENV,
            text=True,
            cwd=self.mktemp_dir(),
        )
        try:
            wait_listening(port, process)
            reply = websocket_roundtrip(port, {"type": "get_status", "requestId": "g"})
            self.assertIs(reply["trackerConnected"], True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=10)
        # twistd writes its own log; --log-file adds this server's to a file
        with open(log_file, encoding="utf-8") as f:
            logged = f.read()
        self.assertIn("using the MOCK tracker", logged)
        self.assertIn("serving the jsPsych client", logged)

    def test_twistd_bad_option(self):
        result = subprocess.run(
            [PYTHON, "-m", "twisted", "jspsych-tobii", "--log-level", "LOUD"],
            capture_output=True,
            text=True,
            timeout=30,
            env=TWISTD_ENV,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--log-level", result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def mktemp_dir(self):
        return make_temp_dir(self)
