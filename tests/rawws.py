"""
A WebSocket client at the socket level, for tests that must see exactly
what the server puts on the wire: handshake responses, close frames and
their codes, and whether the connection ended with a FIN or a reset.
Blocking; run it in a thread (C{deferToThread}).
"""

import base64
import os
import socket
import struct

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake_request(port, path="/", origin=None, headers=()):
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


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
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


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
