# -*- test-case-name: tests.test_child -*-
"""
Starting the SDK's own interpreter: the command line of the child process
(a bootstrap that loads this package from the server's own directory, in
isolated mode), the one-line advice for a server whose Python has no SDK,
the listing of trackers through a child (C{--list-trackers --sdk-python}),
and how a child's exit is described.  L{jspsych_tobii.trackers.child.tracker}
runs the child; L{jspsych_tobii.sdk_setup} prepares its interpreter.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
from typing import List, Optional, Sequence

from twisted.python.failure import Failure

from jspsych_tobii.interfaces import TrackerError, TrackerInfo
from jspsych_tobii.trackers.child.wire import info_from_wire

#: Run by the child interpreter with C{-c}: check the version, load this
#: package from the directory given as the first argument, hand the rest of
#: the arguments to child_main.  Kept to syntax every Python 3 accepts.
BOOTSTRAP = """\
import sys
if sys.version_info < (3, 10):
    sys.stderr.write("error the SDK process needs Python 3.10 or later; %s is Python %s\\n"
                     % (sys.executable, sys.version.split()[0]))
    sys.exit(3)
import importlib.util, os
d = sys.argv[1]
s = importlib.util.spec_from_file_location(
    "jspsych_tobii", os.path.join(d, "__init__.py"), submodule_search_locations=[d])
m = importlib.util.module_from_spec(s)
sys.modules["jspsych_tobii"] = m
try:
    s.loader.exec_module(m)
    from jspsych_tobii.trackers.child.main import main
except ImportError as e:
    sys.stderr.write("error the SDK process cannot start in %s: %s; set it up with "
                     "jspsych-tobii-sdk-setup\\n" % (sys.executable, e))
    sys.exit(3)
sys.exit(main(sys.argv[2:]))
"""

#: Log levels the child puts at the start of each stderr line.


def sdk_unavailable_message(detail: str = "") -> str:
    """
    One line for a server started without C{--sdk-python} whose Python
    cannot import tobii_research: what to do about it.
    """
    why = f" ({detail})" if detail else ""
    return (
        f"tobii-research cannot be imported by this Python "
        f"({platform.python_version()}){why}; it publishes wheels for CPython 3.10 only. "
        f"Give the SDK a Python 3.10 of its own: run jspsych-tobii-sdk-setup --python "
        f"/path/to/python3.10 (add --older-trackers for trackers that need tobii-research "
        f"1.x) and start the server with the --sdk-python it prints, or use --mock"
    )


def package_directory() -> str:
    """The directory of the jspsych_tobii package this module belongs to."""
    here = os.path.dirname(os.path.abspath(__file__))  # jspsych_tobii/trackers/child
    return os.path.dirname(os.path.dirname(here))


def child_command(
    python: str, sdk_module: Optional[str] = None, python_path: Sequence[str] = ()
) -> List[str]:
    """The argument list that starts the SDK process with C{python}."""
    args = [python, "-I", "-u", "-c", BOOTSTRAP, package_directory()]
    for directory in python_path:
        args += ["--path", os.path.abspath(directory)]
    if sdk_module:
        args += ["--sdk", sdk_module]
    return args


def find_trackers_in(
    python: str,
    sdk_module: Optional[str] = None,
    python_path: Sequence[str] = (),
    timeout: float = 60.0,
) -> List[TrackerInfo]:
    """
    Every tracker the SDK finds, run in C{python} (C{--list-trackers} with
    C{--sdk-python}).  Blocking, like L{jspsych_tobii.trackers.tobii.find_trackers}:
    for the command line, not for the reactor thread.

    @raise TrackerError: the SDK process cannot start, or discovery failed.
    """
    python = os.path.abspath(os.path.expanduser(python))
    if not os.path.isfile(python):
        raise TrackerError(f"the SDK's Python {python} does not exist (--sdk-python)")
    args = child_command(python, sdk_module, python_path) + ["--list"]
    try:
        result = subprocess.run(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise TrackerError(f"cannot run the SDK process with {python}: {e}") from None
    lines = result.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        errors = [
            line.split(" ", 1)[-1]
            for line in result.stderr.decode("utf-8", "replace").splitlines()
            if line.strip()
        ]
        if errors:
            detail = errors[-1]
        elif result.returncode < 0:
            detail = _signal_text(-result.returncode)
        else:
            detail = f"it exited with status {result.returncode}"
        raise TrackerError(f"the SDK process failed in {python}: {detail}") from None
    if "error" in answer:
        raise TrackerError(str(answer["error"]))
    return [info_from_wire(info) for info in answer.get("trackers", ())]


def _signal_text(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    return f"was killed by signal {number} ({name})"


def describe_exit(reason: Failure) -> str:
    """'exited with status 1', 'was killed by signal 9 (SIGKILL)'..."""
    value = reason.value
    number = getattr(value, "signal", None)
    if number:
        return _signal_text(number)
    code = getattr(value, "exitCode", None)
    if code is None:
        return "ended"
    return f"exited with status {code}"
