# -*- test-case-name: tests.test_listening -*-
"""
L{ListeningService}: the server's listening port, as a service that keeps
the L{IListeningPort} its endpoint gives (L{ListeningService.port}), so the
address actually bound (e.g. with port 0) can be read without reaching into
Twisted's private attributes.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure

from jspsych_tobii.logs import Logger


class ListeningService(service.Service):
    """
    Listen on C{endpoint} with C{factory} while running.  A port that cannot
    be listened on fails start-up at once (as C{strports.service} does), so
    C{twistd} and the console script stop with the error.

    @ivar port: the L{IListeningPort} while listening, else None.
    """

    log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory):
        self.endpoint = endpoint
        self.factory = factory
        self.port: Optional[IListeningPort] = None
        self._listening: Optional[defer.Deferred] = None

    def privilegedStartService(self) -> None:
        # before twistd drops privileges: a port below 1024 can be bound
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        failures: List[Failure] = []
        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(self._listened, failures.append)
        if failures:  # endpoints listen at once: stop start-up here
            self._listening = None
            failures[0].raiseException()

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def stopService(self) -> Any:
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        if listening is not None:
            listening.cancel()
        return None
