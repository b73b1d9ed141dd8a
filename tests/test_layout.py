"""
The package's layout: every module names its tests (C{test-case-name}),
and those are test modules that exist, as C{trial --testmodule} reads them.
"""

import os

from twisted.scripts.trial import getTestModules
from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules():
    """The path of every module of the package and the twistd plugin."""
    for top in ("jspsych_tobii", os.path.join("twisted", "plugins")):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def headers():
    """(module path, [test module names]) for every module with a header."""
    for path in modules():
        names = getTestModules(path)  # as trial reads it: "a, b" gives " b"
        if names:
            yield os.path.relpath(path, ROOT), names


class TestCaseNameTests(unittest.SynchronousTestCase):
    def test_headers_name_existing_test_modules(self):
        seen = 0
        for path, names in headers():
            for name in names:
                seen += 1
                target = os.path.join(ROOT, *name.split(".")) + ".py"
                self.assertTrue(os.path.isfile(target), f"{path} names {name}: no such module")
        self.assertGreater(seen, 20)

    def test_every_module_names_its_tests(self):
        named = dict(headers())
        for path in modules():
            relative = os.path.relpath(path, ROOT)
            if relative.startswith("jspsych_tobii") and not relative.endswith("__init__.py"):
                self.assertIn(relative, named, f"{relative} has no test-case-name header")

    def test_server_wiring_modules_name_their_tests(self):
        named = dict(headers())
        for module in ("tap.py", "server/state.py", "server/listening.py", "core/history.py"):
            self.assertIn(os.path.join("jspsych_tobii", *module.split("/")), named)


class BenchScriptTests(unittest.TestCase):
    """
    Every benchmark the README points to still imports and parses its
    options: C{bench/bench_*.py --help} exits 0 and prints its usage (a
    bench that broke with a change to the package fails here, not when
    someone wants its figures).
    """

    def test_bench_scripts_start(self):
        import subprocess
        import sys

        folder = os.path.join(ROOT, "bench")
        scripts = sorted(
            n for n in os.listdir(folder) if n.startswith("bench_") and n.endswith(".py")
        )
        self.assertGreater(len(scripts), 8)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        for name in scripts:
            done = subprocess.run(
                [sys.executable, os.path.join(folder, name), "--help"],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=ROOT,
                env=env,
            )
            self.assertEqual(done.returncode, 0, f"{name}: {done.stderr[-2000:]}")
            self.assertIn("usage:", done.stdout, name)
