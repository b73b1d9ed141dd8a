"""
Tests that README.md works as written: every Python snippet runs, the
C{gaze_data} frame it shows is the one the server sends, and its systemd
units serve with C{systemd-socket-activate} (from Debian's C{systemd}
package; missing, the test is skipped with that reason, except under CI,
where it fails).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

from twisted.trial import unittest

from jspsych_tobii.recording.format import write_recording

from .rawws import handshake, read_json, send_json
from .test_cli import ENV, TWISTD_ENV, free_port, make_temp_dir, start_cli, wait_listening
from .test_recording import synthetic_samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


def readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def blocks(language: str) -> list:
    """The fenced code blocks of README.md in C{language}, in order (list items' too)."""
    found = re.findall(rf"^([ \t]*)```{language}\n(.*?)^\1```", readme(), re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(text) for _, text in found]


def request(host: str, port: int, message: dict, timeout: float = 20.0):
    """Send C{message}; return its reply and the client's own address."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        handshake(sock, host, port)
        send_json(sock, message)
        return read_json(sock), sock.getsockname()


def start_tracking(sock: socket.socket, port: int, until) -> dict:
    """Handshake on C{sock} and start tracking; the first frame C{until(frame)} is true of."""
    handshake(sock, "127.0.0.1", port)
    send_json(sock, {"type": "start_tracking", "requestId": "t"})
    frame = read_json(sock)
    while not until(frame):
        frame = read_json(sock)
    return frame


# -- the Python snippets


#: What tells each snippet apart, and the test that runs it.
SNIPPETS = {
    "asyncio.run(": "test_asyncio_snippet",
    "np.fromfile(": "test_numpy_snippet",
    "pd.read_parquet(": "test_parquet_snippet",
    "pylsl.StreamInlet(": "test_lsl_snippet",
}


def snippet(marker: str) -> str:
    (found,) = [block for block in blocks("python") if marker in block]
    return found


#: liblsl's configuration for the LSL snippet: this machine only, and a
#: session of its own, so the snippet finds this test's server and no other.
LSL_CONFIG = """\
[multicast]
ResolveScope = machine
[lab]
SessionID = {session}
[log]
level = -3
"""


class PythonSnippetTests(unittest.TestCase):
    """Every ```python block of the README runs as written."""

    def test_found(self):
        """Each snippet is one this class knows how to run."""
        for block in blocks("python"):
            markers = [marker for marker in SNIPPETS if marker in block]
            self.assertEqual(len(markers), 1, f"a new snippet needs a test here:\n{block}")
        for marker in SNIPPETS:
            snippet(marker)

    def run_python(self, code: str, cwd: str, env=None):
        path = os.path.join(cwd, "snippet.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        return subprocess.Popen(
            [sys.executable, path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=dict(env or ENV, PYTHONPATH=ROOT),
        )

    def finish(self, child, timeout=60):
        stdout, stderr = child.communicate(timeout=timeout)
        self.assertEqual(child.returncode, 0, stderr)
        return stdout

    def test_asyncio_snippet(self):
        """
        The embedding snippet serves (on a free port instead of 8080), logs
        through C{logging}, and Ctrl-C ends it: status 0, no traceback.
        """
        code = snippet("asyncio.run(")
        self.assertIn("port=8080", code)
        port = free_port()
        # as a terminal starts it: Ctrl-C raises KeyboardInterrupt (a shell may
        # start background jobs with SIGINT ignored)
        prelude = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        code = prelude + code.replace("port=8080", f"port={port}")
        child = self.run_python(code, make_temp_dir(self))
        self.addCleanup(lambda: child.poll() is None and child.kill())
        wait_listening(port, child)
        reply, _ = request("127.0.0.1", port, {"type": "get_status", "requestId": "r"})
        self.assertIs(reply["trackerConnected"], True)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=30)
        self.assertEqual(child.returncode, 0, stderr)
        self.assertNotIn("Traceback", stderr)
        self.assertIn("WARNING:jspsych_tobii.tap:using the MOCK tracker", stderr)
        self.assertIn(
            "INFO:jspsych_tobii.server.service.TrackerService:eye tracker released", stderr
        )

    def recording(self, cwd: str, relative: str = "DIR/20261124T081500.123Z-s1.gaze"):
        """A recording at C{relative} in C{cwd}, where the README's commands look."""
        path = os.path.join(cwd, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        samples = synthetic_samples(500)
        write_recording(path, samples)
        return path, samples

    def test_numpy_snippet(self):
        """The numpy snippet reads a recording (made here, where the snippet looks)."""
        code = snippet("np.fromfile(")
        (relative,) = re.findall(r'np\.fromfile\("([^"]+)"', code)
        cwd = make_temp_dir(self)
        _, samples = self.recording(cwd, relative)
        check = "\nprint(len(samples), samples['system_time_us'][-1], samples['left_x'][7])\n"
        stdout = self.finish(self.run_python(code + check, cwd))
        self.assertEqual(
            stdout.split(),
            ["500", str(samples["system_time_us"][-1]), str(samples["left_x"][7])],
        )

    def test_parquet_snippet(self):
        """The pandas snippet reads what jspsych-tobii-export --format parquet wrote."""
        code = snippet("pd.read_parquet(")
        (exported,) = re.findall(r'pd\.read_parquet\("([^"]+)"\)', code)
        cwd = make_temp_dir(self)
        path, samples = self.recording(cwd)
        export = subprocess.run(
            [sys.executable, "-m", "jspsych_tobii.recording.export", path]
            + ["--format", "parquet", "-o", os.path.join(cwd, exported)],
            capture_output=True,
            text=True,
            timeout=60,
            env=ENV,
        )
        self.assertEqual(export.returncode, 0, export.stderr)
        check = "\nprint(len(samples), samples['unix_time'].dt.tz)\n"
        stdout = self.finish(self.run_python(code + check, cwd))
        self.assertEqual(stdout.split(), [str(len(samples)), "UTC"])

    def test_lsl_snippet(self):
        """
        The pylsl snippet, while the server runs with --lsl and a page is
        tracking, finds the gaze stream and pulls samples from it.
        """
        import uuid

        cwd = make_temp_dir(self)
        config = os.path.join(cwd, "lsl_api.cfg")
        with open(config, "w") as f:
            f.write(LSL_CONFIG.format(session=f"jspsych-tobii-readme-{uuid.uuid4().hex}"))
        env = dict(ENV, LSLAPICFG=config)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "jspsych_tobii.cli", "--mock", "--lsl"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.addCleanup(lambda: server.poll() is None and (server.kill(), server.communicate()))
        wait_listening(port, server)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as page:
            reply = start_tracking(page, port, lambda frame: frame.get("requestId") == "t")
            self.assertIs(reply["success"], True)
            check = "\nprint(len(chunk), len(stamps), len(chunk[0]))\n"
            stdout = self.finish(self.run_python(snippet("pylsl.StreamInlet(") + check, cwd, env))
        count, stamps, channels = (int(n) for n in stdout.split())
        self.assertGreater(count, 0)
        self.assertEqual(stamps, count)
        self.assertGreater(channels, 2)


# -- the protocol summary


class GazeFrameTests(unittest.TestCase):
    def test_gaze_data_shape(self):
        """The README's C{gaze_data} frame has the envelope and the fields the server sends."""
        text = " ".join(readme().split())
        match = re.search(r'`\{"type": "gaze_data", "gaze": \{([^}]*)\}\}`', text)
        self.assertIsNotNone(match, "no gaze_data frame in README.md")
        documented = [field.strip() for field in match.group(1).split(",")]
        port = free_port()
        server = start_cli("--mock", "--host", "127.0.0.1", "--port", str(port))
        self.addCleanup(lambda: server.poll() is None and (server.kill(), server.communicate()))
        wait_listening(port, server)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            frame = start_tracking(sock, port, lambda frame: frame.get("type") == "gaze_data")
        self.assertEqual(sorted(frame), ["gaze", "type"])
        self.assertEqual(list(frame["gaze"]), documented)


# -- the systemd units


def units() -> dict:
    """The README's unit files by name, each as {(section, key): value}."""
    (text,) = [block for block in blocks("ini") if "ListenStream=" in block]
    found: dict = {}
    name = section = None
    for line in text.splitlines():
        line = line.strip()
        path = re.fullmatch(r"#\s*/etc/systemd/system/(\S+)", line)
        if path:
            name, section = path.group(1), None
            found[name] = {}
        elif line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found[name][(section, key)] = value
    return found


def listen_address(value: str):
    """C{ListenStream}'s address and port: C{127.0.0.1:8080}, C{[::1]:8080}."""
    match = re.fullmatch(r"\[([^]]+)\]:(\d+)|([0-9.]+):(\d+)", value)
    if match is None:
        raise AssertionError(f"ListenStream={value} names no address (every interface)")
    host = match.group(1) or match.group(3)
    return ipaddress.ip_address(host), int(match.group(2) or match.group(4))


class SystemdTests(unittest.TestCase):
    def setUp(self):
        self.units = units()
        self.socket = self.units["jspsych-tobii.socket"]
        self.service = self.units["jspsych-tobii.service"]

    def test_units_are_safe(self):
        """Loopback, the address family --port says, described, not root."""
        address, _ = listen_address(self.socket[("Socket", "ListenStream")])
        self.assertTrue(address.is_loopback, address)
        port = re.search(r"--port (\S+)", self.service[("Service", "ExecStart")]).group(1)
        options = dict(part.split("=", 1) for part in port.split(":")[1:])
        self.assertEqual(options["domain"], {4: "INET", 6: "INET6"}[address.version])
        self.assertEqual(options["name"], self.socket[("Socket", "FileDescriptorName")])
        for unit in (self.socket, self.service):
            self.assertTrue(unit.get(("Unit", "Description")))
        self.assertNotIn(self.service.get(("Service", "User"), "root"), ("root", "0"))

    def test_socket_activation(self):
        """
        The units as systemd runs them: the socket line's address (on a free
        port) handed to the service's command line by systemd-socket-activate.
        The server sees the client's real address.
        """
        if SOCKET_ACTIVATE is None:
            message = "systemd-socket-activate not found (Debian package systemd)"
            if os.environ.get("CI"):
                self.fail(message + ": CI must install it")
            raise unittest.SkipTest(message)
        address, _ = listen_address(self.socket[("Socket", "ListenStream")])
        host = str(address)
        port = free_port()
        listen = f"[{host}]:{port}" if address.version == 6 else f"{host}:{port}"
        fdname = self.socket[("Socket", "FileDescriptorName")]
        command = self.service[("Service", "ExecStart")].split()
        self.assertTrue(command[0].endswith("/twistd"), command)
        # twistd of this Python, finding the plugin of this checkout
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        # systemd-socket-activate hands the service only the variables named
        # with -E: PYTHONPATH for an editable install (see TWISTD_ENV)
        passed = [f"--setenv={name}" for name in ("PYTHONPATH", "PYTHONUNBUFFERED")]
        server = subprocess.Popen(
            [SOCKET_ACTIVATE, "-l", listen, f"--fdname={fdname}", *passed, *twistd]
            + command[1:]
            + ["--mock"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=make_temp_dir(self),
            env=dict(TWISTD_ENV, PYTHONUNBUFFERED="1"),
        )
        self.addCleanup(lambda: server.poll() is None and (server.kill(), server.communicate()))
        # the listening socket exists before the server: the first connection starts it
        deadline = time.monotonic() + 20
        while True:
            try:
                reply, (client_host, client_port) = request(
                    host, port, {"type": "get_status", "requestId": "s"}
                )
                break
            except ConnectionRefusedError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"not listening: {server.communicate()}") from None
                time.sleep(0.05)
        self.assertEqual(reply["requestId"], "s")
        self.assertIs(reply["trackerConnected"], True)
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
        # twistd ends by its own SIGTERM again, which systemd counts as a clean exit
        self.assertIn(server.returncode, (0, -signal.SIGTERM), output)
        self.assertIn("eye tracker released", output)
        self.assertNotIn("Traceback", output)
        tcp = "tcp4" if address.version == 4 else "tcp6"
        self.assertIn(f"client {tcp}:{client_host}:{client_port} connected", output)
        self.assertEqual(client_host, host)
