# -*- test-case-name: tests.test_embed -*-
"""
L{TobiiServer}: the server for Python programs that use asyncio.

C{await TobiiServer(config).start()} installs Twisted's asyncio reactor on
the running event loop (unless it is installed already), builds the service
with L{jspsych_tobii.tap.makeService}, and serves until L{TobiiServer.stop}
is called, the task is cancelled, or (on the main thread) the process gets
SIGINT (Ctrl-C) or SIGTERM; every way the service is stopped cleanly (gaze
stream released, tracker disconnected, port closed) and C{start()} returns.

While it serves, the server's log goes to the standard library's
C{logging}, under the C{jspsych_tobii} logger (L{jspsych_tobii.logs.to_stdlib});
configure C{logging} to see it, e.g. C{logging.basicConfig(level=logging.INFO)}.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Optional

from jspsych_tobii.config import ServerConfig

if TYPE_CHECKING:
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    from jspsych_tobii.tap import TobiiService


class TobiiServer:
    def __init__(self, config: Optional[ServerConfig] = None, **settings: Any):
        self.config = config if config is not None else ServerConfig(**settings)
        self.service: Optional[TobiiService] = None
        self._stop: Optional[asyncio.Event] = None
        self._finished: Optional[asyncio.Future] = None
        self.started: Optional[asyncio.Event] = None

    @property
    def port(self) -> Optional[int]:
        """The TCP port listened on, once started."""
        if self.service is None:
            return None
        port = self.service.listening.port  # the IListeningPort, while listening
        address = None if port is None else port.getHost()
        return getattr(address, "port", None)  # a UNIX socket has none

    async def start(self, handle_signals: bool = True) -> None:
        """
        Serve until L{stop}, cancellation or, with C{handle_signals} on the
        main thread, SIGINT or SIGTERM.  A second Ctrl-C during the shutdown
        interrupts it as Python does by default.

        @param handle_signals: stop on SIGINT and SIGTERM (the handlers the
            program had are put back when serving ends; a signal the program
            ignores stays ignored).  Pass C{False} if the program handles
            these signals itself.
        """
        loop = asyncio.get_running_loop()
        reactor = await _asyncio_reactor(loop)
        from jspsych_tobii import logs
        from jspsych_tobii.tap import makeService

        self._stop = asyncio.Event()
        self._finished = loop.create_future()
        self.started = self.started or asyncio.Event()
        if not reactor.running:
            reactor.startRunning(installSignalHandlers=False)
        undo: List[Callable[[], None]] = [logs.to_stdlib()]
        try:
            logs.set_level(self.config.log_level)
            if self.config.log_file:
                undo.append(logs.add_log_file(self.config.log_file))
            service = self.service = makeService(self.config, reactor)
            try:
                service.startService()
            except BaseException:  # the port is taken...: what did start stops again
                await service.stopService().asFuture(loop)
                raise
            restore_signals = _stop_on_signals(loop, self.stop) if handle_signals else _nothing
            self.started.set()
            try:
                await self._stop.wait()
            finally:
                restore_signals()
                await service.stopService().asFuture(loop)
        finally:
            for step in reversed(undo):
                step()
            if not self._finished.done():
                self._finished.set_result(None)

    def stop(self) -> "Stopping":
        """
        Ask a running L{start} to finish.  The result can be awaited:
        C{await server.stop()} returns once the server has shut down.
        """
        if self._stop is not None:
            self._stop.set()
        return Stopping(self._finished)


class Stopping:
    """What L{TobiiServer.stop} returns: awaiting it waits for the shutdown."""

    def __init__(self, finished: Optional[asyncio.Future]):
        self._finished = finished

    def __await__(self) -> Generator[Any, None, None]:
        if self._finished is None:  # never started: nothing to wait for
            return _done().__await__()
        # shielded: a waiter that is cancelled does not cancel the shutdown
        return asyncio.shield(self._finished).__await__()


async def _done() -> None:
    return None


def _nothing() -> None:
    pass


def _stop_on_signals(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], Any]
) -> Callable[[], None]:
    """
    Call C{stop} on SIGINT and SIGTERM, on the main thread's loop (not on
    Windows, whose loops take no signal handlers).

    @return: what puts the program's own handlers back.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _nothing
    previous: Dict[signal.Signals, Any] = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(number)
        if before == signal.SIG_IGN:
            continue
        try:
            loop.add_signal_handler(number, stop)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        previous[number] = before

    def restore() -> None:
        for number, before in previous.items():
            loop.remove_signal_handler(number)
            if before is not None:
                signal.signal(number, before)
        previous.clear()

    return restore


#: Seconds the reactor may take to run a call on this loop before it is taken
#: to be bound to another one.
LOOP_PROBE_SECONDS = 2.0


async def _asyncio_reactor(loop: asyncio.AbstractEventLoop) -> AsyncioSelectorReactor:
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
        _installed_on.add(loop)
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise RuntimeError(
            "TobiiServer.start() needs Twisted's asyncio reactor, but another reactor "
            f"({type(reactor).__name__}) is already installed; run the server with "
            "jspsych-tobii-server or twistd instead"
        )
    if loop not in _installed_on:
        # installed elsewhere: a call through the reactor must come back on this loop
        arrived: asyncio.Future[None] = loop.create_future()

        def arrive() -> None:
            if not arrived.done():
                arrived.set_result(None)

        reactor.callFromThread(arrive)
        try:
            await asyncio.wait_for(arrived, LOOP_PROBE_SECONDS)
        except asyncio.TimeoutError:
            raise RuntimeError("Twisted's asyncio reactor is bound to another event loop") from None
        _installed_on.add(loop)
    return reactor


#: The event loops Twisted's asyncio reactor is known to run on.
_installed_on: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()
