# -*- test-case-name: tests.test_web_site -*-
"""
One port, two protocols: L{build_site} makes the twisted.web L{FrontSite}
that listens on the server's port.  Its root, L{FrontDoor}, hands every
WebSocket upgrade request (at any path, as the bare WebSocket server did;
the jsPsych extension connects to the root, C{ws://localhost:8080}) to
Autobahn's C{WebSocketResource}, so the handshake and the protocol are the
ones the client always spoke to.  Plain HTTP requests get:

  - C{/}: the live status page (L{jspsych_tobii.web.status});
  - C{/status.json}: the same facts for scripts (HTTP 503 without a tracker);
  - C{/preview}: the status page's switch for a preview-only gaze stream;
  - C{/experiment/}: the folder given with C{--serve}.

With a token (C{--token}), every HTTP request must present it too, as the
WebSocket handshake must: C{?token=...} in the URL (the answer then sets an
HttpOnly, SameSite=Strict cookie, so the page's own requests, its scripts
and C{status.json} carry it), or that cookie; anything else gets 403.

Requests are not written to the log (the status page polls several times a
second); the WebSocket factory is started and stopped with the site.  An
HTTP connection idle for L{IDLE_TIMEOUT_SECONDS} is closed (a WebSocket is
not idle HTTP: its request never ends), and a request body over
L{MAX_REQUEST_BODY} bytes is refused with 413 before it is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from autobahn.twisted.resource import WebSocketResource
from twisted.web import pages, resource, server

from jspsych_tobii.core.access import token_matches
from jspsych_tobii.logs import Logger
from jspsych_tobii.web.preview import PreviewLeases, PreviewSwitch
from jspsych_tobii.web.static import ExperimentFolder, NoExperimentFolder
from jspsych_tobii.web.status import (
    StatusAsset,
    StatusBoard,
    StatusJSON,
    StatusPage,
)

if TYPE_CHECKING:  # only for the annotations
    from jspsych_tobii.server.state import ServerState

#: Seconds an HTTP connection may stay idle (between requests, or while its
#: request is still arriving) before it is closed.
IDLE_TIMEOUT_SECONDS = 60
#: Largest request body accepted, bytes (the one POST is a few dozen bytes).
MAX_REQUEST_BODY = 64 * 1024
#: The cookie that carries the token after a page was opened with ?token=.
TOKEN_COOKIE = b"jspsych_tobii_token"

_TOKEN_REQUIRED = pages.forbidden(
    "Token required",
    "This server wants its token: open this address with ?token=<the --token value> "
    "at the end (for example /?token=...); the browser then keeps it for this server.",
)


def is_websocket_upgrade(request: Any) -> bool:
    """The request asks to switch to the WebSocket protocol (RFC 6455, section 4.1)."""
    upgrade = request.getHeader(b"upgrade")
    if not upgrade:
        return False
    return b"websocket" in (token.strip().lower() for token in upgrade.split(b","))


class FrontDoor(resource.Resource):
    """
    The root resource: WebSocket upgrades to C{websocket} (which checks
    origin and token itself), other requests, once they show the C{token}
    if there is one, to the children.
    """

    def __init__(self, websocket: resource.IResource, token: Optional[str] = None):
        super().__init__()
        self._websocket = websocket
        self._token = token

    def getChildWithDefault(self, path, request):
        if is_websocket_upgrade(request):
            return self._websocket
        if self._token is not None and not self._shows_token(request, self._token):
            return _TOKEN_REQUIRED
        return super().getChildWithDefault(path, request)

    def _shows_token(self, request, token: str) -> bool:
        given = request.args.get(b"token")
        if given:
            if not token_matches(given[0].decode("utf-8", "surrogateescape"), token):
                return False
            request.addCookie(
                TOKEN_COOKIE,
                token.encode("utf-8"),
                path=b"/",
                httpOnly=True,
                sameSite="strict",
                secure=request.isSecure() or None,
            )
            return True
        cookie = request.getCookie(TOKEN_COOKIE)
        return cookie is not None and token_matches(
            cookie.decode("utf-8", "surrogateescape"), token
        )

    def getChild(self, path, request):
        return pages.notFound("Not found", "No such page. The status page is at /.")


class BoundedRequest(server.Request):
    """
    A request whose body may not exceed L{MAX_REQUEST_BODY} bytes, answered
    without a C{Server} header (no software name or version, as the
    WebSocket handshake gives none).
    """

    _received = 0
    _refused = False

    def gotLength(self, length):
        if length is not None and length > MAX_REQUEST_BODY:
            self._refuse()
        super().gotLength(0 if self._refused else length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > MAX_REQUEST_BODY:
            self._refuse()
            return
        super().handleContentChunk(data)

    def process(self):
        if not self._refused:
            super().process()

    def setHeader(self, name, value):
        if name.lower() != b"server":
            super().setHeader(name, value)

    def _refuse(self):
        self._refused = True
        body = b"request body over %d bytes\n" % MAX_REQUEST_BODY
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()


class FrontSite(server.Site):
    """
    The Site on the server's port.  It starts and stops the WebSocket
    factory (which twisted.web never sees as a factory) and the status
    page's previews, and keeps no access log.
    """

    noisy = False
    displayTracebacks = False
    logger = Logger()

    def __init__(
        self,
        root: FrontDoor,
        websocket_factory: Any,
        previews: PreviewLeases,
        board: StatusBoard,
        where: str = "",
        serve_dir: Optional[str] = None,
        reactor: Any = None,
    ):
        super().__init__(root, timeout=IDLE_TIMEOUT_SECONDS, reactor=reactor)
        self.requestFactory = BoundedRequest
        self.websocket_factory = websocket_factory
        self.board = board
        self.previews = previews
        self.where = where
        self.serve_dir = serve_dir

    def startFactory(self):
        super().startFactory()
        self.websocket_factory.doStart()
        if self.where:
            self.logger.info("status page at {where}", where=self.where)
        if self.serve_dir:
            self.logger.info(
                "serving the experiment folder {folder} at {where}experiment/",
                folder=self.serve_dir,
                where=self.where or "/",
            )

    def stopFactory(self):
        self.previews.stop_all()
        self.websocket_factory.doStop()
        super().stopFactory()

    def log(self, request):
        """No access log: the status page polls several times a second."""


def build_site(
    state: ServerState,
    websocket_factory: Any,
    serve_dir: Optional[str] = None,
    where: str = "",
) -> FrontSite:
    """
    The Site for the server's port.

    @param state: the server's L{ServerState}.
    @param websocket_factory: the L{TobiiServerFactory} (its C{connections}
        are the pages the status page lists).
    @param serve_dir: the folder served at C{/experiment/}, or None.
    @param where: the status page's URL, for the start-up log line.
    """
    previews = PreviewLeases(state.hub, state.reactor)
    board = StatusBoard(state, websocket_factory.connections, previews, serve_dir=serve_dir)
    root = FrontDoor(
        WebSocketResource(websocket_factory), token=getattr(websocket_factory, "token", None)
    )
    root.putChild(b"", StatusPage())
    root.putChild(b"status.json", StatusJSON(board))
    root.putChild(b"status.js", StatusAsset("status.js"))
    root.putChild(b"status.css", StatusAsset("status.css"))
    root.putChild(b"preview", PreviewSwitch(previews))
    root.putChild(b"experiment", ExperimentFolder(serve_dir) if serve_dir else NoExperimentFolder())
    site = FrontSite(
        root,
        websocket_factory,
        previews,
        board,
        where=where,
        serve_dir=serve_dir,
        reactor=state.reactor,
    )
    return site
