"""
Run by bench_get_data.py in its own process: connect with a minimal stdlib
WebSocket client, then for each line C{PORT START_MS END_MS [SPREAD_MS]}
read from stdin ask the server on that port for that range of the session
(get_data; with SPREAD_MS, C{spread_ms} in the request, which only
bench/bulk_floor.py reads), read the whole reply, and print one JSON line: the monotonic
times (ms) when it asked and when the reply's last byte arrived, the
reply's size and sample count, and this process's CPU time (ms) spent
meanwhile.  A connection is made the first time its port is named, and
kept; the first one, to the server, before the first question, so
starting Python costs nothing during a measurement.  The first reply is
saved, exactly as it arrived, to SAVE_FILE (bench/bulk_floor.py serves it).

    python bench/get_data_asker.py PORT SAVE_FILE
"""

import json
import os
import sys
import time

from rawsocket import frame_header, open_websocket


class Connection:
    def __init__(self, port):
        self.s, self.buffer = open_websocket(port)

    def send(self, payload, opcode=0x1):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.s.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def need(self, n):
        while len(self.buffer) < n:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buffer.extend(chunk)

    def message(self):
        """
        The next whole message (its fragments joined).  The server's pings
        (control frames, which may come between the fragments of a message)
        are answered and left out.
        """
        message = bytearray()
        while True:
            first, start, length = frame_header(self.buffer, self.need)
            fin, opcode = first & 0x80, first & 0x0F
            if opcode >= 0x8:  # a control frame
                if opcode == 0x8:
                    raise EOFError("the server closed the connection")
                if opcode == 0x9:
                    self.send(bytes(self.buffer[start : start + length]), opcode=0xA)
                del self.buffer[: start + length]
                continue
            message += memoryview(self.buffer)[start : start + length]
            del self.buffer[: start + length]
            if fin:
                return message


def main(port, save_path):
    connections = {port: Connection(int(port))}
    saved = False
    for number, line in enumerate(sys.stdin):
        port, start_ms, end_ms, *spread = line.split()
        connection = connections.get(port)
        if connection is None:
            connection = connections[port] = Connection(int(port))
        start_ms, end_ms = float(start_ms), float(end_ms)
        request_id = f"ask{number}"
        request = {
            "type": "get_data",
            "requestId": request_id,
            "start_time": start_ms,
            "end_time": end_ms,
        }
        if spread:
            request["spread_ms"] = float(spread[0])
        payload = json.dumps(request, separators=(",", ":")).encode()
        cpu = time.process_time()
        asked = time.monotonic_ns() / 1e6
        connection.send(payload)
        marker = b'"requestId":"%s"' % request_id.encode()
        while True:
            message = connection.message()
            if marker in message[:200]:
                break  # (anything else would be a gaze frame or another reply)
        done = time.monotonic_ns() / 1e6
        cpu = time.process_time() - cpu
        if not saved:
            with open(save_path, "wb") as f:
                f.write(message)
            saved = True
        # no json.loads of 20 MB here: it would compete for the CPU with the
        # server and the watcher being measured
        tail = bytes(message[-200:])
        if b'"count":' in tail:
            i = tail.rindex(b'"count":') + 8
            count = int(tail[i : tail.index(b",", i)])
        else:  # an error reply
            count = 0
            sys.stderr.write(f"asker: no samples in the reply: {bytes(message[:300])!r}\n")
        success = b'"success":true' in tail
        print(
            json.dumps(
                {
                    "asked": asked,
                    "done": done,
                    "bytes": len(message),
                    "count": count,
                    "success": success,
                    "cpu_ms": cpu * 1000,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
