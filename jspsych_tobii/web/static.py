# -*- test-case-name: tests.test_web_static -*-
"""
C{--serve DIR}: the files of one folder at C{/experiment/}, so experiment
pages have a real origin (C{http://localhost:8080}) and run from a web
server rather than from disk.

Only files inside the folder are served, read-only (GET and HEAD).  A path
is refused with 404 when any segment is C{.} or C{..} (also when written
C{%2e%2e}), hides a separator (C{%2f}, a backslash), a drive or stream
colon, or a NUL, or starts with a dot (C{.git}, C{.env}); and when the file
it names resolves, through symbolic links, to anything outside the folder.
A folder answers with its C{index.html}; folders are never listed.  Every
answer says C{Cache-Control: no-cache}, so an edited page shows on reload,
and the content types of the files an experiment uses do not depend on the
operating system's registry (Windows maps C{.js} to C{text/plain} on some
machines).
"""

from __future__ import annotations

import os
from typing import List, Optional

from twisted.web import pages, resource, static
from twisted.web.util import redirectTo

#: Content types fixed here, whatever the system's tables say.
CONTENT_TYPES = dict(
    static.File.contentTypes,
    **{
        ".html": "text/html; charset=utf-8",
        ".htm": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".json": "application/json",
        ".map": "application/json",
        ".svg": "image/svg+xml",
        ".wasm": "application/wasm",
        ".csv": "text/csv; charset=utf-8",
        ".txt": "text/plain; charset=utf-8",
    },
)

_NOT_FOUND = pages.notFound("Not found", "There is no such file in the experiment folder.")


def _safe_segments(segments: List[bytes]) -> Optional[List[str]]:
    """The path's segments as file names, or None when one is not a plain name."""
    names = []
    for segment in segments:
        if segment.startswith(b".") or any(c in segment for c in (b"/", b"\\", b":", b"\0")):
            return None
        try:
            names.append(os.fsdecode(segment))
        except UnicodeDecodeError:
            return None
    return names


def resolve(root: str, segments: List[bytes]) -> Optional[str]:
    """
    The real path of the file or folder the URL segments name under
    C{root} (itself a real path), or None when it is refused or outside.
    Empty segments (C{a//b}, a trailing slash) are skipped.
    """
    names = _safe_segments([s for s in segments if s])
    if names is None:
        return None
    real = os.path.realpath(os.path.join(root, *names))
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return real


class ExperimentFolder(resource.Resource):
    """The files under C{root}, as described in the module's docstring."""

    isLeaf = True

    def __init__(self, root: str):
        super().__init__()
        self.root = os.path.realpath(root)

    def render(self, request):
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return pages.errorPage(
                405, "Method not allowed", "The experiment folder is read-only."
            ).render(request)
        path = resolve(self.root, request.postpath)
        if path is None:
            return _NOT_FOUND.render(request)
        if os.path.isdir(path):
            if not request.path.endswith(b"/"):
                return redirectTo(request.path + b"/", request)
            path = os.path.join(path, "index.html")
        if not os.path.isfile(path):
            return _NOT_FOUND.render(request)
        served = static.File(path)
        served.contentTypes = CONTENT_TYPES
        return served.render(request)


class NoExperimentFolder(resource.Resource):
    """C{/experiment/} without C{--serve}: a 404 that says how to serve one."""

    isLeaf = True

    def render(self, request):
        return pages.notFound(
            "No experiment folder",
            "This server serves no experiment files. Start it with --serve DIR to serve "
            "the folder DIR at /experiment/.",
        ).render(request)
