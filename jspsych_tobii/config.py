# -*- test-case-name: tests.test_config -*-
"""
L{ServerConfig}: the one set of settings that every door (twistd, the
console script, L{jspsych_tobii.TobiiServer}) fills in, with the checks that
turn a bad value into a one-line L{ConfigError} instead of a traceback.  A
setting that the others would make the server ignore (C{--speed} without
C{--replay}, C{--tracker} with C{--mock}, ...) is refused the same way:
no option parses and then does nothing.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Iterable, Optional

from jspsych_tobii.core.access import OriginPolicy, check_token

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_MOCK_RATE = 2000.0
#: How the mock hands samples to the server (see L{jspsych_tobii.trackers.paced}).
MOCK_DELIVERIES = ("per-sample", "batched")


class ConfigError(ValueError):
    """A setting is invalid; the message says which and why."""


@dataclass
class ServerConfig:
    """
    @ivar host: interface to listen on when C{port} is a number.
    @ivar port: a port number, or any Twisted server endpoint string
        (C{tcp:8080:interface=0.0.0.0}, C{systemd:domain=INET:name=web}, ...).
    @ivar tracker: address of the eye tracker; None finds the first one.
    @ivar buffer_size: gaze records kept in memory.
    @ivar mock: use the built-in mock tracker instead of a real one.
    @ivar mock_rate: the mock's sample rate (Hz).
    @ivar mock_offset_deg: the mock's systematic gaze error (degrees), a
        known truth for validation.
    @ivar mock_noise_deg: the mock's angular noise (degrees RMS from the
        mean direction).
    @ivar mock_delivery: how the mock's samples reach the server:
        C{per-sample} (each when due, from a pacing thread, like a tracker
        SDK) or C{batched} (a reactor timer every 2 ms).
    @ivar validation_skip_ms: how much of the start of each validation
        point's window is skipped as the saccade to the target.
    @ivar validation_window_ms: when > 0, only the last this many ms of each
        validation point are used (Titta: 500 in MATLAB, 300 in Python);
        0 uses everything after the skip.
    @ivar frequency: gaze output frequency to set on the tracker (Hz).
    @ivar reconnect_grace: seconds a dropped tracking client's stream is
        kept for it to reconnect.
    @ivar record_dir: write every tracking session to a file in this folder.
    @ivar replay: play this recording back as the tracker.
    @ivar replay_speed: replay speed factor (2 = twice as fast).
    @ivar replay_loop: start the replay over when it ends.
    @ivar sdk_python: run the Tobii SDK in a child process with this Python.
    @ivar lsl: publish gaze and events as Lab Streaming Layer streams.
    @ivar allowed_origins: comma-separated web origins (wildcards allowed,
        e.g. C{http://localhost:*}) whose pages may connect; C{null} admits
        pages opened from disk; C{local} (the default) stands for the pages
        of this machine and from disk; C{*} admits every page.
    @ivar token: a shared secret every connection must present in its URL
        (C{ws://host:port/?token=...}); None admits connections without one.
    @ivar token_file: read the token from this file instead (first line).
    @ivar ping_interval: seconds between keepalive pings to each client (0:
        no pings).
    @ivar ping_timeout: seconds a client has to answer a ping before it is
        dropped (0: never dropped for that).
    @ivar secret: the token in force (from C{token} or C{token_file}), after
        L{validate}.
    @ivar serve: serve the files of this folder at C{/experiment/}.
    """

    host: str = "localhost"
    port: str = "8080"
    tracker: Optional[str] = None
    buffer_size: int = 10000
    log_level: str = "INFO"
    log_file: Optional[str] = None
    mock: bool = False
    mock_rate: float = 120.0
    mock_seed: int = 0
    mock_offset_deg: float = 0.0
    mock_noise_deg: float = 0.02
    mock_delivery: str = "per-sample"
    validation_skip_ms: float = 300.0
    validation_window_ms: float = 0.0
    frequency: Optional[float] = None
    reconnect_grace: float = 30.0
    retry_interval: float = 5.0
    record_dir: Optional[str] = None
    replay: Optional[str] = None
    replay_speed: float = 1.0
    replay_loop: bool = False
    sdk_python: Optional[str] = None
    allowed_origins: str = "local"
    token: Optional[str] = field(default=None, repr=False)
    token_file: Optional[str] = None
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    lsl: bool = False
    serve: Optional[str] = None

    def __post_init__(self) -> None:
        self.port = str(self.port)
        self.validate()

    def validate(self) -> "ServerConfig":
        if not isinstance(self.host, str) or not self.host or re.search(r"[\s=]", self.host):
            raise ConfigError(f"--host: not a host name or address: {self.host!r}")
        if self.port.isdigit():
            if not 0 <= int(self.port) <= 65535:
                raise ConfigError(f"--port: {self.port} is not a port number (0-65535)")
        elif ":" not in self.port:
            raise ConfigError(
                f"--port: expected a number or an endpoint such as "
                f"'tcp:8080:interface=0.0.0.0', got {self.port!r}"
            )
        self.buffer_size = _int("--buffer-size", self.buffer_size, 1, 100_000_000)
        level = str(self.log_level).upper()
        if level == "WARN":
            level = "WARNING"
        if level not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level: expected one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        self.log_level = level
        self.mock_rate = _number("--mock-rate", self.mock_rate, 1.0, MAX_MOCK_RATE)
        self.mock_offset_deg = _number("--mock-offset-deg", self.mock_offset_deg, -10.0, 10.0)
        self.mock_noise_deg = _number("--mock-noise-deg", self.mock_noise_deg, 0.0, 5.0)
        if self.mock_delivery not in MOCK_DELIVERIES:
            raise ConfigError(
                f"--mock-delivery: expected one of {', '.join(MOCK_DELIVERIES)}, "
                f"got {self.mock_delivery!r}"
            )
        self.validation_skip_ms = _number(
            "--validation-skip-ms", self.validation_skip_ms, 0.0, 10000.0
        )
        self.validation_window_ms = _number(
            "--validation-window-ms", self.validation_window_ms, 0.0, 60000.0
        )
        if self.frequency is not None:
            self.frequency = _number("--frequency", self.frequency, 1.0, 10000.0)
        self.reconnect_grace = _number("--reconnect-grace", self.reconnect_grace, 0.0, 86400.0)
        self.retry_interval = _number("--retry-interval", self.retry_interval, 0.1, 3600.0)
        if self.tracker is not None and not str(self.tracker).strip():
            raise ConfigError("--tracker: the address is empty")
        self.replay_speed = _number("--speed", self.replay_speed, 0.01, 1000.0)
        if self.replay is not None:
            if self.mock:
                raise ConfigError("--replay: cannot be combined with --mock")
            if self.tracker is not None:
                raise ConfigError("--replay: cannot be combined with --tracker")
            if not os.path.isfile(self.replay):
                raise ConfigError(f"--replay: no such file: {self.replay}")
        if self.sdk_python is not None:
            path = os.path.expanduser(str(self.sdk_python).strip())
            if not path:
                raise ConfigError("--sdk-python: the path is empty")
            if not os.path.isfile(path):
                raise ConfigError(f"--sdk-python: no such file: {self.sdk_python}")
            if self.mock or self.replay is not None:
                raise ConfigError("--sdk-python: cannot be combined with --mock or --replay")
            # abspath, not realpath: a venv's python is a symlink that must stay one
            self.sdk_python = os.path.abspath(path)
        try:
            OriginPolicy(self.origin_patterns)
        except ValueError as e:
            raise ConfigError(f"--allowed-origins: {e}") from None
        self.secret = self._read_token()
        self.ping_interval = _number("--ping-interval", self.ping_interval, 0.0, 3600.0)
        self.ping_timeout = _number("--ping-timeout", self.ping_timeout, 0.0, 3600.0)
        if self.serve is not None:
            folder = os.path.expanduser(str(self.serve).strip())
            if not folder or not os.path.isdir(folder):
                raise ConfigError(f"--serve: no such folder: {self.serve}")
            self.serve = os.path.abspath(folder)
        if self.record_dir is not None and not str(self.record_dir).strip():
            raise ConfigError("--record-dir: the folder name is empty")
        self.refuse_ignored()
        return self

    def refuse_ignored(self, given: Optional[Iterable[str]] = None) -> None:
        """
        Refuse a setting the rest of this configuration would ignore.

        @param given: the names of the fields the user set (the command line
            knows); by default, every field that differs from its default.
        @raise ConfigError: naming the option and what it needs.
        """
        given = set(self.changed_fields() if given is None else given)
        source = "--mock" if self.mock else "--replay" if self.replay is not None else None
        rate = "use --mock-rate" if self.mock else "a replay keeps its recorded rate"
        rules = (
            ("tracker", source, f"--tracker: cannot be combined with {source}"),
            ("frequency", source, f"--frequency: cannot be combined with {source} ({rate})"),
            ("replay_speed", self.replay is None, "--speed: applies to --replay only"),
            ("replay_loop", self.replay is None, "--replay-loop: applies to --replay only"),
            ("mock_rate", not self.mock, "--mock-rate: applies to --mock only"),
            ("mock_seed", not self.mock, "--mock-seed: applies to --mock only"),
            ("mock_offset_deg", not self.mock, "--mock-offset-deg: applies to --mock only"),
            ("mock_noise_deg", not self.mock, "--mock-noise-deg: applies to --mock only"),
            ("mock_delivery", not self.mock, "--mock-delivery: applies to --mock only"),
            (
                "ping_timeout",
                self.ping_interval == 0,
                "--ping-timeout: applies only with pings (--ping-interval above 0)",
            ),
            (
                "host",
                not self.port.isdigit(),
                "--host: applies only when --port is a number; give the interface in the "
                "endpoint instead (tcp:8080:interface=HOST)",
            ),
        )
        for name, ignored, message in rules:
            if ignored and name in given:
                raise ConfigError(message)

    def changed_fields(self) -> list:
        """The names of the fields whose value is not their default."""
        return [
            f.name
            for f in fields(self)
            if f.default is not MISSING and getattr(self, f.name) != f.default
        ]

    def _read_token(self) -> Optional[str]:
        if self.token is not None and self.token_file is not None:
            raise ConfigError("--token: give --token or --token-file, not both")
        if self.token is not None:
            option, token = "--token", str(self.token)
        elif self.token_file is not None:
            option = "--token-file"
            try:
                with open(os.path.expanduser(str(self.token_file)), encoding="utf-8") as f:
                    token = f.readline(4096).strip()
            except OSError as e:
                raise ConfigError(
                    f"--token-file: cannot read {self.token_file}: {e.strerror or 'error'}"
                ) from None
            except UnicodeDecodeError:
                raise ConfigError(f"--token-file: {self.token_file} is not a text file") from None
        else:
            return None
        try:
            return check_token(option, token)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @property
    def origin_patterns(self) -> list:
        """The allowed origins, one pattern each."""
        return [o.strip() for o in str(self.allowed_origins).split(",") if o.strip()]

    @property
    def endpoint(self) -> str:
        """The Twisted server endpoint description to listen on."""
        if self.port.isdigit():
            host = self.host.replace(":", "\\:")
            return f"tcp:{self.port}:interface={host}"
        return self.port


def _number(option: str, value, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ConfigError(f"{option}: must be between {low:g} and {high:g}, got {value!r}")
    return number


def _int(option: str, value, low: int, high: int) -> int:
    try:
        number = int(str(value), 10)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{option}: must be between {low} and {high}, got {value!r}")
    return number
