# -*- test-case-name: tests.test_mock,tests.test_replay -*-
"""
L{PacedStream}: what the trackers that make their own samples on the reactor
(the mock, the replay) share: a timer that delivers the samples due every
few milliseconds, like an SDK stream, and the receivers it delivers to.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from twisted.internet import defer

from jspsych_tobii.interfaces import TrackerNotification

#: Largest interval between deliveries of gaze batches, seconds.
DELIVERY_INTERVAL = 0.002


class PacedStream:
    """
    A subclass sets C{self._reactor}, defines C{_deliver()} (called by the
    timer; it calls C{_schedule()} again while the stream runs) and may
    override C{_delivery_interval()}.
    """

    _reactor: Any
    _timer: Any = None
    _receiver: Optional[Callable[[np.ndarray], Any]] = None
    _notify: Optional[Callable[[TrackerNotification], Any]] = None

    def _delivery_interval(self) -> float:
        return DELIVERY_INTERVAL

    def _deliver(self) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _schedule(self) -> None:
        self._timer = self._reactor.callLater(self._delivery_interval(), self._deliver)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def stopGaze(self):
        self._stop_timer()
        self._receiver = None
        return defer.succeed(None)

    def setNotificationReceiver(self, receiver):
        self._notify = receiver
