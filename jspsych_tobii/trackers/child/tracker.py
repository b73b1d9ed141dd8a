# -*- test-case-name: tests.test_child -*-
"""
L{ChildTracker}: L{ITracker} over the Tobii SDK running in a process of its
own, started with another Python interpreter (C{--sdk-python}).

Why: tobii-research publishes wheels for CPython 3.10 only, older trackers
need its 1.x and newer ones its 2.x (one module name, so one interpreter
cannot hold both), and a crash in the SDK's native code must not take the
server down.  The child runs the in-process adapter, L{TobiiTracker}, in
L{jspsych_tobii.trackers.child.main}; only plain records cross the pipes,
framed by L{jspsych_tobii.trackers.child.wire} (gaze as raw L{GAZE_DTYPE}
bytes, in batches; requests and replies as JSON, matched by id).

The child interpreter needs no copy of this package: it is started with a
short bootstrap that loads the server's own package directory by path, and
in isolated mode (C{-I}), so that neither the server's C{PYTHONPATH} nor its
site-packages (built for another Python) reach it.  It needs Twisted, numpy,
zope.interface and tobii-research; C{jspsych-tobii-sdk-setup} makes such an
interpreter.

When the child dies after the tracker was connected, this side logs its
exit status and the tail of its stderr, reports C{CONNECTION_LOST} (the
server marks the tracker unavailable and tells the clients), starts a new
child with backoff, connects again, subscribes gaze again if it was
subscribed and reports C{CONNECTION_RESTORED} (the server resumes every
tracking client's stream).  The child exits when its stdin closes, so it
never outlives the server.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from twisted.internet import defer, error, protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from jspsych_tobii.core.timesync import monotonic_us
from jspsych_tobii.interfaces import (
    ITracker,
    NotificationKind,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
)
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.child.launch import child_command, describe_exit
from jspsych_tobii.trackers.child.wire import (
    GAZE,
    PROTOCOL,
    FrameDecoder,
    WireError,
    calibration_from_wire,
    decode_gaze,
    decode_message,
    encode_message,
    error_from_wire,
    info_from_wire,
    notification_from_wire,
    position_from_wire,
    same_dtype,
)

__all__ = ["ChildTracker"]

_log = Logger()

_LEVELS = {"debug", "info", "warn", "error", "critical"}


class _SDKProcessProtocol(protocol.ProcessProtocol):
    """
    The pipes of one child: frames in and out, stderr lines, requests
    awaiting replies, the hello.  Everything else goes to the tracker.
    """

    def __init__(self, tracker: "ChildTracker", tail_lines: int = 20):
        self.tracker = tracker
        self.decoder = FrameDecoder()
        self.hello: Optional[dict] = None
        self.helloError: Optional[TrackerError] = None
        self.pid: Optional[int] = None
        self.startedAt = time.monotonic()
        self.ended = False
        self.exitReason: Optional[Failure] = None
        self.tail: collections.deque = collections.deque(maxlen=tail_lines)
        self.brokenWire: Optional[str] = None
        self.lastProblem = ""
        self._ids = itertools.count(1)
        self._pending: Dict[int, defer.Deferred] = {}
        self._readyWaiters: List[defer.Deferred] = []
        self._endWaiters: List[defer.Deferred] = []
        self._partialLine = b""
        self._helloTimer: Any = None

    # -- Twisted's side

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self._helloTimer = self.tracker._reactor.callLater(
            self.tracker.startTimeout, self._helloTimedOut
        )

    def outReceived(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except WireError as e:
            self.breakWire(str(e))
            return
        gaze = self.tracker._gazeFrame
        for kind, payload in frames:
            if kind == GAZE:
                if self.hello is not None:
                    gaze(payload)
                continue
            try:
                message = decode_message(payload)
            except WireError as e:
                self.breakWire(str(e))
                return
            self._message(message)

    def errReceived(self, data: bytes) -> None:
        lines = (self._partialLine + data).split(b"\n")
        self._partialLine = lines.pop()
        if len(self._partialLine) > 4096:  # no newline in sight: take it as a line
            lines.append(self._partialLine)
            self._partialLine = b""
        for line in lines:
            self._line(line)

    def processEnded(self, reason: Failure) -> None:
        if self._partialLine:
            self._line(self._partialLine)
            self._partialLine = b""
        self.ended = True
        self.exitReason = reason
        if self._helloTimer is not None and self._helloTimer.active():
            self._helloTimer.cancel()
        self.tracker._childEnded(self, reason)
        waiters, self._endWaiters = self._endWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- requests

    def request(self, op: str, **args: Any) -> defer.Deferred:
        if self.ended:
            return defer.fail(TrackerError("the SDK process is not running"))
        request_id = next(self._ids)
        d: defer.Deferred = defer.Deferred()
        self._pending[request_id] = d
        self.transport.write(
            encode_message({"type": "request", "id": request_id, "op": op, "args": args})
        )
        return d

    def whenReady(self) -> defer.Deferred:
        """Fires with this protocol once the child said hello."""
        if self.hello is not None:
            return defer.succeed(self)
        if self.helloError is not None:
            return defer.fail(self.helloError)
        if self.ended:
            return defer.fail(TrackerError("the SDK process is not running"))
        d: defer.Deferred = defer.Deferred()
        self._readyWaiters.append(d)
        return d

    def whenEnded(self) -> defer.Deferred:
        if self.ended:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._endWaiters.append(d)
        return d

    def failAll(self, reason: TrackerError) -> None:
        """Fail every request awaiting a reply, and every wait for the hello."""
        pending, self._pending = self._pending, {}
        waiters, self._readyWaiters = self._readyWaiters, []
        if self.hello is None and self.helloError is None:
            self.helloError = reason
        for d in list(pending.values()) + waiters:
            d.errback(Failure(reason))

    def kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")
        except (error.ProcessExitedAlready, OSError):
            pass

    def breakWire(self, why: str) -> None:
        """The child wrote something that is not a frame: it cannot be trusted."""
        if self.brokenWire is None:
            self.brokenWire = why
            _log.error(
                "the SDK process wrote garbage to its frame pipe ({why}); killing it", why=why
            )
            self.kill()

    # -- what the child says

    def _message(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "reply":
            d = self._pending.pop(message.get("id"), None)
            if d is None:
                return
            if "error" in message:
                d.errback(Failure(error_from_wire(message["error"] or {})))
            else:
                d.callback(message.get("result"))
        elif kind == "hello":
            self._hello(message)
        elif self.hello is not None:
            self.tracker._childMessage(self, kind, message)

    def _hello(self, message: dict) -> None:
        if self._helloTimer is not None and self._helloTimer.active():
            self._helloTimer.cancel()
        if message.get("protocol") != PROTOCOL or not same_dtype(message.get("dtype")):
            from jspsych_tobii import __version__

            self.helloError = TrackerError(
                f"the SDK process speaks another wire protocol or gaze record layout "
                f"(jspsych-tobii {message.get('package')} there, {__version__} here)"
            )
            self.kill()
        else:
            self.hello = message
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            if self.helloError is not None:
                waiter.errback(Failure(self.helloError))
            else:
                waiter.callback(self)

    def _helloTimedOut(self) -> None:
        self._helloTimer = None
        if self.hello is None and not self.ended:
            self.helloError = TrackerError(
                f"the SDK process did not start within {self.tracker.startTimeout:g} s"
            )
            self.failAll(self.helloError)
            self.kill()

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        level, _, rest = text.partition(" ")
        if level not in _LEVELS:
            level, rest = "warn", text
        if not rest.strip():
            return
        self.tail.append(rest)
        if level in ("warn", "error", "critical") and not rest.startswith(" "):
            self.lastProblem = rest.strip()
        self.tracker._childLog(self, level, rest)

    def lastLine(self) -> str:
        """
        The last warning or error line the child wrote to stderr (a line
        without a level counts as one; traceback frames do not).
        """
        return self.lastProblem


@implementer(ITracker)
class ChildTracker:
    """
    An eye tracker driven through C{tobii_research} in a child process.

    @param reactor: the reactor (C{spawnProcess}, C{callLater}); None for the
        global one.
    @param python: the child's interpreter (C{--sdk-python}), with Twisted,
        numpy, zope.interface and tobii-research installed.  Give a venv's
        C{bin/python} as it is: resolving its symlink would leave the venv.
    @param address: the tracker to open; None for the first one found.
    @param frequency: a gaze output frequency to set at connect.
    @param sdk_module: the module the child imports instead of
        C{tobii_research}, or C{"module:factory"} where C{factory()} returns
        the SDK module object (tests: a fake SDK).
    @param python_path: directories put first on the child's C{sys.path}
        (for C{sdk_module}).
    @param env: extra environment variables for the child.
    @param restart_delay: seconds before the first restart of a dead child.
    @param restart_max_delay: the longest wait between restarts; the delay
        doubles with each failure in a row.

    @ivar startTimeout: seconds the child has to say hello.
    @ivar stopTimeout: seconds L{disconnect} waits for the child to exit
        before killing it.
    @ivar stableSeconds: a child that ran this long resets the backoff.
    @ivar positionMaxAge: seconds after which a user position is stale.
    @ivar clockRounds: rounds of the clock offset measurement at connect.
    @ivar restarts: children started again after one died.
    """

    startTimeout = 30.0
    stopTimeout = 1.5
    clockRounds = 20
    stableSeconds = 30.0
    positionMaxAge = 1.0

    def __init__(
        self,
        reactor: Any = None,
        python: Optional[str] = None,
        address: Optional[str] = None,
        frequency: Optional[float] = None,
        sdk_module: Optional[str] = None,
        python_path: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        restart_delay: float = 0.5,
        restart_max_delay: float = 30.0,
    ):
        if reactor is None:
            from twisted.internet import reactor
        if not python:
            raise TrackerError("no Python given for the SDK process (--sdk-python)")
        self._reactor = reactor
        self.python = os.path.abspath(os.path.expanduser(python))
        self._address = address
        self._frequency = frequency
        self._sdkModule = sdk_module
        self._pythonPath = tuple(python_path)
        self._env = dict(env or {})
        self.restartDelay = restart_delay
        self.restartMaxDelay = restart_max_delay
        self.info: Optional[TrackerInfo] = None
        self.restarts = 0
        self._clockOffset = 0

        self._process: Optional[_SDKProcessProtocol] = None
        self._connected = False  # connect() succeeded once: restart on death
        self._available = False  # connected and the child is up
        self._restarting = False
        self._restartCall: Any = None
        self._failures = 0
        self._connectWaiters: Optional[List[defer.Deferred]] = None
        self._closed = False
        self._closeWaiters: Optional[List[defer.Deferred]] = None
        self._closeDone = False

        self._gazeReceiver: Optional[Callable[[np.ndarray], Any]] = None
        self._gazeWanted = False
        self._gazeSince = 0
        self._notificationReceiver: Optional[Callable[[TrackerNotification], Any]] = None
        self._position: Optional[UserPosition] = None
        self._positionAt = 0.0

    @property
    def pid(self) -> Optional[int]:
        """The running child's process id, or None."""
        process = self._process
        return None if process is None or process.ended else process.pid

    # -- ITracker

    def connect(self) -> defer.Deferred:
        if self._closed:
            return defer.fail(TrackerError("this tracker was disconnected"))
        if self._connected and self.info is not None:
            return defer.succeed(self.info)
        waiter: defer.Deferred = defer.Deferred()
        if self._connectWaiters is not None:
            self._connectWaiters.append(waiter)
            return waiter
        self._connectWaiters = [waiter]
        self._start().addBoth(self._connectDone)
        return waiter

    def disconnect(self) -> defer.Deferred:
        if self._closeDone:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        if self._closeWaiters is not None:
            self._closeWaiters.append(waiter)
            return waiter
        self._closed = True
        self._available = False
        self._gazeReceiver = None
        self._gazeWanted = False
        self._notificationReceiver = None
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        self._restartCall = None
        process = self._process
        if process is None or process.ended:
            self._closeDone = True
            return defer.succeed(None)
        self._closeWaiters = [waiter]

        def kill():
            _log.warn(
                "the SDK process did not exit within {seconds:g} s; killing it",
                seconds=self.stopTimeout,
            )
            process.kill()

        # End of file on its stdin: the child releases the tracker and exits.
        process.transport.closeStdin()
        timer = self._reactor.callLater(self.stopTimeout, kill)

        def ended(_):
            if timer.active():
                timer.cancel()
            self._closeDone = True
            waiters, self._closeWaiters = self._closeWaiters or [], None
            for w in waiters:
                w.callback(None)

        process.whenEnded().addCallback(ended)
        return waiter

    def startGaze(self, receiver: Callable[[np.ndarray], Any]) -> defer.Deferred:
        if not self._available:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        self._gazeReceiver = receiver
        self._gazeWanted = True
        self._gazeSince = self._nowUs()
        d = self._process.request("startGaze")

        def failed(failure):
            if self._gazeReceiver is receiver:
                self._gazeReceiver = None
                self._gazeWanted = False
            return failure

        return d.addCallbacks(lambda _: None, failed)

    def stopGaze(self) -> defer.Deferred:
        self._gazeReceiver = None
        self._gazeWanted = False
        if not self._available:
            return defer.succeed(None)

        def gone(failure):
            failure.trap(TrackerError)  # the child died meanwhile: no stream left

        return self._process.request("stopGaze").addCallbacks(lambda _: None, gone)

    def setNotificationReceiver(
        self, receiver: Optional[Callable[[TrackerNotification], Any]]
    ) -> None:
        self._notificationReceiver = receiver

    def getUserPosition(self) -> Optional[UserPosition]:
        if self._position is None or not self._available:
            return None
        if time.monotonic() - self._positionAt > self.positionMaxAge:
            return None
        return self._position

    def setGazeOutputFrequency(self, frequency: float) -> defer.Deferred:
        d = self._request("setGazeOutputFrequency", frequency=float(frequency))

        def applied(current):
            self._frequency = float(current)  # a restarted child sets it again
            return float(current)

        return d.addCallback(applied)

    def enterCalibration(self) -> defer.Deferred:
        return self._request("enterCalibration").addCallback(lambda _: None)

    def collectCalibrationData(self, x: float, y: float) -> defer.Deferred:
        return self._request("collectCalibrationData", x=float(x), y=float(y)).addCallback(bool)

    def discardCalibrationData(self, x: float, y: float) -> defer.Deferred:
        d = self._request("discardCalibrationData", x=float(x), y=float(y))
        return d.addCallback(lambda _: None)

    def computeCalibration(self) -> defer.Deferred:
        d = self._request("computeCalibration")

        return d.addCallback(calibration_from_wire)

    def leaveCalibration(self) -> defer.Deferred:
        if not self._available:
            return defer.succeed(None)
        return self._request("leaveCalibration").addCallback(lambda _: None)

    # -- starting, connecting, restarting

    def _request(self, op: str, **args: Any) -> defer.Deferred:
        if not self._available or self._process is None:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self._process.request(op, **args)

    def _spawn(self) -> _SDKProcessProtocol:
        if not os.path.isfile(self.python):
            raise TrackerError(f"the SDK's Python {self.python} does not exist (--sdk-python)")
        process = _SDKProcessProtocol(self)
        env = dict(os.environ)
        env.update(self._env)
        args = child_command(self.python, self._sdkModule, self._pythonPath)
        try:
            self._reactor.spawnProcess(process, self.python, args, env=env)
        except OSError as e:
            raise TrackerError(f"cannot start the SDK process with {self.python}: {e}") from e
        except NotImplementedError as e:  # pragma: no cover - Windows without pywin32
            raise TrackerError(
                f"cannot start the SDK process: {e} (on Windows: pip install pywin32)"
            ) from e
        self._process = process
        _log.info(
            "started the SDK process (pid {pid}) with {python}", pid=process.pid, python=self.python
        )
        return process

    def _ready(self) -> defer.Deferred:
        """The running child, once it said hello; started when there is none."""
        process = self._process
        if process is None or process.ended:
            try:
                process = self._spawn()
            except TrackerError as e:
                return defer.fail(e)
        return process.whenReady()

    @defer.inlineCallbacks
    def _start(self):
        """Start the child if needed and connect the tracker; fires with the info."""
        process = yield self._ready()
        result = yield process.request("connect", address=self._address, frequency=self._frequency)
        info = info_from_wire(result)
        offset = yield self._measureClock(process)
        if offset != info.system_clock_offset_us:
            _log.info(
                "the SDK's clock is {offset} µs from the server's monotonic clock "
                "(the SDK process measured {theirs} µs from its own)",
                offset=offset,
                theirs=info.system_clock_offset_us,
            )
        if process.ended or process is not self._process:
            raise TrackerError("the SDK process stopped while connecting")
        self._clockOffset = offset
        self.info = replace(info, system_clock_offset_us=offset)
        return self.info

    @defer.inlineCallbacks
    def _measureClock(self, process: _SDKProcessProtocol):
        """
        The SDK's system clock minus this process's monotonic clock, in µs:
        each round brackets one reading of the SDK clock in the child between
        two readings here, and the narrowest bracket wins.  Measured here, not
        in the child, because the two interpreters' monotonic clocks need not
        be the same clock (on Windows, Python 3.13 reads QueryPerformanceCounter
        and older ones GetTickCount64).  An offset within the bracket cannot be
        told from zero and is 0, as on Linux.
        """
        best = None
        for _ in range(self.clockRounds):
            before = monotonic_us()
            stamp = yield process.request("clock")
            after = monotonic_us()
            width = after - before
            if best is None or width < best[0]:
                best = (width, int(stamp) - (before + after) // 2)
        width, offset = best
        return 0 if abs(offset) <= width else offset

    def _connectDone(self, result: Any) -> None:
        waiters, self._connectWaiters = self._connectWaiters or [], None
        if not isinstance(result, Failure):
            if self._closed:
                result = Failure(TrackerError("the eye tracker was disconnected while connecting"))
            else:
                self._connected = True
                self._available = True
                hello = self._process.hello if self._process is not None else {}
                _log.info(
                    "the SDK process (pid {pid}, Python {python}, tobii-research {sdk}) "
                    "connected the eye tracker",
                    pid=self.pid,
                    python=hello.get("python"),
                    sdk=hello.get("sdk"),
                )
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _nextDelay(self) -> float:
        delay = min(self.restartMaxDelay, self.restartDelay * (2**self._failures))
        self._failures += 1
        return delay

    def _scheduleRestart(self, delay: float) -> None:
        if self._closed:
            return
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        self._restartCall = self._reactor.callLater(delay, self._restore)

    @defer.inlineCallbacks
    def _restore(self):
        """Start a new child after one died, connect, resume gaze, say so."""
        self._restartCall = None
        if self._closed:
            return
        self._restarting = True
        self.restarts += 1
        try:
            yield self._start()
            process = self._process
            if self._gazeWanted:
                self._gazeSince = self._nowUs()
                yield process.request("startGaze")
        except Exception as e:
            self._restarting = False
            if self._closed:
                return
            delay = self._nextDelay()
            _log.warn(
                "the SDK process could not take the eye tracker back ({error}); "
                "trying again in {delay:g} s",
                error=str(e),
                delay=delay,
            )
            self._scheduleRestart(delay)
            return
        self._restarting = False
        if self._closed:
            return
        self._available = True
        _log.info("the SDK process is running again (pid {pid})", pid=self.pid)
        self._notify(
            NotificationKind.CONNECTION_RESTORED,
            "the eye tracker is available again: its SDK process was restarted",
            {"reason": "sdk_process_restarted", "pid": self.pid},
        )

    # -- what the child tells

    def _childEnded(self, process: _SDKProcessProtocol, reason: Failure) -> None:
        if process is not self._process:
            return
        self._process = None
        self._available = False
        self._position = None
        status = describe_exit(reason)
        if process.brokenWire is not None:
            status += " after writing garbage to its frame pipe"
        last = process.lastLine()
        failure = TrackerError(f"the SDK process {status}" + (f": {last}" if last else ""))
        if time.monotonic() - process.startedAt >= self.stableSeconds:
            self._failures = 0
        restart = self._connected and not self._restarting and not self._closed
        if self._closed:
            _log.info("the SDK process (pid {pid}) {status}", pid=process.pid, status=status)
            process.failAll(TrackerError("the eye tracker was disconnected"))
            return
        tail = " | ".join(process.tail)
        _log.error(
            "the SDK process (pid {pid}) {status}; its last output: {tail}",
            pid=process.pid,
            status=status,
            tail=tail or "(none)",
        )
        process.failAll(failure)
        if not restart:
            return
        delay = self._nextDelay()
        _log.warn("restarting the SDK process in {delay:g} s", delay=delay)
        data: Dict[str, Any] = {"reason": "sdk_process_exited", "restartIn": delay}
        value = reason.value
        data["exitCode"] = getattr(value, "exitCode", None)
        data["signal"] = getattr(value, "signal", None)
        self._notify(
            NotificationKind.CONNECTION_LOST,
            f"the eye tracker is unavailable: its SDK process {status}; restarting it",
            data,
        )
        self._scheduleRestart(delay)

    def _childLog(self, process: _SDKProcessProtocol, level: str, text: str) -> None:
        emit = {
            "debug": _log.debug,
            "info": _log.info,
            "warn": _log.warn,
            "error": _log.error,
            "critical": _log.critical,
        }[level]
        emit("SDK process {pid}: {text}", pid=process.pid, text=text)

    def _childMessage(self, process: _SDKProcessProtocol, kind: Any, message: dict) -> None:
        if process is not self._process:
            return
        try:
            if kind == "info":
                info = info_from_wire(message["info"])
                self.info = replace(info, system_clock_offset_us=self._clockOffset)
            elif kind == "position":
                self._position = position_from_wire(message.get("position"))
                self._positionAt = time.monotonic()
            elif kind == "notification":
                note = notification_from_wire(message["notification"])
                if note.kind == NotificationKind.CONNECTION_LOST:
                    self._position = None
                self._deliver(note)
            else:
                _log.debug("ignoring a message of type {kind!r} from the SDK process", kind=kind)
        except (KeyError, TypeError, ValueError) as e:
            _log.warn(
                "ignoring a malformed {kind!r} message from the SDK process: {error}",
                kind=kind,
                error=str(e),
            )

    def _gazeFrame(self, payload: bytearray) -> None:
        receiver = self._gazeReceiver
        if receiver is None:
            return
        try:
            batch = decode_gaze(payload)
        except WireError as e:
            if self._process is not None:
                self._process.breakWire(str(e))
            return
        if not len(batch):
            return
        since = self._gazeSince
        if batch["system_time_us"][0] < since:  # captured before this startGaze
            batch = batch[batch["system_time_us"] >= since]
            if not len(batch):
                return
        try:
            receiver(batch)
        except Exception:
            _log.failure("the gaze receiver failed")

    # -- helpers

    def _nowUs(self) -> int:
        """Now, on the tracker's system clock."""
        offset = self.info.system_clock_offset_us if self.info is not None else 0
        return monotonic_us() + offset

    def _notify(self, kind: str, message: str, data: Optional[dict] = None) -> None:
        self._deliver(
            TrackerNotification(
                kind=kind, system_time_us=self._nowUs(), message=message, data=data or {}
            )
        )

    def _deliver(self, note: TrackerNotification) -> None:
        receiver = self._notificationReceiver
        if receiver is None:
            return
        try:
            receiver(note)
        except Exception:
            _log.failure("the notification receiver failed on {kind}", kind=note.kind)
