"""
Run by bench_get_data.py in its own process: the floor it measures the
server's large answers against: the least work any server can do to give
the asker the same answer.  It holds the server's reply in memory (its
exact bytes, read from REPLY_FILE, as the asker saved it), and for each
request that comes in sends it back, its requestId set to the request's,
as unmasked WebSocket fragments of L{FRAGMENT} bytes, about the size of
the server's (one per 2000 samples), so that the asker reads the same
frames from both: all at once, with one C{sendmsg} call; or, if the
request says C{spread_ms}, a fragment at a time, evenly over that long
(the first at once, sleeping in between).  No encoding, no reading of a
recording, no Python between the bytes and the kernel, no GIL shared with
a tracker's thread.

    python bench/bulk_floor.py REPLY_FILE

Prints the port it listens on (127.0.0.1) as one line, serves one
connection, and exits when it closes.
"""

import base64
import hashlib
import json
import socket
import sys
import time

from rawsocket import read_head

#: The WebSocket handshake's fixed GUID (RFC 6455, section 1.3).
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Bytes of the reply per fragment.
FRAGMENT = 512 * 1024


def handshake(conn):
    head, rest = read_head(conn, "client")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return bytearray(rest)


def requests(conn, buffer):
    """The text of each (small, masked) frame the client sends, until it closes."""

    def need(n):
        while len(buffer) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buffer.extend(chunk)

    while True:
        try:
            need(2)
        except EOFError:
            return
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        if length >= 126:
            raise ValueError("the asker's requests are under 126 bytes")
        need(6 + length)
        mask = buffer[2:6]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[6 : 6 + length]))
        del buffer[: 6 + length]
        if opcode == 0x8:
            return
        if opcode == 0x1:
            yield payload


def header(first, length):
    """A server frame's header: C{first} is its FIN bit and opcode."""
    if length < 126:
        return bytes([first, length])
    if length < 1 << 16:
        return bytes([first, 126]) + length.to_bytes(2, "big")
    return bytes([first, 127]) + length.to_bytes(8, "big")


def fragments(head, body):
    """
    C{head} then C{body} as text fragments of L{FRAGMENT} bytes, each a
    list of its header and its pieces (C{body}'s not copied).
    """
    view = memoryview(body)
    first = min(len(view), FRAGMENT - len(head))
    pieces = [[head, view[:first]]]
    pieces += [[view[i : i + FRAGMENT]] for i in range(first, len(view), FRAGMENT)]
    frames = []
    for number, fragment in enumerate(pieces):
        opcode = 0x1 if number == 0 else 0x0
        fin = 0x80 if number == len(pieces) - 1 else 0
        frames.append([header(fin | opcode, sum(len(p) for p in fragment))] + fragment)
    return frames


def main(path):
    with open(path, "rb") as f:
        reply = f.read()
    start = reply.index(b'"requestId":')
    end = reply.index(b",", start)
    before, after = reply[:start], reply[end:]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    buffer = handshake(conn)
    for text in requests(conn, buffer):
        request = json.loads(text)
        head = before + b'"requestId":' + json.dumps(request["requestId"]).encode()
        parts = fragments(head, after)
        spread_s = request.get("spread_ms", 0) / 1000
        if not spread_s:
            send(conn, [part for fragment in parts for part in fragment])
            continue
        started = time.monotonic()
        for number, fragment in enumerate(parts):
            send(conn, fragment)
            delay = started + spread_s * (number + 1) / len(parts) - time.monotonic()
            if delay > 0 and number < len(parts) - 1:
                time.sleep(delay)


def send(conn, parts):
    """All of C{parts}, with one C{sendmsg} call unless a signal cuts it short."""
    sent = conn.sendmsg(parts)
    for part in parts:
        if sent >= len(part):
            sent -= len(part)
        else:
            conn.sendall(memoryview(part)[sent:])
            sent = 0


if __name__ == "__main__":
    main(sys.argv[1])
