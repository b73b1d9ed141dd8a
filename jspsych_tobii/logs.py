# -*- test-case-name: tests.test_logs -*-
"""
Logging: every module logs through L{Logger} (a C{twisted.logger.Logger}
whose events pass a level filter before reaching the global publisher), so
C{--log-level} applies to this server's messages whichever door started it.
L{start_logging} is for the console script; under twistd, twistd owns the
log destination and C{--log-file} adds a file beside it; in an asyncio
program (L{jspsych_tobii.TobiiServer}) L{to_stdlib} passes the log to the
standard library's C{logging}, under the C{jspsych_tobii} logger.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Callable, Dict, List, Optional

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    STDLibLogObserver,
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.logger import Logger as _TwistedLogger
from zope.interface import implementer

_LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])
_files: List[IO[str]] = []


def Logger(namespace: Optional[str] = None) -> _TwistedLogger:
    """
    A logger for a class or module of this package.  Used as a class
    attribute, it is named after the class; at module level, after the
    calling module.
    """
    if namespace is None:
        namespace = sys._getframe(1).f_globals.get("__name__", "jspsych_tobii")
    return _TwistedLogger(namespace, observer=_observer)


def enabled(level: Any, namespace: str) -> bool:  # level: a LogLevel constant
    """
    Whether an event of C{level} in C{namespace} would be shown: a caller
    whose event is costly to build (its arguments redacted, say) asks first.
    """
    return bool(level >= _predicate.logLevelForNamespace(namespace))


def set_level(name: str) -> None:
    """Show this package's messages at C{name} (DEBUG/INFO/WARNING/ERROR) and above."""
    level = _LEVELS[name.upper()]
    _predicate.setLogLevelForNamespace("", level)
    try:
        import txaio

        # txaio sets its functions when a framework is chosen: mypy cannot see them
        txaio.set_global_log_level(  # type: ignore[attr-defined]
            {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}[name.upper()]
        )
    except RuntimeError:  # pragma: no cover - txaio without a framework chosen
        pass


def add_log_file(path: str) -> Callable[[], None]:
    """
    Also write every log event to C{path} (appending).

    @return: what stops writing there and closes the file.
    """
    stream = open(path, "a", encoding="utf-8")
    _files.append(stream)
    observer = textFileLogObserver(stream)
    globalLogPublisher.addObserver(observer)

    def remove() -> None:
        globalLogPublisher.removeObserver(observer)
        if stream in _files:
            _files.remove(stream)
        stream.close()

    return remove


#: The C{logging} logger that Twisted's and Autobahn's own messages go to.
OTHERS = "jspsych_tobii.twisted"


@implementer(ILogObserver)
class _StdlibBridge:
    """The observer that L{to_stdlib} adds once, however many servers ask."""

    def __init__(self, publisher: LogPublisher) -> None:
        self.publisher = publisher
        self.users = 0
        self.observers: Dict[str, ILogObserver] = {}

    def __call__(self, event: LogEvent) -> None:
        namespace = event.get("log_namespace") or ""
        own = namespace == "jspsych_tobii" or namespace.startswith("jspsych_tobii.")
        name = namespace if own else OTHERS
        observer = self.observers.get(name)
        if observer is None:
            observer = self.observers[name] = STDLibLogObserver(name)
        observer(event)

    def add_user(self) -> Callable[[], None]:
        self.users += 1
        if self.users == 1:
            self.publisher.addObserver(self)
        done: List[bool] = []

        def remove() -> None:
            if done:
                return
            done.append(True)
            self.users -= 1
            if self.users == 0:
                self.publisher.removeObserver(self)

        return remove


_bridge = _StdlibBridge(globalLogPublisher)


def to_stdlib() -> Callable[[], None]:
    """
    Pass every log event to the standard library's C{logging}: this
    package's under their own names (C{jspsych_tobii.server.protocol...}),
    the rest (Twisted's, Autobahn's: the listening port, unhandled errors)
    under L{OTHERS}; so all of it is under the C{jspsych_tobii} logger.
    Levels map to C{logging}'s, failures come with their traceback.  Where
    the messages go (and from which level) is the program's C{logging}
    configuration, as for any library.  Callers share one bridge, so each
    event is passed once however many servers run.

    @return: what stops passing them (once every caller has called its own).
    """
    return _bridge.add_user()


def start_logging(
    level: str = "INFO", path: Optional[str] = None, stream: IO[str] = sys.stdout
) -> None:
    """Begin logging for a process that is not run by twistd."""
    set_level(level)
    observers: List[ILogObserver] = [textFileLogObserver(stream)]
    if path:
        observers.append(textFileLogObserver(open(path, "a", encoding="utf-8")))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
