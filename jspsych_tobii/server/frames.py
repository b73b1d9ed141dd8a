# -*- test-case-name: tests.test_frames -*-
"""
Server-to-client frames, built once for every client (L{TextFrame}).

A server-to-client WebSocket frame is unmasked: two to ten header bytes,
then the payload.  Building it here takes one concatenation; Autobahn's
C{prepareMessage} does the same with several calls per frame, which at
1200 gaze frames a second is a noticeable part of the fan-out.  A
L{TextFrame} has the attributes of Autobahn's C{PreparedMessage}
(C{payload}, C{payloadHybi}, C{binary}, C{doNotCompress}), so
C{sendPreparedMessage} accepts it too; it is only valid on connections
without per-message compression, which this server never negotiates.
"""

from __future__ import annotations

import struct

__all__ = ["TextFrame", "text_header"]

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
