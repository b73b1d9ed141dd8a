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
