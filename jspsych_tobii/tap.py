# -*- test-case-name: tests.test_tap -*-
"""
The command-line options and L{makeService}: the one place the whole server
is assembled.  C{twistd -n jspsych-tobii}, the console script
C{jspsych-tobii-server} and L{jspsych_tobii.TobiiServer} all come here.

L{makeService} builds the parts in dependency order and gives each what it
uses when it is built (see the README's Layout section): nothing is patched
in afterwards, and the parts meet through the interfaces of
L{jspsych_tobii.interfaces}.  The server clock's source is a parameter (the
monotonic clock; tests pass one driven by a L{task.Clock}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.application import service
from twisted.internet import endpoints
from twisted.python import usage

from jspsych_tobii import __version__, logs
from jspsych_tobii.config import ConfigError, ServerConfig
from jspsych_tobii.core.access import describe_endpoint, is_exposed
from jspsych_tobii.core.timesync import MicrosecondClock, ServerClock, monotonic_us
from jspsych_tobii.interfaces import ITracker, ITrackerProvider, TrackerError
from jspsych_tobii.logs import Logger
from jspsych_tobii.server.calibration import CalibrationCoordinator, calibration_summarizer
from jspsych_tobii.server.heap import FrozenHeap
from jspsych_tobii.server.hub import GazeHub
from jspsych_tobii.server.listening import ListeningService
from jspsych_tobii.server.protocol import TobiiServerFactory, prepare_text
from jspsych_tobii.server.resume import ResumeRegistry
from jspsych_tobii.server.service import TrackerService, TrackerSlot
from jspsych_tobii.server.slices import ShortSlices
from jspsych_tobii.server.state import EventLog, ServerState
from jspsych_tobii.server.work import WorkerPool
from jspsych_tobii.web.site import FrontSite, build_site

if TYPE_CHECKING:  # imported where used: pylsl and the recorder are optional
    from jspsych_tobii.recording.writer import SessionRecorder
    from jspsych_tobii.server.lsl import LslPublisher

_log = Logger()

#: The environment variable a token can come from (it stays out of the process list).
TOKEN_ENV = "JSPSYCH_TOBII_TOKEN"


#: Each option that fills a L{ServerConfig} field, and the field.
CONFIG_OPTIONS = {
    "host": "host",
    "port": "port",
    "tracker": "tracker",
    "buffer-size": "buffer_size",
    "log-level": "log_level",
    "log-file": "log_file",
    "mock": "mock",
    "mock-rate": "mock_rate",
    "mock-seed": "mock_seed",
    "mock-offset-deg": "mock_offset_deg",
    "mock-noise-deg": "mock_noise_deg",
    "mock-delivery": "mock_delivery",
    "validation-skip-ms": "validation_skip_ms",
    "validation-window-ms": "validation_window_ms",
    "frequency": "frequency",
    "reconnect-grace": "reconnect_grace",
    "record-dir": "record_dir",
    "replay": "replay",
    "speed": "replay_speed",
    "replay-loop": "replay_loop",
    "sdk-python": "sdk_python",
    "allowed-origins": "allowed_origins",
    "lsl": "lsl",
    "token": "token",
    "token-file": "token_file",
    "ping-interval": "ping_interval",
    "ping-timeout": "ping_timeout",
    "serve": "serve",
}


class Options(usage.Options):
    """
    The command line.  Options that matter only with another one (C{--speed}
    with C{--replay}, the C{--mock-*} options with C{--mock}, C{--host} with
    a numeric C{--port}) default to None here, so that L{postOptions} can tell
    the options given from the defaults and refuse those given in vain.
    """

    longdesc = (
        "Serve a Tobii eye tracker to jsPsych experiments over WebSocket "
        "(default ws://localhost:8080).  Use --mock to run without a tracker."
    )
    optParameters = [
        [
            "host",
            None,
            None,
            "Interface to listen on when --port is a number (default: localhost).",
        ],
        [
            "port",
            "p",
            "8080",
            "Port number, or a Twisted endpoint such as tcp:8080:interface=0.0.0.0 "
            "or systemd:domain=INET:name=web.",
        ],
        ["tracker", "t", None, "Eye tracker address (default: the first one found)."],
        ["buffer-size", None, "10000", "Gaze samples kept in memory."],
        ["log-level", None, "INFO", "DEBUG, INFO, WARNING or ERROR."],
        ["log-file", None, None, "Also write the log to this file."],
        ["mock-rate", None, None, "Sample rate of the mock tracker, Hz (default: 120)."],
        ["mock-seed", None, None, "Random seed of the mock tracker (default: 0)."],
        [
            "mock-offset-deg",
            None,
            None,
            "Systematic gaze error of the mock tracker, degrees (a known truth for "
            "validation; default: 0).",
        ],
        [
            "mock-noise-deg",
            None,
            None,
            "Angular noise of the mock tracker, degrees RMS (default: 0.02).",
        ],
        [
            "mock-delivery",
            None,
            None,
            "How the mock hands samples over: per-sample (each when due, from a thread, "
            "like a tracker SDK; the default) or batched (a reactor timer every 2 ms).",
        ],
        [
            "validation-skip-ms",
            None,
            "300",
            "Start of each validation point's window skipped as the saccade to the target, ms.",
        ],
        [
            "validation-window-ms",
            None,
            "0",
            "Use only the last N ms of each validation point (Titta: 500 in MATLAB, 300 in "
            "Python); 0 uses everything after --validation-skip-ms.",
        ],
        ["frequency", None, None, "Gaze output frequency to set on the tracker, Hz."],
        [
            "sdk-python",
            None,
            None,
            "Run the Tobii SDK in a child process with this Python (a CPython 3.10 with "
            "tobii-research: see jspsych-tobii-sdk-setup).",
        ],
        [
            "allowed-origins",
            None,
            "local",
            "Comma-separated origins whose pages may connect (wildcards allowed, e.g. "
            "https://*.lab.example.org); local: pages from this machine and from disk "
            "(null); *: every page.",
        ],
        [
            "token",
            None,
            None,
            "A shared secret every connection must give in its URL (ws://host:port/?token=...). "
            "Visible in the process list: prefer --token-file or the environment variable "
            f"{TOKEN_ENV}.",
        ],
        ["token-file", None, None, "Read the token from the first line of this file."],
        [
            "ping-interval",
            None,
            "10",
            "Seconds between keepalive pings to each client (0: none).",
        ],
        [
            "ping-timeout",
            None,
            None,
            "Seconds a client has to answer a ping before it is dropped (0: never dropped; "
            "default: 10).",
        ],
        ["record-dir", None, None, "Record every tracking session to a file in this folder."],
        ["serve", None, None, "Serve the experiment files of this folder at /experiment/."],
        ["replay", None, None, "Play a recording back as the tracker (instead of a device)."],
        ["speed", None, None, "Replay speed factor (2 = twice as fast; default: 1)."],
        [
            "reconnect-grace",
            None,
            "30",
            "Seconds a dropped tracking client's stream is kept for it to reconnect.",
        ],
    ]
    optFlags = [
        ["mock", None, "Use the built-in mock tracker (synthetic data, no hardware)."],
        ["replay-loop", None, "Start the replay over when it ends."],
        [
            "lsl",
            None,
            "Publish gaze and events as Lab Streaming Layer streams (for LabRecorder).",
        ],
        ["version", None, "Print the version and exit."],
    ]

    config: ServerConfig

    def opt_version(self):
        print(f"jspsych-tobii {__version__}")
        raise SystemExit(0)

    def opt_list_trackers(self):
        """Print each eye tracker found (address, model, serial, firmware, frequencies), exit."""
        self.list_only = True

    def getSynopsis(self) -> str:
        if self.parent is None:  # the console script; under twistd, twistd's own line
            return "Usage: jspsych-tobii-server [options]"
        return super().getSynopsis()

    def postOptions(self):
        given = {}
        for option, field in CONFIG_OPTIONS.items():
            value = self[option]
            if value is not None and value != 0:  # flags are 0 unless given
                given[field] = value
        for flag in ("mock", "replay_loop", "lsl"):
            if flag in given:
                given[flag] = True
        if "mock_seed" in given:
            given["mock_seed"] = _seed(given["mock_seed"])
        if "token" not in given:
            environment = _token_from_environment(self)
            if environment is not None:
                given["token"] = environment
        try:
            self.config = ServerConfig(**given)
            self.config.refuse_ignored(given)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        list_only = getattr(self, "list_only", False)
        if list_only and (self.config.mock or self.config.replay):
            raise usage.UsageError("--list-trackers: cannot be combined with --mock or --replay")
        if list_only and self.config.lsl:
            raise usage.UsageError("--lsl: does nothing with --list-trackers")
        _check_files(self.config)
        if self.config.lsl:
            from jspsych_tobii.server.lsl import LslUnavailable, load_pylsl

            try:
                load_pylsl()
            except LslUnavailable as e:
                raise usage.UsageError(str(e)) from None
        if list_only:
            raise SystemExit(list_trackers(sdk_python=self.config.sdk_python))


def _token_from_environment(options: "Options") -> Optional[str]:
    """The token in C{$JSPSYCH_TOBII_TOKEN}, unless a token option was given."""
    import os

    from jspsych_tobii.core.access import check_token

    value = os.environ.get(TOKEN_ENV)
    if options["token-file"] is not None or not value:
        return None
    try:
        return check_token(TOKEN_ENV, value.strip())
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _check_files(config: ServerConfig) -> None:
    """Fail at start-up, with one line, on a recording that cannot be read or written."""
    if config.replay:
        from jspsych_tobii.recording.format import RecordingFormatError, read_header

        try:
            read_header(config.replay)
        except (RecordingFormatError, OSError) as e:
            raise usage.UsageError(f"--replay: {e}") from None
    if config.record_dir:
        import os

        try:
            os.makedirs(config.record_dir, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"--record-dir: {e}") from None
        if not os.access(config.record_dir, os.W_OK | os.X_OK):
            raise usage.UsageError(f"--record-dir: cannot write in {config.record_dir}")


def list_trackers(out=None, sdk_python: Optional[str] = None) -> int:
    """
    The C{--list-trackers} command: with the SDK in this Python, or in the
    child interpreter C{sdk_python}.  Returns the exit status.
    """
    import sys

    from jspsych_tobii.trackers.child.launch import find_trackers_in, sdk_unavailable_message
    from jspsych_tobii.trackers.tobii_sdk import describe, find_trackers

    out = out or sys.stdout
    try:
        found = find_trackers_in(sdk_python) if sdk_python else find_trackers()
    except TrackerError as e:
        message = str(e)
        if not sdk_python and isinstance(e.__cause__, ImportError):
            message = sdk_unavailable_message()
        print(f"jspsych-tobii: {message}", file=sys.stderr)
        return 1
    if not found:
        print("no eye tracker found", file=out)
    for info in found:
        print(describe(info), file=out)
    return 0


def _seed(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise usage.UsageError(f"--mock-seed: expected a whole number, got {value!r}") from None


def tracker_factory(
    config: ServerConfig, reactor: Any, clock: ServerClock
) -> Callable[[], ITracker]:
    """What builds the tracker the configuration asks for (never a silent mock)."""
    if config.mock:

        def make_mock() -> ITracker:
            from jspsych_tobii.trackers.mock import MockTracker
            from jspsych_tobii.trackers.paced import ThreadPacing, TimerPacing

            _log.warn("using the MOCK tracker (--mock): gaze is synthetic, no eye tracker is used")
            pacing: ThreadPacing | TimerPacing
            if config.mock_delivery == "per-sample":
                pacing = ThreadPacing(reactor, clock.source, name="mock tracker")
            else:
                pacing = TimerPacing(reactor)
            return MockTracker(
                reactor,
                clock.source,
                rate=config.mock_rate,
                seed=config.mock_seed,
                offset_deg=config.mock_offset_deg,
                noise_deg=config.mock_noise_deg,
                pacing=pacing,
            )

        return make_mock

    if config.replay:
        recording = config.replay

        def make_replay() -> ITracker:
            from jspsych_tobii.trackers.replay import ReplayTracker

            return ReplayTracker(
                reactor,
                clock.source,
                recording,
                speed=config.replay_speed,
                loop=config.replay_loop,
            )

        return make_replay

    if config.sdk_python:

        def make_child() -> ITracker:
            from jspsych_tobii.trackers.child.tracker import ChildTracker

            return ChildTracker(
                reactor,
                clock.source,
                config.sdk_python,
                address=config.tracker,
                frequency=config.frequency,
            )

        return make_child

    def make_tobii() -> ITracker:
        from jspsych_tobii.trackers.child.launch import sdk_unavailable_message
        from jspsych_tobii.trackers.tobii import TobiiTracker
        from jspsych_tobii.trackers.tobii_sdk import load_sdk

        try:
            sdk = load_sdk()
        except TrackerError as e:
            detail = "" if isinstance(e.__cause__, ImportError) else str(e)
            raise TrackerError(sdk_unavailable_message(detail)) from None
        return TobiiTracker(
            reactor, clock.source, address=config.tracker, sdk=sdk, frequency=config.frequency
        )

    return make_tobii


def makeService(
    options: Any,
    reactor: Any = None,
    make_tracker: Optional[Callable[[], ITracker]] = None,
    clock_us: MicrosecondClock = monotonic_us,
    work: Optional[WorkerPool] = None,
) -> TobiiService:
    """
    Build the server: the tracker service and the listening port (the
    WebSocket, the status page and, with C{serve}, the experiment folder).
    The parts are built in dependency order, each given what it uses.

    @param options: an L{Options} (twistd) or a L{ServerConfig}.
    @param reactor: defaults to the global reactor, imported only here.
    @param make_tracker: overrides the tracker the configuration names (tests).
    @param clock_us: the server's microsecond clock source: the monotonic
        clock, or in tests one driven by a L{task.Clock}
        (L{clock_from_seconds}C{(clock.seconds)}).
    @param work: runs heavy pure work off the reactor; by default a
        L{WorkerPool} of threads (tests pass one that runs jobs inline).
    """
    config = options if isinstance(options, ServerConfig) else options.config
    if reactor is None:
        from twisted.internet import reactor
    logs.set_level(config.log_level)
    if config.log_file and not isinstance(options, ServerConfig):
        logs.add_log_file(config.log_file)

    clock = ServerClock(clock_us)
    slot = TrackerSlot()
    work = work if work is not None else WorkerPool(reactor)
    recorder = _recorder(config, reactor, clock) if config.record_dir else None
    lsl = _lsl_publisher(reactor, clock, slot, clock_us is monotonic_us) if config.lsl else None
    listeners = [part for part in (recorder, lsl) if part is not None]
    events = EventLog(recorder, [lsl] if lsl is not None else [])
    hub = GazeHub(
        slot,
        clock,
        config.buffer_size,
        prepare_text,
        observers=listeners,
        session_listeners=listeners,
    )
    trackers = TrackerService(
        reactor,
        make_tracker or tracker_factory(config, reactor, clock),
        clock,
        slot,
        listener=hub,
        record_event=events.record,
        retry_interval=config.retry_interval,
    )
    state = ServerState(
        reactor=reactor,
        clock=clock,
        trackers=trackers,
        hub=hub,
        calibration=CalibrationCoordinator(slot, calibration_summarizer(slot, hub, work)),
        resumes=ResumeRegistry(reactor, hub, config.reconnect_grace),
        version=__version__,
        config=config,
        events=events,
        work=work,
    )
    numbered = config.port.isdigit()
    where = (
        f"ws://{config.host}:{config.port}"
        if numbered
        else describe_endpoint(config.endpoint)  # no key or certificate paths
    )
    factory = TobiiServerFactory(
        state,
        where=where,
        origins=config.origin_patterns,
        token=config.secret,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
        exposed=is_exposed(config.port, config.host),
        own_host=config.host if numbered else None,
    )
    site = build_site(
        state,
        factory,
        serve_dir=config.serve,
        where=f"http://{config.host}:{config.port}/" if numbered else "",
    )
    listening = ListeningService(endpoints.serverFromString(reactor, config.endpoint), site)
    listening.setName("websocket")

    top = TobiiService(state, site, config, listening)
    # first of all: the threads the others start inherit its slice
    ShortSlices().setServiceParent(top)
    work.setServiceParent(top)  # before the rest: it stops last
    if recorder is not None:
        from jspsych_tobii.recording.writer import RecorderService

        RecorderService(recorder).setServiceParent(top)
    if lsl is not None:
        from jspsych_tobii.server.lsl import LslService

        LslService(lsl).setServiceParent(top)
    trackers.setServiceParent(top)
    state.resumes.setServiceParent(top)
    listening.setServiceParent(top)
    FrozenHeap().setServiceParent(top)  # last: freezes what the others built
    return top


class TobiiService(service.MultiService):
    """
    The whole server (what L{makeService} returns): its services, and the
    parts tests and embedding read.

    @ivar state: the L{ServerState} every connection shares.
    @ivar site: the L{FrontSite} on the listening port.
    @ivar config: the L{ServerConfig}.
    @ivar listening: the L{ListeningService}; its C{port} is the bound port.
    """

    def __init__(
        self, state: ServerState, site: FrontSite, config: ServerConfig, listening: ListeningService
    ):
        super().__init__()
        self.state = state
        self.site = site
        self.config = config
        self.listening = listening


def _recorder(config: ServerConfig, reactor: Any, clock: ServerClock) -> SessionRecorder:
    """The session recorder for C{--record-dir}, or a one-line L{ConfigError}."""
    from jspsych_tobii.recording.writer import SessionRecorder

    assert config.record_dir is not None
    try:
        return SessionRecorder(
            config.record_dir, reactor, clock_us=clock.now_us, server_version=__version__
        )
    except (OSError, ValueError) as e:
        raise ConfigError(f"--record-dir: {e}") from None


def _lsl_publisher(
    reactor: Any, clock: ServerClock, trackers: ITrackerProvider, monotonic: bool
) -> LslPublisher:
    """The LSL publisher for C{--lsl}, or a one-line L{ConfigError} without pylsl."""
    from jspsych_tobii.server.lsl import LslPublisher, LslUnavailable, clocks_agree, load_pylsl

    try:
        pylsl = load_pylsl()
    except LslUnavailable as e:
        raise ConfigError(str(e)) from None

    return LslPublisher(
        pylsl,
        reactor,
        clock,
        trackers.info,
        same_clock=clocks_agree(monotonic),
        server_version=__version__,
    )
