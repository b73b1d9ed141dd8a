# -*- test-case-name: tests.test_frames -*-
"""
Server-to-client frames: built once for every client (L{TextFrame}) and
written to a socket at once (L{write_frame}).

A server-to-client WebSocket frame is unmasked: two to ten header bytes,
then the payload.  Building it here takes one concatenation; Autobahn's
C{prepareMessage} does the same with several calls per frame, which at
1200 gaze frames a second is a noticeable part of the fan-out.  A
L{TextFrame} has the attributes of Autobahn's C{PreparedMessage}
(C{payload}, C{payloadHybi}, C{binary}, C{doNotCompress}), so
C{sendPreparedMessage} accepts it too; it is only valid on connections
without per-message compression, which this server never negotiates.

Twisted's C{transport.write} only buffers: the reactor sends the data on
its next turn, after asking epoll whether the socket takes it (two more
system calls and a pass through the reactor's loop for every frame and
client).  L{write_frame} hands a frame to the socket straight away when
nothing waits in the transport's buffer, and leaves to the transport only
what the socket does not take, so the order of the bytes is kept and the
transport's flow control (pausing the producer when its buffer fills) works
as before.
"""

from __future__ import annotations

import struct
from typing import Any, Dict

from twisted.internet import abstract, tcp

__all__ = ["TextFrame", "text_header", "write_frame"]

_FIN_TEXT = 0x81
_HEADER_16 = struct.Struct(">BBH").pack


def text_header(length: int) -> bytes:
    """The header of a final, unmasked text frame of C{length} payload bytes."""
    if length < 126:
        return bytes((_FIN_TEXT, length))
    if length < 0x10000:
        return _HEADER_16(_FIN_TEXT, 126, length)
    return bytes((_FIN_TEXT, 127)) + length.to_bytes(8, "big")


class TextFrame:
    """
    @ivar payload: the message's UTF-8 text.
    @ivar payloadHybi: the whole frame as it goes on the wire.
    """

    __slots__ = ("payload", "payloadHybi")

    binary = False
    doNotCompress = True

    def __init__(self, payload: bytes):
        self.payload = payload
        self.payloadHybi = text_header(len(payload)) + payload


#: Transport classes, by whether they write to their socket exactly as
#: Twisted's TCP connection does (see L{_plain_socket}).
_PLAIN: Dict[type, bool] = {}


def _plain_socket(cls: type) -> bool:
    """
    Whether transports of class C{cls} are Twisted TCP (or UNIX)
    connections that write their buffer to C{self.socket} unchanged: no
    TLS layer, no other write path.  Anything else is only written through.
    """
    return (
        issubclass(cls, tcp.Connection)
        and getattr(cls, "write", None) is tcp.Connection.write
        and getattr(cls, "doWrite", None) is abstract.FileDescriptor.doWrite
        and getattr(cls, "writeSomeData", None) is tcp.Connection.writeSomeData
    )


def write_frame(transport: Any, data: bytes) -> bool:
    """
    Write C{data} (whole frames) to C{transport}: to its socket at once when
    it is a plain socket with nothing waiting to be sent, else (and for
    whatever the socket does not take) through C{transport.write}.  A
    failed send is left to the transport, whose next write reports the lost
    connection as usual.

    @return: whether all of C{data} is on the socket.
    """
    cls = type(transport)
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = _PLAIN[cls] = _plain_socket(cls)
    if (
        plain
        and not transport._tempDataLen
        and not transport.dataBuffer
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport.TLS
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # full (EAGAIN), or broken: the transport finds out which
        if sent == len(data):
            return True
        if sent:
            data = data[sent:]
    transport.write(data)
    return False
