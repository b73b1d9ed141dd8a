"""
Logging: every module logs through L{Logger} (a C{twisted.logger.Logger}
whose events pass a level filter before reaching the global publisher), so
C{--log-level} applies to this server's messages whichever door started it.
L{start_logging} is for the console script; under twistd, twistd owns the
log destination and C{--log-file} adds a file beside it.
"""

from __future__ import annotations

import sys
from typing import IO, List, Optional

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.logger import Logger as _TwistedLogger

_LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(lambda event: globalLogPublisher(event), [_predicate])
_files: List[IO] = []


def Logger(namespace: Optional[str] = None) -> _TwistedLogger:
    """
    A logger for a class or module of this package.  Used as a class
    attribute, it is named after the class; at module level, after the
    calling module.
    """
    if namespace is None:
        namespace = sys._getframe(1).f_globals.get("__name__", "jspsych_tobii")
    return _TwistedLogger(namespace, observer=_observer)


def set_level(name: str) -> None:
    """Show this package's messages at C{name} (DEBUG/INFO/WARNING/ERROR) and above."""
    level = _LEVELS[name.upper()]
    _predicate.setLogLevelForNamespace("", level)
    try:
        import txaio

        txaio.set_global_log_level(
            {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}[name.upper()]
        )
    except Exception:  # pragma: no cover - txaio without a framework chosen
        pass


def add_log_file(path: str) -> None:
    """Also write every log event to C{path} (appending)."""
    stream = open(path, "a", encoding="utf-8")
    _files.append(stream)
    globalLogPublisher.addObserver(textFileLogObserver(stream))


def start_logging(level: str = "INFO", path: Optional[str] = None, stream: IO = sys.stdout):
    """Begin logging for a process that is not run by twistd."""
    set_level(level)
    observers = [textFileLogObserver(stream)]
    if path:
        observers.append(textFileLogObserver(open(path, "a", encoding="utf-8")))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
