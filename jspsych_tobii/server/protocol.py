# -*- test-case-name: tests.test_protocol -*-
"""
The Autobahn shell: WebSocket frames in, L{ClientSession} calls, frames out.

L{TobiiServerProtocol} gives each connection a L{SendGate} (registered as
the transport's producer, for flow control) and a L{ClientSession}; on close
it releases what the connection held and, if it was tracking, lets the
L{ResumeRegistry} keep its stream for a reconnect.  L{TobiiServerFactory}
carries the shared L{ServerState} and the protocol options: messages up to
16 MiB, the allowed web origins (by default every page, including pages
opened from disk, whose origin is C{null}), no compression.
"""

from __future__ import annotations

from typing import Optional, Sequence

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from jspsych_tobii.logs import Logger
from jspsych_tobii.server.gate import SendGate
from jspsych_tobii.server.session import ClientSession
from jspsych_tobii.server.state import ServerState

#: Largest incoming message accepted (a validation point at 1200 Hz is ~360 KB).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class TobiiServerProtocol(WebSocketServerProtocol):
    log = Logger()

    gate: Optional[SendGate] = None
    session: Optional[ClientSession] = None
    host = "?"

    def connectionMade(self):
        super().connectionMade()
        # Autobahn tries to set TCP_NODELAY before it has copied its options
        # onto the protocol, so Nagle stays on and a stream of small frames
        # waits for the peer's delayed ACKs (tens of ms).  Gaze must not wait.
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not TCP (a UNIX socket)

    def onConnect(self, request):
        peer = self.transport.getPeer()
        self.host = getattr(peer, "host", None) or str(peer)
        return None

    def onOpen(self):
        app: ServerState = self.factory.app
        self.gate = SendGate(self, app.reactor, peer=self.peer)
        self.registerProducer(self.gate, True)
        app.hub.gates.add(self.gate)
        self.session = ClientSession(app, self.gate, self.peer)
        self.log.info("client {peer} connected", peer=self.peer)
        app.record_event("client_connected", peer=self.peer)
        if app.resumes.claim(self.host):
            d = app.hub.subscribe(self.gate)

            def resumed(_):
                self.log.info("client {peer} resumed its gaze stream", peer=self.peer)
                self.gate.send_message(
                    {
                        "type": "tracking_resumed",
                        "message": "gaze stream resumed after reconnect",
                        "session": app.hub.session,
                    }
                )

            d.addCallbacks(
                resumed,
                lambda f: self.log.warn(
                    "could not resume the stream of {peer}: {e}",
                    peer=self.peer,
                    e=f.getErrorMessage(),
                ),
            )

    # -- the channel a SendGate sends through

    def send_bytes(self, payload: bytes) -> None:
        self.sendMessage(payload)

    def begin_message(self) -> None:
        self.beginMessage(isBinary=False)

    def send_fragment(self, data: bytes) -> None:
        self.sendMessageFrame(data)

    def end_message(self) -> None:
        self.endMessage()

    def abort(self) -> None:
        self.dropConnection(abort=True)

    def send_prepared(self, prepared) -> None:
        """
        Write a gaze frame framed once for all clients.  Autobahn's
        sendPreparedMessage does the same write, but first formats a debug
        log line per call, which at 1200 Hz x N clients costs more than the
        write; so, while nothing is queued in Autobahn and compression is off
        (it always is here), the frame's bytes go straight to the transport.
        """
        if self.state == self.STATE_OPEN and not self.send_queue:
            self.transport.write(prepared.payloadHybi)
        else:
            self.sendPreparedMessage(prepared)

    def onMessage(self, payload, isBinary):
        if self.session is not None:
            self.session.handle(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        session, gate = self.session, self.gate
        if session is None:
            return
        self.session = None
        app: ServerState = self.factory.app
        was_tracking = session.tracking
        session.close()
        gate.close()
        app.hub.gates.discard(gate)
        app.record_event("client_disconnected", peer=self.peer, clean=bool(wasClean))
        if was_tracking:
            app.resumes.dropped(self.host)
            app.hub.unsubscribe(gate).addErrback(
                lambda f: self.log.failure("releasing the gaze stream", f)
            )
        self.log.info(
            "client {peer} disconnected ({clean}){dropped}",
            peer=self.peer,
            clean="clean" if wasClean else "unclean",
            dropped=f"; {gate.dropped} gaze frames were dropped for it" if gate.dropped else "",
        )


class TobiiServerFactory(WebSocketServerFactory):
    protocol = TobiiServerProtocol
    log = Logger()

    def __init__(
        self,
        app: ServerState,
        url: Optional[str] = None,
        where: str = "",
        origins: Sequence[str] = ("*",),
    ):
        super().__init__(url, reactor=app.reactor)
        self.app = app
        self.where = where
        self.noisy = False
        self.setProtocolOptions(
            maxMessagePayloadSize=MAX_MESSAGE_BYTES,
            maxFramePayloadSize=MAX_MESSAGE_BYTES,
            allowedOrigins=[o for o in origins if o != "null"],
            allowNullOrigin="*" in origins or "null" in origins,
            # JSON decoding checks UTF-8 and answers with an error reply;
            # Autobahn's own check would close the connection instead
            utf8validateIncoming=False,
            perMessageCompressionAccept=lambda offers: None,
        )

    def startFactory(self):
        super().startFactory()
        if self.where:
            self.log.info("serving the jsPsych client at {where}", where=self.where)
