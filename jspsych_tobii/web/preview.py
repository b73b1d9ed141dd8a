# -*- test-case-name: tests.test_web_preview,tests.test_web_status -*-
"""
The status page's gaze preview (C{POST /preview}): its explicit way to see
gaze when no experiment is tracking.  The hub runs the tracker's stream for
it without a tracking session, so nothing is sent to pages and nothing is
recorded.  The page renews its lease (L{PreviewLeases}) while the preview
is on; a page that goes away lets it lapse.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Dict

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web import resource, server

from jspsych_tobii.logs import Logger
from jspsych_tobii.web.status import json_response

if TYPE_CHECKING:  # only for the annotations
    from jspsych_tobii.server.hub import GazeHub

#: Seconds a preview lasts unless its page renews it.
PREVIEW_LEASE_SECONDS = 5.0
#: Previews at once (one per open status page that turned it on).
MAX_PREVIEWS = 8
#: Largest body of a POST /preview, bytes.
MAX_PREVIEW_BODY = 1024

_PREVIEW_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class PreviewError(Exception):
    """A preview cannot be started; the message says why."""


class PreviewLeases:
    """
    Previews the status page asked for, each kept for
    L{PREVIEW_LEASE_SECONDS} after its page last renewed it.

    @param hub: the L{GazeHub} (its C{preview} and C{end_preview}).
    @param reactor: provides C{callLater}.
    """

    log = Logger()

    def __init__(
        self,
        hub: GazeHub,
        reactor: IReactorTime,
        lease: float = PREVIEW_LEASE_SECONDS,
        limit: int = MAX_PREVIEWS,
    ):
        self._hub = hub
        self._reactor = reactor
        self.lease = lease
        self.limit = limit
        self._timers: Dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._timers)

    def start(self, key: str) -> defer.Deferred:
        """Start or renew the preview of C{key}; fails with a message when it cannot run."""
        timer = self._timers.get(key)
        if timer is not None:
            timer.reset(self.lease)
            return defer.succeed(None)
        if len(self._timers) >= self.limit:
            return defer.fail(
                PreviewError(f"too many previews at once (at most {self.limit}); close a page")
            )
        self._timers[key] = self._reactor.callLater(self.lease, self._expire, key)
        self.log.info("status page preview {key} started (nothing is recorded)", key=key)

        def failed(f):
            timer = self._timers.pop(key, None)
            if timer is not None and timer.active():
                timer.cancel()
            return f

        return self._hub.preview(("status-preview", key)).addErrback(failed)

    def stop(self, key: str) -> defer.Deferred:
        timer = self._timers.pop(key, None)
        if timer is None:
            return defer.succeed(None)
        if timer.active():
            timer.cancel()
        self.log.info("status page preview {key} stopped", key=key)
        return self._hub.end_preview(("status-preview", key))

    def _expire(self, key: str) -> None:
        if self._timers.pop(key, None) is None:
            return
        self.log.info("status page preview {key} lapsed (its page stopped renewing it)", key=key)
        self._hub.end_preview(("status-preview", key)).addErrback(self._not_ended, key)

    def stop_all(self) -> None:
        """The site stops: end every preview."""
        for key in list(self._timers):
            self.stop(key).addErrback(self._not_ended, key)

    def _not_ended(self, failure: Any, key: Any) -> None:
        self.log.failure("ending the preview {key}", failure, key=key)


class PreviewSwitch(resource.Resource):
    """
    C{POST /preview} with C{{"id": "<page id>", "on": true|false}}: start or
    renew, or stop, that page's preview.  Only from the server's own pages:
    a browser's cross-site request is refused by its C{Origin}, and the JSON
    content type cannot be sent across sites without a CORS preflight, which
    this server never grants.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, leases: PreviewLeases):
        super().__init__()
        self.leases = leases

    def render(self, request):
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return json_response(request, {"ok": False, "error": "use POST"}, 405)
        return self.render_POST(request)

    def render_POST(self, request):
        origin = request.getHeader(b"origin")
        host = request.getHeader(b"host")
        if origin is not None and (host is None or origin.lower() != b"http://" + host.lower()):
            return json_response(
                request, {"ok": False, "error": "only the status page may do this"}, 403
            )
        kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            return json_response(
                request, {"ok": False, "error": "send JSON (application/json)"}, 415
            )
        body = request.content.read(MAX_PREVIEW_BODY + 1)
        if len(body) > MAX_PREVIEW_BODY:
            return json_response(
                request, {"ok": False, "error": f"body over {MAX_PREVIEW_BODY} bytes"}, 413
            )
        try:
            message = json.loads(body)
            key, on = message["id"], message["on"]
        except (ValueError, TypeError, KeyError):
            return json_response(
                request, {"ok": False, "error": 'expected {"id": "...", "on": true}'}, 400
            )
        if not isinstance(key, str) or not _PREVIEW_ID.match(key) or not isinstance(on, bool):
            return json_response(
                request,
                {"ok": False, "error": "id: 1-64 letters, digits, - or _; on: true or false"},
                400,
            )
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = self.leases.start(key) if on else self.leases.stop(key)

        def answer(body, code):
            if not gone:
                request.write(json_response(request, body, code))
                request.finish()

        def failed(f):
            if on:
                self.log.info("status page preview refused: {error}", error=f.getErrorMessage())
            else:
                self.log.failure("ending a preview", f)
            answer({"ok": False, "error": f.getErrorMessage()}, 503)

        d.addCallbacks(lambda _: answer({"ok": True, "preview": on}, 200), failed)
        return server.NOT_DONE_YET
