# -*- test-case-name: tests.test_session -*-
"""
L{ClientSession}: one connection's requests, and what they do.

The protocol hands every text frame to L{ClientSession.handle}, which parses
it with L{jspsych_tobii.core.messages}, runs the handler named after the
request type, and sends exactly one reply carrying the request's
C{requestId}, whether the handler returned a dict, a Deferred, or failed.
A handler's failure never escapes this class: the client gets an error reply
and the connection stays usable.

What one connection can make the server do is bounded.  Its requests take
at most L{TURN_BUDGET_S} of a reactor turn (the rest wait for the next
turn).  A frame larger than L{DECODE_INLINE_BYTES} is decoded on a worker
thread (the connection's later frames wait for it; while frames wait, its
socket is not read), heavy maths runs there too, one job per connection at
a time, and at most L{MAX_PENDING_REPLIES} slow requests (L{SLOW_REQUESTS})
may await their replies at once.
"""

from __future__ import annotations

import collections
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from jspsych_tobii.core import messages
from jspsych_tobii.core.gaze import dumps, sample_dicts
from jspsych_tobii.core.history import SessionSamples, session_range
from jspsych_tobii.core.markers import MAX_MARKER_BYTES, json_size
from jspsych_tobii.core.messages import Request, RequestError
from jspsych_tobii.core.timesync import ClientClockModel
from jspsych_tobii.core.validation import ClientCopies, ValidationRun
from jspsych_tobii.interfaces import NoTrackerError, TrackerError
from jspsych_tobii.logs import Logger
from jspsych_tobii.server.bulk import StreamedReply, reply_pieces
from jspsych_tobii.server.calibration import CalibrationError
from jspsych_tobii.server.gate import SendGate


class ClockedReply:
    """
    A handler's answer with one field, C{key}, that is the server's time
    when the reply is written (C{time_sync}'s C{serverTime}): the reply is
    encoded once with a placeholder, and the time is put in at the last
    moment, just before the write (L{SendGate.send_clocked}).
    """

    _PLACEHOLDER = "\x00clocked"
    _ENCODED = json.dumps(_PLACEHOLDER).encode()

    def __init__(self, fields: dict, key: str):
        self.fields = fields
        self.key = key

    def renderer(self, request: Request, clock: Any):
        """The reply's C{render()} (its text, with the time now) and its largest size."""
        message = messages.reply(request, **self.fields)
        message[self.key] = self._PLACEHOLDER
        # the placeholder is the last field written: a request id that
        # happens to hold the same text comes before it
        head, _, tail = dumps(message).rpartition(self._ENCODED)
        now_ms = clock.now_ms

        def render() -> bytes:
            # a float's repr is what json.dumps writes for it
            return head + repr(now_ms()).encode() + tail

        return render, len(head) + len(tail) + 24  # and its size, at most


#: Errors whose message is shown to the client as is; anything else is a bug,
#: logged with its traceback and reported as an internal error.
EXPECTED_ERRORS = (RequestError, TrackerError, CalibrationError, ValueError)

#: Frames larger than this are decoded on a worker thread (the C decoder
#: takes ~4 ms for 256 KiB; a 1 s validation point at 1200 Hz is ~360 KB).
DECODE_INLINE_BYTES = 256 * 1024
#: Time one connection's requests may take in one reactor turn: the frames
#: after that wait for the next turn, and its socket is not read meanwhile
#: (64 KB of tiny requests would otherwise take ~50 ms at once).
TURN_BUDGET_S = 0.005
#: Slow requests of one connection that may await their replies at once.
MAX_PENDING_REPLIES = 8
#: The requests that count against L{MAX_PENDING_REPLIES}: their replies
#: take tracker time, worker time, or a stream of the whole buffer.
SLOW_REQUESTS = frozenset(
    {
        "get_data",
        "validation_compute",
        "calibration_start",
        "calibration_point",
        "calibration_discard_point",
        "calibration_compute",
        "calibration_stop",
    }
)


@dataclass
class SplicedReply:
    """A reply whose C{key} is an array of items already encoded as JSON."""

    key: str
    items: List[bytes]
    fields: dict = field(default_factory=dict)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _our_sentence(failure: Failure) -> bool:
    """
    Whether the failure's message is one this server wrote for the client:
    an expected error, with a message, raised by this package's code (a
    ValueError from Python or numpy is a bug, not a sentence for the client).
    """
    error = failure.value
    if not isinstance(error, EXPECTED_ERRORS) or not str(error):
        return False
    if not failure.frames:  # built, not raised: by our own code
        return True
    raised_in = os.path.abspath(failure.frames[-1][1])
    return raised_in.startswith(_PACKAGE + os.sep)


class ClientSession:
    """
    @param app: the shared server state (L{jspsych_tobii.server.state.ServerState}).
    @param gate: this connection's L{SendGate}.
    """

    log = Logger()

    def __init__(self, app: Any, gate: SendGate, peer: str, reader: Any = None):
        """
        @param reader: the connection's incoming side, an C{IPushProducer}
            (the transport), paused while a large frame is decoded; or None.
        """
        self.app = app
        self.gate = gate
        self.peer = peer
        self.reader = reader
        self.clock_model = ClientClockModel()
        self.validation: Optional[ValidationRun] = None
        self.closed = False
        self.pending = 0  # requests whose reply is not yet handed to the gate
        self._decoding = False  # a frame is being decoded on a worker thread
        #: frames waiting for that decode, or for the next reactor turn
        self._inbox: collections.deque = collections.deque()
        self._jobs = defer.DeferredLock()  # this connection's worker jobs, one at a time
        #: measures the time spent answering (tests may replace it)
        self.work_clock: Callable[[], float] = time.perf_counter
        self._spent = 0.0  # in this reactor turn
        self._turn: Any = None  # the call that starts the next turn's count
        self._reading_paused = False

    @property
    def tracking(self) -> bool:
        return self.app.hub.is_subscribed(self.gate)

    # -- dispatch

    def handle(self, payload: bytes, is_binary: bool = False) -> Optional[defer.Deferred]:
        """Answer one frame; returns the Deferred of a pending reply, if any."""
        received_ms = self.app.clock.now_ms()
        if self._decoding or self._inbox or self._spent >= TURN_BUDGET_S:
            self._inbox.append((payload, is_binary, received_ms))
            self._pause_reading()
            return None
        return self._timed(payload, is_binary, received_ms)

    def _timed(
        self, payload: bytes, is_binary: bool, received_ms: float
    ) -> Optional[defer.Deferred]:
        started = self.work_clock()
        try:
            return self._handle(payload, is_binary, received_ms)
        finally:
            self._spent += self.work_clock() - started
            if self._turn is None and not self.closed:
                self._turn = self.app.reactor.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        self._spent = 0.0
        self._drain()

    def _pause_reading(self) -> None:
        if self.reader is not None and not self._reading_paused:
            self._reading_paused = True
            self.reader.pauseProducing()

    def _handle(
        self, payload: bytes, is_binary: bool, received_ms: float
    ) -> Optional[defer.Deferred]:
        if len(payload) > DECODE_INLINE_BYTES:
            self._decode_aside(payload, is_binary, received_ms)
            return None
        try:
            request = messages.parse_request(payload, is_binary)
        except RequestError as e:
            self._send_error(str(e), e.request_id, e.request_type)
            return None
        return self._dispatch(request, received_ms)

    def _decode_aside(self, payload: bytes, is_binary: bool, received_ms: float) -> None:
        """Decode a large frame on a worker thread; the frames after it wait."""
        self._decoding = True
        self._pause_reading()

        def decoded(request):
            self._decoding = False
            try:
                if not self.closed:
                    self._dispatch(request, received_ms)
            finally:
                self._drain()

        def failed(failure):
            self._decoding = False
            try:
                if failure.check(RequestError):
                    error = failure.value
                    self._send_error(str(error), error.request_id, error.request_type)
                else:
                    self.log.failure("{peer}: decoding a large frame", failure, peer=self.peer)
                    self._send_error(
                        "internal server error decoding a frame; the server's log has the details",
                        None,
                        None,
                    )
            finally:
                self._drain()

        self.run_job(decode_large, payload, is_binary).addCallbacks(decoded, failed)

    def _drain(self) -> None:
        """
        Answer the frames that waited, until another decode starts or this
        turn's budget is spent (then the next turn goes on).
        """
        while (
            self._inbox and not self._decoding and not self.closed and self._spent < TURN_BUDGET_S
        ):
            self._timed(*self._inbox.popleft())
        if not self._inbox and not self._decoding and not self.closed and self._reading_paused:
            self._reading_paused = False
            self.reader.resumeProducing()

    def run_job(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        """
        Run C{f} on a worker thread, after this connection's earlier jobs: a
        connection uses one worker at a time, so no client can make another
        wait for more than one of its jobs.
        """
        work = self.app.work
        if work is None:
            return defer.maybeDeferred(f, *args, **kwargs)
        return self._jobs.run(work.run, f, *args, **kwargs)

    def _dispatch(self, request: Request, received_ms: float) -> Optional[defer.Deferred]:
        if request.type in SLOW_REQUESTS and self.pending >= MAX_PENDING_REPLIES:
            self._send_error(
                f"{request.type}: this connection already has {self.pending} requests in "
                f"progress (at most {MAX_PENDING_REPLIES}); wait for their replies",
                request.request_id,
                request.type,
            )
            return None
        handler = getattr(self, "do_" + request.type)
        try:
            result = handler(request, received_ms)
        except Exception:
            self._failed(Failure(), request)
            return None
        if isinstance(result, defer.Deferred):
            self.pending += 1
            result.addCallbacks(
                self._send_reply, self._failed, callbackArgs=(request,), errbackArgs=(request,)
            )
            result.addBoth(self._settled)
            return result
        self._send_reply(result, request)
        return None

    def _settled(self, result: Any) -> None:
        self.pending -= 1

    def _send_reply(self, fields, request: Request) -> Optional[defer.Deferred]:
        if self.closed:
            return None
        if isinstance(fields, StreamedReply):
            head = messages.reply(request, **fields.fields)
            sent = self.gate.send_stream(reply_pieces(head, fields.key, fields.chunks))
            # the request stays pending until its reply is out
            return sent.addErrback(self._unsent, request)
        if isinstance(fields, SplicedReply):
            spliced = dumps(messages.reply(request, **fields.fields))
            key = json.dumps(fields.key).encode()
            self.gate.send_bytes(
                spliced[:-1] + b"," + key + b":[" + b",".join(fields.items) + b"]}"
            )
            return None
        if isinstance(fields, ClockedReply):
            render, size = fields.renderer(request, self.app.clock)
            self.gate.send_clocked(render, size)
            return None
        self.gate.send_message(messages.reply(request, **fields))
        return None

    def _unsent(self, failure: Failure, request: Request) -> None:
        if failure.check(ConnectionError):
            self.log.info(
                "{peer}: the connection closed before its {type} reply was sent",
                peer=self.peer,
                type=request.type,
            )
        else:
            self.log.failure(
                "{peer}: sending the {type} reply", failure, peer=self.peer, type=request.type
            )

    def _failed(self, failure: Failure, request: Request) -> None:
        error = failure.value
        if _our_sentence(failure):
            text = str(error)
            self.log.info(
                "{peer}: {type} failed: {error}", peer=self.peer, type=request.type, error=text
            )
        else:
            self.log.failure(
                "{peer}: internal error handling {type}", failure, peer=self.peer, type=request.type
            )
            # the exception's text is Python's (or a library's), not ours to show
            text = (
                f"internal server error while handling {request.type}; "
                "the server's log has the details"
            )
        self._send_error(text, request.request_id, request.type)

    def _send_error(self, text: str, request_id: Any, request_type: Optional[str]) -> None:
        if not self.closed:
            self.gate.send_message(messages.error_reply(text, request_id, request_type))

    def close(self) -> None:
        """The connection is gone: release what it held."""
        self.closed = True
        self._inbox.clear()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        self.app.calibration.abandon(self)

    # -- clocks

    def do_time_sync(self, request: Request, received_ms: float):
        client_ms = request.params["clientTime"]
        if client_ms is not None:
            self.clock_model.observe(client_ms, received_ms)
        # serverTime is read when the reply is written (see ClockedReply)
        return ClockedReply({"clientTime": client_ms, "success": True}, "serverTime")

    def do_get_device_clock_offset(self, request: Request, received_ms: float) -> dict:
        # B is the tracker's system clock shifted into server time; C is
        # that system clock: B - C is the shift the server set from the tracker.
        hub = self.app.hub
        reply = {
            "success": True,
            "offset": self._tracker_offset_ms(),
            "method": "shared_clock",
            "sample_count": hub.samples_in_session if hub.running else 0,
            "session": hub.session,
            **self._tracker_state(),
        }
        latest = hub.latest()
        if latest is not None:
            reply["latest_delivery_latency_ms"] = (
                int(latest["server_time_us"]) - int(latest["system_time_us"])
            ) / 1000.0
        return reply

    # -- gaze

    def do_start_tracking(self, request: Request, received_ms: float):
        if self.tracking:
            return {"success": True, "tracking": True, "alreadyTracking": True}
        d = self.app.hub.subscribe(self.gate)
        d.addCallback(
            lambda _: {"success": True, "tracking": True, "session": self.app.hub.session}
        )
        return d

    def do_stop_tracking(self, request: Request, received_ms: float):
        if not self.tracking:
            return {"success": True, "tracking": False}
        d = self.app.hub.unsubscribe(self.gate)
        d.addCallback(lambda _: {"success": True, "tracking": False})
        return d

    def do_get_current_gaze(self, request: Request, received_ms: float) -> dict:
        latest = self.app.hub.latest()
        gaze = None if latest is None else sample_dicts(latest.reshape(1))[0]
        return {"success": True, "gaze": gaze, **self._tracker_state()}

    def do_get_data(self, request: Request, received_ms: float):
        start, end = request.params["start_time"], request.params["end_time"]
        start_us = None if start is None else int(round(start * 1000))
        end_us = None if end is None else int(round(end * 1000))
        # recent samples from memory, older ones of the session from its
        # recording, once the recording holds all that memory no longer does
        recorder, buffer = self.app.recorder, self.app.hub.buffer
        oldest = buffer.oldest_time_us()
        if recorder is not None and (oldest is None or start_us is None or start_us < oldest):
            d = recorder.flushed()
        else:
            d = defer.succeed(None)
        d.addCallback(
            lambda _: StreamedReply(
                session_range(recorder, buffer, start_us, end_us),
                fields=self._completeness(start_us),
            )
        )
        return d

    def _completeness(self, start_us: Optional[int]) -> dict:
        """
        C{truncated}: whether samples of the current session in a range from
        C{start_us} are gone (they left the in-memory buffer and no whole
        recording holds them), and if so C{availableFrom}: the sample-clock
        time (ms) from which the answer is complete.  Logged once per
        tracking session.
        """
        hub = self.app.hub
        buffer = hub.buffer
        oldest = buffer.oldest_time_us()
        if oldest is None or buffer.appended <= len(buffer):
            return {"truncated": False}  # nothing of this session has left memory
        if start_us is not None and start_us >= oldest:
            return {"truncated": False}
        why = self._recording_gap()
        if why is None:
            return {"truncated": False}  # the recording holds the rest
        if self.app.truncation_logged != hub.session:
            self.app.truncation_logged = hub.session
            newest = buffer.latest()
            held_s = (int(newest["system_time_us"]) - oldest) / 1e6
            self.log.warn(
                "get_data from {peer} asked for samples of tracking session {n} older than the "
                "{count} held in memory ({held:.1f} s, --buffer-size), and {why}: answers "
                "before {available:.3f} ms are truncated (said once per session)",
                peer=self.peer,
                n=hub.session,
                count=len(buffer),
                held=held_s,
                why=why,
                available=oldest / 1000.0,
            )
        return {"truncated": True, "availableFrom": oldest / 1000.0}

    def _recording_gap(self) -> Optional[str]:
        """
        Why the recording does not hold the current tracking session whole,
        or None when it does.
        """
        recorder = self.app.recorder
        files = None if recorder is None else recorder.last
        if files is None or files.session != self.app.hub.session:
            return "the server records nothing (start it with --record-dir to keep whole sessions)"
        if files.error is not None or files.dropped:
            return f"its recording failed ({files.error or 'samples were dropped'})"
        return None

    def _session_samples(self) -> SessionSamples:
        """
        The get_data query over the current tracking session, with the time
        from which it answers whole: the session's start when nothing has
        left memory or the recording holds the rest, else the buffer's
        oldest sample.
        """
        hub, recorder = self.app.hub, self.app.recorder
        buffer = hub.buffer
        whole_from = oldest = buffer.oldest_time_us()
        started = hub.session_started_us
        if oldest is not None and started is not None:
            if buffer.appended <= len(buffer) or self._recording_gap() is None:
                whole_from = min(started, oldest)
        return SessionSamples(recorder, buffer, whole_from)

    def do_get_user_position(self, request: Request, received_ms: float) -> dict:
        state = self._tracker_state()
        position = (
            self.app.trackers.require().getUserPosition() if state["trackerConnected"] else None
        )
        return {
            "success": True,
            "position": None if position is None else position.to_dict(),
            **state,
        }

    def do_get_tracker_info(self, request: Request, received_ms: float) -> dict:
        # the tracker in use, still described while its connection is lost
        info = self.app.trackers.info()
        return {
            "success": True,
            "tracker": None if info is None else info.to_dict(),
            **self._tracker_state(),
        }

    def _tracker_state(self) -> dict:
        """
        C{trackerConnected}, and while no tracker is connected,
        C{trackerError} saying why: part of every read-only reply about the
        tracker, which answers C{success: true} with C{null} values then,
        as a client polling it expects.
        """
        try:
            self.app.trackers.require()
        except NoTrackerError as e:
            return {"trackerConnected": False, "trackerError": str(e)}
        return {"trackerConnected": True}

    def do_get_status(self, request: Request, received_ms: float) -> dict:
        hub = self.app.hub
        trackers = self.app.trackers
        return {
            "success": True,
            "trackerConnected": trackers.tracker is not None and trackers.available,
            "trackerError": trackers.last_error,
            "streamErrors": dict(trackers.stream_errors),
            "tracking": self.tracking,
            "streaming": hub.running,
            "session": hub.session,
            "clients": len(hub.gates),
            "trackingClients": hub.subscriber_count,
            "bufferedSamples": len(hub.buffer),
            "droppedFrames": self.gate.dropped,
            "version": self.app.version,
        }

    # -- calibration

    def do_calibration_start(self, request: Request, received_ms: float):
        d = self.app.calibration.start(self)
        d.addCallback(lambda _: {"success": True})
        return d

    def do_calibration_point(self, request: Request, received_ms: float):
        point = request.params["point"]
        d = self.app.calibration.collect(self, point["x"], point["y"])
        d.addCallback(lambda ok: {"success": bool(ok), "point": point})
        return d

    def do_calibration_discard_point(self, request: Request, received_ms: float):
        point = request.params["point"]
        d = self.app.calibration.discard(self, point["x"], point["y"])
        d.addCallback(lambda _: {"success": True, "point": point})
        return d

    def do_calibration_compute(self, request: Request, received_ms: float):
        d = self.app.calibration.compute(self)

        def recorded(result):
            self.app.record_event("calibration_result", peer=self.peer, result=result)
            return result

        return d.addCallback(recorded)

    def do_calibration_stop(self, request: Request, received_ms: float):
        d = self.app.calibration.stop(self)
        d.addCallback(lambda _: {"success": True})
        return d

    def do_get_calibration_data(self, request: Request, received_ms: float) -> dict:
        result = self.app.calibration.last_result
        if result is None:
            return {"success": False, "error": "no calibration has been computed yet"}
        return dict(result)

    # -- the mock's participant

    def do_mock_look_at(self, request: Request, received_ms: float) -> dict:
        tracker = self.app.trackers.require()
        look_at = getattr(tracker, "lookAt", None)
        if look_at is None:
            raise TrackerError("mock_look_at works only with the mock tracker (--mock)")
        point = request.params["point"]
        if point is None:
            look_at(None)
        else:
            look_at(point["x"], point["y"])
        return {"success": True, "point": point}

    # -- validation

    def _new_validation(self) -> ValidationRun:
        config = self.app.config
        if config is None:
            return ValidationRun()
        return ValidationRun(config.validation_skip_ms, config.validation_window_ms)

    def do_validation_start(self, request: Request, received_ms: float) -> dict:
        self.validation = self._new_validation()
        return {"success": True}

    def do_validation_point(self, request: Request, received_ms: float) -> dict:
        if self.validation is None:
            self.validation = self._new_validation()
            self.validation.note("validation_point arrived without validation_start")
        params = request.params
        self.validation.add_point(
            params["point"]["x"], params["point"]["y"], params["timestamp"], params["gaze_samples"]
        )
        return {"success": True, "pointIndex": len(self.validation.points) - 1}

    def do_validation_compute(self, request: Request, received_ms: float):
        run = self.validation
        if run is not None:
            run.check()  # a refused point is the real cause; say so
        if run is None or not run.points:
            raise CalibrationError(
                "no validation points were received (send validation_start and validation_point)"
            )
        display = self.app.trackers.display_area()
        samples = self._session_samples()
        recorder, oldest = self.app.recorder, samples.buffer.oldest_time_us()
        older = [
            p.window_us[0]
            for p in run.points
            if p.window_us is not None and samples.holds(p.window_us[0])
        ]
        if recorder is not None and oldest is not None and older and min(older) < oldest:
            d = recorder.flushed()  # a window left memory: read it once it is on disk
        else:
            d = defer.succeed(None)
        # copy the windows here, on the reactor (through the get_data query,
        # as it stands once flushed); the maths runs on a worker
        d.addCallback(lambda _: self.run_job(run.gather(self._session_samples(), display).compute))

        def recorded(result):
            self.app.record_event("validation_result", peer=self.peer, result=result)
            return result

        return d.addCallback(recorded)

    # -- markers

    def do_marker(self, request: Request, received_ms: float) -> dict:
        """
        An event marker from the experiment: its browser time (clock A) is
        converted to server time (B) with this connection's time sync, and
        to tracker time (C); with no browser time, the arrival time is used.
        """
        params = request.params
        size = json_size([params["label"], params["data"]], MAX_MARKER_BYTES)
        if size > MAX_MARKER_BYTES:
            raise RequestError(
                f"marker: label and data take more than {MAX_MARKER_BYTES} bytes of JSON "
                f"(at least {size}); send less data per marker",
                request.request_id,
                request.type,
            )
        client_ms = params["timestamp"]
        if client_ms is None:
            server_ms, source = received_ms, "server_receipt"
        else:
            converted = self.clock_model.to_server_ms(client_ms)
            if converted is None:
                raise RequestError(
                    "marker: this connection has not sent time_sync yet, so its timestamp "
                    "cannot be converted; send time_sync first or omit timestamp",
                    request.request_id,
                    request.type,
                )
            server_ms, source = converted, "time_sync"
        tracker_offset_ms = self._tracker_offset_ms()
        marker = {
            "label": params["label"],
            "clientTime": client_ms,
            "serverTime": server_ms,
            "trackerTime": server_ms - tracker_offset_ms,
            "timeSource": source,
            "data": params["data"],
            "session": self.app.hub.session,
        }
        self.app.hub.add_marker(dumps(marker))
        self.app.record_event("marker", t_server_ms=server_ms, peer=self.peer, **marker)
        return dict(marker, success=True)

    def do_get_markers(self, request: Request, received_ms: float) -> SplicedReply:
        markers = self.app.hub.markers
        return SplicedReply(
            "markers",
            markers.encoded(),
            {"success": True, "count": len(markers), "evicted": markers.evicted},
        )

    def _tracker_offset_ms(self) -> float:
        """B - C: zero when the tracker's clock is the server's (always, today)."""
        info = self.app.trackers.info()
        if info is None:
            return 0.0
        return (self.app.clock.offset_us - info.system_clock_offset_us) / 1000.0


def decode_large(payload: bytes, is_binary: bool) -> Request:
    """
    On a worker thread: decode a large frame so that the reactor thread can
    run meanwhile, and reduce a validation point's samples there too (the
    rest of its handling is then cheap, on the reactor).
    """
    request = messages.parse_request(payload, is_binary, yielding=True)
    if request.type == "validation_point":
        # the decoded samples are freed here too: freeing 40,000 dicts takes ms
        request.params["gaze_samples"] = ClientCopies.reduce(request.params["gaze_samples"])
        request.raw = {k: v for k, v in request.raw.items() if k != "gaze_samples"}
    return request
