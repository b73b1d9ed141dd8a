# -*- test-case-name: tests.test_session -*-
"""
L{ClientSession}: what one connection's requests do, one C{do_<type>}
handler per request type.  How its frames become requests and replies
(order, bounds, errors) is L{RequestRunner
<jspsych_tobii.server.requests.RequestRunner>}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer

from jspsych_tobii.core.gaze import dumps, sample_dicts
from jspsych_tobii.core.history import SessionSamples, session_text_range
from jspsych_tobii.core.markers import MAX_MARKER_BYTES, json_size
from jspsych_tobii.core.messages import Request, RequestError
from jspsych_tobii.core.timesync import ClientClockModel
from jspsych_tobii.core.validation import ValidationRun, WindowGathering
from jspsych_tobii.interfaces import NoTrackerError, TrackerError
from jspsych_tobii.logs import Logger
from jspsych_tobii.server.bulk import SLICE, StreamedReply
from jspsych_tobii.server.calibration import CalibrationError
from jspsych_tobii.server.gate import SendGate
from jspsych_tobii.server.requests import (
    ClockedReply,
    Handler,
    Payload,
    RequestRunner,
    SplicedReply,
)

if TYPE_CHECKING:  # only for the annotations
    from jspsych_tobii.server.state import ServerState


class ClientSession:
    """
    @param app: the shared server state.
    @param gate: this connection's L{SendGate}.
    @ivar requests: its L{RequestRunner}.
    """

    log = Logger()

    def __init__(
        self,
        app: ServerState,
        gate: SendGate,
        peer: str,
        reader: Optional[IPushProducer] = None,
    ):
        """
        @param reader: the connection's incoming side, an C{IPushProducer}
            (the transport), paused while frames wait; or None.
        """
        self.app = app
        self.gate = gate
        self.peer = peer
        self.clock_model = ClientClockModel()
        self.validation: Optional[ValidationRun] = None
        self.requests = RequestRunner(app, gate, peer, self._handler_for, reader)

    def _handler_for(self, request_type: str) -> Handler:
        handler: Handler = getattr(self, "do_" + request_type)
        return handler

    @property
    def tracking(self) -> bool:
        return self.app.hub.is_subscribed(self.gate)

    def handle(self, payload: Payload, is_binary: bool = False) -> Optional[defer.Deferred]:
        """Answer one frame (see L{RequestRunner.handle})."""
        return self.requests.handle(payload, is_binary)

    def run_job(self, f: Callable[..., object], *args: object, **kwargs: object) -> defer.Deferred:
        """Run C{f} on a worker thread, after this connection's earlier jobs."""
        return self.requests.run_job(f, *args, **kwargs)

    def close(self) -> None:
        """The connection is gone: release what it held."""
        self.requests.close()
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
                # what the recording holds as text is sent as it is
                session_text_range(recorder, buffer, start_us, end_us, SLICE),
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
            assert newest is not None  # the buffer holds samples (oldest is not None)
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
        # as it stands once flushed), one point per reactor turn; the maths
        # runs on a worker
        d.addCallback(lambda _: self._gather(run.gathering(self._session_samples(), display)))
        d.addCallback(lambda gathered: self.run_job(gathered.compute))

        def recorded(result):
            self.app.record_event("validation_result", peer=self.peer, result=result)
            return result

        return d.addCallback(recorded)

    def _gather(self, gathering: WindowGathering) -> defer.Deferred:
        """
        Run C{gathering}'s steps, the first now and the rest one per reactor
        turn (a usual validation takes one); fires with its result.
        """
        steps = gathering.steps()
        if next(steps, StopIteration) is StopIteration:
            return defer.succeed(gathering.result())
        reactor = self.app.reactor
        one_step_per_turn = task.Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda work: reactor.callLater(0, work),
        )
        d = one_step_per_turn.coiterate(steps)
        return d.addCallback(lambda _: gathering.result())

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
