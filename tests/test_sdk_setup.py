"""
Tests for L{jspsych_tobii.sdk_setup}: the steps, with a scripted runner in
place of the interpreter and pip; and the SDK process's own check, for real.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest as pyunittest

from twisted.trial import unittest

from jspsych_tobii import sdk_setup
from jspsych_tobii.sdk_setup import SetupError, check_interpreter, main, requirement

from .fake_sdk_child import FAKE

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SDK_PYTHON = os.environ.get("JSPSYCH_TOBII_SDK_PYTHON")
if SDK_PYTHON and not os.path.isabs(SDK_PYTHON):
    SDK_PYTHON = os.path.join(ROOT, SDK_PYTHON)


class Runner:
    """Plays the interpreter, venv and pip: answers by the command's shape."""

    def __init__(self, version="3.10.13", fail=None, report=None):
        self.version = version
        self.fail = fail or {}
        self.report = report or {"python": version, "sdk": "2.1.0.1", "sdkError": None}
        self.commands = []

    def __call__(self, args):
        args = list(args)
        self.commands.append(args)
        if "--check" in args:
            step = "check"
            out = json.dumps(self.report)
            code = 0 if not self.report.get("sdkError") else 1
        elif args[1:3] == ["-m", "venv"]:
            step, out, code = "venv", "", 0
            os.makedirs(os.path.join(args[3], "bin"))
            open(sdk_setup.venv_python(args[3]), "w").close()
        elif args[1:3] == ["-m", "pip"]:
            step, out, code = "pip", "", 0
        else:
            step, out, code = "version", self.version + "\n", 0
        if step in self.fail:
            return subprocess.CompletedProcess(args, 1, "", self.fail[step])
        return subprocess.CompletedProcess(args, code, out, "")


class RequirementTests(unittest.SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(requirement(None), "tobii-research>=2")
        self.assertEqual(requirement(None, older=True), "tobii-research<2")
        self.assertEqual(requirement("2.1.0"), "tobii-research==2.1.0")
        self.assertEqual(requirement(">=2"), "tobii-research>=2")
        self.assertEqual(requirement("<2"), "tobii-research<2")
        self.assertEqual(requirement("tobii-research==1.11.0"), "tobii-research==1.11.0")
        self.assertEqual(requirement("tobii_research"), "tobii-research")

    def test_other_package_refused(self):
        for value in ("numpy==1", "latest", ""):
            with self.assertRaises(SetupError):
                requirement(value)


class MainTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.patch(sys, "stderr", self.err)
        # a fresh directory that works under trial and pytest alike
        parent = tempfile.mkdtemp(prefix="jspsych-tobii-test-")
        self.addCleanup(shutil.rmtree, parent, True)
        self.venv = os.path.join(parent, "venv")

    def main(self, runner, *argv):
        return main(["--python", sys.executable, "--venv", self.venv, *argv], run=runner)

    def test_creates_installs_checks_prints(self):
        runner = Runner()
        self.assertEqual(self.main(runner, "--sdk-version", "2.1.0"), 0)
        python = sdk_setup.venv_python(self.venv)
        self.assertEqual(self.out.getvalue(), f"--sdk-python {python}\n")
        version, venv, pip, check = runner.commands
        self.assertEqual(venv, [sys.executable, "-m", "venv", self.venv])
        self.assertEqual(pip[0], python)
        self.assertIn("tobii-research==2.1.0", pip)
        for package in ("twisted>=22.10", "numpy>=1.23", "zope.interface>=5"):
            self.assertIn(package, pip)
        self.assertEqual(check[0], python)
        self.assertIn("-I", check)
        self.assertIn("tobii-research 2.1.0.1", self.err.getvalue())

    def test_older_trackers(self):
        runner = Runner()
        self.assertEqual(self.main(runner, "--older-trackers", "--pip-arg=--no-cache-dir"), 0)
        pip = runner.commands[2]
        self.assertIn("tobii-research<2", pip)
        self.assertIn("--no-cache-dir", pip)

    def test_existing_venv_updated(self):
        os.makedirs(os.path.join(self.venv, "bin"))
        open(sdk_setup.venv_python(self.venv), "w").close()
        runner = Runner()
        self.assertEqual(self.main(runner), 0)
        self.assertNotIn("venv", [c[2] for c in runner.commands if len(c) > 2])
        self.assertIn("updating", self.err.getvalue())

    def assertOneLineError(self, status, *fragments):
        self.assertEqual(status, 1)
        self.assertEqual(self.out.getvalue(), "")
        lines = self.err.getvalue().strip().splitlines()
        error = lines[-1]
        self.assertTrue(error.startswith("jspsych-tobii-sdk-setup: "), error)
        for fragment in fragments:
            self.assertIn(fragment, error)
        self.assertNotIn("Traceback", self.err.getvalue())

    def test_python_too_old(self):
        self.assertOneLineError(
            self.main(Runner(version="3.8.18")), "Python 3.8.18", "needs Python 3.10"
        )

    def test_no_such_python(self):
        status = main(["--python", "/no/such/python"], run=Runner())
        self.assertOneLineError(status, "no such file: /no/such/python")

    def test_pip_fails(self):
        runner = Runner(
            version="3.12.1",
            fail={"pip": "ERROR: No matching distribution found for tobii-research>=2\n"},
        )
        self.assertOneLineError(
            self.main(runner), "No matching distribution", "3.12.1", "use a CPython 3.10"
        )
        self.assertIn("note: tobii-research publishes wheels", self.err.getvalue())

    def test_venv_fails(self):
        runner = Runner(fail={"venv": "Error: ensurepip is not available\n"})
        self.assertOneLineError(self.main(runner), "creating the environment", "ensurepip")

    def test_sdk_does_not_load(self):
        runner = Runner(report={"sdkError": "tobii_research could not be loaded: OSError: x"})
        self.assertOneLineError(self.main(runner), "could not be loaded")

    def test_bad_sdk_version(self):
        self.assertOneLineError(self.main(Runner(), "--sdk-version", "numpy==1"), "--sdk-version")


class CheckTests(unittest.SynchronousTestCase):
    """The SDK process's check, run for real in a child interpreter."""

    def test_check_with_fake_sdk(self):
        report = check_interpreter(sys.executable, FAKE, [ROOT])
        self.assertEqual(report["sdk"], "2.1.0.1")
        self.assertIsNone(report["sdkError"])
        self.assertEqual(report["executable"], sys.executable)

    def test_check_without_sdk(self):
        with self.assertRaises(SetupError) as caught:
            check_interpreter(sys.executable, "tobii_research_not_here")
        self.assertIn("cannot be imported", str(caught.exception))

    @pyunittest.skipIf(not SDK_PYTHON, "set JSPSYCH_TOBII_SDK_PYTHON to a Python 3.10 with the SDK")
    def test_check_real_sdk(self):
        report = check_interpreter(SDK_PYTHON)
        self.assertTrue(report["python"].startswith("3.10."))
        self.assertTrue(report["sdk"])
