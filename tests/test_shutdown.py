"""
SIGTERM with clients connected and streaming, through the Tobii adapter:
every SDK stream is unsubscribed and the process exits promptly (the
adapter waits at most its stopTimeout, 1 s, for the SDK worker).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from twisted.trial import unittest

from .test_cli import free_port, wait_listening, websocket_roundtrip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ShutdownTests(unittest.TestCase):
    def test_sigterm_with_clients_streaming(self):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.tobii_server_child", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            self.assertEqual(process.stdout.readline().strip(), "ready")
            wait_listening(port, process)
            deadline = time.monotonic() + 10
            while True:  # the adapter finds the (fake) tracker on its worker thread
                reply = websocket_roundtrip(port, {"type": "get_status", "requestId": "s"})
                if reply["trackerConnected"] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertIs(reply["trackerConnected"], True)
            streams = []  # two clients tracking when the signal comes
            for _ in range(2):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(
                    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                    "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                s.recv(4096)
                payload = b'{"type":"start_tracking","requestId":"t"}'
                s.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                streams.append(s)
            time.sleep(0.5)
            for s in streams:
                self.assertTrue(s.recv(65536))  # gaze is flowing
        finally:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
            elapsed = time.monotonic() - started
        self.assertEqual(process.returncode, 0, err)
        # not a hang: a loose bound, as the machine may be loaded (how long
        # shutdown takes is not a unit test's; it took 7 s at a load of 12)
        self.assertLess(elapsed, 20.0)
        seen = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(seen["open_subscriptions"], 0)
        self.assertEqual(seen["unsubscribed"], seen["subscribed"])
        self.assertGreater(seen["subscribed"], 0)
        self.assertNotIn("Traceback", err)
