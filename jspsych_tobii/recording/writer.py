# -*- test-case-name: tests.test_recording -*-
"""
L{SessionRecorder}: writes each tracking session to its own pair of files
(see L{jspsych_tobii.recording.format}) from one background thread (what
that thread does to the files is L{jspsych_tobii.recording.filewriter}).

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
memmap and a binary search (L{jspsych_tobii.recording.format.read_range}),
so an old range costs only the pages it reads.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional

import numpy as np
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from jspsych_tobii.core.history import Chunk
from jspsych_tobii.core.timesync import MicrosecondClock, monotonic_us
from jspsych_tobii.interfaces import GAZE_DTYPE, IEventSink, IGazeObserver, ISessionListener
from jspsych_tobii.logs import Logger
from jspsych_tobii.recording.filewriter import Command, FileWriter, SessionFiles
from jspsych_tobii.recording.format import (
    EVENTS_SUFFIX,
    GAZE_SUFFIX,
    make_header,
    read_range,
    session_stem,
)
from jspsych_tobii.recording.text import CachedSession, TextPaths, read_text_range

__all__ = ["SessionRecorder", "RecorderService"]

#: Longest time (s) between flushes of what was written to the OS.
DEFAULT_FLUSH_INTERVAL = 0.1
#: Longest time (s) between syncs of an open session's files to the disk.
DEFAULT_FSYNC_INTERVAL = 5.0
#: Events kept while no session is open, to be written with the next one.
MAX_IDLE_EVENTS = 10_000


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
    @param text_cache: keep each session's samples' text for get_data while
        it is the current or last one (L{jspsych_tobii.recording.text}).
    """

    log = Logger()

    def __init__(
        self,
        directory: str,
        reactor: Optional[IReactorFromThreads] = None,
        clock_us: MicrosecondClock = monotonic_us,
        wall_clock: Callable[[], float] = time.time,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        fsync_interval: Optional[float] = DEFAULT_FSYNC_INTERVAL,
        server_version: Optional[str] = None,
        text_cache: bool = True,
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
        self.text_cache = text_cache
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
            text=TextPaths.for_session(self.directory, stem) if self.text_cache else None,
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
                    pass  # and with it the caller waiting on the reactor

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
        caller can send a long range a slice at a time (see
        L{read_range<jspsych_tobii.recording.format.read_range>}).  The
        session and what of it is flushed are taken now.

        @raise OSError: the session's file cannot be read (deleted, say).
        """
        files = self.last
        if files is None or files.flushed_records == 0:
            return iter(())
        return read_range(files.gaze_path, files.flushed_records, start_us, end_us, chunk)

    def query_text_chunks(
        self, start_us: Optional[int] = None, end_us: Optional[int] = None, chunk: int = 2000
    ) -> Iterator[Chunk]:
        """
        Like L{query_chunks}, but the samples whose text the session's
        get_data cache holds come as that text
        (L{EncodedSamples<jspsych_tobii.core.gaze.EncodedSamples>}, at most
        C{chunk} a piece), the others as records.

        @raise OSError: the session's file cannot be read (deleted, say).
        """
        files = self.last
        if files is None or files.flushed_records == 0:
            return iter(())
        cached = CachedSession(files.gaze_path, files.flushed_records, files.text, files.texts)
        return read_text_range(cached, start_us, end_us, chunk)

    def text_until_us(self) -> Optional[int]:
        """
        The C{system_time_us} of the last sample of the current (else the
        most recent) session whose text the get_data cache holds; None if it
        holds none.
        """
        files = self.last
        return None if files is None or files.text is None else files.text_flushed[1]

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
        self._queue.append(Command(kind, files, payload))
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
            # nothing runs on the reactor any more: say it from this thread
            self.log.error(format, **fields)

    # -- the writer thread

    def _run(self) -> None:
        writer = FileWriter(self._report, self.fsync_interval, self._clock_us)
        stop = False
        while not stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stop = writer.drain(self._queue)
            writer.guarded(writer.flush)
            writer.release_barriers()
        writer.guarded(writer.close_all, self.directory)
        self._stopped.set()
        if self._reactor is not None and self._closing is not None:
            try:
                self._reactor.callFromThread(self._closing.callback, None)
            except Exception:  # pragma: no cover - the reactor is gone
                pass  # and with it whoever waited for the close: the files are on disk


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
