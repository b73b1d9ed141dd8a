"""
Tests for L{jspsych_tobii.embed.TobiiServer}: C{asyncio.run(server.start())}.
Each runs the server in a child Python (the test process has its own reactor).
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

from twisted.trial import unittest

from jspsych_tobii import ServerConfig, TobiiServer

from .test_cli import ENV, free_port, wait_listening, websocket_roundtrip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_child(*argv):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.embed_child", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=ENV,
    )


class EmbedTests(unittest.TestCase):
    def test_asyncio_run(self):
        """
        The documented programmatic use serves requests; C{await
        server.stop()} returns once it has shut down; its log reached a
        C{logging} handler, and stops reaching it after the stop.
        """
        result = subprocess.run(
            [sys.executable, "-m", "tests.embed_child", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stdout.splitlines()
        reply = json.loads(lines[0])
        self.assertEqual(reply["requestId"], "e")
        self.assertIs(reply["trackerConnected"], True)
        stopped = json.loads(lines[1])
        self.assertEqual(stopped, {"taskDone": True, "port": None, "recordsAfterStop": 0})
        records = json.loads(lines[2])
        messages = [message for _, _, message in records]
        self.assertTrue(
            any(re.fullmatch(r"client tcp4?:127.0.0.1:\d+ connected", m) for m in messages),
            messages,
        )
        self.assertIn(
            [
                "jspsych_tobii.tap",
                "WARNING",
                "using the MOCK tracker (--mock): gaze is synthetic, no eye tracker is used",
            ],
            records,
        )
        # Twisted's own messages (the listening port) are under jspsych_tobii too
        self.assertTrue(all(name.startswith("jspsych_tobii.") for name, _, _ in records))
        self.assertIn("jspsych_tobii.twisted", {name for name, _, _ in records})

    def assert_signal_stops(self, number):
        port = free_port()
        child = start_child(str(port), "serve")
        self.addCleanup(lambda: child.poll() is None and child.kill())
        wait_listening(port, child)
        reply = websocket_roundtrip(port, {"type": "get_status", "requestId": "s"})
        self.assertEqual(reply["requestId"], "s")
        child.send_signal(number)
        stdout, stderr = child.communicate(timeout=30)
        self.assertEqual(child.returncode, 0, stderr)
        self.assertNotIn("Traceback", stderr)
        self.assertNotIn("KeyboardInterrupt", stderr)
        self.assertEqual(stdout, "returned\n")
        # logging.basicConfig's handler prints LEVEL:logger:message
        self.assertRegex(
            stderr,
            r"INFO:jspsych_tobii.server.protocol.TobiiServerProtocol:"
            r"client tcp4?:127.0.0.1:\d+ connected",
        )
        self.assertIn("INFO:jspsych_tobii.server.service.TrackerService:", stderr)
        return stderr

    def test_ctrl_c(self):
        """SIGINT (Ctrl-C) ends C{asyncio.run(server.start())} cleanly, status 0."""
        self.assert_signal_stops(signal.SIGINT)

    def test_sigterm(self):
        self.assert_signal_stops(signal.SIGTERM)

    def test_port_taken(self):
        """start() raises the listening error, and what had started is stopped again."""
        child = start_child(str(free_port()), "busy")
        stdout, stderr = child.communicate(timeout=60)
        self.assertEqual(child.returncode, 0, stderr)
        outcome, records = (json.loads(line) for line in stdout.splitlines())
        self.assertEqual(outcome, {"raised": "CannotListenError"})
        self.assertEqual(
            [message for name, _, message in records if name.endswith("TrackerService")][-1],
            "eye tracker released",
        )

    def test_reactor_bound_to_another_loop(self):
        """A reactor installed on another event loop is refused with one clear error."""
        program = (
            "import asyncio\n"
            "from twisted.internet import asyncioreactor\n"
            "asyncioreactor.install(asyncio.new_event_loop())\n"
            "from jspsych_tobii import TobiiServer, embed\n"
            # the probe's wait (2 s), short: the call never comes back here
            "embed.LOOP_PROBE_SECONDS = 0.2\n"
            "try:\n"
            "    asyncio.run(TobiiServer(port=0, mock=True).start())\n"
            "except RuntimeError as e:\n"
            "    print('refused:', e)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.strip(),
            "refused: Twisted's asyncio reactor is bound to another event loop",
        )

    def test_stop_before_start(self):
        """C{await server.stop()} on a server never started returns at once."""
        server = TobiiServer(port=0, mock=True)
        self.assertIsNone(asyncio.run(_await(server.stop())))

    def test_config_from_keywords(self):
        server = TobiiServer(port=9999, mock=True)
        self.assertEqual(server.config, ServerConfig(port="9999", mock=True))
        self.assertIsNone(server.port)


async def _await(awaitable):
    return await awaitable
