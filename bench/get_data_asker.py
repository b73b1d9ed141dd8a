"""
Run by bench_get_data.py in its own process: connect with a minimal stdlib
WebSocket client, ask for the whole session, read the reply, print its size
and the monotonic times (ms) when asked and when the reply was complete.

    python bench/get_data_asker.py PORT
"""

import json
import os
import socket
import sys
import time


def main(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += s.recv(4096)
    rest = response.split(b"\r\n\r\n", 1)[1]
    payload = b'{"type":"get_data","requestId":"all"}'
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    asked = time.monotonic_ns() / 1e6
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    buffer = bytearray(rest)

    def need(n):
        while len(buffer) < n:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise EOFError
            buffer.extend(chunk)

    message = bytearray()
    while True:
        need(2)
        fin = buffer[0] & 0x80
        length = buffer[1] & 0x7F
        start = 2
        if length == 126:
            need(4)
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            need(10)
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        need(start + length)
        message.extend(buffer[start : start + length])  # fragments join into one message
        del buffer[: start + length]
        if not fin:
            continue
        message = bytes(message)
        if b'"requestId":"all"' not in message[:200]:
            message = bytearray()  # a gaze frame or another reply
            continue
        else:
            done = time.monotonic_ns() / 1e6
            # no json.loads of 10 MB here: it would compete for the CPU with
            # the server and the watcher being measured
            tail = message[-200:]
            i = tail.rindex(b'"count":') + 8
            count = int(tail[i : tail.index(b",", i)])
            print(json.dumps({"asked": asked, "done": done, "bytes": len(message), "count": count}))
            return


if __name__ == "__main__":
    main(int(sys.argv[1]))
