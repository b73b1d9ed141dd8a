# -*- test-case-name: tests.test_web_status -*-
"""
The live status page (C{/}) and C{/status.json}.

L{StatusBoard} gathers, on request, what an operator needs to see from the
running server's public state: the tracker (and a loud warning when it is
the mock or a replay), the server's version and uptime, the connected
pages and their streams, the tracking session, the recording, the last
calibration and validation, the recent gaze and the head position.  It only
reads: building a snapshot changes nothing any page receives or any file
records.  The last calibration and validation are the server's events
(L{ServerState.record_event}; the board is one of its C{event_sinks}),
stamped when they happened.

C{/status.json} answers HTTP 200 while a tracker is connected and 503
otherwise, for health checks.  The page (C{status.html}, C{status.js},
C{status.css}: package data, nothing from the network) polls it.

Whether a preview runs is L{jspsych_tobii.web.preview}'s.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from typing import TYPE_CHECKING, Any, Collection, Dict, Optional

import numpy as np
from twisted.web import resource
from zope.interface import implementer

from jspsych_tobii.core.jsonsafe import finite
from jspsych_tobii.interfaces import GAZE_DTYPE, IEventSink
from jspsych_tobii.logs import Logger
from jspsych_tobii.recording.format import HEADER_SIZE, utc_iso

if TYPE_CHECKING:  # only for the annotations
    from jspsych_tobii.server.protocol import TobiiServerProtocol
    from jspsych_tobii.server.state import ServerState
    from jspsych_tobii.web.preview import PreviewLeases

#: The gaze plot shows the newest second of gaze, over which the effective
#: rate and the data loss are measured too ...
RECENT_US = 1_000_000
#: ... as at most this many points.
GAZE_POINTS = 120

_CALIBRATION_METRICS = (
    ("accuracyDeg", "averageAccuracyDeg"),
    ("accuracyNorm", "averageAccuracyNorm"),
    ("precisionNorm", "averagePrecisionNorm"),
)
_VALIDATION_METRICS = (
    ("accuracyDeg", "averageAccuracyDeg"),
    ("precisionRmsS2SDeg", "averagePrecisionRmsS2SDeg"),
    ("precisionStdDeg", "averagePrecisionStdDeg"),
    ("dataLoss", "averageDataLoss"),
    ("accuracyNorm", "averageAccuracyNorm"),
)


def binocular_xy(samples: np.ndarray):
    """x and y averaged over the valid eyes, NaN where both are lost."""
    xs, ys, valid = [], [], []
    for eye in ("left", "right"):
        ok = (
            samples[f"{eye}_gaze_valid"]
            & np.isfinite(samples[f"{eye}_x"])
            & np.isfinite(samples[f"{eye}_y"])
        )
        xs.append(np.where(ok, samples[f"{eye}_x"], 0.0))
        ys.append(np.where(ok, samples[f"{eye}_y"], 0.0))
        valid.append(ok.astype(float))
    count = valid[0] + valid[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(count > 0, (xs[0] + xs[1]) / count, np.nan)
        y = np.where(count > 0, (ys[0] + ys[1]) / count, np.nan)
    return x, y


def tracker_source(config: Any, tracker: Any) -> str:
    """C{mock}, C{replay}, C{sdk-child} or C{device}: where the gaze comes from."""
    from jspsych_tobii.trackers.mock import MockTracker
    from jspsych_tobii.trackers.replay import ReplayTracker

    if isinstance(tracker, MockTracker) or (config is not None and config.mock):
        return "mock"
    if isinstance(tracker, ReplayTracker) or (config is not None and config.replay):
        return "replay"
    if config is not None and config.sdk_python:
        return "sdk-child"
    return "device"


@implementer(IEventSink)
class StatusBoard:
    """
    The status page's facts, read from the server's public state.

    @param state: the server's L{ServerState}.
    @param connections: the open WebSocket connections (the factory's set).
    @param previews: the status page's gaze previews.
    @param serve_dir: the folder served at C{/experiment/}, if any.
    """

    log = Logger()

    def __init__(
        self,
        state: ServerState,
        connections: Collection[TobiiServerProtocol],
        previews: PreviewLeases,
        serve_dir: Optional[str] = None,
    ):
        self.state = state
        self._connections = connections
        self.serve_dir = serve_dir
        self.previews = previews
        self.started_us = state.clock.now_us()
        self.started_unix = state.reactor.seconds()
        self.calibration: Optional[Dict[str, Any]] = None
        self.validation: Optional[Dict[str, Any]] = None
        state.event_sinks.append(self)

    def write_event(self, kind: str, **fields: Any) -> None:
        """A server event: keep the newest calibration and validation result."""
        if kind not in ("calibration_result", "validation_result"):
            return
        entry = {
            "result": fields.get("result") or {},
            "peer": fields.get("peer"),
            "unix": self.state.reactor.seconds(),
            "us": self.state.clock.now_us(),
        }
        if kind == "calibration_result":
            self.calibration = entry
        else:
            self.validation = entry

    def tracker_connected(self) -> bool:
        trackers = self.state.trackers
        return trackers.tracker is not None and bool(trackers.available)

    def snapshot(self) -> dict:
        now_us = self.state.clock.now_us()
        source, recent = self._recent()
        return {
            "ok": self.tracker_connected(),
            "server": self._server(now_us),
            "tracker": self._tracker(),
            "pages": self._pages(now_us),
            "session": self._session(now_us, recent),
            "gaze": self._gaze(source, recent),
            "position": self._position(),
            "recording": self._recording(now_us),
            "calibration": self._quality(self.calibration, _CALIBRATION_METRICS, now_us),
            "validation": self._quality(self.validation, _VALIDATION_METRICS, now_us),
            "preview": {
                "active": bool(self.state.hub.previewing),
                "requests": self.state.hub.preview_count,
                "leaseSeconds": self.previews.lease,
            },
        }

    # -- the parts

    def _server(self, now_us: int) -> dict:
        config = self.state.config
        return {
            "version": self.state.version,
            "startedUtc": utc_iso(self.started_unix),
            "uptimeSeconds": round((now_us - self.started_us) / 1e6, 3),
            "experimentFolder": self.serve_dir,
            "recordDir": config.record_dir if config is not None else None,
        }

    def _tracker(self) -> dict:
        trackers = self.state.trackers
        tracker = trackers.tracker
        info = tracker.info if tracker is not None else None
        if tracker is None:
            state = "none"
        elif trackers.available:
            state = "connected"
        else:
            state = "lost"
        config = self.state.config
        source = tracker_source(config, tracker)
        warning = None
        if source == "mock":
            warning = (
                "MOCK TRACKER: the gaze is synthetic (the server runs with --mock); "
                "no eye is being tracked"
            )
        elif source == "replay":
            name = os.path.basename(config.replay) if config is not None and config.replay else ""
            warning = (
                f"REPLAY of {name}: the gaze is a recording played back, "
                "not a participant in front of the tracker"
            )
        return {
            "state": state,
            "source": source,
            "warning": warning,
            "error": trackers.last_error,
            "model": info.model if info else None,
            "serial": info.serial_number if info else None,
            "address": info.address if info else None,
            "firmware": info.firmware_version if info else None,
            "frequency": finite(info.frequency) if info else None,
        }

    def _pages(self, now_us: int) -> list:
        hub = self.state.hub
        owner = self.state.calibration.owner
        pages = []
        for proto in sorted(self._connections, key=lambda p: p.opened_us or 0):
            gate = proto.gate
            if gate is None:
                continue
            pages.append(
                {
                    "peer": proto.peer,
                    "origin": getattr(proto, "websocket_origin", None) or None,
                    "tracking": hub.is_subscribed(gate),
                    "calibrating": owner is not None and owner is proto.session,
                    "connectedSeconds": round((now_us - (proto.opened_us or now_us)) / 1e6, 1),
                    "framesSent": gate.sent_gaze,
                    "framesDropped": gate.dropped,
                    "backlog": gate.backlog,
                }
            )
        return pages

    def _recent(self):
        """
        The newest second of the gaze that runs, C{(source, samples)}:
        C{session}, C{preview} or None (then no samples).
        """
        hub = self.state.hub
        if hub.running:
            source, buffer = "session", hub.buffer
        elif hub.previewing:
            source, buffer = "preview", hub.preview_buffer
        else:
            return None, None
        latest = buffer.latest()
        if latest is None:
            return source, None
        end = int(latest["system_time_us"])
        return source, buffer.query(end - RECENT_US, end)

    def _session(self, now_us: int, recent: Optional[np.ndarray]) -> dict:
        hub = self.state.hub
        info: Dict[str, Any] = {
            "number": hub.session,
            "running": bool(hub.running),
            "trackingPages": hub.subscriber_count,
            "samples": hub.samples_in_session if hub.session else 0,
            "durationSeconds": None,
            "rateHz": None,
            "dataLoss": None,
            "lastSampleAgeSeconds": None,
        }
        if hub.running and hub.session_started_us is not None:
            info["durationSeconds"] = round((now_us - hub.session_started_us) / 1e6, 1)
        if recent is None or not len(recent):
            return info
        n = len(recent)
        if n > 1:
            span = int(recent["system_time_us"][-1]) - int(recent["system_time_us"][0])
            if span > 0:
                info["rateHz"] = round((n - 1) * 1e6 / span, 1)
        lost = ~(recent["left_gaze_valid"] | recent["right_gaze_valid"])
        info["dataLoss"] = round(float(lost.mean()), 4)
        newest = int(recent["server_time_us"][-1])
        info["lastSampleAgeSeconds"] = round((now_us - newest) / 1e6, 3)
        return info

    def _gaze(self, source: Optional[str], recent: Optional[np.ndarray]) -> dict:
        """The newest gaze, thinned for the plot: C{points} are C{[age ms, x, y]}."""
        out: Dict[str, Any] = {"source": source, "points": [], "latest": None}
        if recent is None or not len(recent):
            return out
        step = max(1, int(math.ceil(len(recent) / GAZE_POINTS)))
        chosen = recent[::-1][::step][::-1]  # always keeps the newest
        xs, ys = binocular_xy(chosen)
        end = int(recent["system_time_us"][-1])
        ages = np.round((end - chosen["system_time_us"]) / 1000.0, 1).tolist()
        xs, ys = np.round(xs, 4).tolist(), np.round(ys, 4).tolist()
        out["points"] = [
            [a, None if x != x else x, None if y != y else y] for a, x, y in zip(ages, xs, ys)
        ]
        out["latest"] = {"x": out["points"][-1][1], "y": out["points"][-1][2]}
        return out

    def _position(self) -> Optional[dict]:
        if not self.tracker_connected():
            return None
        try:
            position = self.state.trackers.tracker.getUserPosition()
        except Exception:
            self.log.failure("reading the user position for the status page")
            return None
        if position is None:
            return None
        return {
            key: finite(v) if not isinstance(v, bool) else v
            for key, v in position.to_dict().items()
        }

    def _recording(self, now_us: int) -> Optional[dict]:
        recorder = self.state.recorder
        if recorder is None:
            return None
        files = recorder.current or recorder.last
        out: Dict[str, Any] = {
            "directory": recorder.directory,
            "active": recorder.current is not None,
            "file": None,
        }
        if files is None:
            return out
        out.update(
            {
                "file": os.path.basename(files.gaze_path),
                "events": os.path.basename(files.events_path),
                "session": files.session,
                "bytes": HEADER_SIZE + files.written * GAZE_DTYPE.itemsize,
                "samples": files.samples,
                "written": files.written,
                "flushed": files.flushed_records,
                "lastFlushedSampleAgeSeconds": (
                    None
                    if files.flushed_until_us is None
                    else round((now_us - files.flushed_until_us) / 1e6, 3)
                ),
                "dropped": files.dropped,
                "error": files.error,
            }
        )
        return out

    def _quality(self, entry: Optional[dict], metrics, now_us: int) -> Optional[dict]:
        if entry is None:
            return None
        result = entry["result"]
        out: Dict[str, Any] = {
            "atUtc": utc_iso(entry["unix"]),
            "ageSeconds": round((now_us - entry["us"]) / 1e6, 1),
            "peer": entry["peer"],
            "success": result.get("success"),
        }
        for name, key in metrics:
            out[name] = {
                "average": finite(result.get(key)),
                "left": finite((result.get("left") or {}).get(key)),
                "right": finite((result.get("right") or {}).get(key)),
            }
        return out


def json_response(request, body: dict, code: int = 200) -> bytes:
    """C{body} as the JSON answer to C{request}, with status C{code}; not cached."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")


class StatusJSON(resource.Resource):
    """C{/status.json}: 200 while a tracker is connected, 503 otherwise."""

    isLeaf = True

    def __init__(self, board: StatusBoard):
        super().__init__()
        self.board = board

    def render_GET(self, request):
        snapshot = self.board.snapshot()
        return json_response(request, snapshot, 200 if snapshot["ok"] else 503)


def _asset(name: str) -> bytes:
    return resources.files("jspsych_tobii.web").joinpath("assets").joinpath(name).read_bytes()


_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}

#: The status page loads nothing but itself, its script, its style and status.json.
_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


class StatusAsset(resource.Resource):
    """One file of the status page, read from the package once."""

    isLeaf = True

    def __init__(self, name: str):
        super().__init__()
        self.body = _asset(name)
        self.content_type = _TYPES[os.path.splitext(name)[1]]

    def render_GET(self, request):
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", _POLICY)
        return self.body


class StatusPage(StatusAsset):
    """C{/}: the status page."""

    def __init__(self):
        super().__init__("status.html")
