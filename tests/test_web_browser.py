"""
The status page in a real browser: headless Chromium opens
http://127.0.0.1:<port>/ while a mock session runs with two pages attached,
and the page's DOM (it writes what it shows into data- attributes of
<body>) shows the gaze plot moving and the counts going up.  A screenshot
is kept in the trial's temporary folder (_trial_temp/status.png; under
pytest, in jspsych-tobii-test-artifacts in the system's temporary folder).  And
the preview button, pressed by a page of the experiment folder that frames
the status page, shows gaze while no page tracks, without a session.

Needs Debian's chromium, as tests/test_browser.py does.
"""

import os
import re
import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig

from .support import CHROMIUM, assert_close, chromium_args, serve, wait, wait_for
from .wsclient import connect


def artifact_dir():
    """
    Where a test keeps what a person may want to look at afterwards: trial's
    temporary folder (trial runs in it), else a folder in the system's temporary
    folder (pytest runs in the checkout, which must stay clean).
    """
    here = os.getcwd()
    if any(part.startswith("_trial_temp") for part in here.split(os.sep)):
        return here  # _trial_temp, or _trial_temp/N with -jN
    folder = os.path.join(tempfile.gettempdir(), "jspsych-tobii-test-artifacts")
    os.makedirs(folder, exist_ok=True)
    return folder


#: Opens the status page in a frame, presses "Start a preview" once it shows a
#: connected tracker, and copies the page's data- attributes onto its own body.
PRESS_PREVIEW = """<!doctype html>
<html><body>
<iframe id="status" src="/" style="width:1200px;height:900px"></iframe>
<script>
let pressed = false;
setInterval(() => {
  const page = document.getElementById("status").contentDocument;
  if (!page || !page.body) return;
  const button = page.getElementById("preview-button");
  if (!pressed && page.body.dataset.tracker === "connected" && !button.disabled) {
    button.click();
    pressed = true;
  }
  Object.assign(document.body.dataset, page.body.dataset, {pressed: String(pressed)});
  document.body.dataset.button = button.textContent;
}, 100);
</script></body></html>
"""


class ChromiumMixin:
    """Headless Chromium on the server's pages (self.url)."""

    timeout = 120

    if CHROMIUM is None:
        skip = "chromium is not installed (apt-get install chromium)"

    @defer.inlineCallbacks
    def chromium(self, *args, budget_ms=2500, url=None):
        """Run headless Chromium on the status page; fires with its stdout."""
        out, err, code = yield getProcessOutputAndValue(
            CHROMIUM,
            chromium_args(self, f"--virtual-time-budget={budget_ms}", *args, url or self.url),
            env=os.environ,
        )
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        return out.decode()

    @defer.inlineCallbacks
    def page_state(self, *args, url=None):
        """The page's data- attributes and its DOM (C{args}: more of Chromium's)."""
        dom = yield self.chromium("--dump-dom", *args, url=url)
        body = re.search(r"<body([^>]*)>", dom).group(1)
        state = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
        return state, dom


class StatusPageInChromiumTests(ChromiumMixin, unittest.TestCase):
    def setUp(self):
        # a page of the experiment folder that presses the status page's preview button
        folder = tempfile.mkdtemp(prefix="jspsych-tobii-serve-")
        self.addCleanup(shutil.rmtree, folder, True)
        with open(os.path.join(folder, "press-preview.html"), "w") as f:
            f.write(PRESS_PREVIEW)
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1", mock=True, mock_rate=600, serve=folder
        )
        self.service, self.port = serve(self, config)
        self.url = f"http://127.0.0.1:{self.port}/"

    @defer.inlineCallbacks
    def test_status_page_follows_a_mock_session_with_two_pages(self):
        pages = []
        for _ in range(2):
            page = yield connect(self.port, origin="http://localhost:8000")
            self.addCleanup(page.dropConnection, abort=True)
            yield page.request("start_tracking")
            pages.append(page)
        # the synthetic participant looks at the upper left, then the lower right
        yield pages[0].request("mock_look_at", point={"x": 0.2, "y": 0.3})
        yield wait(0.5)
        first, dom = yield self.page_state()
        self.assertGreaterEqual(int(first["updates"]), 2, "the page did not poll status.json")
        self.assertEqual(first["tracker"], "connected")
        self.assertEqual(first["pages"], "2")
        self.assertEqual(first["gaze-source"], "session")
        self.assertGreater(int(first["gaze-points"]), 50)
        assert_close(self, float(first["gaze-x"]), 0.2, 0.03)
        assert_close(self, float(first["gaze-y"]), 0.3, 0.03)
        self.assertIn("MOCK TRACKER", dom)
        self.assertIn("http://localhost:8000", dom)

        yield pages[0].request("mock_look_at", point={"x": 0.8, "y": 0.7})
        yield wait(0.5)
        # the same run of Chromium takes the screenshot
        shot = os.path.join(artifact_dir(), "status.png")
        second, dom = yield self.page_state(f"--screenshot={shot}", "--window-size=1280,1100")
        assert_close(self, float(second["gaze-x"]), 0.8, 0.03)
        assert_close(self, float(second["gaze-y"]), 0.7, 0.03)
        # two pages at 600 Hz for more than half a second between the two looks
        self.assertGreater(int(second["frames"]), int(first["frames"]) + 2 * 300)
        self.assertGreater(int(second["samples"]), int(first["samples"]) + 300)

        with open(shot, "rb") as f:
            image = f.read()
        self.assertTrue(image.startswith(b"\x89PNG"), "no screenshot")
        self.assertGreater(len(image), 20_000)

    @defer.inlineCallbacks
    def test_preview_button_shows_gaze_without_a_session(self):
        """No page tracks; the preview button starts a preview: gaze, no session, then it lapses."""
        self.assertEqual(self.service.site.websocket_factory.connections, set())
        hub = self.service.state.hub
        state, dom = yield self.page_state(url=self.url + "experiment/press-preview.html")
        self.assertEqual(state["pressed"], "true", dom[-2000:])
        self.assertEqual(state["button"], "Stop the preview")
        self.assertEqual(state["gaze-source"], "preview")
        # how many depends on how long the preview ran before the page was read
        self.assertGreater(int(state["gaze-points"]), 10)
        self.assertEqual(state["samples"], "0")
        self.assertEqual(hub.session, 0, "a preview is no tracking session")
        # the browser is gone: its preview ends (at once, or when its lease lapses)
        yield wait_for(lambda: not hub.previewing, what="the preview to end")
        self.assertEqual(hub.session, 0)


class StatusPageWithTokenTests(ChromiumMixin, unittest.TestCase):
    """With --token the page, opened once with ?token=, keeps polling through its cookie."""

    token = "lab-Secret_token.7~z"

    def setUp(self):
        config = ServerConfig(
            port="tcp:0:interface=127.0.0.1", mock=True, mock_rate=120, token=self.token
        )
        self.service, self.port = serve(self, config)
        self.url = f"http://127.0.0.1:{self.port}/?token={self.token}"

    @defer.inlineCallbacks
    def test_status_page_with_the_token(self):
        state, dom = yield self.page_state()
        self.assertGreaterEqual(int(state["updates"]), 2, dom[-2000:])
        self.assertEqual(state["tracker"], "connected")
        self.assertNotIn("error", state)
