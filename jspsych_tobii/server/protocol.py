# -*- test-case-name: tests.test_protocol -*-
"""
The Autobahn shell: WebSocket frames in, L{ClientSession} calls, frames out.

L{TobiiServerProtocol} gives each connection a L{SendGate} (registered as
the transport's producer, for flow control; pongs go through it too), an
L{Intake} (how many frames the reactor parses per turn) and a
L{ClientSession}; on close it releases what the connection held and, if it
was tracking and dropped without a closing handshake, lets the
L{ResumeRegistry} keep its stream for that client (known by its handshake's
L{Fingerprint}) to reconnect.  L{TobiiServerFactory}
carries the shared L{ServerState} and the protocol options: messages up to
16 MiB in at most 128 fragments, no compression, keepalive pings.

Who may connect is decided at the handshake (L{TobiiServerProtocol.onConnect}):
the page's origin must be allowed (L{OriginPolicy}; by default pages of this
machine and pages opened from disk; pages this server serves itself with
C{--serve} always, see L{own_origins}) and, with a token, the URL must carry it
(C{?token=...}); a refusal is an HTTP 403 and one log line saying which
option would admit the client.  The token never reaches the log.

A connection that breaks the rules (a message too big, in too many
fragments, or a protocol error) gets a close frame with the status code
(1009, 1002, 1007) and its write side shut, so the close frame arrives
before the connection ends; what the client sends after that is discarded
unread.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional, Sequence, Set, Tuple

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger as _TwistedLogger

from jspsych_tobii import logs
from jspsych_tobii.core.access import OriginPolicy, normalize_origin, token_matches
from jspsych_tobii.logs import Logger
from jspsych_tobii.server.frames import TextFrame
from jspsych_tobii.server.gate import SendGate
from jspsych_tobii.server.intake import Intake
from jspsych_tobii.server.requests import DECODE_INLINE_BYTES, LargeMessage
from jspsych_tobii.server.resume import Fingerprint
from jspsych_tobii.server.session import ClientSession
from jspsych_tobii.server.state import ServerState

#: Most bytes handed to the socket in one reactor turn.  On loopback the
#: kernel does the receiver's work inside the sender's send(): one send of
#: 4 MiB took 1.3 ms (up to 6 ms) here, keeping the reactor from the gaze
#: hand-off while a large get_data left; one of 256 KiB takes ~0.1 ms.  (How
#: fast a large answer leaves is the gate's pace, STREAM_BYTES_PER_S.)
SEND_LIMIT = 256 * 1024

#: Largest incoming message accepted (a validation point at 1200 Hz is ~360 KB).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Most frames one incoming message may come in.  Browsers send a message as
#: one frame; each fragment costs the reactor 7 to 20 µs of Autobahn's
#: parsing: 20,000 one-byte fragments took 0.14 s of reactor time (in turns
#: of at most 2 ms, see L{Intake}), 128 take ~1 ms (bench/bench_fragments.py).
#: A client that fragments a 16 MiB message into 128 KiB pieces still fits.
MAX_MESSAGE_FRAGMENTS = 128
#: Pings a client may send at once, and per second after that (browsers send
#: none; keepalive libraries one every few seconds).  Past that the client is
#: closed (1008): a ping flood costs the reactor ~20 µs a ping.
PING_BURST = 50
PINGS_PER_SECOND = 10.0

#: Close codes (RFC 6455) and the reason the client is told.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008  # a ping flood; replies not read (server.gate)
CLOSE_TOO_BIG = 1009
_CLOSE_REASONS = {
    CLOSE_PROTOCOL_ERROR: "WebSocket protocol error",
    CLOSE_INVALID_PAYLOAD: "invalid data in a frame (not UTF-8)",
    CLOSE_TOO_BIG: f"message too big: at most {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB",
}

_TOKEN_IN_TEXT = re.compile(r"(?i)(token=)[^&\s\"'#;]*")
_TOKEN_IN_BYTES = re.compile(rb"(?i)(token=)[^&\s\"'#;]*")


def redact(value: Any, secret: Optional[str] = None) -> Any:
    """C{value} with every C{token=...} and the secret itself hidden (str, bytes, dict)."""
    if isinstance(value, str):
        value = _TOKEN_IN_TEXT.sub(r"\1<hidden>", value)
        return value.replace(secret, "<hidden>") if secret else value
    if isinstance(value, (bytes, bytearray)):
        value = _TOKEN_IN_BYTES.sub(rb"\1<hidden>", bytes(value))
        return value.replace(secret.encode(), b"<hidden>") if secret else value
    if isinstance(value, dict):
        return {k: redact(v, secret) for k, v in value.items()}
    return value


class _RedactingLogger(_TwistedLogger):
    """
    The protocol's logger (Autobahn logs through it too, at DEBUG the whole
    handshake request): the token never reaches an observer.
    """

    def emit(self, level, format=None, **kwargs):
        if not logs.enabled(level, self.namespace):
            return  # (Autobahn logs at DEBUG for every read: redact nothing unseen)
        factory = getattr(self.source, "factory", None)
        secret = getattr(factory, "token", None)
        super().emit(
            level, redact(format, secret), **{k: redact(v, secret) for k, v in kwargs.items()}
        )


_base_log = Logger("jspsych_tobii.server.protocol.TobiiServerProtocol")


class TobiiServerProtocol(WebSocketServerProtocol):
    log = _RedactingLogger(_base_log.namespace, observer=_base_log.observer)

    #: the connection's transport, set before any method below runs
    transport: Any
    gate: Optional[SendGate] = None
    intake: Optional[Intake] = None
    session: Optional[ClientSession] = None
    host = "?"
    fragments = 0
    #: After a close frame for a broken rule: input is dropped unread.
    discarding = False
    _refusal: Optional[Tuple[tuple, str, dict]] = None
    fingerprint: Optional[Fingerprint] = None
    _ping_tokens = float(PING_BURST)
    _ping_ms: Optional[float] = None
    closed_for: Optional[str] = None  # why the server closed it, if it did
    opened_us: Optional[int] = None

    def connectionMade(self):
        super().connectionMade()
        # Autobahn tries to set TCP_NODELAY before it has copied its options
        # onto the protocol, so Nagle stays on and a stream of small frames
        # waits for the peer's delayed ACKs (tens of ms).  Gaze must not wait.
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not TCP (a UNIX socket)
        # Twisted hands the socket at most 128 KiB per reactor turn; a large
        # get_data reply (20 MB for a minute at 1200 Hz) would take 160 turns
        # to leave.  The kernel takes what fits either way.
        if hasattr(self.transport, "SEND_LIMIT"):
            self.transport.SEND_LIMIT = SEND_LIMIT

    def onConnect(self, request):
        peer = self.transport.getPeer()
        self.host = getattr(peer, "host", None) or str(peer)
        factory: TobiiServerFactory = self.factory
        origin = request.origin or None
        if not factory.origins.allows(origin) and not self._own_page(origin):
            self._refusal = (
                ("origin", origin),
                "refused a connection from {peer}: pages from {origin} may not connect; "
                "start the server with --allowed-origins '{admit}' to admit them "
                "(or --allowed-origins '*' for every page)",
                {"origin": origin, "admit": factory.origins.admitting(origin)},
            )
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        if factory.token is not None:
            given = request.params.get("token")
            if not given or not token_matches(given[0], factory.token):
                self._refusal = (
                    ("token", self.host, bool(given)),
                    "refused a connection from {peer}: its URL has "
                    + ("no token" if not given else "a wrong token")
                    + " (this server wants ws://...:port/?token=<the --token value>)",
                    {},
                )
                raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "token missing or wrong")
        self.fingerprint = Fingerprint.of(self.host, request.headers, self.http_request_uri)
        return None

    def _own_page(self, origin: Optional[str]) -> bool:
        """The page comes from this server (C{--serve}): its origin is this connection's."""
        try:
            normal = normalize_origin(origin or "")
        except ValueError:
            return False
        return normal in own_origins(self.transport.getHost(), self.factory.own_host)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        """
        Refuse the handshake: a log line (ours when we refused: a warning the
        first time for an origin, or for a client's missing or wrong token,
        then at DEBUG, so a page that keeps retrying does not fill the log),
        an HTTP error, FIN.
        """
        reason = redact(reason, self.factory.token)
        if self._refusal is not None:
            key, text, fields = self._refusal
            if self.factory.first_refusal(key):
                self.log.warn(text + " (told once; later ones at DEBUG)", peer=self.peer, **fields)
            else:
                self.log.debug(text, peer=self.peer, **fields)
        else:
            self.log.info(
                "refused a handshake from {peer} (HTTP {code}): {reason}",
                peer=self.peer,
                code=code,
                reason=reason,
            )
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.dropConnection(abort=False)

    def onOpen(self):
        app: ServerState = self.factory.app
        self.gate = SendGate(self, app.reactor, peer=self.peer)
        if getattr(self.transport, "producer", None) is not None:
            # behind twisted.web the HTTP channel is still the transport's producer
            self.transport.unregisterProducer()
        self.registerProducer(self.gate, True)
        self.intake = Intake(self.transport, self.consumeData, app.reactor)
        self.opened_us = app.clock.now_us()
        self.factory.connections.add(self)
        app.hub.gates.add(self.gate)
        self.session = ClientSession(app, self.gate, self.peer, reader=self.intake)
        self.log.info("client {peer} connected", peer=self.peer)
        app.record_event("client_connected", peer=self.peer)
        if app.resumes.claim(self.fingerprint):
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

    # -- the channel a SendGate sends through (nothing goes out after a close frame)

    def send_bytes(self, payload: bytes) -> None:
        """
        One text message (a reply): framed here and written, as gaze frames
        are (L{send_prepared}); Autobahn's C{sendMessage} would first format
        three debug log lines for it, ~50 us a reply in a flood of requests.
        """
        if self.state != self.STATE_OPEN:
            return
        if self.send_queue:
            self.sendMessage(payload)
        else:
            self.transport.write(TextFrame(payload).payloadHybi)

    def send_now(self, payload: bytes) -> None:
        """
        One text message whose timing matters (a C{time_sync} reply): framed
        here and handed to the socket at once, instead of at the reactor's
        next turn, after whatever gaze work that turn brings.
        """
        if self.state != self.STATE_OPEN:
            return
        if self.send_queue:
            self.sendMessage(payload)
            return
        self.transport.write(TextFrame(payload).payloadHybi)
        self._flush()

    def _flush(self) -> None:
        """
        Hand what was just written to the socket now, instead of when the
        reactor next polls: that saves a poll and its dispatch per write.
        What the socket does not take now, the reactor sends when it can;
        a failure (a closed socket) surfaces through the reactor as usual,
        since the descriptor stays registered for writing.
        """
        transport = self.transport
        flush = getattr(transport, "doWrite", None)  # a socket (not TLS)
        if flush is not None and transport.connected and not transport.disconnecting:
            flush()

    def begin_message(self) -> None:
        if self.state == self.STATE_OPEN:
            self.beginMessage(isBinary=False)

    def send_fragment(self, data: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessageFrame(data)

    def end_message(self) -> None:
        if self.state == self.STATE_OPEN:
            self.endMessage()

    def abort(self) -> None:
        self.dropConnection(abort=True)

    def send_pong(self, payload: bytes) -> None:
        self.sendPong(payload)

    def send_close(self, code: int, reason: str) -> None:
        """
        Close for a cause (L{fail}): C{code} may be one Autobahn's
        C{sendClose} refuses to send (1008).  Such a client is not waited
        for to reconnect.
        """
        self.closed_for = reason
        self.fail(code, reason, reason)

    def onPing(self, payload):
        if self.gate is None:
            return super().onPing(payload)
        now_ms = self.factory.app.clock.now_ms()
        if self._ping_ms is not None:
            refill = (now_ms - self._ping_ms) * PINGS_PER_SECOND / 1000.0
            self._ping_tokens = min(float(PING_BURST), self._ping_tokens + refill)
        self._ping_ms = now_ms
        if self._ping_tokens < 1.0:
            self.send_close(
                CLOSE_POLICY_VIOLATION,
                f"ping flood: at most {PING_BURST} at once, {PINGS_PER_SECOND:g} a second",
            )
            return None
        self._ping_tokens -= 1.0
        # through the gate: a client that pings but does not read gets one pong
        self.gate.send_pong(payload)
        return None

    def send_prepared(self, prepared) -> None:
        """
        Write a gaze frame framed once for all clients.  Autobahn's
        sendPreparedMessage does the same write, but first formats a debug
        log line per call, which at 1200 Hz x N clients costs more than the
        write; so, while nothing is queued in Autobahn and compression is off
        (it always is here), the frame's bytes are written here.
        """
        if self.state != self.STATE_OPEN:
            return
        if not self.send_queue:
            self.transport.write(prepared.payloadHybi)
            self._flush()
        else:
            self.sendPreparedMessage(prepared)

    def send_prepared_batch(self, frames) -> None:
        """Several gaze frames, as L{send_prepared} writes them, in one write."""
        if self.state != self.STATE_OPEN:
            return
        if not self.send_queue:
            self.transport.write(b"".join([f.payloadHybi for f in frames]))
            self._flush()
        else:
            for prepared in frames:
                self.sendPreparedMessage(prepared)

    # -- incoming

    def dataReceived(self, data: bytes) -> None:
        """
        Into Autobahn's parser, past its Twisted adapter's C{dataReceived}:
        that one only adds a DEBUG line, whose arguments it formats for every
        read whatever the log level (~30% of a small request's cost).
        """
        if not self.discarding:
            self._dataReceived(data)

    def processData(self) -> bool:
        """Autobahn's parsing step (a frame's header, or a piece of its payload), paced."""
        if self.data and self.intake is not None and not self.intake.may_step():
            return False  # the rest waits for a later turn (server.intake)
        return super().processData()

    def onMessageBegin(self, isBinary):
        self.fragments = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)
        self.fragments += 1
        if self.fragments > MAX_MESSAGE_FRAGMENTS and not self.failedByMe:
            self.fail(
                CLOSE_TOO_BIG,
                f"message in too many fragments: at most {MAX_MESSAGE_FRAGMENTS}",
                f"a message in more than {MAX_MESSAGE_FRAGMENTS} fragments",
            )

    def onMessageEnd(self):
        """
        A whole message, to the session (in place of Autobahn's, which joins
        its pieces here, on the reactor, and calls C{onMessage}): a large one
        is joined by the worker that decodes it (L{LargeMessage}).  (Autobahn
        also fires a C{message} event, which nothing here listens to.)
        """
        pieces, self.message_data = self.message_data, None
        if self.failedByMe or self.session is None:
            return
        size = self.message_data_total_length
        if size > DECODE_INLINE_BYTES and len(pieces) > 1:
            self.session.handle(LargeMessage(pieces, size), self.message_is_binary)
        else:
            self.session.handle(b"".join(pieces), self.message_is_binary)

    # -- breaking the rules

    def _fail_connection(self, code=CLOSE_PROTOCOL_ERROR, reason="protocol error"):
        """
        Autobahn's single path for a message too big, a protocol error or
        an invalid payload: the client is told in our words, the log gets
        Autobahn's detail.
        """
        self.fail(code, _CLOSE_REASONS.get(code, "closing the connection"), reason)

    def fail(self, code: int, reason: str, detail: str) -> None:
        """
        Close because the client broke a rule: a close frame with C{code}
        and C{reason}, then the write side is shut (TCP: a FIN after the
        close frame), so a client still sending does not turn our close into
        a reset that could destroy the close frame before it is read.
        Whatever arrives afterwards is dropped unread; Autobahn's closing
        handshake timeout ends the connection if the client never closes.
        """
        if self.state == self.STATE_CLOSED or self.failedByMe:
            return
        self.failedByMe = True
        self.log.warn(
            "closing the connection of {peer} with code {code}: {detail}",
            peer=self.peer,
            code=code,
            detail=detail,
        )
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123])
        self.discarding = True
        self.data = b""
        if self.intake is not None:
            self.intake.stop()  # what the client sends now is read, and dropped
        half_closeable = IHalfCloseableDescriptor.providedBy(self.transport)
        if half_closeable:  # TCP: FIN after the close frame
            self.transport.loseWriteConnection()
        else:  # TLS: close_notify after the close frame
            self.transport.loseConnection()

    def connectionLost(self, reason=connectionDone):
        # Autobahn leaves the closing handshake's timer behind when the
        # client closes first after our close frame; it would fire later
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        if self.intake is not None:
            self.intake.stop(resume=False)
        super().connectionLost(reason)

    def onAutoPingTimeout(self):
        self.log.info(
            "client {peer} did not answer a ping within {timeout:g} s; dropping it",
            peer=self.peer,
            timeout=self.autoPingTimeout,
        )
        super().onAutoPingTimeout()

    def onClose(self, wasClean, code, reason):
        self.factory.connections.discard(self)
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
            # a drop (no closing handshake, not our doing) may come back;
            # a page that closed, or a client the server closed, will not
            if not wasClean and not (self.closed_for or self.closedByMe or self.failedByMe):
                app.resumes.dropped(self.fingerprint)
            app.hub.unsubscribe(gate).addErrback(
                lambda f: self.log.failure("releasing the gaze stream", f)
            )
        self.log.info(
            "client {peer} disconnected ({clean}){dropped}",
            peer=self.peer,
            clean="clean" if wasClean else "unclean",
            dropped=f"; {gate.dropped} gaze frames were dropped for it" if gate.dropped else "",
        )


def prepare_text(payload: bytes) -> TextFrame:
    """
    Frame a text message once for every client: what a server factory's
    C{prepareMessage} does (servers do not mask their frames), in one
    concatenation instead of several calls (L{TextFrame}).
    """
    return TextFrame(payload)


class TobiiServerFactory(WebSocketServerFactory):
    protocol = TobiiServerProtocol
    log = Logger()

    def __init__(
        self,
        app: ServerState,
        url: Optional[str] = None,
        where: str = "",
        origins: Sequence[str] = ("local",),
        token: Optional[str] = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        exposed: bool = False,
        own_host: Optional[str] = None,
    ):
        """
        @param where: the listening address as the log shows it.
        @param origins: the C{--allowed-origins} patterns.
        @param token: the secret a connection's URL must carry, or None.
        @param ping_interval: seconds between keepalive pings (0: none).
        @param ping_timeout: seconds to answer a ping (0: no limit).
        @param exposed: other machines can reach the listening address.
        @param own_host: the C{--host} the server listens on, whose pages
            (C{--serve}) are admitted whatever the origin list says.
        """
        # server=None: the handshake response names no software or version
        super().__init__(url, server=None, reactor=app.reactor)
        self.app = app
        self.where = where
        self.origins = OriginPolicy(origins)
        self.token = token
        self.exposed = exposed
        self.own_host = own_host
        #: the open connections (the status page lists them)
        self.connections: Set[TobiiServerProtocol] = set()
        self._refused: set = set()
        self.noisy = False
        self.setProtocolOptions(
            maxMessagePayloadSize=MAX_MESSAGE_BYTES,
            maxFramePayloadSize=MAX_MESSAGE_BYTES,
            # onConnect decides on origins, with its own log line and a 403
            allowedOrigins=["*"],
            allowNullOrigin=True,
            # no status page (it shows Autobahn's version and follows ?redirect=)
            webStatus=False,
            # JSON decoding checks UTF-8 and answers with an error reply;
            # Autobahn's own check would close the connection instead
            utf8validateIncoming=False,
            perMessageCompressionAccept=lambda offers: None,
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
        )

    #: Refusals remembered so as to warn once each (beyond this many, all at DEBUG).
    MAX_REMEMBERED_REFUSALS = 1000

    def first_refusal(self, key: tuple) -> bool:
        """Whether this kind of refusal (an origin, a host's token) is new."""
        if key in self._refused or len(self._refused) >= self.MAX_REMEMBERED_REFUSALS:
            return False
        self._refused.add(key)
        return True

    def startFactory(self):
        super().startFactory()
        if self.where:
            self.log.info("serving the jsPsych client at {where}", where=self.where)
        if self.token is not None:
            self.log.info("connections must give the token: ws://...:port/?token=...")
        if self.exposed and self.token is None and self.origins.admits_every_page:
            self.log.warn(
                "{where} can be reached from other machines, and with --allowed-origins '*' "
                "and no --token any web page a browser opens and any program on the network "
                "can connect, read gaze and control calibration; give --token (or "
                "--token-file), list the allowed origins, or listen on localhost",
                where=self.where or "the listening address",
            )


def own_origins(address: Any, host: Optional[str] = None) -> List[str]:
    """
    The origins of pages this server serves (C{--serve}), for a connection
    that arrived at C{address} (its local L{IPv4Address} or L{IPv6Address}):
    that address and C{host} (the name given with C{--host}), on that port,
    over http or https, normalised as L{normalize_origin} writes them.  A
    name the browser resolved is not included unless it is C{host}, so a
    rebound name cannot pass as this server.
    """
    port = getattr(address, "port", None)
    if port is None:
        return []  # not TCP
    names = [address.host]
    if address.host.startswith("::ffff:") and "." in address.host:
        names.append(address.host[7:])  # an IPv4 client of a dual-stack socket
    if host and host.strip("[]") not in ("0.0.0.0", "::", ""):
        names.append(host.strip("[]"))
    origins = []
    for name in names:
        shown = f"[{name.lower()}]" if ":" in name else name.lower()
        origins += [f"http://{shown}:{port}", f"https://{shown}:{port}"]
    return origins
