# -*- test-case-name: tests.test_cli -*-
"""
C{jspsych-tobii-server}: run the server in the foreground without twistd.

It parses the same L{Options} as the twistd plugin, builds the same service
with L{makeService}, and runs the reactor until Ctrl-C or SIGTERM, after
which the service stops cleanly.  Bad options and start-up failures (a port
already in use, say) print one line and exit non-zero.  Output cut short by
its reader (C{jspsych-tobii-server --help | head -1}) ends quietly.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from twisted.python import usage


def main(argv: Optional[List[str]] = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # --help, --version and --list-trackers exit with their text still buffered
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our output went away: say nothing more, and point
        # stdout at /dev/null so that the interpreter's own flush at exit
        # does not print a traceback either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


def _main(argv: Optional[List[str]]) -> int:
    from jspsych_tobii.tap import Options

    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"jspsych-tobii-server: {e}", file=sys.stderr)
        print("Try 'jspsych-tobii-server --help' for the options.", file=sys.stderr)
        return 2
    return run(options)


def run(options) -> int:
    from twisted.internet import reactor

    from jspsych_tobii import logs
    from jspsych_tobii.tap import makeService

    config = options.config
    try:
        logs.start_logging(config.log_level, config.log_file)
    except OSError as e:
        print(f"jspsych-tobii-server: --log-file: {e}", file=sys.stderr)
        return 2
    try:
        top = makeService(config, reactor)
        top.startService()
    except Exception as e:
        print(f"jspsych-tobii-server: cannot start: {e}", file=sys.stderr)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
