# -*- test-case-name: tests.test_sdk_setup -*-
"""
C{jspsych-tobii-sdk-setup}: make a Python for the SDK process.

    jspsych-tobii-sdk-setup --python "$(uv python find 3.10)"
    jspsych-tobii-sdk-setup --python C:\\Python310\\python.exe --older-trackers

(the README says where to get a CPython 3.10: uv, pyenv, python.org).

It creates a virtual environment with the given interpreter, installs the
chosen tobii-research (2.x by default, 1.x with C{--older-trackers}) and what
the SDK process needs (Twisted, numpy, zope.interface), checks that the SDK
process can start there and import the SDK, and prints the C{--sdk-python}
to start the server with.  The environment needs no copy of jspsych-tobii:
the server hands its own package to the SDK process.  Failures are one line
on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Callable, List, Optional, Sequence

__all__ = ["main", "setup_sdk", "check_interpreter", "requirement", "SetupError"]

#: What the SDK process imports besides the SDK (as in setup.cfg).
CHILD_REQUIREMENTS = ("twisted>=22.10", "numpy>=1.23", "zope.interface>=5")
CURRENT = "tobii-research>=2"
OLDER = "tobii-research<2"
#: The SDK's wheels on PyPI are for these Pythons (2.x: 3.10; 1.10.2/1.11: 3.10).
WHEEL_PYTHONS = ("3.10",)

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class SetupError(Exception):
    """Setting up failed; the message is one line for the user."""


def requirement(version: Optional[str], older: bool = False) -> str:
    """
    The pip requirement for tobii-research: C{--sdk-version} given as a
    version (C{2.1.0}), a specifier (C{>=2}, C{<2}) or a whole requirement
    (C{tobii-research==1.11.0}).

    @raise SetupError: it names another package or is not a version.
    """
    if version is None:
        return OLDER if older else CURRENT
    value = version.strip()
    if re.fullmatch(r"[0-9][0-9A-Za-z.*+!-]*", value):
        return f"tobii-research=={value}"
    if re.fullmatch(r"(==|!=|<=|>=|<|>|~=)\s*[0-9][0-9A-Za-z.*+!-]*(\s*,.*)?", value):
        return f"tobii-research{value}"
    match = re.fullmatch(r"tobii[-_]research\s*(\S.*)?", value, re.IGNORECASE)
    if match:
        return "tobii-research" + (match.group(1) or "")
    raise SetupError(
        f"--sdk-version: expected a version such as 2.1.0, or a requirement such as "
        f"tobii-research==1.11.0, got {version!r}"
    )


def default_venv(older: bool) -> str:
    name = "sdk-venv-1x" if older else "sdk-venv"
    return os.path.join(os.path.expanduser("~"), ".jspsych-tobii", name)


def venv_python(venv: str) -> str:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return os.path.join(venv, "Scripts", "python.exe")
    return os.path.join(venv, "bin", "python")


def _run(args: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _call(run: Runner, args: Sequence[str], what: str) -> "subprocess.CompletedProcess[str]":
    try:
        result = run(args)
    except OSError as e:
        raise SetupError(f"{what}: cannot run {args[0]}: {e.strerror or e}") from None
    if result.returncode != 0:
        detail = _last_line(result.stderr) or _last_line(result.stdout)
        raise SetupError(
            f"{what} failed (status {result.returncode})" + (f": {detail}" if detail else "")
        )
    return result


def python_version(python: str, run: Runner = _run) -> str:
    """The version of the interpreter at C{python}, as C{3.10.13}."""
    if not os.path.isfile(python):
        raise SetupError(f"--python: no such file: {python}")
    code = "import platform; print(platform.python_version())"
    result = _call(run, [python, "-I", "-c", code], f"running {python}")
    version = _last_line(result.stdout)
    if not re.fullmatch(r"\d+\.\d+\.\d+\S*", version):
        raise SetupError(f"--python: {python} does not look like a Python interpreter")
    return version


def check_interpreter(
    python: str,
    sdk_module: Optional[str] = None,
    python_path: Sequence[str] = (),
    run: Runner = _run,
) -> dict:
    """
    Start the SDK process's own check in C{python}: it loads this package as
    the server will, imports Twisted, numpy and the SDK, and reports.

    @return: the report (C{python}, C{sdk}, C{twisted}, C{numpy}, ...).
    @raise SetupError: the SDK process cannot start there, or the SDK does not load.
    """
    from jspsych_tobii.trackers.child.launch import child_command

    args = child_command(python, sdk_module, python_path) + ["--check"]
    try:
        result = run(args)
    except OSError as e:
        raise SetupError(f"cannot run {python}: {e.strerror or e}") from None
    try:
        report = json.loads(_last_line(result.stdout))
    except ValueError:
        detail = _last_line(result.stderr)
        if detail.startswith("error "):
            detail = detail[len("error ") :]
        raise SetupError(
            f"the SDK process cannot start in {python}" + (f": {detail}" if detail else "")
        ) from None
    if result.returncode != 0 or report.get("sdkError"):
        raise SetupError(report.get("sdkError") or f"the check failed in {python}")
    return report


def setup_sdk(
    python: str,
    requirement: str = CURRENT,
    venv: Optional[str] = None,
    pip_args: Sequence[str] = (),
    run: Runner = _run,
    say: Callable[[str], object] = print,
) -> str:
    """
    Create (or update) the venv and install the SDK in it.

    @return: the venv's Python, for C{--sdk-python}.
    @raise SetupError: any step failed.
    """
    python = os.path.abspath(os.path.expanduser(python))
    version = python_version(python, run)
    major_minor = tuple(int(part) for part in version.split(".")[:2])
    if major_minor < (3, 10):
        raise SetupError(
            f"{python} is Python {version}; the SDK process needs Python 3.10 "
            f"(tobii-research publishes wheels for CPython {', '.join(WHEEL_PYTHONS)})"
        )
    short = ".".join(str(part) for part in major_minor)
    if short not in WHEEL_PYTHONS:
        say(
            f"note: tobii-research publishes wheels for CPython {', '.join(WHEEL_PYTHONS)} "
            f"only; pip may find none for Python {version}"
        )
    venv = os.path.abspath(os.path.expanduser(venv or default_venv(requirement == OLDER)))
    target = venv_python(venv)
    if os.path.isfile(target):
        say(f"updating the environment {venv}")
    else:
        say(f"creating an environment for the SDK with Python {version}: {venv}")
        _call(run, [python, "-m", "venv", venv], "creating the environment")
    say(f"installing {requirement} and {', '.join(CHILD_REQUIREMENTS)}")
    try:
        _call(
            run,
            [target, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
            + list(pip_args)
            + [requirement, *CHILD_REQUIREMENTS],
            f"installing {requirement} for Python {version}",
        )
    except SetupError as e:
        if short not in WHEEL_PYTHONS:
            raise SetupError(f"{e} (use a CPython 3.10)") from None
        raise
    report = check_interpreter(target, run=run)
    say(
        f"the SDK process starts: Python {report.get('python')}, "
        f"tobii-research {report.get('sdk')}, Twisted {report.get('twisted')}, "
        f"numpy {report.get('numpy')}"
    )
    return target


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="jspsych-tobii-sdk-setup",
        description=(
            "Create a Python environment for the Tobii SDK process of jspsych-tobii and "
            "print the --sdk-python to start the server with."
        ),
    )
    parser.add_argument(
        "--python",
        required=True,
        help="the interpreter to build it on: a CPython 3.10 (tobii-research has wheels "
        "for 3.10 only; get one with 'uv python install 3.10', 'pyenv install 3.10' or "
        "python.org's installer)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--sdk-version",
        help="the tobii-research to install: a version (2.1.0), a specifier (>=2) or a "
        f"requirement (tobii-research==1.11.0); default {CURRENT}",
    )
    which.add_argument(
        "--older-trackers",
        action="store_true",
        help=f"install {OLDER}, for discontinued trackers (TX300, X2, X3, T60/T120...) "
        "that tobii-research 2.x dropped",
    )
    parser.add_argument(
        "--venv",
        help="where to create the environment (default ~/.jspsych-tobii/sdk-venv, or "
        "sdk-venv-1x with --older-trackers)",
    )
    parser.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for pip install, e.g. --pip-arg=--index-url=URL (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None, run: Runner = _run) -> int:
    args = _parse(argv)
    try:
        wanted = requirement(args.sdk_version, args.older_trackers)
        python = setup_sdk(
            args.python,
            wanted,
            venv=args.venv,
            pip_args=args.pip_arg,
            run=run,
            say=lambda text: print(text, file=sys.stderr),
        )
    except SetupError as e:
        print(f"jspsych-tobii-sdk-setup: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jspsych-tobii-sdk-setup: interrupted", file=sys.stderr)
        return 130
    print(f'--sdk-python "{python}"' if " " in python else f"--sdk-python {python}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
