# -*- test-case-name: tests.test_child_supervisor -*-
"""
L{SDKSupervisor}: starts the SDK process, watches it, and starts it again
with backoff when it dies.

It knows processes, not trackers.  It spawns the child
(L{jspsych_tobii.trackers.child.launch.child_command}), hands it the pipes
of an L{SDKProcessProtocol}, and passes on what the child says to the
tracker it serves, an L{ISupervised}.  When the child dies it logs the
exit status and the child's last lines, fails the requests that were
waiting, and, once the tracker has asked it to keep the child alive,
tells the tracker it was lost and, after a delay, asks it to
L{restore<ISupervised.restore>} itself on a new child.  The delay follows
Twisted's L{backoffPolicy}: it doubles after each failure in a row, up to
a maximum, and starts over once a child has run for C{stableSeconds}.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Generator, Optional, Sequence

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.logs import Logger
from jspsych_tobii.trackers.child.launch import child_command, describe_exit
from jspsych_tobii.trackers.child.process import IChildEvents, SDKProcessProtocol
from jspsych_tobii.waiters import Waiters

__all__ = ["ISupervised", "ISupervisorReactor", "SDKSupervisor"]

_log = Logger()


class ISupervisorReactor(IReactorTime, IReactorProcess):
    """What an L{SDKSupervisor} needs of the reactor: timers and child processes."""


class ISupervised(Interface):
    """What an L{SDKSupervisor} tells the tracker it serves."""

    def gazeReceived(payload: bytearray) -> None:
        """A gaze frame's payload from the running child."""

    def messageReceived(kind: Any, message: dict) -> None:
        """A message (info, position, notification...) from the running child."""

    def processGone() -> None:
        """
        The running child ended: what it was asked fails next, and nothing
        more comes from it.
        """

    def processLost(status: str, data: dict) -> None:
        """
        After L{processGone}: the child died and will be started again.  C{status} says
        how it ended (C{"was killed by signal 9 (SIGKILL)"}); C{data} holds
        C{reason}, C{restartIn} (seconds), C{exitCode} and C{signal}.
        """

    def restore() -> defer.Deferred:
        """
        A new child is to take over: start it (L{SDKSupervisor.ready}) and
        take the tracker back.

        @return: a Deferred; its failure makes the supervisor try again later.
        """


@implementer(IChildEvents)
class SDKSupervisor:
    """
    The life of the SDK process of one tracker.

    @param reactor: an L{ISupervisorReactor} (C{spawnProcess} and C{callLater}).
    @param clock_us: the server's microsecond clock.
    @param python: the child's interpreter (absolute path).
    @param tracker: the L{ISupervised} to tell.
    @param sdk_module: what the child imports instead of C{tobii_research}.
    @param python_path: directories put first on the child's C{sys.path}.
    @param env: extra environment variables for the child.
    @param restart_delay: seconds before the first restart of a dead child.
    @param restart_max_delay: the longest wait between restarts.

    @ivar startTimeout: seconds a child has to say hello.
    @ivar stopTimeout: seconds L{stop} waits for the child to exit before
        killing it.
    @ivar stableSeconds: a child that ran this long resets the backoff.
    @ivar restarts: children started again after one died.
    """

    startTimeout = 30.0
    stopTimeout = 1.5
    stableSeconds = 30.0

    def __init__(
        self,
        reactor: ISupervisorReactor,
        clock_us: MicrosecondClock,
        python: str,
        tracker: ISupervised,
        sdk_module: Optional[str] = None,
        python_path: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        restart_delay: float = 0.5,
        restart_max_delay: float = 30.0,
    ):
        self._reactor = reactor
        self._clock_us = clock_us
        self.python = python
        self._tracker = tracker
        self._sdkModule = sdk_module
        self._pythonPath = tuple(python_path)
        self._env = dict(env or {})
        self._delay = backoffPolicy(
            initialDelay=restart_delay,
            maxDelay=max(restart_delay, restart_max_delay),
            factor=2.0,
            jitter=lambda: 0.0,
        )
        self._failures = 0  # deaths and failed restarts in a row
        self.restarts = 0
        self.process: Optional[SDKProcessProtocol] = None
        self._keepAlive = False
        self._restoring = False
        self._restartCall: Optional[IDelayedCall] = None
        self._stopped: Optional[Waiters] = None

    @property
    def pid(self) -> Optional[int]:
        """The running child's process id, or None."""
        process = self.process
        return None if process is None or process.ended else process.pid

    # -- what the tracker asks

    def ready(self) -> defer.Deferred:
        """The running child, once it said hello; started when there is none."""
        process = self.process
        if process is None or process.ended:
            try:
                process = self._spawn()
            except TrackerError as e:
                return defer.fail(e)
        return process.whenReady()

    def request(self, op: str, **args: Any) -> defer.Deferred:
        """Ask the running child to run C{op}."""
        if self.process is None:
            return defer.fail(TrackerError("the SDK process is not running"))
        return self.process.request(op, **args)

    def keepAlive(self) -> None:
        """From now on, start a new child whenever the running one dies."""
        self._keepAlive = True

    def breakWire(self, why: str) -> None:
        """What the running child sent cannot be read: kill it."""
        if self.process is not None:
            self.process.breakWire(why)

    def stop(self) -> defer.Deferred:
        """
        No more restarts; close the child's stdin, so that it releases the
        tracker and exits, and kill it if it has not after L{stopTimeout}.
        Safe to call twice.

        @return: a Deferred firing with None once it ended.
        """
        if self._stopped is not None:
            return self._stopped.wait()
        self._stopped = stopped = Waiters()
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        self._restartCall = None
        process = self.process
        if process is None or process.ended:
            stopped.fire(None)
            return stopped.wait()

        def kill() -> None:
            _log.warn(
                "the SDK process did not exit within {seconds:g} s; killing it",
                seconds=self.stopTimeout,
            )
            process.kill()

        process.closeStdin()
        timer = self._reactor.callLater(self.stopTimeout, kill)

        def ended(_: None) -> None:
            if timer.active():
                timer.cancel()
            stopped.fire(None)

        process.whenEnded().addCallback(ended)
        return stopped.wait()

    # -- starting

    def _spawn(self) -> SDKProcessProtocol:
        if not os.path.isfile(self.python):
            raise TrackerError(f"the SDK's Python {self.python} does not exist (--sdk-python)")
        process = SDKProcessProtocol(self._reactor, self._clock_us, self, self.startTimeout)
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
        self.process = process
        _log.info(
            "started the SDK process (pid {pid}) with {python}", pid=process.pid, python=self.python
        )
        return process

    def _nextDelay(self) -> float:
        delay = self._delay(self._failures)
        self._failures += 1
        return delay

    def _scheduleRestart(self, delay: float) -> None:
        if self._stopped is not None:
            return
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        self._restartCall = self._reactor.callLater(delay, self._restart)

    @defer.inlineCallbacks
    def _restart(self) -> Generator[defer.Deferred, Any, None]:
        """Start a new child after one died: the tracker takes it over."""
        self._restartCall = None
        if self._stopped is not None:
            return
        self._restoring = True
        self.restarts += 1
        try:
            yield self._tracker.restore()
        except Exception as e:
            self._restoring = False
            if self._stopped is not None:
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
        self._restoring = False
        if self._stopped is None:
            _log.info("the SDK process is running again (pid {pid})", pid=self.pid)

    # -- IChildEvents: what the pipes report

    def gazeReceived(self, process: SDKProcessProtocol, payload: bytearray) -> None:
        if process is self.process:
            self._tracker.gazeReceived(payload)

    def messageReceived(self, process: SDKProcessProtocol, kind: Any, message: dict) -> None:
        if process is self.process:
            self._tracker.messageReceived(kind, message)

    def processEnded(self, process: SDKProcessProtocol, reason: Failure) -> None:
        if process is not self.process:
            return
        self.process = None
        self._tracker.processGone()
        status = describe_exit(reason)
        if process.brokenWire is not None:
            status += " after writing garbage to its frame pipe"
        last = process.lastLine()
        failure = TrackerError(f"the SDK process {status}" + (f": {last}" if last else ""))
        if self._clock_us() - process.startedAt >= self.stableSeconds * 1e6:
            self._failures = 0
        # decided before the requests fail: a failing restore reacts at once
        restart = self._keepAlive and not self._restoring
        if self._stopped is not None:
            _log.info("the SDK process (pid {pid}) {status}", pid=process.pid, status=status)
            process.failAll(TrackerError("the eye tracker was disconnected"))
            return
        _log.error(
            "the SDK process (pid {pid}) {status}; its last output: {tail}",
            pid=process.pid,
            status=status,
            tail=" | ".join(process.tail) or "(none)",
        )
        process.failAll(failure)
        if not restart:
            return  # not connected yet, or a restore under way tries again when it fails
        delay = self._nextDelay()
        _log.warn("restarting the SDK process in {delay:g} s", delay=delay)
        value = reason.value
        self._tracker.processLost(
            status,
            {
                "reason": "sdk_process_exited",
                "restartIn": delay,
                "exitCode": getattr(value, "exitCode", None),
                "signal": getattr(value, "signal", None),
            },
        )
        self._scheduleRestart(delay)
