"""
The package's layout: every module that names its tests
(C{test-case-name}) names test modules that exist.
"""

import os
import re

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = re.compile(r"test-case-name:\s*([\w., ]+)")


def headers():
    """(module path, [test module names]) for every module with a header."""
    for top in ("jspsych_tobii", os.path.join("twisted", "plugins")):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in sorted(names):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    first = f.readline()
                found = HEADER.search(first)
                if found:
                    names_ = [n.strip() for n in found.group(1).split(",") if n.strip()]
                    yield os.path.relpath(path, ROOT), names_


class TestCaseNameTests(unittest.SynchronousTestCase):
    def test_headers_name_existing_test_modules(self):
        seen = 0
        for path, names in headers():
            for name in names:
                seen += 1
                target = os.path.join(ROOT, *name.split(".")) + ".py"
                self.assertTrue(os.path.isfile(target), f"{path} names {name}: no such module")
        self.assertGreater(seen, 20)

    def test_server_wiring_modules_name_their_tests(self):
        named = dict(headers())
        for module in ("tap.py", "server/state.py", "server/listening.py", "core/history.py"):
            self.assertIn(os.path.join("jspsych_tobii", *module.split("/")), named)
