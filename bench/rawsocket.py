"""
The benches' plain-socket WebSocket clients' one handshake: no library, so
that a client costs the machine as little as possible and the same for
every server measured.
"""

import socket


def open_websocket(port, user_agent=None, rcvbuf=None):
    """
    Connect to the server on 127.0.0.1:C{port} and upgrade to WebSocket.

    @return: the socket (blocking) and the bytes that came after the
        server's handshake response.
    @raise EOFError: the server closed during the handshake.
    @raise RuntimeError: the server refused the upgrade.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    agent = f"User-Agent: {user_agent}\r\n" if user_agent else ""
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{agent}\r\n".encode()
    )
    head, rest = read_head(sock, "server")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake refused: {head[:200]!r}")
    return sock, bytearray(rest)


def read_head(sock, peer):
    """
    Read the handshake's HTTP head from C{sock}: the head, and the bytes
    that came after it.

    @raise EOFError: the C{peer} (a word for the message) closed first.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(f"the {peer} closed during the handshake")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def frame_header(buffer, need):
    """
    The header of the frame at the start of C{buffer}, once C{need(n)} has
    made the buffer at least C{n} bytes long (reading the socket), its
    payload included.

    @return: the frame's first byte (FIN and opcode), where its payload
        starts in C{buffer}, and the payload's length.
    """
    need(2)
    length, start = buffer[1] & 0x7F, 2
    if length == 126:
        need(4)
        length, start = int.from_bytes(buffer[2:4], "big"), 4
    elif length == 127:
        need(10)
        length, start = int.from_bytes(buffer[2:10], "big"), 10
    need(start + length)
    return buffer[0], start, length
