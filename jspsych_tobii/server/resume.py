# -*- test-case-name: tests.test_resume -*-
"""
L{ResumeRegistry}: giving a reconnecting client its gaze stream back, and
no one else.

The jsPsych extension, after a reconnect, re-syncs time but believes it is
still tracking and never sends C{start_tracking} again.  So when a tracking
connection I{drops} (its socket closes without a closing handshake: a
network fault, a crashed tab, a killed browser), the registry keeps the gaze
stream running on its behalf for a grace period, and a new connection that
is that same client coming back takes the stream over as if it had sent
C{start_tracking}.  A connection that closes cleanly (the page was closed or
left, or the server closed it for a reason) is not waited for.

"The same client" is judged from what a browser page repeats when it
reconnects: its L{Fingerprint}, made of the peer's address and the
handshake's C{Origin}, C{User-Agent}, C{Host} and request path with its
query string.  Two pages in one browser differ in origin or URL, two
browsers in their User-Agent; on a one-PC lab every page comes from
127.0.0.1, so the address alone says nothing.  When two held streams share
a fingerprint, a new connection with it could be either: it gets neither
(no guessing), and both wait out their grace period.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from jspsych_tobii.server.hub import GazeHub

from jspsych_tobii.interfaces import TrackerError
from jspsych_tobii.logs import Logger

#: Seconds a dropped tracking connection's stream is kept for it.
DEFAULT_GRACE_PERIOD = 30.0


class Fingerprint(NamedTuple):
    """What a reconnecting page's handshake repeats."""

    peer_host: str
    origin: Optional[str]
    user_agent: Optional[str]
    host: Optional[str]  # the Host header: the server address the page used
    resource: str  # the request's path and query string

    @classmethod
    def of(cls, peer_host: str, headers: Dict[str, str], resource: str) -> "Fingerprint":
        """From the handshake's request headers (names in lower case)."""
        return cls(
            peer_host,
            headers.get("origin"),
            headers.get("user-agent"),
            headers.get("host"),
            resource,
        )

    def describe(self) -> str:
        """For the log: the query string is left out (it may hold the access token)."""
        return f"{self.peer_host} {self.origin or '-'} {self.resource.split('?', 1)[0]}"


class _Pending:
    def __init__(self, fingerprint: Fingerprint):
        self.fingerprint = fingerprint
        self.timer: Optional[IDelayedCall] = None


class ResumeRegistry(service.Service):
    name = "resumes"  # type: ignore[assignment]  # Twisted declares it None
    log = Logger()

    def __init__(
        self, reactor: IReactorTime, hub: GazeHub, grace_period: float = DEFAULT_GRACE_PERIOD
    ):
        self._reactor = reactor
        self._hub = hub
        self.grace_period = grace_period
        self._pending: Dict[Fingerprint, List[_Pending]] = {}

    @property
    def held(self) -> int:
        """Streams kept for dropped connections."""
        return sum(len(waiting) for waiting in self._pending.values())

    def dropped(self, fingerprint: Fingerprint) -> None:
        """A tracking connection dropped (no closing handshake): keep its stream."""
        if self.grace_period <= 0:
            return
        pending = _Pending(fingerprint)
        pending.timer = self._reactor.callLater(self.grace_period, self._expire, pending)
        self._pending.setdefault(fingerprint, []).append(pending)
        self._hub.hold(pending).addErrback(self._failed, "keeping the stream")
        self.log.info(
            "tracking client {who} dropped; keeping its stream for {grace:g} s",
            who=fingerprint.describe(),
            grace=self.grace_period,
        )

    def claim(self, fingerprint: Fingerprint) -> bool:
        """
        A connection opened: if exactly one dropped connection with this
        fingerprint is waiting, end its wait and return True (the caller
        subscribes).  With two or more, it could be either: return False.
        """
        waiting = self._pending.get(fingerprint)
        if not waiting:
            return False
        if len(waiting) > 1:
            self.log.info(
                "{n} dropped tracking clients look like {who}; resuming none of them",
                n=len(waiting),
                who=fingerprint.describe(),
            )
            return False
        pending = waiting.pop()
        del self._pending[fingerprint]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        # Release after the claimant has subscribed, so the stream never stops.
        self._reactor.callLater(0, self._release, pending)
        return True

    def _release(self, pending: _Pending) -> None:
        self._hub.release(pending).addErrback(self._failed, "releasing a kept stream")

    def _failed(self, failure: Any, doing: str) -> None:
        if failure.check(TrackerError):
            self.log.warn("{doing} for a dropped client: {error}", doing=doing, error=failure.value)
        else:
            self.log.failure("{doing} for a dropped client", failure, doing=doing)

    def _expire(self, pending: _Pending) -> None:
        waiting = self._pending.get(pending.fingerprint, [])
        if pending in waiting:
            waiting.remove(pending)
            if not waiting:
                del self._pending[pending.fingerprint]
        self.log.info("tracking client {who} did not come back", who=pending.fingerprint.describe())
        self._release(pending)

    def stopService(self):
        super().stopService()
        self.cancel_all()

    def cancel_all(self) -> None:
        for waiting in self._pending.values():
            for pending in waiting:
                if pending.timer is not None and pending.timer.active():
                    pending.timer.cancel()
        self._pending.clear()
