# -*- test-case-name: tests.test_embed -*-
"""
L{TobiiServer}: the server for Python programs that use asyncio.

C{await TobiiServer(config).start()} installs Twisted's asyncio reactor on
the running event loop (unless it is installed already), builds the service
with L{jspsych_tobii.tap.makeService}, and serves until L{TobiiServer.stop}
is called or the task is cancelled; either way the service is stopped
cleanly (gaze stream released, tracker disconnected, port closed).
"""

from __future__ import annotations

import asyncio
from typing import Optional

from jspsych_tobii.config import ServerConfig


class TobiiServer:
    def __init__(self, config: Optional[ServerConfig] = None, **settings):
        self.config = config if config is not None else ServerConfig(**settings)
        self.service = None
        self._stop: Optional[asyncio.Event] = None
        self.started: Optional[asyncio.Event] = None

    @property
    def port(self) -> Optional[int]:
        """The TCP port listened on, once started."""
        if self.service is None:
            return None
        listening = self.service.getServiceNamed("websocket")._waitingForPort
        port = getattr(listening, "result", None)
        address = getattr(port, "getHost", lambda: None)()
        return getattr(address, "port", None)

    async def start(self) -> None:
        """Serve until L{stop} (or cancellation)."""
        loop = asyncio.get_running_loop()
        reactor = _asyncio_reactor(loop)
        from jspsych_tobii import logs
        from jspsych_tobii.tap import makeService

        self._stop = asyncio.Event()
        self.started = self.started or asyncio.Event()
        if not reactor.running:
            reactor.startRunning(installSignalHandlers=False)
        logs.set_level(self.config.log_level)
        if self.config.log_file:
            logs.add_log_file(self.config.log_file)
        self.service = makeService(self.config, reactor)
        self.service.startService()
        self.started.set()
        try:
            await self._stop.wait()
        finally:
            await self.service.stopService().asFuture(loop)

    def stop(self) -> None:
        """Ask a running L{start} to finish."""
        if self._stop is not None:
            self._stop.set()


def _asyncio_reactor(loop: asyncio.AbstractEventLoop):
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise RuntimeError(
            "TobiiServer.start() needs Twisted's asyncio reactor, but another reactor "
            f"({type(reactor).__name__}) is already installed; run the server with "
            "jspsych-tobii-server or twistd instead"
        )
    if reactor._asyncioEventloop is not loop:
        raise RuntimeError("Twisted's asyncio reactor is bound to another event loop")
    return reactor
