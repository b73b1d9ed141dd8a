"""
Tests for L{jspsych_tobii.trackers.child.launch}: the SDK process's command
line, C{--list-trackers} through it, and the words for how it ended.
"""

from __future__ import annotations

import os
import signal
import sys

from twisted.internet import error
from twisted.python.failure import Failure
from twisted.trial import unittest

from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.trackers.child import launch as child_launch
from jspsych_tobii.trackers.child.launch import describe_exit, sdk_unavailable_message

from . import fake_tobii_research as fake
from .fake_sdk_child import FAKE, ROOT


class CommandTests(unittest.SynchronousTestCase):
    def test_command_isolates_the_child(self):
        """Isolated mode, and only this package's directory, loaded by path."""
        args = child_launch.child_command("/py/bin/python", "m:f", ["/x"])
        self.assertEqual(args[:4], ["/py/bin/python", "-I", "-u", "-c"])
        self.assertEqual(args[5], os.path.join(ROOT, "jspsych_tobii"))
        self.assertEqual(args[6:], ["--path", "/x", "--sdk", "m:f"])
        self.assertIn("from jspsych_tobii.trackers.child.main import main", args[4])

    def test_package_directory(self):
        directory = child_launch.package_directory()
        self.assertTrue(os.path.isfile(os.path.join(directory, "__init__.py")))
        self.assertTrue(os.path.isfile(os.path.join(directory, "trackers", "child", "main.py")))


class FindTrackersTests(unittest.SynchronousTestCase):
    def test_find_trackers_in(self):
        """--list-trackers through the SDK process."""
        [info] = child_launch.find_trackers_in(sys.executable, FAKE, [ROOT])
        self.assertEqual(info.model, "Tobii Pro Spectrum")
        self.assertEqual(info.frequencies, fake.SPECTRUM_FREQUENCIES)
        with self.assertRaises(TrackerError) as caught:
            child_launch.find_trackers_in(sys.executable, "tobii_research_not_here")
        self.assertIn("jspsych-tobii-sdk-setup", str(caught.exception))
        with self.assertRaises(TrackerError) as caught:
            child_launch.find_trackers_in(sys.executable, "os:abort")
        self.assertIn("SIGABRT", str(caught.exception))
        with self.assertRaises(TrackerError):
            child_launch.find_trackers_in("/nonexistent/python")


class MessageTests(unittest.SynchronousTestCase):
    def test_sdk_unavailable_message(self):
        message = sdk_unavailable_message()
        self.assertNotIn("\n", message)
        self.assertIn("--sdk-python", message)
        self.assertIn("jspsych-tobii-sdk-setup", message)
        self.assertIn("3.10", message)
        self.assertIn("because", sdk_unavailable_message("because"))

    def test_describe_exit(self):
        killed = Failure(error.ProcessTerminated(signal=signal.SIGKILL))
        self.assertEqual(describe_exit(killed), "was killed by signal 9 (SIGKILL)")
        self.assertEqual(
            describe_exit(Failure(error.ProcessTerminated(exitCode=1))), "exited with status 1"
        )
        self.assertEqual(describe_exit(Failure(error.ProcessDone(0))), "exited with status 0")
