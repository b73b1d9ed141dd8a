"""
Tests for L{jspsych_tobii.embed.TobiiServer}: C{asyncio.run(server.start())}.
"""

import json
import os
import subprocess
import sys

from twisted.trial import unittest

from jspsych_tobii import ServerConfig, TobiiServer

from .test_cli import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EmbedTests(unittest.TestCase):
    def test_asyncio_run(self):
        """The documented programmatic use serves requests and stops cleanly."""
        result = subprocess.run(
            [sys.executable, "-m", "tests.embed_child", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        reply = json.loads(lines[0])
        self.assertEqual(reply["requestId"], "e")
        self.assertIs(reply["trackerConnected"], True)
        self.assertEqual(lines[1], "stopped")
        self.assertNotIn("Traceback", result.stderr)

    def test_config_from_keywords(self):
        server = TobiiServer(port=9999, mock=True)
        self.assertEqual(server.config, ServerConfig(port="9999", mock=True))
        self.assertIsNone(server.port)
