"""
Tests for L{jspsych_tobii.config}: the settings every door fills in
(C{twistd}, the console script, L{TobiiServer}) are checked in one place.
"""

import os

from twisted.trial import unittest

from jspsych_tobii.config import ConfigError, ServerConfig

from .support import temp_path


class ServerConfigTests(unittest.SynchronousTestCase):
    def test_defaults(self):
        config = ServerConfig()
        self.assertEqual(config.port, "8080")
        self.assertEqual(config.endpoint, "tcp:8080:interface=localhost")
        self.assertEqual(config.log_level, "INFO")
        self.assertIsNone(config.secret)
        self.assertEqual(config.changed_fields(), [])

    def test_port_number_or_endpoint(self):
        self.assertEqual(ServerConfig(port=0).port, "0")
        self.assertEqual(ServerConfig(port="0", host="::1").endpoint, "tcp:0:interface=\\:\\:1")
        self.assertEqual(ServerConfig(port="unix:/tmp/s").endpoint, "unix:/tmp/s")
        for bad in ("70000", "eighty"):
            with self.assertRaises(ConfigError) as caught:
                ServerConfig(port=bad)
            self.assertIn("--port", str(caught.exception))

    def test_numbers_checked_with_the_option_named(self):
        for field, value, option in (
            ("buffer_size", 0, "--buffer-size"),
            ("mock_rate", 0.5, "--mock-rate"),
            ("reconnect_grace", -1, "--reconnect-grace"),
            ("ping_interval", "often", "--ping-interval"),
        ):
            with self.assertRaises(ConfigError) as caught:
                ServerConfig(mock=True, **{field: value})
            self.assertIn(option, str(caught.exception))

    def test_log_level(self):
        self.assertEqual(ServerConfig(log_level="warn").log_level, "WARNING")
        with self.assertRaises(ConfigError):
            ServerConfig(log_level="LOUD")

    def test_ignored_settings_refused(self):
        with self.assertRaises(ConfigError) as caught:
            ServerConfig(mock_rate=60.0)
        self.assertIn("--mock-rate: applies to --mock only", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            ServerConfig(port="tcp:0", host="0.0.0.0")
        self.assertIn("--host", str(caught.exception))

    def test_token_file(self):
        path = temp_path(self, "token")
        with open(path, "w", encoding="utf-8") as f:
            f.write("a-long-enough-secret-token\n")
        self.assertEqual(ServerConfig(token_file=path).secret, "a-long-enough-secret-token")
        with self.assertRaises(ConfigError) as caught:
            ServerConfig(token_file=os.path.join(os.path.dirname(path), "missing"))
        self.assertIn("--token-file", str(caught.exception))
        with self.assertRaises(ConfigError):
            ServerConfig(token="a-long-enough-secret-token", token_file=path)
