# -*- test-case-name: tests.test_child_main -*-
"""
The SDK process: L{TobiiTracker} in an interpreter of its own, driven over
pipes by L{jspsych_tobii.trackers.child.tracker.ChildTracker}.

Run as C{python -m jspsych_tobii.trackers.child.main}, or (as ChildTracker
does, so that the child interpreter needs no copy of this package) through a
bootstrap that loads the server's own copy of the package by path.

  - Commands arrive on stdin, replies and data leave on stdout, both as
    frames of L{jspsych_tobii.trackers.child.wire}.  Frames are written to a
    duplicate of the original stdout; descriptor 1 itself is pointed at
    stderr, so nothing else (a stray C{print}, the SDK's native library) can
    put bytes between two frames.
  - Every log event goes to stderr as one line per text line, each starting
    with the level name; the server relays them into its own log.
  - stdin is read by a thread that hands whole frames to the reactor; this
    works the same on every platform and needs nothing beyond Twisted.
  - The process lives exactly as long as its stdin: at end of file it
    releases the tracker and exits.  SIGINT and SIGTERM are ignored, so a
    Ctrl-C or a service manager's stop reaches the server first, and the
    server shuts its SDK process down in order.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from jspsych_tobii import __version__
from jspsych_tobii.interfaces import (
    GazeBatch,
    ITracker,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
)
from jspsych_tobii.trackers.child.wire import (
    MESSAGE,
    PROTOCOL,
    FrameDecoder,
    WireError,
    calibration_to_wire,
    decode_message,
    dtype_descr,
    encode_gaze,
    encode_message,
    error_to_wire,
    info_to_wire,
    notification_to_wire,
    position_to_wire,
)

__all__ = ["main", "SDKProcess", "load_sdk"]

_log = Logger()

#: What the server's side suggests when the SDK cannot be imported here.
SETUP_HINT = "set this interpreter up with jspsych-tobii-sdk-setup"

#: A batch of frames as L{FrameDecoder} splits them: C{(kind, payload)}.
Frames = List[Tuple[int, bytearray]]

if TYPE_CHECKING:
    from jspsych_tobii.trackers.tobii_worker import ISDKReactor

    class IChildReactor(IReactorCore, ISDKReactor):
        """What the SDK process runs on: it starts and stops the reactor, and
        drives an in-process L{TobiiTracker} with it."""


def load_sdk(spec: str = "tobii_research") -> Tuple[Any, Optional[str]]:
    """
    Import the SDK: C{"module"}, or C{"module:factory"} where C{factory()}
    returns the module object to use (tests give a fake SDK this way).

    @return: C{(sdk, None)}, or C{(None, a one-line reason)}.
    """
    name, _, factory = spec.partition(":")
    try:
        module = importlib.import_module(name)
        sdk = getattr(module, factory)() if factory else module
    except ImportError as e:
        python = f"{sys.executable} (Python {platform.python_version()})"
        return None, f"{name} cannot be imported by {python}: {e}; {SETUP_HINT}"
    except Exception as e:  # e.g. OSError: its native library failed to load
        return None, f"{name} could not be loaded: {type(e).__name__}: {e}"
    return sdk, None


class FrameWriter:
    """
    Writes frames to a blocking descriptor, whole, on the reactor thread.
    A pipe the server does not read fast enough blocks the writer, as a full
    socket would block a synchronous sender: samples wait in the SDK
    hand-off meanwhile, none are dropped here.
    """

    def __init__(self, fd: int):
        self._fd = fd
        self.closed = False

    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        view = memoryview(frame)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # The server is gone: nobody to talk to.
            self.closed = True


def read_frames(fd: int, deliver: Callable[[Frames], Any], ended: Callable[[str], Any]) -> None:
    """
    Read frames from C{fd} until end of file (runs in a thread): each chunk's
    whole frames go to C{deliver}, and C{ended(reason)} is called once at the end.
    Both are called through the caller's C{callFromThread}.
    """
    decoder = FrameDecoder()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            ended(f"reading commands failed: {e}")
            return
        if not data:
            ended("")
            return
        try:
            frames = decoder.feed(data)
        except WireError as e:
            ended(f"bad command stream: {e}")
            return
        if frames:
            deliver(frames)


class SDKProcess:
    """
    The SDK process's logic: answers requests with L{TobiiTracker} calls and
    forwards the tracker's gaze, notifications, info and user positions.

    @param write: sends one encoded frame to the server.
    @param make_tracker: C{make_tracker(address, frequency)} builds the
        L{ITracker} to drive (once, at the first C{connect}).
    @param sdk: the SDK module (None when it could not be loaded).
    @param sdk_error: why the SDK could not be loaded, or None.
    """

    #: Seconds between looks at the user position and the tracker info.
    pollInterval = 0.03
    #: Seconds given to the tracker to let go before the process exits.
    stopTimeout = 2.0

    def __init__(
        self,
        reactor: IReactorTime,
        write: Callable[[bytes], Any],
        make_tracker: Callable[[Optional[str], Optional[float]], ITracker],
        sdk: Any = None,
        sdk_error: Optional[str] = None,
    ):
        self._reactor = reactor
        self._write = write
        self._makeTracker = make_tracker
        self._sdk = sdk
        self._sdkVersion = None if sdk is None else str(getattr(sdk, "__version__", ""))
        self._sdkError = sdk_error
        self.tracker: Optional[ITracker] = None
        self._sentInfo: Optional[TrackerInfo] = None
        self._sentPosition: Optional[UserPosition] = None
        self._poller: Optional[LoopingCall] = None
        self._stopping = False
        self.stopped: defer.Deferred = defer.Deferred()
        self._ops: Dict[str, Callable[..., Any]] = {
            "connect": self._connect,
            "clock": self._clock,
            "disconnect": self._disconnect,
            "startGaze": self._startGaze,
            "stopGaze": lambda: self._require().stopGaze(),
            "setGazeOutputFrequency": lambda frequency: self._require().setGazeOutputFrequency(
                frequency
            ),
            "enterCalibration": lambda: self._require().enterCalibration(),
            "collectCalibrationData": lambda x, y: self._require().collectCalibrationData(x, y),
            "discardCalibrationData": lambda x, y: self._require().discardCalibrationData(x, y),
            "computeCalibration": self._compute,
            "leaveCalibration": lambda: self._require().leaveCalibration(),
        }

    def hello(self) -> None:
        self._send(
            {
                "type": "hello",
                "protocol": PROTOCOL,
                "dtype": dtype_descr(),
                "package": __version__,
                "python": platform.python_version(),
                "executable": sys.executable,
                "pid": os.getpid(),
                "sdk": self._sdkVersion,
                "sdkError": self._sdkError,
            }
        )

    # -- from the server

    def framesReceived(self, frames: Frames) -> None:
        for kind, payload in frames:
            if kind != MESSAGE:
                _log.warn("ignoring a frame of kind {kind} from the server", kind=kind)
                continue
            try:
                message = decode_message(payload)
            except WireError as e:
                _log.warn("ignoring a bad message from the server: {error}", error=str(e))
                continue
            if message.get("type") == "request":
                self._request(message)
            else:
                _log.warn("ignoring a message of type {type!r}", type=message.get("type"))

    def _request(self, message: dict) -> None:
        request_id = message.get("id")
        name = message.get("op")
        op = self._ops.get(name) if isinstance(name, str) else None
        args = message.get("args") or {}
        if op is None:
            self._reply(request_id, error=TrackerError(f"unknown request {message.get('op')!r}"))
            return
        d = defer.maybeDeferred(op, **args)
        d.addCallbacks(
            lambda result: self._reply(request_id, result=result),
            lambda failure: self._failed(request_id, failure),
        )

    def _failed(self, request_id: Any, failure: Failure) -> None:
        if not failure.check(TrackerError):
            _log.failure("request {id} failed unexpectedly", failure, id=request_id)
        self._reply(request_id, error=failure.value)

    def _reply(self, request_id: Any, result: Any = None, error: Any = None) -> None:
        self._syncInfo()
        message: Dict[str, Any] = {"type": "reply", "id": request_id}
        if error is not None:
            message["error"] = error_to_wire(error)
        else:
            message["result"] = result
        self._send(message)

    # -- the operations

    def _require(self) -> ITracker:
        if self.tracker is None:
            raise TrackerError("the eye tracker is not connected")
        return self.tracker

    def _connect(
        self, address: Optional[str] = None, frequency: Optional[float] = None
    ) -> defer.Deferred:
        if self._sdkError is not None:
            raise TrackerError(self._sdkError)
        if self._stopping:
            raise TrackerError("the SDK process is shutting down")
        if self.tracker is None:
            self.tracker = self._makeTracker(address, frequency)
            self.tracker.setNotificationReceiver(self._notification)
        d = self.tracker.connect()

        def connected(info: TrackerInfo) -> dict:
            self._startPolling()
            return info_to_wire(info)

        return d.addCallback(connected)

    def _clock(self) -> int:
        """The SDK's system clock now, µs (for the server to measure its offset)."""
        if self._sdk is None:
            raise TrackerError(self._sdkError or "the SDK is not loaded")
        return int(self._sdk.get_system_time_stamp())

    def _disconnect(self) -> Optional[defer.Deferred]:
        self._stopPolling()
        if self.tracker is None:
            return None
        return self.tracker.disconnect()

    def _startGaze(self) -> defer.Deferred:
        return self._require().startGaze(self._gaze)

    def _compute(self) -> defer.Deferred:
        return self._require().computeCalibration().addCallback(calibration_to_wire)

    # -- to the server

    def _send(self, message: dict) -> None:
        self._write(encode_message(message))

    def _gaze(self, batch: GazeBatch) -> None:
        self._write(encode_gaze(batch))

    def _notification(self, note: TrackerNotification) -> None:
        self._syncInfo()
        self._send({"type": "notification", "notification": notification_to_wire(note)})

    def _syncInfo(self) -> None:
        """Send the tracker's info when it changed (a new frequency, display area...)."""
        tracker = self.tracker
        info = tracker.info if tracker is not None else None
        if info is not None and info is not self._sentInfo:
            self._sentInfo = info
            self._send({"type": "info", "info": info_to_wire(info)})

    def _poll(self) -> None:
        self._syncInfo()
        tracker = self.tracker
        if tracker is None:
            return
        position = tracker.getUserPosition()
        if position != self._sentPosition:
            self._sentPosition = position
            self._send({"type": "position", "position": position_to_wire(position)})

    def _startPolling(self) -> None:
        if self._poller is None:
            self._poller = LoopingCall(self._poll)
            self._poller.clock = self._reactor
            self._poller.start(self.pollInterval, now=False)

    def _stopPolling(self) -> None:
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None

    # -- the end

    def stop(self, reason: str = "") -> defer.Deferred:
        """Release the tracker (bounded by L{stopTimeout}), then fire L{stopped}."""
        if self._stopping:
            return self.stopped
        self._stopping = True
        if reason:
            _log.warn("stopping: {reason}", reason=reason)
        self._stopPolling()
        tracker, done = self.tracker, self.stopped
        if tracker is None:
            done.callback(None)
            return done
        timer = self._reactor.callLater(self.stopTimeout, lambda: finish(None))

        def finish(result: object) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        defer.maybeDeferred(tracker.disconnect).addBoth(finish)
        return done


@implementer(ILogObserver)
class _StderrLog:
    """A log observer writing each line of each event to stderr, led by its level."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        level = event.get("log_level", LogLevel.info)
        namespace = str(event.get("log_namespace", ""))
        if namespace.startswith("twisted.") and level < LogLevel.warn:
            return  # the reactor's own chatter ("Main loop terminated.")
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"
        lines = "".join(f"{level.name} {line}\n" for line in text.rstrip("\n").splitlines() or [""])
        with self._lock:
            try:
                self._stream.write(lines)
                self._stream.flush()
            except (OSError, ValueError):
                pass


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jspsych_tobii.trackers.child.main",
        description="The Tobii SDK process of jspsych-tobii (started by the server).",
    )
    parser.add_argument(
        "--sdk",
        default="tobii_research",
        help="the SDK module, or module:factory returning it (default: tobii_research)",
    )
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        help="a directory to put first on sys.path (repeatable)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="find the eye trackers, print them as JSON and exit",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="print what this interpreter offers the SDK process as JSON and exit "
        "(status 0 when the SDK loads)",
    )
    return parser.parse_args(argv)


def _print_line(fd: int, text: str) -> None:
    FrameWriter(fd).write((text + "\n").encode("utf-8"))


def _check(spec: str, out: int) -> int:
    import numpy
    import zope.interface  # noqa: F401 - checked for presence

    import twisted

    sdk, error = load_sdk(spec)
    report = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "package": __version__,
        "twisted": twisted.__version__,
        "numpy": numpy.__version__,
        "sdk": None if sdk is None else str(getattr(sdk, "__version__", "")),
        "sdkError": error,
    }
    _print_line(out, json.dumps(report))
    return 0 if sdk is not None else 1


def _list(spec: str, out: int) -> int:
    sdk, error = load_sdk(spec)
    if error is None:
        from jspsych_tobii.trackers.tobii import find_trackers

        try:
            infos = find_trackers(sdk)
        except TrackerError as e:
            error = str(e)
    if error is not None:
        _print_line(out, json.dumps({"error": error}))
        return 1
    _print_line(out, json.dumps({"trackers": [info_to_wire(info) for info in infos]}))
    return 0


def _binary(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    for directory in reversed(args.path):
        sys.path.insert(0, directory)
    # Frames (or the one line of --check and --list) get a descriptor of
    # their own; descriptor 1 becomes stderr.
    frames_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _binary(frames_fd)
    if args.check:
        return _check(args.sdk, frames_fd)
    if args.list:
        return _list(args.sdk, frames_fd)
    _binary(0)
    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    globalLogBeginner.beginLoggingTo([_StderrLog(sys.stderr)], redirectStandardIO=False)

    sdk, error = load_sdk(args.sdk)
    if error is not None:
        _log.warn("{error}", error=error)

    from twisted.internet import reactor as installed

    from jspsych_tobii.core.timesync import monotonic_us
    from jspsych_tobii.trackers.tobii import TobiiTracker

    # Twisted types the default reactor by the interfaces every reactor has;
    # the ones this process runs on also take calls from threads.
    reactor = cast("IChildReactor", installed)

    def make_tracker(address: Optional[str], frequency: Optional[float]) -> ITracker:
        return TobiiTracker(reactor, monotonic_us, address=address, sdk=sdk, frequency=frequency)

    writer = FrameWriter(frames_fd)
    process = SDKProcess(
        reactor,
        writer.write,
        make_tracker,
        sdk=sdk,
        sdk_error=error,
    )

    def ended(reason: str) -> None:
        process.stop(reason)

    def start() -> None:
        process.hello()
        threading.Thread(
            target=read_frames,
            args=(
                0,
                lambda frames: reactor.callFromThread(process.framesReceived, frames),
                lambda reason: reactor.callFromThread(ended, reason),
            ),
            name="sdk-process-commands",
            daemon=True,
        ).start()

    process.stopped.addCallback(lambda _: reactor.stop())
    reactor.callWhenRunning(start)
    # IReactorCore.run() declares no argument; Twisted's reactors take this one
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    sys.stderr.flush()
    # Exit now: a thread left inside the SDK must not hold the process.
    os._exit(0)
    return 0  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover - run by the server
    sys.exit(main())
