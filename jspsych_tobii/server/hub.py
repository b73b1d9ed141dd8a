# -*- test-case-name: tests.test_hub -*-
"""
L{GazeHub}: the one gaze subscription, shared by every tracking connection.

The hub subscribes to the tracker's gaze stream while anyone holds it (a
tracking connection, or a dropped connection inside its reconnect grace
period) and unsubscribes when no one does.  Each run of the stream is a
tracking session: it starts with an empty buffer and sample numbers from 0,
so nothing from an earlier session is ever answered.

A preview (L{preview}, asked for by the status page) runs the tracker's
stream without a tracking session: its samples go only to a small buffer of
their own (L{preview_buffer}), never to a client, the session buffer or the
recorder.  When a client starts tracking during a preview, a session begins
on the stream that already runs; when the last one stops, the session ends
and the preview goes on.

A batch's path: the tracker's receiver (L{_on_gaze}) stamps sequence numbers
and arrival time, appends to the buffer, encodes each sample once as its
complete C{gaze_data} text (L{encode_frames}), frames it once as a WebSocket
frame (L{TextFrame}), and hands the same frame to every subscriber's
L{SendGate}.  Observers (the recorder) see each batch first; one that fails
costs no client its batch: its first failure in a tracking session is
logged with the traceback, the others are counted and summed up when the
session ends.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Set

import numpy as np
from twisted.internet import defer
from zope.interface import implementer

from jspsych_tobii.core.buffer import GazeBuffer
from jspsych_tobii.core.gaze import (
    RECORD_SIZE,
    VECTOR_THRESHOLD,
    dumps,
    encode_frames,
    record_frames,
    stamp,
)
from jspsych_tobii.core.markers import MarkerLog
from jspsych_tobii.core.timesync import ServerClock
from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    GazeBatch,
    IGazeObserver,
    ISessionListener,
    ITracker,
    ITrackerListener,
    ITrackerProvider,
    TrackerInfo,
)
from jspsych_tobii.logs import Logger
from jspsych_tobii.server.gate import SendGate

#: Samples of a preview kept for the status page (2 s at 1200 Hz).
PREVIEW_SAMPLES = 2400


@implementer(ITrackerListener)
class GazeHub:
    """
    @param trackers: gives the tracker to stream from (C{require()}).
    @param prepare: frames a text payload once for all clients
        (L{jspsych_tobii.server.protocol.prepare_text}: a L{TextFrame}).
    @param observers: see each batch of a tracking session first (the
        recorder, the LSL publisher).
    @param session_listeners: told when a tracking session starts and ends.
    """

    log = Logger()

    def __init__(
        self,
        trackers: ITrackerProvider,
        clock: ServerClock,
        buffer_size: int,
        prepare: Callable[[bytes], Any],
        observers: Iterable[IGazeObserver] = (),
        session_listeners: Iterable[ISessionListener] = (),
    ):
        self._trackers = trackers
        self.clock = clock
        self.buffer = GazeBuffer(buffer_size)
        self._prepare = prepare
        self._subscribers: Set[SendGate] = set()
        self._holds: Set[object] = set()
        self._previews: Set[object] = set()
        self.gates: Set[SendGate] = set()  # every open connection
        self.observers: List[Callable[[np.ndarray], Any]] = [o.write_batch for o in observers]
        #: batches each observer failed on in the current tracking session
        self.observer_failures: Dict[Any, int] = {}
        #: told when a tracking session starts and ends (the recorder)
        self.session_listeners: List[ISessionListener] = list(session_listeners)
        self._lock = defer.DeferredLock()
        self._tracker: Optional[ITracker] = None  # the tracker the stream runs on, while it runs
        self._in_session = False  # the stream that runs is a tracking session (not a preview)
        #: the newest samples of a preview (see L{preview})
        self.preview_buffer = GazeBuffer(PREVIEW_SAMPLES)
        self.session = 0
        self.session_started_us: Optional[int] = None
        self._seq = 0
        self._interrupted = False  # the tracker went away mid-session
        #: event markers of the current tracking session (the newest, within limits)
        self.markers = MarkerLog()

    # -- who holds the stream

    @property
    def running(self) -> bool:
        """A tracking session runs (a preview alone is not one)."""
        return self._tracker is not None and self._in_session

    @property
    def previewing(self) -> bool:
        """The stream runs for a preview only."""
        return self._tracker is not None and not self._in_session

    def is_subscribed(self, gate: SendGate) -> bool:
        return gate in self._subscribers

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, gate: SendGate) -> defer.Deferred:
        """
        Send gaze to C{gate}.  The Deferred fires when the stream runs, or
        fails (and the subscription is withdrawn) when it cannot start.
        """
        self._subscribers.add(gate)
        d = self._sync()

        def failed(f):
            self._subscribers.discard(gate)
            return f

        return d.addErrback(failed)

    def unsubscribe(self, gate: SendGate) -> defer.Deferred:
        self._subscribers.discard(gate)
        return self._sync()

    def hold(self, token: object) -> defer.Deferred:
        """Keep the stream running on behalf of C{token} (no socket)."""
        self._holds.add(token)
        return self._sync()

    def release(self, token: object) -> defer.Deferred:
        self._holds.discard(token)
        return self._sync()

    def preview(self, token: object) -> defer.Deferred:
        """
        Run the stream for a preview on behalf of C{token}: no tracking
        session, nothing sent to clients or recorded (see L{preview_buffer}).
        """
        self._previews.add(token)
        d = self._sync()

        def failed(f):
            self._previews.discard(token)
            return f

        return d.addErrback(failed)

    def end_preview(self, token: object) -> defer.Deferred:
        self._previews.discard(token)
        return self._sync()

    @property
    def preview_count(self) -> int:
        return len(self._previews)

    def _sync(self) -> defer.Deferred:
        return self._lock.run(self._apply)

    @defer.inlineCallbacks
    def _apply(self):
        want = bool(self._subscribers or self._holds)
        stream = want or bool(self._previews)
        if not want and self._interrupted:
            # the tracker went away and no one waits for it any more
            self._interrupted = False
            self._session_ended(reason="tracker lost")
        if stream and self._tracker is None:
            tracker = self._trackers.require()
            if want and not self._interrupted:
                self._begin_session(tracker)
            elif not want:
                self.preview_buffer.clear()
            self._in_session = want
            try:
                yield tracker.startGaze(self._on_gaze)
            except Exception as e:
                self._in_session = False
                if want:
                    self._session_ended(reason=f"could not start: {e}")
                raise
            self._interrupted = False
            self._tracker = tracker
            if want:
                self.log.info("gaze stream started (tracking session {n})", n=self.session)
            else:
                self.log.info("gaze stream started for a preview (no tracking session)")
        elif stream and want != self._in_session:
            # the stream runs on; a session begins or ends on it
            if want:
                assert self._tracker is not None  # the stream runs
                self._begin_session(self._tracker)
                self._in_session = True
                self.log.info(
                    "tracking session {n} started on the preview's stream", n=self.session
                )
            else:
                self._in_session = False
                self.preview_buffer.clear()
                self._session_stopped()
        elif not stream and self._tracker is not None:
            tracker, self._tracker = self._tracker, None
            if self._in_session:
                self._session_stopped()
            else:
                self.log.info("gaze stream stopped (the preview ended)")
            try:
                yield tracker.stopGaze()
            finally:
                self._in_session = False

    def _session_stopped(self) -> None:
        self.log.info(
            "gaze stream stopped after {count} samples (tracking session {n})",
            count=self._seq,
            n=self.session,
        )
        self._session_ended(reason="no client tracking")

    def _session_ended(self, reason: str) -> None:
        for listener in self.session_listeners:
            try:
                listener.session_ended(reason=reason)
            except Exception:
                self.log.failure("{listener} failed on session_ended", listener=listener)
        self._report_observer_failures()

    def tracker_lost(self) -> None:
        """
        The tracker went away.  When it comes back (L{restart}) the stream
        resumes in the same tracking session: its buffer and sample numbers
        go on, so nothing recorded before the loss is forgotten.
        """
        if self._tracker is not None:
            self._tracker = None
            self._interrupted = self._in_session
            self._in_session = False

    def restart(self) -> defer.Deferred:
        """Re-subscribe after the tracker came back, if anyone still holds the stream."""
        return self._sync()

    # -- ITrackerListener: what the tracker service tells

    def tracker_connected(self, info: TrackerInfo) -> None:
        self.broadcast({"type": "tracker_status", "status": "connected", "tracker": info.to_dict()})

    def tracker_restored(self) -> None:
        self.restart().addErrback(lambda f: self.log.failure("could not resume the gaze stream", f))

    def tracker_status(self, message: dict) -> None:
        self.broadcast(message)

    def tracker_closing(self) -> defer.Deferred:
        return self.stop()

    def stop(self) -> defer.Deferred:
        """Release everything (service shutdown)."""
        self._subscribers.clear()
        self._holds.clear()
        self._previews.clear()
        return self._sync()

    def add_marker(self, encoded: bytes) -> None:
        """Keep a marker (its JSON text) in memory, letting the oldest go past the limits."""
        self.markers.add(encoded)

    def _begin_session(self, tracker: ITracker) -> None:
        self.markers.clear()
        self.session += 1
        self.session_started_us = self.clock.now_us()
        self._seq = 0
        self.buffer.clear()
        info = tracker.info.to_dict() if tracker.info is not None else None
        for listener in self.session_listeners:
            try:
                listener.session_started(self.session, self.session_started_us, info)
            except Exception:
                self.log.failure("{listener} failed on session_started", listener=listener)

    # -- the hot path

    def _on_gaze(self, batch: GazeBatch) -> None:
        if self._tracker is None and not self._lock.locked:
            return  # a late batch after stopGaze
        if isinstance(batch, bytearray):
            # the records' own bytes, handed over (ITracker.startGaze): no numpy
            records = batch
            if len(records) % RECORD_SIZE:
                raise ValueError(f"{len(records)} bytes are not whole GAZE_DTYPE records")
        elif batch.dtype != GAZE_DTYPE:
            raise TypeError(f"expected gaze records of GAZE_DTYPE, got {batch.dtype}")
        else:
            # the batch's own copy: for the few records a tracker hands over
            # at a time, bytes and struct cost far less than numpy calls
            records = bytearray(batch.tobytes())
        if not self._in_session:
            preview = np.frombuffer(records, GAZE_DTYPE)
            preview["server_time_us"] = self.clock.now_us()
            self.preview_buffer.extend(preview)
            return
        n = len(records) // RECORD_SIZE
        seq = self._seq
        self._seq = seq + n
        stamp(records, seq, self.clock.now_us())
        self.buffer.extend_records(records)
        stamped = None  # as an array, only when something needs one
        if self.observers:
            stamped = np.frombuffer(records, GAZE_DTYPE)
            for observer in self.observers:
                try:
                    observer(stamped)
                except Exception:
                    self._observer_failed(observer)
        subscribers = self._subscribers
        if not subscribers:
            return
        prepare = self._prepare
        if n == 1:  # the usual case: a tracker hands samples over one by one
            frame = prepare(record_frames(records)[0])
            for gate in subscribers:
                gate.send_gaze(frame)
            return
        if n < VECTOR_THRESHOLD:
            texts = record_frames(records)
        else:
            texts = encode_frames(
                np.frombuffer(records, GAZE_DTYPE) if stamped is None else stamped
            )
        frames = [prepare(text) for text in texts]
        for gate in subscribers:
            gate.send_gaze_batch(frames)

    def _observer_failed(self, observer: Any) -> None:
        failures = self.observer_failures.get(observer, 0) + 1
        self.observer_failures[observer] = failures
        if failures == 1:
            self.log.failure(
                "{observer} failed on a gaze batch of tracking session {n}; the clients "
                "still get it, and later failures of this session are only counted",
                observer=observer,
                n=self.session,
            )

    def _report_observer_failures(self) -> None:
        for observer, failures in self.observer_failures.items():
            if failures > 1:
                self.log.error(
                    "{observer} failed on {failures} gaze batches of tracking session {n}",
                    observer=observer,
                    failures=failures,
                    n=self.session,
                )
        self.observer_failures.clear()

    # -- queries

    @property
    def samples_in_session(self) -> int:
        return self.buffer.appended

    def latest(self) -> Optional[np.void]:
        """The newest sample of the running session, or None."""
        if not self.running:
            return None
        return self.buffer.latest()

    def broadcast(self, message: dict) -> None:
        """Send a status message to every open connection."""
        payload = dumps(message)
        for gate in list(self.gates):
            gate.send_bytes(payload)
