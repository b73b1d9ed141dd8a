"""Small helpers shared by the tests."""

import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import time

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application import service as _service
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test import iosim
from txaio.testutil import replace_loop

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.core.timesync import clock_from_seconds
from jspsych_tobii.interfaces import GAZE_DTYPE, gaze_array
from jspsych_tobii.server.gate import SendGate
from jspsych_tobii.server.resume import Fingerprint
from jspsych_tobii.server.session import ClientSession
from jspsych_tobii.tap import Options, makeService
from jspsych_tobii.trackers.mock import MockTracker

from .rawws import handshake_status  # noqa: F401 (tests import it from here)

#: Debian's chromium, for the tests that run a real browser (None when missing).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_args(case, *args):
    """
    Headless Chromium's arguments, with a profile of its own (removed when
    C{case} ends), followed by C{args}.
    """
    profile = tempfile.mkdtemp(prefix="jspsych-tobii-chromium-")
    case.addCleanup(shutil.rmtree, profile, True)
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]


def wait(seconds):
    """Fires after C{seconds} of real time on the real reactor (where time must be real)."""
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(predicate, timeout=10.0, what="condition", interval=0.01):
    """
    Fires once C{predicate()} is true, checked every C{interval} seconds on
    the real reactor.  C{timeout} only catches a hang: it is long enough for
    a loaded machine, and a test that passes never waits for it.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        yield wait(interval)


def run_console(case, main, *args):
    """
    C{main(list(args))} (a console script's main) with stdout and stderr
    captured: C{(exit status, stdout, stderr)}.
    """
    out, err = io.StringIO(), io.StringIO()
    case.patch(sys, "stdout", out)
    case.patch(sys, "stderr", err)
    code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_close(case, actual, expected, tolerance, message=""):
    """Fail C{case} unless |actual - expected| <= tolerance."""
    if actual is None or abs(actual - expected) > tolerance:
        case.fail(f"{actual!r} is not within {tolerance} of {expected!r}. {message}")


def batches_into(into):
    """
    A gaze receiver for a tracker's startGaze that keeps each batch, as an
    array, in C{into}; it fails on a batch that is not a L{GazeBatch} (an
    array of GAZE_DTYPE, or whole records' bytes in a bytearray).
    """

    def receive(batch):
        if isinstance(batch, bytearray):
            assert len(batch) % GAZE_DTYPE.itemsize == 0, f"{len(batch)} bytes: not whole records"
        else:
            assert batch.dtype == GAZE_DTYPE, batch.dtype
        into.append(gaze_array(batch))

    return receive


def mock_tracker(clock=None, **options):
    """A L{MockTracker} on C{clock} (a new L{Clock} by default), stamping with its time."""
    clock = clock or Clock()
    return MockTracker(clock, clock_from_seconds(clock.seconds), **options)


def capture_log(case, namespace):
    """
    Every log event of C{namespace} that passes the package's level filter,
    in a list that grows until the test ends.
    """
    from twisted.logger import globalLogPublisher

    events = []

    def observe(event):
        if event.get("log_namespace") == namespace:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


def temp_path(case, name="file"):
    """
    A path C{name} in a new temporary folder removed after the test (not
    C{case.mktemp()}, which pytest would leave in the working directory).
    """
    folder = tempfile.mkdtemp(prefix="jspsych-tobii-test-")
    case.addCleanup(shutil.rmtree, folder, True)
    return os.path.join(folder, name)


def serve(case, options, make_tracker=None):
    """
    The whole server on the real reactor, listening, for a loopback test;
    stopped when the test ends.  Returns C{(service, port)}.
    """
    from twisted.internet import reactor

    service = makeService(options, reactor, make_tracker=make_tracker)
    service.startService()
    case.addCleanup(service.stopService)
    return service, service.listening.port.getHost().port


@defer.inlineCallbacks
def serve_tracker(case, tracker):
    """
    The whole server with C{tracker} on an ephemeral loopback port, once
    the tracker is available, and a L{tests.wsclient} client connected to
    it (dropped when the test ends).  Fires with C{(service, client)}.
    """
    from .wsclient import connect

    service, port = serve(
        case, ServerConfig(port="tcp:0:interface=127.0.0.1"), make_tracker=lambda: tracker
    )
    trackers = service.getServiceNamed("tracker")
    yield wait_for(lambda: trackers.available, what="the tracker")
    client = yield connect(port)
    case.addCleanup(client.dropConnection, abort=True)
    return service, client


class PauseRecorder:
    """A transport's incoming side (an C{IPushProducer}): records pauses and resumes."""

    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")


class InlineWork(_service.Service):
    """The L{WorkerPool} of a fake server: each job runs at once, on the calling thread."""

    name = "work"

    def __init__(self):
        self.jobs = []

    def run(self, f, *args, **kwargs):
        self.jobs.append(f)
        return defer.maybeDeferred(f, *args, **kwargs)


class HeldWork(_service.Service):
    """A L{WorkerPool} whose jobs wait until the test runs them, in order (L{run_next})."""

    name = "work"

    def __init__(self):
        self.queue = []

    def run(self, f, *args, **kwargs):
        d = defer.Deferred()
        self.queue.append((d, f, args, kwargs))
        return d

    def run_next(self):
        d, f, args, kwargs = self.queue.pop(0)
        defer.maybeDeferred(f, *args, **kwargs).chainDeferred(d)


class FakeServer:
    """
    The whole server, minus the listening port, on a L{task.Clock}, with a
    mock tracker.  C{client()} gives an in-memory connection.  With C{argv},
    the settings come from those command-line arguments, parsed by
    L{Options} (as C{--mock --port 0 ...}), instead of C{settings}.

    @param command_line: the whole command line instead (C{--port 0} is
        added): the server, and its tracker, are what it says, as
        C{jspsych-tobii-server} would build them.
    """

    def __init__(
        self,
        clock=None,
        rate=120.0,
        start=True,
        tracker=None,
        argv=None,
        command_line=None,
        work=None,
        **settings,
    ):
        self.clock = clock or Clock()
        work = work if work is not None else InlineWork()
        if command_line is not None:
            if "--mock" in command_line and "--mock-delivery" not in command_line:
                # a task.Clock has no thread to pace samples from: the mock's
                # reactor-timer delivery, chosen as a user would
                command_line = [*command_line, "--mock-delivery", "batched"]
            options = Options()
            options.parseOptions(["--port", "0", *command_line])
            self.config = options.config
            self.service = makeService(
                options, self.clock, clock_us=clock_from_seconds(self.clock.seconds), work=work
            )
            self.tracker = None
        else:
            if argv is not None:
                options = Options()
                options.parseOptions(["--mock", "--port", "0", "--mock-rate", str(rate), *argv])
                self.config = options.config
            else:
                settings.setdefault("mock", True)
                settings.setdefault("mock_rate", rate)
                options = self.config = ServerConfig(port="0", **settings)
            self.tracker = tracker or mock_tracker(self.clock, rate=rate)
            self.service = makeService(
                options,
                self.clock,
                make_tracker=lambda: self.tracker,
                clock_us=clock_from_seconds(self.clock.seconds),
                work=work,
            )
        self.state = self.service.state
        self.trackers = self.service.getServiceNamed("tracker")
        if start:
            self.trackers.startService()
            self.tracker = self.tracker or self.trackers.tracker

    def client(self, peer="127.0.0.1"):
        return FakeClient(self, peer)

    def advance(self, seconds, step=0.002):
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)


class FakeClient:
    """An in-memory connection: the channel of its L{SendGate}, decoding what it is sent."""

    _ids = itertools.count()

    def __init__(self, server, peer):
        self.server = server
        self.messages = []
        self.gaze = []
        self.batches = []  # frames per send_prepared_batch
        self.aborted = False
        self.closed_with = None
        self.pongs = []
        self.fragments = None
        self.gate = SendGate(self, server.clock, peer=peer)
        server.state.hub.gates.add(self.gate)
        self.session = ClientSession(server.state, self.gate, peer)
        self.session.requests.work_clock = (
            lambda: 0.0
        )  # answering takes no time unless a test says so

    # the channel

    def send_prepared(self, prepared):
        self.gaze.append(json.loads(prepared.payload)["gaze"])

    def send_prepared_batch(self, frames):
        self.batches.append(len(frames))
        for prepared in frames:
            self.send_prepared(prepared)

    def send_bytes(self, payload):
        self.messages.append(json.loads(payload))

    def send_now(self, payload):
        self.messages.append(json.loads(payload))

    def begin_message(self):
        assert self.fragments is None, "messages must not interleave"
        self.fragments = []

    def send_fragment(self, data):
        self.fragments.append(data)

    def end_message(self):
        message, self.fragments = b"".join(self.fragments), None
        self.messages.append(json.loads(message))

    def abort(self):
        self.aborted = True

    def send_close(self, code, reason):
        self.closed_with = (code, reason)

    def send_pong(self, payload):
        self.pongs.append(payload)

    def send(self, message):
        if not isinstance(message, (bytes, str)):
            message = json.dumps(message)
        if isinstance(message, str):
            message = message.encode()
        return self.session.handle(message)

    def request(self, kind, advance=0.0, **fields):
        """Send a request with a fresh requestId; return its reply (or None)."""
        request_id = f"req_{next(self._ids)}"
        self.send(dict(fields, type=kind, requestId=request_id))
        if advance:
            self.server.advance(advance)
        return self.reply(request_id)

    def reply(self, request_id):
        for message in self.messages:
            if message.get("requestId") == request_id:
                return message
        return None

    def drop(self):
        """The connection drops, as the protocol handles it: a tracking one may resume."""
        tracking = self.session.tracking
        self.close()
        if tracking:
            self.server.state.resumes.dropped(Fingerprint.of(self.gate.peer, {}, "/"))

    def close(self):
        self.session.close()
        self.server.state.hub.gates.discard(self.gate)
        if self.server.state.hub.is_subscribed(self.gate):
            self.server.state.hub.unsubscribe(self.gate)
        self.gate.close()


EXPERIMENT = "http://localhost:8000"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


class Page(WebSocketClientProtocol):
    """A browser page's socket: what it was sent, and how it closed."""

    def onOpen(self):
        self.gaze = []
        self.other = []
        self.pongs = []
        self.close_status = None

    def onPong(self, payload):
        self.pongs.append(payload)

    def onMessage(self, payload, isBinary):
        message = json.loads(payload)
        if message.get("type") == "gaze_data":
            self.gaze.append(message["gaze"])
        else:
            self.other.append(message)

    def onClose(self, wasClean, code, reason):
        self.close_status = (wasClean, code, reason)

    def send(self, kind, **fields):
        self.sendMessage(json.dumps(dict(fields, type=kind, requestId=kind)).encode())

    def kinds(self):
        return [m.get("type") for m in self.other]


class Lab:
    """One server on a clock, and the pages connected to it from 127.0.0.1."""

    def __init__(self, case, grace=30.0):
        self.clock = Clock()
        loop = replace_loop(self.clock)
        loop.__enter__()
        case.addCleanup(loop.__exit__, None, None, None)
        self.server = FakeServer(clock=self.clock, rate=120, reconnect_grace=grace)
        self.factory = self.server.service.site.websocket_factory
        self.pumps = []
        self.ports = iter(range(40000, 41000))

    def open(self, url="ws://localhost:8080", origin=EXPERIMENT, agent=CHROME):
        """A page opens its socket; returns the page and the server's protocol."""
        factory = WebSocketClientFactory(url, origin=origin, useragent=agent)
        factory.protocol = Page
        local = IPv4Address("TCP", "127.0.0.1", next(self.ports))
        listening = IPv4Address("TCP", "127.0.0.1", 8080)
        page = factory.buildProtocol(listening)
        server = self.factory.buildProtocol(local)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, hostAddress=listening, peerAddress=local),
            page,
            iosim.FakeTransport(page, False, hostAddress=local, peerAddress=listening),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        self.flush()
        self.assertOpen(page)
        return page, server

    def assertOpen(self, page):
        assert page.state == page.STATE_OPEN, "the handshake did not complete"

    def flush(self):
        for pump in self.pumps:
            pump.flush()

    def run(self, seconds, step=0.01):
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
            self.flush()

    def crash(self, page):
        """The page's socket goes away with no closing handshake (a killed browser)."""
        page.transport.loseConnection()
        self.flush()

    def leave(self, page):
        """The page closes its socket properly (the tab is closed or navigates)."""
        page.sendCloseFrame(code=1001)  # "going away", as a browser sends it
        self.run(0.05)
