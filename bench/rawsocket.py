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
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("the server closed during the handshake")
        response += chunk
    head, rest = response.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake refused: {response[:200]!r}")
    return sock, bytearray(rest)
