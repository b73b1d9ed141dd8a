"""
Crash safety of recordings: a real C{kill -9} of a recording process, then
reading and exporting what it left.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.recording import export
from jspsych_tobii.recording.format import read_events, read_gaze, read_header

from .test_recording import scratch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILD = os.path.join(HERE, "recording_child.py")


class KillTests(unittest.SynchronousTestCase):
    def start_child(self, directory):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        child = subprocess.Popen(
            [sys.executable, CHILD, directory, "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

        def reap():
            if child.poll() is None:
                child.kill()
            child.wait(10)
            child.stdout.close()
            child.stderr.close()

        self.addCleanup(reap)
        ready, _, _ = select.select([child.stdout], [], [], 30)
        line = child.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            child.kill()
            self.fail(f"the recording process did not start: {child.stderr.read().decode()}")
        return child

    def test_kill_9_while_recording(self):
        """After SIGKILL the file is readable, holds all but the last second, and exports."""
        directory = os.path.abspath(scratch(self))
        os.makedirs(directory)
        child = self.start_child(directory)
        time.sleep(1.5)
        killed_us = time.monotonic_ns() // 1000
        os.kill(child.pid, signal.SIGKILL)
        self.assertEqual(child.wait(10), -signal.SIGKILL)

        [gaze] = glob.glob(os.path.join(directory, "*.gaze"))
        header = read_header(gaze)
        self.assertFalse(header["complete"])  # it never closed
        self.assertEqual(header["tracker"]["frequency"], 1200.0)
        samples = read_gaze(gaze)
        self.assertGreater(len(samples), 1200)
        # every sample from the first, none missing, up to within a second of the kill
        np.testing.assert_array_equal(samples["seq"], np.arange(len(samples)))
        last = int(samples["system_time_us"][-1])
        self.assertLessEqual(last, killed_us)
        self.assertGreater(last, killed_us - 1_000_000, f"lost {(killed_us - last) / 1000:.0f} ms")
        self.assertTrue(np.all(np.diff(samples["system_time_us"]) > 0))

        events = read_events(gaze)
        self.assertEqual(events[0]["kind"], "session_started")
        markers = [e for e in events if e["kind"] == "marker"]
        self.assertGreater(len(markers), 10)
        self.assertGreater(markers[-1]["t_server_ms"] * 1000, killed_us - 1_000_000)

        out = os.path.join(directory, "export.csv")
        stdout, stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", stdout)
        self.patch(sys, "stderr", stderr)
        self.assertEqual(export.main([gaze, "-o", out]), 0, stderr.getvalue())
        self.assertIn("not closed cleanly", stderr.getvalue())
        self.assertNotIn("Traceback", stderr.getvalue())
        with open(out, newline="") as f:
            rows = list(csv.reader(f))
        self.assertEqual(len(rows), len(samples) + 1)
        self.assertEqual(rows[-1][0], str(len(samples) - 1))
        with open(os.path.join(directory, "export.events.csv"), newline="") as f:
            self.assertEqual(len(list(csv.reader(f))), len(events) + 1)
