"""
A WebSocket client at the socket level, for tests that must see exactly
what the server puts on the wire: handshake responses, close frames and
their codes, and whether the connection ended with a FIN or a reset.
Blocking; run it in a thread (C{deferToThread}).
"""

import base64
import json
import os
import socket
import struct

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake_request(port, path="/", origin=None, headers=(), host="127.0.0.1"):
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def handshake_status(port, origin, path="/", host="127.0.0.1"):
    """
    The HTTP status of a WebSocket handshake on C{host}:C{port} from a page
    of C{origin}: 101 when admitted, 403 when refused.
    """
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(handshake_request(port, path, origin, host=host))
        return int(s.recv(4096).split(b" ", 2)[1])


# -- plain functions on a connected socket, for one request or a stream of frames


def handshake(sock: socket.socket, host: str, port: int) -> None:
    """The opening handshake on C{sock}, its response read to the end; fail unless 101."""
    sock.sendall(handshake_request(port, host=host))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed during the handshake: {response!r}")
        response += chunk
    assert b" 101 " in response.split(b"\r\n")[0], response


def send_json(sock: socket.socket, message: dict) -> None:
    payload = json.dumps(message).encode()
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError("connection closed")
        data += chunk
    return data


def read_json(sock: socket.socket) -> dict:
    """The next text frame (the server sends each message as one frame)."""
    first = read_exactly(sock, 2)
    length = first[1] & 0x7F
    if length == 126:
        length = int.from_bytes(read_exactly(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(read_exactly(sock, 8), "big")
    return json.loads(read_exactly(sock, length))


def frame(opcode, payload=b"", fin=True, mask=True, length=None):
    """One client frame; C{length} overrides the declared payload length."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if declared < 126:
        head += bytes([bit | declared])
    elif declared < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", declared)
    if not mask:
        return head + payload
    key = os.urandom(4)
    # XOR with the key repeated, as one big integer (megabytes in milliseconds)
    size = len(payload)
    keys = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(size, "big")
    return head + key + masked


class RawClient:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.port = port
        self.buffer = b""
        self.opened = False

    def close(self):
        self.sock.close()

    def handshake(self, path="/", origin=None, headers=()):
        """Send the opening handshake; return (status, headers dict) of the response."""
        self.sock.sendall(handshake_request(self.port, path, origin, headers))
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        self.opened = status == 101
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return status, fields

    def finish(self):
        """
        End the connection as a client should: after a 101 a close frame,
        then read to the end (the server closes first, so when this returns
        the server has let go of the connection).  Returns the end.
        """
        if self.opened:
            self.send(frame(8, struct.pack("!H", 1000)))
        return self.read_frames()[1]

    def send(self, data):
        self.sock.sendall(data)

    def read_frames(self):
        """
        Read server frames until the connection ends.  Returns (frames, end):
        frames as (opcode, payload) and end 'eof', 'reset' or 'timeout'.
        """
        frames = []
        end = None
        while end is None:
            while True:
                parsed = self._parse()
                if parsed is None:
                    break
                frames.append(parsed)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                end = "reset"
                break
            except socket.timeout:
                end = "timeout"
                break
            if not chunk:
                end = "eof"
                break
            self.buffer += chunk
        return frames, end

    def next_frame(self):
        """The next server frame, (opcode, payload); ConnectionError if the connection ends."""
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk

    def _parse(self):
        data = self.buffer
        if len(data) < 2:
            return None
        opcode = data[0] & 0x0F
        length = data[1] & 0x7F
        at = 2
        if length == 126:
            if len(data) < 4:
                return None
            length = struct.unpack("!H", data[2:4])[0]
            at = 4
        elif length == 127:
            if len(data) < 10:
                return None
            length = struct.unpack("!Q", data[2:10])[0]
            at = 10
        if len(data) < at + length:
            return None
        self.buffer = data[at + length :]
        return opcode, data[at : at + length]


def close_code(frames):
    """The status code of the first close frame among C{frames}, or None."""
    for opcode, payload in frames:
        if opcode == 8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    return None
