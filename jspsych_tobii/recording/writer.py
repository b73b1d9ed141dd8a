# -*- test-case-name: tests.test_recording -*-
"""
L{SessionRecorder}: writes each tracking session to its own pair of files
(see L{jspsych_tobii.recording.format}) from one background thread.

The reactor only enqueues: L{SessionRecorder.write_batch} appends a reference
to the batch to a deque (well under a microsecond; no lock, no wake-up), and
events and session changes append a small command and wake the thread.  The
writer thread wakes at least every C{flush_interval} seconds, writes
everything queued, and flushes it to the operating system, so after a
C{kill -9} of the server the files hold everything up to at most
C{flush_interval} (plus one write) before the kill.  It also syncs the files
to the disk every C{fsync_interval} seconds and when a session closes, which
bounds what a power cut can take.

Reading back: L{SessionRecorder.query} answers a time range of the current
(or most recent) session from what has been flushed, through a read-only
memmap and a binary search, so an old range costs only the pages it reads.
"""

from __future__ import annotations

import bisect
import collections
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Deque, Dict, Iterator, List, Optional

import numpy as np
from twisted.application import service
from twisted.internet import defer
from zope.interface import implementer

from jspsych_tobii.core.timesync import MicrosecondClock, monotonic_us
from jspsych_tobii.interfaces import GAZE_DTYPE, IEventSink, IGazeObserver, ISessionListener
from jspsych_tobii.logs import Logger
from jspsych_tobii.recording.format import (
    EVENTS_SUFFIX,
    GAZE_SUFFIX,
    HEADER_SIZE,
    encode_event,
    encode_header,
    make_header,
    session_stem,
    utc_iso,
)

__all__ = ["SessionFiles", "SessionRecorder", "RecorderService"]

#: Longest time (s) between flushes of what was written to the OS.
DEFAULT_FLUSH_INTERVAL = 0.1
#: Longest time (s) between syncs of an open session's files to the disk.
DEFAULT_FSYNC_INTERVAL = 5.0
#: Events kept while no session is open, to be written with the next one.
MAX_IDLE_EVENTS = 10_000


@dataclass
class SessionFiles:
    """
    One recorded session.  The reactor reads every field; the writer thread
    only ever assigns C{written}, C{flushed_records}, C{flushed_until_us},
    C{dropped}, C{closed} and C{error} (single assignments, which are atomic
    for Python objects).
    """

    session: int
    stem: str
    gaze_path: str
    events_path: str
    started_us: Optional[int]
    started_unix: float
    header: Dict[str, Any]
    #: samples handed to the recorder (reactor side)
    samples: int = 0
    #: samples written by the thread, and how many of them are flushed
    written: int = 0
    flushed_records: int = 0
    #: system_time_us of the last flushed record (what query can answer up to)
    flushed_until_us: Optional[int] = None
    events: int = 0
    #: why writing this session stopped, if it failed
    error: Optional[str] = None
    closed: bool = False
    dropped: int = 0


class _Control:
    """A queued command other than a gaze batch."""

    __slots__ = ("kind", "files", "payload")

    def __init__(self, kind: str, files: Optional[SessionFiles] = None, payload: Any = None):
        self.kind = kind
        self.files = files
        self.payload = payload


@implementer(ISessionListener, IGazeObserver, IEventSink)
class SessionRecorder:
    """
    @param directory: where the session files go (created if missing).
    @param reactor: used to report the end of L{close} and errors back on the
        reactor thread; None for scripts (then L{close} blocks).
    @param clock_us: the server clock (the clock of C{system_time_us}), for
        the time stamps of events.
    @param wall_clock: Unix time, for file names and the C{started_utc} field.
    @param flush_interval: longest time (s) before queued data reaches the OS.
    @param fsync_interval: longest time (s) between syncs to the disk; None
        syncs only when a session closes.
    @param server_version: written into each header.
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        reactor: Any = None,
        clock_us: MicrosecondClock = monotonic_us,
        wall_clock: Callable[[], float] = time.time,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        fsync_interval: Optional[float] = DEFAULT_FSYNC_INTERVAL,
        server_version: Optional[str] = None,
    ):
        if not 0.0 < flush_interval <= 1.0:
            raise ValueError("flush_interval must be in (0, 1] seconds")
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{self.directory}: not writable")
        if server_version is None:
            from jspsych_tobii import __version__

            server_version = __version__
        self.server_version: str = server_version
        self._reactor = reactor
        self._clock_us = clock_us
        self._wall_clock = wall_clock
        self.flush_interval = float(flush_interval)
        self.fsync_interval = fsync_interval
        self._queue: Deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._stopped = threading.Event()
        self._closing: Optional[defer.Deferred] = None
        self._idle_events: Deque[Dict[str, Any]] = collections.deque(maxlen=MAX_IDLE_EVENTS)
        self.current: Optional[SessionFiles] = None
        self.last: Optional[SessionFiles] = None
        self.sessions: List[SessionFiles] = []
        self.closed = False
        self.flushes = 0

    # -- reactor side

    def session_started(
        self,
        session: int,
        started_us: Optional[int] = None,
        tracker: Optional[dict] = None,
        **fields: Any,
    ) -> Optional[SessionFiles]:
        """
        A tracking session began: open its files.  An open session is ended
        first.  Events recorded since the last session ended are written at
        the top of the new events file.

        @param session: the server's session number (part of the file name).
        @param started_us: the session's start on the server clock.
        @param tracker: the tracker's description (C{TrackerInfo.to_dict()}).
        @param fields: extra fields for the C{session_started} event.
        @return: the session's files, or None once the recorder is closed.
        """
        if self.closed:
            self.log.warn("tracking session {n} not recorded: the recorder is closed", n=session)
            return None
        if self.current is not None:
            self.session_ended(reason="a new session started")
        started_unix = self._wall_clock()
        if started_us is None:
            started_us = self._clock_us()
        stem = self._unique_stem(session_stem(started_unix, session))
        gaze_path = os.path.join(self.directory, stem + GAZE_SUFFIX)
        events_path = os.path.join(self.directory, stem + EVENTS_SUFFIX)
        header = make_header(
            session=session,
            started_unix=started_unix,
            started_us=started_us,
            tracker=tracker,
            server_version=self.server_version,
            events_file=os.path.basename(events_path),
        )
        files = SessionFiles(
            session=session,
            stem=stem,
            gaze_path=gaze_path,
            events_path=events_path,
            started_us=started_us,
            started_unix=started_unix,
            header=header,
        )
        self.current = self.last = files
        self.sessions.append(files)
        self._control("open", files)
        idle, self._idle_events = list(self._idle_events), collections.deque(maxlen=MAX_IDLE_EVENTS)
        for event in idle:
            self._control("event", files, event)
            files.events += 1
        self.write_event(
            "session_started",
            t_server_ms=started_us / 1000.0,
            session=session,
            started_utc=header["started_utc"],
            gaze_file=os.path.basename(gaze_path),
            tracker=tracker,
            **fields,
        )
        self.log.info("recording tracking session {n} to {path}", n=session, path=gaze_path)
        return files

    def session_ended(self, reason: str = "stopped", **fields: Any) -> None:
        """The tracking session ended: write the last samples, close and sync its files."""
        files = self.current
        if files is None:
            return
        self.write_event(
            "session_ended", session=files.session, samples=files.samples, reason=reason, **fields
        )
        self.current = None
        self._control("close", files, (self._wall_clock(), self._clock_us()))
        self.log.info(
            "recorded tracking session {n}: {count} samples in {path}",
            n=files.session,
            count=files.samples,
            path=files.gaze_path,
        )

    def write_batch(self, batch: np.ndarray) -> None:
        """
        Record a batch of L{GAZE_DTYPE} samples (a hub observer).  The batch
        is queued by reference: the caller must not modify it afterwards (the
        hub never does).  Samples arriving while no session is open start one.
        """
        files = self.current
        if files is None:
            if self.closed:
                return
            files = self._unannounced_session(batch)
        if batch.dtype is not GAZE_DTYPE and batch.dtype != GAZE_DTYPE:
            raise TypeError(f"a gaze batch must be of GAZE_DTYPE, not {batch.dtype}")
        files.samples += len(batch)
        self._queue.append(batch)

    def write_event(self, kind: str, t_server_ms: Optional[float] = None, **fields: Any) -> None:
        """
        Record an event of the current session: C{{"t_server_ms", "kind",
        **fields}} as one JSON line.  Values may be JSON types, numpy values,
        or objects with a C{to_dict()}; NaN is written as null.  Outside a
        session, events are kept (up to L{MAX_IDLE_EVENTS}) for the next one.

        @param t_server_ms: when it happened on the server clock, ms; now by default.
        """
        if self.closed:
            return
        if t_server_ms is None:
            t_server_ms = self._clock_us() / 1000.0
        event = {"t_server_ms": t_server_ms, "kind": kind}
        event.update(fields)
        files = self.current
        if files is None:
            self._idle_events.append(event)
            return
        files.events += 1
        self._control("event", files, event)

    def close(self) -> defer.Deferred:
        """
        End the open session, write everything queued, sync and close the
        files, and stop the thread.  Events seen after the last session are
        written to a C{-s0.events.jsonl} file.  Safe to call twice.

        @return: a Deferred firing when all is on disk.  Without a reactor
            the call blocks until then and returns a fired Deferred.
        """
        if self._closing is not None:
            return self._closing
        self.session_ended(reason="recorder closed")
        if self._idle_events:
            stem = self._unique_stem(session_stem(self._wall_clock(), 0))
            path = os.path.join(self.directory, stem + EVENTS_SUFFIX)
            self._control("idle", None, (path, list(self._idle_events)))
            self._idle_events.clear()
        self.closed = True
        if self._thread is None:
            self._closing = defer.succeed(None)
            return self._closing
        if self._reactor is None:
            self._control("stop")
            self._thread.join()
            self._closing = defer.succeed(None)
        else:
            self._closing = defer.Deferred()  # before the thread can finish
            self._control("stop")
        return self._closing

    def sync(self, timeout: Optional[float] = 10.0) -> bool:
        """
        Block until everything queued so far is written and flushed (tests,
        benchmarks, scripts; not for the reactor thread).

        @return: False when C{timeout} passed first.
        """
        if self._thread is None or self._stopped.is_set():
            return True
        done = threading.Event()
        self._control("barrier", None, done)
        return done.wait(timeout)

    def flushed(self) -> defer.Deferred:
        """
        A Deferred that fires on the reactor once everything queued so far is
        written and flushed: after it, the file holds every sample delivered
        before the call (what L{jspsych_tobii.core.history.session_range}
        needs to join file and memory without a gap).
        """
        if self._thread is None or self._stopped.is_set() or self._reactor is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        reactor = self._reactor

        class _Barrier:
            def set(self) -> None:
                try:
                    reactor.callFromThread(d.callback, None)
                except Exception:  # pragma: no cover - the reactor is gone
                    pass

        self._control("barrier", None, _Barrier())
        return d

    @property
    def backlog(self) -> int:
        """Commands and batches queued and not yet taken by the writer thread."""
        return len(self._queue)

    # -- reading back

    def query(self, start_us: Optional[int] = None, end_us: Optional[int] = None) -> np.ndarray:
        """
        The flushed records of the current (else the most recent) session
        with C{start_us <= system_time_us <= end_us} (either bound may be
        None), as a time-ordered in-memory copy.  Records still queued (the
        last C{flush_interval}) are not included: take those from the
        in-memory buffer.
        """
        parts = list(self.query_chunks(start_us, end_us, chunk=1 << 62))
        if not parts:
            return np.zeros(0, dtype=GAZE_DTYPE)
        return parts[0]

    def query_chunks(
        self, start_us: Optional[int] = None, end_us: Optional[int] = None, chunk: int = 500
    ) -> Iterator[np.ndarray]:
        """
        Like L{query}, in copies of at most C{chunk} records, so that a
        caller can send a long range a slice at a time (taking a chunk of 500
        costs ~10 µs; turning it into reply dicts with C{sample_dicts} ~4 ms).
        The range is fixed when the first chunk is taken.

        @raise OSError: the session's file cannot be read (deleted, say).
        """
        files = self.last
        if files is None or files.flushed_records == 0:
            return
        count = files.flushed_records
        data = np.memmap(files.gaze_path, GAZE_DTYPE, "r", offset=HEADER_SIZE, shape=(count,))
        try:
            times = data["system_time_us"]
            lo = 0 if start_us is None else bisect.bisect_left(times, start_us)
            hi = count if end_us is None else bisect.bisect_right(times, end_us)
            step = max(1, int(chunk))
            for i in range(lo, hi, step):
                # a byte copy: several times faster than np.array of a structured memmap
                raw = bytearray(data[i : min(hi, i + step)].tobytes())
                yield np.frombuffer(raw, dtype=GAZE_DTYPE)
        finally:
            del data

    # -- internals (reactor side)

    def _unique_stem(self, stem: str) -> str:
        candidate, n = stem, 1
        while os.path.exists(
            os.path.join(self.directory, candidate + GAZE_SUFFIX)
        ) or os.path.exists(os.path.join(self.directory, candidate + EVENTS_SUFFIX)):
            n += 1
            candidate = f"{stem}-{n}"
        return candidate

    def _unannounced_session(self, batch: np.ndarray) -> SessionFiles:
        number = (self.last.session + 1) if self.last is not None else 1
        self.log.warn(
            "gaze arrived with no recording session open; recording it as session {n}", n=number
        )
        started = int(batch["system_time_us"][0]) if len(batch) else None
        files = self.session_started(number, started, reason="unannounced")
        assert files is not None  # a session was opened
        return files

    def _control(self, kind: str, files: Optional[SessionFiles] = None, payload: Any = None):
        self._queue.append(_Control(kind, files, payload))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="jspsych-tobii recorder", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def _report(self, format: str, /, **fields: Any) -> None:
        """Log an error from the writer thread, on the reactor thread."""
        if self._reactor is None:
            self.log.error(format, **fields)
            return
        try:
            self._reactor.callFromThread(self.log.error, format, **fields)
        except Exception:  # pragma: no cover - the reactor is gone
            pass

    # -- the writer thread

    def _run(self) -> None:
        writer = _Writer(self)
        stop = False
        while not stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stop = writer.drain(self._queue)
            writer.guarded(writer.flush)
            self.flushes += 1
            writer.release_barriers()
        writer.guarded(writer.close_all)
        self._stopped.set()
        if self._reactor is not None and self._closing is not None:
            try:
                self._reactor.callFromThread(self._closing.callback, None)
            except Exception:  # pragma: no cover - the reactor is gone
                pass


class _Writer:
    """The writer thread's state: the open files of the current session."""

    def __init__(self, recorder: SessionRecorder):
        self.recorder = recorder
        self.files: Optional[SessionFiles] = None
        self.last_us: Optional[int] = None  # system_time_us of the last record written
        self.gaze: Optional[BinaryIO] = None
        self.events: Optional[BinaryIO] = None
        self.barriers: List[threading.Event] = []
        self.next_fsync: Optional[float] = None

    def drain(self, queue: Deque[Any]) -> bool:
        """Handle everything queued, in order.  True when told to stop."""
        popleft = queue.popleft
        pending: List[np.ndarray] = []
        stop = False
        while True:
            try:
                item = popleft()
            except IndexError:
                break
            if item.__class__ is not _Control:
                pending.append(item)
                continue
            if pending:
                self.guarded(self.write_gaze, pending)
                pending = []
            kind = item.kind
            if kind == "event":
                self.guarded(self.write_event, item.files, item.payload)
            elif kind == "open":
                self.guarded(self.open, item.files)
            elif kind == "close":
                self.guarded(self.close, item.files, *item.payload)
            elif kind == "idle":
                self.guarded(self.write_idle, *item.payload)
            elif kind == "barrier":
                self.barriers.append(item.payload)
            elif kind == "stop":
                stop = True
        if pending:
            self.guarded(self.write_gaze, pending)
        return stop

    def guarded(self, operation: Callable[..., Any], *args: Any) -> None:
        """Run one step; a bug in it is reported and the thread carries on."""
        try:
            operation(*args)
        except Exception as e:
            self.recorder._report(
                "recording: unexpected error in {step}: {error!r}",
                step=operation.__name__,
                error=e,
            )

    def fail(self, files: SessionFiles, what: str, error: OSError) -> None:
        message = f"{what}: {error.strerror or error}"
        files.error = message
        self.recorder._report(
            "recording of session {n} stopped: {message}; later samples of it are lost",
            n=files.session,
            message=message,
        )
        for stream in (self.gaze, self.events):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.gaze = self.events = None

    def open(self, files: SessionFiles) -> None:
        if self.files is not None and not self.files.closed:
            self.close(self.files, None, None)
        self.files = files
        self.last_us = None
        try:
            self.gaze = open(files.gaze_path, "xb", buffering=1 << 20)
            self.gaze.write(encode_header(files.header))
            self.gaze.flush()
            self.events = open(files.events_path, "xb", buffering=1 << 16)
        except OSError as e:
            self.fail(files, "cannot create the recording files", e)
        interval = self.recorder.fsync_interval
        self.next_fsync = None if interval is None else time.monotonic() + interval

    def write_gaze(self, batches: List[np.ndarray]) -> None:
        files = self.files
        n = sum(len(b) for b in batches)
        if files is None or self.gaze is None:
            if files is not None:
                files.dropped += n
            return
        # tobytes per batch and one join: ~100 times faster than np.concatenate
        # of many small structured arrays, which copies field by field
        data = b"".join([batch.tobytes() for batch in batches])
        try:
            self.gaze.write(data)
        except OSError as e:
            files.dropped += n
            self.fail(files, "cannot write samples", e)
            return
        files.written += n
        last = batches[-1]
        if len(last):
            self.last_us = int(last["system_time_us"][-1])

    def write_event(self, files: SessionFiles, event: Dict[str, Any]) -> None:
        if self.events is None or files is not self.files:
            return
        try:
            self.events.write(encode_event(event))
        except OSError as e:
            self.fail(files, "cannot write an event", e)

    def write_idle(self, path: str, events: List[Dict[str, Any]]) -> None:
        try:
            with open(path, "xb") as f:
                for event in events:
                    f.write(encode_event(event))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self.recorder._report(
                "cannot write events outside sessions to {path}: {error}", path=path, error=e
            )

    def flush(self) -> None:
        files = self.files
        if files is None:
            return
        try:
            if self.gaze is not None:
                self.gaze.flush()
                files.flushed_until_us = self.last_us
                files.flushed_records = files.written
            if self.events is not None:
                self.events.flush()
        except OSError as e:
            self.fail(files, "cannot flush the recording", e)
            return
        if self.next_fsync is not None and time.monotonic() >= self.next_fsync:
            self.fsync()
            interval = self.recorder.fsync_interval
            self.next_fsync = None if interval is None else time.monotonic() + interval

    def fsync(self) -> None:
        for stream in (self.gaze, self.events):
            if stream is not None:
                try:
                    os.fsync(stream.fileno())
                except OSError as e:
                    assert self.files is not None  # the streams are its files
                    self.fail(self.files, "cannot sync the recording to disk", e)
                    return

    def close(self, files: SessionFiles, ended_unix: Optional[float], ended_us: Optional[int]):
        if files is not self.files or files.closed:
            return
        files.closed = True
        if self.gaze is not None:
            try:
                self.gaze.flush()
                files.flushed_until_us = self.last_us
                files.flushed_records = files.written
                header = dict(files.header)
                header.update(
                    complete=files.error is None,
                    samples=files.written,
                    ended_utc=None if ended_unix is None else utc_iso(ended_unix),
                    ended_us=ended_us,
                )
                self.gaze.seek(0)
                self.gaze.write(encode_header(header))
                self.gaze.flush()
            except OSError as e:
                self.fail(files, "cannot finish the recording", e)
        self.fsync()
        for stream in (self.gaze, self.events):
            if stream is not None:
                try:
                    stream.close()
                except OSError as e:
                    self.fail(files, "cannot close the recording", e)
        self.gaze = self.events = None
        self.files = None

    def release_barriers(self) -> None:
        barriers, self.barriers = self.barriers, []
        for barrier in barriers:
            barrier.set()

    def close_all(self) -> None:
        if self.files is not None:
            self.close(self.files, None, None)
        self.release_barriers()


class RecorderService(service.Service):
    """
    The recorder as a child of the server's C{MultiService}: stopping it
    ends the open session and waits for the files to be on disk.
    """

    name = "recorder"  # type: ignore[assignment]  # Twisted declares it None

    def __init__(self, recorder: SessionRecorder):
        self.recorder = recorder

    def stopService(self):
        super().stopService()
        return self.recorder.close()
