# -*- test-case-name: tests.test_protocol -*-
"""
L{ResumeRegistry}: giving a reconnecting client its gaze stream back.

The jsPsych extension, after a reconnect, re-syncs time but believes it is
still tracking and never sends C{start_tracking} again.  So when a tracking
connection drops, the registry keeps the gaze stream running on its behalf
for a grace period; the next connection from the same host within that
period takes the stream over as if it had sent C{start_tracking}.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.application import service

from jspsych_tobii.logs import Logger

#: Seconds a dropped tracking connection's stream is kept for it.
DEFAULT_GRACE_PERIOD = 30.0


class _Pending:
    def __init__(self, host: str):
        self.host = host
        self.timer: Any = None


class ResumeRegistry(service.Service):
    name = "resumes"
    log = Logger()

    def __init__(self, reactor: Any, hub: Any, grace_period: float = DEFAULT_GRACE_PERIOD):
        self._reactor = reactor
        self._hub = hub
        self.grace_period = grace_period
        self._pending: Dict[str, List[_Pending]] = {}

    def dropped(self, host: str) -> None:
        """A connection from C{host} closed while tracking."""
        if self.grace_period <= 0:
            return
        pending = _Pending(host)
        pending.timer = self._reactor.callLater(self.grace_period, self._expire, pending)
        self._pending.setdefault(host, []).append(pending)
        self._hub.hold(pending).addErrback(lambda f: None)
        self.log.info(
            "tracking client {host} dropped; keeping its stream for {grace:g} s",
            host=host,
            grace=self.grace_period,
        )

    def claim(self, host: str) -> bool:
        """
        A connection from C{host} opened: if a dropped one from there is
        waiting, end its wait and return True (the caller subscribes).
        """
        waiting = self._pending.get(host)
        if not waiting:
            return False
        pending = waiting.pop(0)
        if not waiting:
            del self._pending[host]
        if pending.timer.active():
            pending.timer.cancel()
        self._release(pending)
        return True

    def _release(self, pending: _Pending) -> None:
        # Release after the claimant has subscribed, so the stream never stops.
        self._reactor.callLater(0, lambda: self._hub.release(pending).addErrback(lambda f: None))

    def _expire(self, pending: _Pending) -> None:
        waiting = self._pending.get(pending.host, [])
        if pending in waiting:
            waiting.remove(pending)
            if not waiting:
                del self._pending[pending.host]
        self.log.info("tracking client {host} did not come back", host=pending.host)
        self._hub.release(pending).addErrback(lambda f: None)

    def stopService(self):
        super().stopService()
        self.cancel_all()

    def cancel_all(self) -> None:
        for waiting in self._pending.values():
            for pending in waiting:
                if pending.timer.active():
                    pending.timer.cancel()
        self._pending.clear()
