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

This class is the tracker: it connects, measures the SDK clock's offset,
keeps the info, gaze receiver and user position, and turns requests into
messages to the child.  The child's life (starting it, its death, restarts
with backoff) is L{SDKSupervisor}'s.  When the child dies after the tracker
was connected, the supervisor tells this tracker, which reports
C{CONNECTION_LOST} (the server marks the tracker unavailable and tells the
clients); after the backoff delay it asks this tracker to restore itself on
a new child: connect again, subscribe gaze again if it was subscribed and
report C{CONNECTION_RESTORED} (the server resumes every tracking client's
stream).  The child exits when its stdin closes, so it never outlives the
server.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence, Tuple, Union

import numpy as np
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    GazeBatch,
    GazeReceiver,
    ITracker,
    NotificationKind,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
)
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.child.process import SDKProcessProtocol
from jspsych_tobii.trackers.child.supervisor import (
    ISupervised,
    ISupervisorReactor,
    SDKSupervisor,
)
from jspsych_tobii.trackers.child.wire import (
    WireError,
    calibration_from_wire,
    first_system_time_us,
    gaze_records,
    info_from_wire,
    notification_from_wire,
    position_from_wire,
)
from jspsych_tobii.trackers.tobii_sdk import CLOCK_ROUNDS, offset_from_brackets
from jspsych_tobii.waiters import Waiters

__all__ = ["ChildTracker"]

_log = Logger()


@implementer(ITracker, ISupervised)
class ChildTracker:
    """
    An eye tracker driven through C{tobii_research} in a child process.
    Every method runs on the reactor.

    @param reactor: an L{ISupervisorReactor} (C{spawnProcess} and C{callLater}).
    @param clock_us: the server's microsecond clock
        (L{jspsych_tobii.core.timesync.ServerClock.source}): the SDK clock's
        offset is measured against it.
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

    @ivar supervisor: the L{SDKSupervisor} of the child process.
    @ivar positionMaxAge: seconds after which a user position is stale.
    @ivar clockRounds: rounds of the clock offset measurement at connect.
    """

    clockRounds = CLOCK_ROUNDS
    positionMaxAge = 1.0

    def __init__(
        self,
        reactor: ISupervisorReactor,
        clock_us: MicrosecondClock,
        python: Optional[str],
        address: Optional[str] = None,
        frequency: Optional[float] = None,
        sdk_module: Optional[str] = None,
        python_path: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        restart_delay: float = 0.5,
        restart_max_delay: float = 30.0,
    ):
        if not python:
            raise TrackerError("no Python given for the SDK process (--sdk-python)")
        self._clock_us = clock_us
        self._address = address
        self._frequency = frequency
        self.supervisor = SDKSupervisor(
            reactor,
            clock_us,
            os.path.abspath(os.path.expanduser(python)),
            self,
            sdk_module=sdk_module,
            python_path=python_path,
            env=env,
            restart_delay=restart_delay,
            restart_max_delay=restart_max_delay,
        )
        self.info: Optional[TrackerInfo] = None
        self._clockOffset = 0
        self._connected = False  # connect() succeeded once
        self._available = False  # connected and the child is up
        self._connecting: Optional[Waiters] = None
        self._closed = False

        self._gazeReceiver: Optional[GazeReceiver] = None
        self._gazeWanted = False
        self._gazeSince = 0
        self._notificationReceiver: Optional[Callable[[TrackerNotification], Any]] = None
        self._position: Optional[UserPosition] = None
        self._positionAt = 0

    @property
    def python(self) -> str:
        """The child's interpreter."""
        return self.supervisor.python

    @property
    def pid(self) -> Optional[int]:
        """The running child's process id, or None."""
        return self.supervisor.pid

    @property
    def restarts(self) -> int:
        """Children started again after one died."""
        return self.supervisor.restarts

    # -- ITracker

    def connect(self) -> defer.Deferred:
        if self._closed:
            return defer.fail(TrackerError("this tracker was disconnected"))
        if self._connected and self.info is not None:
            return defer.succeed(self.info)
        connecting = self._connecting
        if connecting is None:  # else join the connect under way
            self._connecting = connecting = Waiters()
            self._start().addBoth(self._connectDone)
        return connecting.wait()

    def disconnect(self) -> defer.Deferred:
        self._closed = True
        self._available = False
        self._gazeReceiver = None
        self._gazeWanted = False
        self._notificationReceiver = None
        return self.supervisor.stop()

    def startGaze(self, receiver: GazeReceiver) -> defer.Deferred:
        if not self._available:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        self._gazeReceiver = receiver
        self._gazeWanted = True
        self._gazeSince = self._nowUs()
        d = self.supervisor.request("startGaze")

        def failed(failure: Failure) -> Failure:
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

        def gone(failure: Failure) -> None:
            failure.trap(TrackerError)  # the child died meanwhile: no stream left

        return self.supervisor.request("stopGaze").addCallbacks(lambda _: None, gone)

    def setNotificationReceiver(
        self, receiver: Optional[Callable[[TrackerNotification], Any]]
    ) -> None:
        self._notificationReceiver = receiver

    def getUserPosition(self) -> Optional[UserPosition]:
        if self._position is None or not self._available:
            return None
        if self._clock_us() - self._positionAt > self.positionMaxAge * 1e6:
            return None
        return self._position

    def setGazeOutputFrequency(self, frequency: float) -> defer.Deferred:
        d = self._request("setGazeOutputFrequency", frequency=float(frequency))

        def applied(current: float) -> float:
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
        return self._request("computeCalibration").addCallback(calibration_from_wire)

    def leaveCalibration(self) -> defer.Deferred:
        if not self._available:
            return defer.succeed(None)
        return self._request("leaveCalibration").addCallback(lambda _: None)

    # -- connecting

    def _request(self, op: str, **args: Any) -> defer.Deferred:
        if not self._available:
            return defer.fail(TrackerError("the eye tracker is not connected"))
        return self.supervisor.request(op, **args)

    @defer.inlineCallbacks
    def _start(self) -> Generator[defer.Deferred, Any, TrackerInfo]:
        """Start the child if needed and connect the tracker; fires with the info."""
        process = yield self.supervisor.ready()
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
        if process.ended or process is not self.supervisor.process:
            raise TrackerError("the SDK process stopped while connecting")
        self._clockOffset = offset
        self.info = replace(info, system_clock_offset_us=offset)
        return self.info

    @defer.inlineCallbacks
    def _measureClock(self, process: SDKProcessProtocol) -> Generator[defer.Deferred, Any, int]:
        """
        The SDK's system clock minus the server's clock, in µs: each round
        brackets one reading of the SDK clock in the child between two
        readings here (L{offset_from_brackets}).  Measured here, not in the
        child, because the two interpreters' monotonic clocks need not be
        the same clock (on Windows, Python 3.13 reads
        QueryPerformanceCounter and older ones GetTickCount64).
        """
        brackets: List[Tuple[int, int, int]] = []
        for _ in range(self.clockRounds):
            before = self._clock_us()
            stamp = yield process.request("clock")
            brackets.append((before, int(stamp), self._clock_us()))
        return offset_from_brackets(brackets)

    def _connectDone(self, result: Union[TrackerInfo, Failure]) -> None:
        waiters, self._connecting = self._connecting, None
        if not isinstance(result, Failure):
            if self._closed:
                result = Failure(TrackerError("the eye tracker was disconnected while connecting"))
            else:
                self._connected = True
                self._available = True
                self.supervisor.keepAlive()
                process = self.supervisor.process
                hello = process.hello if process is not None else None
                hello = hello or {}
                _log.info(
                    "the SDK process (pid {pid}, Python {python}, tobii-research {sdk}) "
                    "connected the eye tracker",
                    pid=self.pid,
                    python=hello.get("python"),
                    sdk=hello.get("sdk"),
                )
        assert waiters is not None
        waiters.fire(result)

    # -- ISupervised: what the supervisor tells

    def processGone(self) -> None:
        self._available = False
        self._position = None

    def processLost(self, status: str, data: dict) -> None:
        self._notify(
            NotificationKind.CONNECTION_LOST,
            f"the eye tracker is unavailable: its SDK process {status}; restarting it",
            data,
        )

    @defer.inlineCallbacks
    def restore(self) -> Generator[defer.Deferred, Any, None]:
        """Connect again on a new child, resume gaze, say so."""
        yield self._start()
        if self._gazeWanted:
            self._gazeSince = self._nowUs()
            yield self.supervisor.request("startGaze")
        if self._closed:
            return
        self._available = True
        self._notify(
            NotificationKind.CONNECTION_RESTORED,
            "the eye tracker is available again: its SDK process was restarted",
            {"reason": "sdk_process_restarted", "pid": self.pid},
        )

    def messageReceived(self, kind: Any, message: dict) -> None:
        try:
            if kind == "info":
                info = info_from_wire(message["info"])
                self.info = replace(info, system_clock_offset_us=self._clockOffset)
            elif kind == "position":
                self._position = position_from_wire(message.get("position"))
                self._positionAt = self._clock_us()
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

    def gazeReceived(self, payload: bytearray) -> None:
        receiver = self._gazeReceiver
        if receiver is None:
            return
        try:
            records = gaze_records(payload)
        except WireError as e:
            self.supervisor.breakWire(str(e))
            return
        if not records:
            return
        batch: GazeBatch = records  # handed over as bytes: no numpy call
        since = self._gazeSince
        if first_system_time_us(records) < since:  # captured before this startGaze
            array = np.frombuffer(records, GAZE_DTYPE)
            batch = array[array["system_time_us"] >= since]
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
        return self._clock_us() + offset

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
