"""
The files tools and people read about the package: LICENSE, CITATION.cff
(valid CFF 1.2.0 in its required structure, with this version),
CHANGELOG.md and the metadata in setup.cfg.
"""

import configparser
import os
import re
from importlib import metadata

import yaml
from twisted.trial import unittest

from jspsych_tobii import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


class PackagingTests(unittest.SynchronousTestCase):
    def test_license(self):
        text = read("LICENSE")
        self.assertTrue(text.startswith("MIT License\n"))
        self.assertIn("Copyright (c) 2026 jspsych-tobii contributors", text)
        self.assertIn('THE SOFTWARE IS PROVIDED "AS IS"', text)

    def test_citation(self):
        cff = yaml.safe_load(read("CITATION.cff"))
        self.assertEqual(cff["cff-version"], "1.2.0")
        for key in ("message", "title"):
            self.assertIsInstance(cff[key], str)
            self.assertTrue(cff[key].strip(), key)
        self.assertEqual(cff["type"], "software")
        self.assertEqual(cff["version"], __version__)
        self.assertEqual(cff["license"], "MIT")
        self.assertEqual(cff["authors"], [{"name": "jspsych-tobii contributors"}])
        for reference in cff.get("references", []):
            self.assertIn(reference["type"], ("article", "software"))
            self.assertTrue(reference["title"])
            self.assertTrue(reference["authors"])
            for author in reference["authors"]:
                self.assertTrue("name" in author or "family-names" in author, author)
            if "doi" in reference:
                self.assertRegex(str(reference["doi"]), r"^10\.\d{4,9}/\S+$")

    def test_changelog(self):
        text = read("CHANGELOG.md")
        headings = re.findall(r"^## (\S+)", text, re.M)
        self.assertEqual(headings[0], __version__)
        self.assertEqual(headings[-1], "0.1.0")

    def test_setup_metadata(self):
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        meta = parser["metadata"]
        self.assertEqual(meta["license"], "MIT")
        self.assertEqual(meta["author"], "jspsych-tobii contributors")
        self.assertEqual(meta["license_files"], "LICENSE")
        classifiers = meta["classifiers"].split("\n")
        self.assertIn("License :: OSI Approved :: MIT License", classifiers)
        urls = [line for line in meta["project_urls"].split("\n") if line.strip()]
        self.assertGreater(len(urls), 0)
        for line in urls:
            self.assertRegex(line, r"^[^=]+ = https://\S+$")
        self.assertIn("jspsych_tobii.web", parser["options"]["packages"])
        self.assertEqual(parser["options.package_data"]["jspsych_tobii.web"], "assets/*")

    def test_installed_metadata(self):
        """What pip and other tools read from the installed package."""
        installed = metadata.metadata("jspsych-tobii")
        self.assertEqual(installed["Version"], __version__)
        self.assertEqual(installed["Author"], "jspsych-tobii contributors")
        self.assertIn("License :: OSI Approved :: MIT License", installed.get_all("Classifier"))
        self.assertTrue(installed.get_all("Project-URL"))
