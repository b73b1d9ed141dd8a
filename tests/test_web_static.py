"""
C{--serve DIR}: the experiment folder at /experiment/ over a real socket,
and everything outside it refused.
"""

import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.python import usage
from twisted.trial import unittest

from jspsych_tobii.config import ConfigError, ServerConfig
from jspsych_tobii.tap import Options

from .httpclient import request
from .support import serve
from .wsclient import connect, handshake_status


class ExperimentFolderTests(unittest.TestCase):
    def setUp(self):
        top = tempfile.mkdtemp(prefix="jspsych-tobii-serve-")
        self.addCleanup(shutil.rmtree, top, True)
        self.folder = os.path.join(top, "experiment")
        os.makedirs(os.path.join(self.folder, "lib", "jspsych"))
        os.makedirs(os.path.join(self.folder, "empty"))
        self.write("index.html", "<!doctype html><title>exp</title>")
        self.write("lib/jspsych/jspsych.js", "var initJsPsych = 1;")
        self.write("lib/style.css", "body {}")
        self.write(".env", "TOKEN=secret")
        # outside the folder: a secret, and links into it from inside
        with open(os.path.join(top, "secret.txt"), "w") as f:
            f.write("outside")
        os.makedirs(os.path.join(top, "private"))
        with open(os.path.join(top, "private", "data.csv"), "w") as f:
            f.write("outside too")
        os.symlink(os.path.join(top, "secret.txt"), os.path.join(self.folder, "link.txt"))
        os.symlink(os.path.join(top, "private"), os.path.join(self.folder, "private"))
        os.symlink(
            os.path.join(self.folder, "lib", "style.css"), os.path.join(self.folder, "inside.css")
        )
        config = ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True, serve=self.folder)
        self.service, self.port = serve(self, config)

    def write(self, name, text):
        with open(os.path.join(self.folder, name), "w") as f:
            f.write(text)

    @defer.inlineCallbacks
    def test_serves_files_with_their_types(self):
        page = yield request(self.port, "/experiment/")
        self.assertEqual(page.code, 200)
        self.assertEqual(page.body, b"<!doctype html><title>exp</title>")
        self.assertEqual(page.header("content-type"), "text/html; charset=utf-8")
        self.assertEqual(page.header("cache-control"), "no-cache")
        script = yield request(self.port, "/experiment/lib/jspsych/jspsych.js")
        self.assertEqual(script.code, 200)
        self.assertEqual(script.body, b"var initJsPsych = 1;")
        self.assertEqual(script.header("content-type"), "text/javascript; charset=utf-8")
        self.assertEqual(script.header("x-content-type-options"), "nosniff")
        style = yield request(self.port, "/experiment/lib/style.css")
        self.assertEqual(style.header("content-type"), "text/css; charset=utf-8")
        head = yield request(self.port, "/experiment/lib/style.css", method="HEAD")
        self.assertEqual((head.code, head.body), (200, b""))

    @defer.inlineCallbacks
    def test_folders_redirect_to_their_index_and_are_never_listed(self):
        bare = yield request(self.port, "/experiment")
        self.assertEqual(bare.code, 302)
        self.assertEqual(bare.header("location"), "/experiment/")
        listing = yield request(self.port, "/experiment/lib/")
        self.assertEqual(listing.code, 404)
        self.assertNotIn(b"jspsych.js", listing.body)
        empty = yield request(self.port, "/experiment/empty/")
        self.assertEqual(empty.code, 404)

    @defer.inlineCallbacks
    def test_path_traversal_is_refused(self):
        attempts = [
            "/experiment/../setup.cfg",
            "/experiment/../secret.txt",
            "/experiment/lib/../../secret.txt",
            "/experiment/%2e%2e/secret.txt",
            "/experiment/%2E%2E/secret.txt",
            "/experiment/lib/%2e%2e%2f%2e%2e%2fsecret.txt",
            "/experiment/..%2fsecret.txt",
            "/experiment/%2e%2e%5csecret.txt",
            "/experiment/..\\secret.txt",
            "/experiment/%00index.html",
            "/experiment/C:%5cWindows%5cwin.ini",
            "/experiment//etc/passwd",
            "/experiment/%2fetc%2fpasswd",
        ]
        for path in attempts:
            response = yield request(self.port, path)
            self.assertIn(response.code, (403, 404), path)
            self.assertNotIn(b"outside", response.body, path)
            self.assertNotIn(b"root:", response.body, path)

    @defer.inlineCallbacks
    def test_symlinks_out_of_the_folder_are_refused(self):
        for path in ("/experiment/link.txt", "/experiment/private/data.csv"):
            response = yield request(self.port, path)
            self.assertEqual(response.code, 404, path)
            self.assertNotIn(b"outside", response.body, path)
        inside = yield request(self.port, "/experiment/inside.css")
        self.assertEqual((inside.code, inside.body), (200, b"body {}"))

    @defer.inlineCallbacks
    def test_hidden_and_missing_files_and_writes_are_refused(self):
        hidden = yield request(self.port, "/experiment/.env")
        self.assertEqual(hidden.code, 404)
        self.assertNotIn(b"secret", hidden.body)
        missing = yield request(self.port, "/experiment/nope.html")
        self.assertEqual(missing.code, 404)
        post = yield request(self.port, "/experiment/index.html", method="POST", body=b"x")
        self.assertEqual(post.code, 405)
        put = yield request(self.port, "/experiment/new.html", method="PUT", body=b"x")
        self.assertEqual(put.code, 405)
        self.assertFalse(os.path.exists(os.path.join(self.folder, "new.html")))

    @defer.inlineCallbacks
    def test_served_pages_may_connect_whatever_the_allowed_origins(self):
        """A page from /experiment/ has this server's origin, which is always admitted."""
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1",
            mock=True,
            serve=self.folder,
            allowed_origins="http://lab.example:*",
        )
        _, port = serve(self, config)
        page = yield connect(port, origin=f"http://127.0.0.1:{port}")
        self.addCleanup(page.dropConnection, abort=True)
        reply = yield page.request("time_sync", clientTime=1.0)
        self.assertIs(reply["success"], True)
        self.assertEqual((yield handshake_status(port, f"http://127.0.0.1:{port}")), 101)
        self.assertEqual((yield handshake_status(port, "http://elsewhere.example:8080")), 403)
        self.assertEqual((yield handshake_status(port, f"http://127.0.0.1:{port + 1}")), 403)


class WithoutServeTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_experiment_path_says_how_to_serve(self):
        _, port = serve(self, ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True))
        response = yield request(port, "/experiment/index.html")
        self.assertEqual(response.code, 404)
        self.assertIn(b"--serve DIR", response.body)


class ServeOptionTests(unittest.SynchronousTestCase):
    def test_option_names_an_existing_folder(self):
        folder = tempfile.mkdtemp(prefix="jspsych-tobii-serve-")
        self.addCleanup(shutil.rmtree, folder, True)
        options = Options()
        options.parseOptions(["--mock", "--serve", folder])
        self.assertEqual(options.config.serve, os.path.abspath(folder))
        self.assertIsNone(ServerConfig().serve)

    def test_missing_folder_is_one_clear_error(self):
        with self.assertRaises(ConfigError) as e:
            ServerConfig(serve="/no/such/folder")
        self.assertIn("--serve: no such folder: /no/such/folder", str(e.exception))
        options = Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["--serve", "/no/such/folder"])
