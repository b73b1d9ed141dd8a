"""
examples/experiment: the HTML references exactly the files the README says
to build and copy, in the same places in its table, its POSIX commands and
its PowerShell commands, and the folder is served by --serve.
"""

import os
import re
from html.parser import HTMLParser

from twisted.internet import defer
from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig

from .httpclient import request
from .support import serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "experiment")
GLOBALS = {
    "jsPsychExtensionTobii",
    "jsPsychTobiiUserPosition",
    "jsPsychTobiiCalibration",
    "jsPsychTobiiValidation",
}


class References(HTMLParser):
    """The files a page loads: script src and stylesheet href, in order, and its inline code."""

    def __init__(self):
        super().__init__()
        self.files = []
        self.code = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in attrs
            if "src" in attrs:
                self.files.append(attrs["src"])
        elif tag == "link" and attrs.get("rel") == "stylesheet":
            self.files.append(attrs["href"])
        elif tag in ("img", "iframe", "audio", "video", "source") and attrs.get("src"):
            self.files.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.code.append(data)


def readme_section(title):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def fenced(section, language):
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


class ExampleTests(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(EXAMPLE, "index.html"), encoding="utf-8") as f:
            self.page = References()
            self.page.feed(f.read())
        self.section = readme_section("Using it from jsPsych")

    def copy_table(self):
        rows = re.findall(r"^\| `([^`]+)` \| `(lib/[^`]+)` \|$", self.section, re.M)
        self.assertGreater(len(rows), 0, "no copy table in the README")
        return rows

    def test_html_loads_exactly_what_the_readme_copies(self):
        table = self.copy_table()
        destinations = [dest for _, dest in table]
        self.assertEqual(sorted(self.page.files), sorted(destinations))
        self.assertEqual(len(set(destinations)), len(destinations))
        # jsPsych first: every other script needs it
        self.assertEqual(self.page.files[1], "lib/jspsych/jspsych.js")

    def test_commands_copy_what_the_table_says(self):
        table = sorted(self.copy_table())
        (posix,) = [block for block in fenced(self.section, "sh") if "cp " in block]
        (powershell,) = [b for b in fenced(self.section, "powershell") if "Copy-Item" in b]
        copied = sorted(re.findall(r'^cp (\S+) "\$E/(lib/[^"]+)"$', posix, re.M))
        self.assertEqual(copied, table)
        copied = sorted(
            (source.replace("\\", "/"), dest.replace("\\", "/"))
            for source, dest in re.findall(
                r'^Copy-Item (\S+) "\$E\\(lib\\[^"]+)"$', powershell, re.M
            )
        )
        self.assertEqual(copied, table)
        for folder in {os.path.dirname(dest) for _, dest in table} - {"lib"}:
            self.assertIn(f'mkdir -p "$E/{folder}"', posix)
            self.assertIn(
                f'New-Item -ItemType Directory -Force "$E\\{folder}"'.replace("/", "\\"), powershell
            )

    def test_built_files_are_those_the_build_makes(self):
        """The client packages' builds, and the globals the page uses."""
        build = "\n".join(fenced(self.section, "sh"))
        self.assertIn("git clone https://github.com/jspsych/tobii-integration", build)
        self.assertIn("npm install && npm run build", build)
        self.assertIn("npm install jspsych@8 @jspsych/plugin-html-keyboard-response@2", build)
        built = dict(
            re.findall(
                r"^\| [a-z ]+ \| `(tobii-integration/[^`]+)` \| `(jsPsych\w+)` \|$",
                self.section,
                re.M,
            )
        )
        self.assertEqual(set(built.values()), GLOBALS)
        sources = {source for source, _ in self.copy_table()}
        for path in built:
            self.assertTrue(path.endswith("/dist/index.browser.min.js"), path)
            self.assertIn(path, sources)
        code = "".join(self.page.code)
        for name in GLOBALS | {"initJsPsych", "jsPsychHtmlKeyboardResponse"}:
            self.assertIn(name, code)

    def test_two_trials_record_gaze(self):
        code = "".join(self.page.code)
        self.assertEqual(code.count("extensions: [{type: jsPsychExtensionTobii}]"), 2)
        for plugin in sorted(GLOBALS - {"jsPsychExtensionTobii"}):
            self.assertIn(f"type: {plugin},", code)
        self.assertIn("ws://${location.host}", code)

    def test_nothing_from_the_network(self):
        for path in self.page.files:
            self.assertTrue(path.startswith("lib/"), path)
            self.assertNotIn("//", path)

    @defer.inlineCallbacks
    def test_served_with_serve(self):
        config = ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True, serve=EXAMPLE)
        _, port = serve(self, config)
        page = yield request(port, "/experiment/")
        self.assertEqual(page.code, 200)
        with open(os.path.join(EXAMPLE, "index.html"), "rb") as f:
            self.assertEqual(page.body, f.read())
