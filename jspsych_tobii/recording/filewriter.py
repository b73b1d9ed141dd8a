# -*- test-case-name: tests.test_filewriter,tests.test_recording -*-
"""
What the recorder's writer thread does: L{SessionFiles}, one recorded
session's files and counts (shared with the reactor), L{Command}, a queued
item other than a gaze batch, and L{FileWriter}, which opens, writes,
flushes, syncs and closes a session's files as the queue says.  No Twisted:
the thread reports errors through the callable it is given.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from jspsych_tobii.core.timesync import MicrosecondClock
from jspsych_tobii.recording.format import encode_event, encode_header, utc_iso
from jspsych_tobii.recording.text import TextPaths, TextWriter, clear_text_dir

__all__ = ["Command", "FileWriter", "SessionFiles"]


@dataclass
class SessionFiles:
    """
    One recorded session.  The reactor reads every field; the writer thread
    only ever assigns C{written}, C{flushed_records}, C{flushed_until_us},
    C{text_flushed}, C{text}, C{dropped}, C{closed} and C{error} (single
    assignments, which are atomic for Python objects).
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
    #: the session's get_data text cache (None: none, or it stopped), and
    #: how many samples' text in it is flushed with the system_time_us of the
    #: last of them, assigned together (see recording.text)
    text: Optional[TextPaths] = None
    text_flushed: Tuple[int, Optional[int]] = (0, None)

    @property
    def texts(self) -> int:
        """How many samples' text is flushed in the cache."""
        return self.text_flushed[0]

    events: int = 0
    #: why writing this session stopped, if it failed
    error: Optional[str] = None
    closed: bool = False
    dropped: int = 0


class Command:
    """A queued command other than a gaze batch."""

    __slots__ = ("kind", "files", "payload")

    def __init__(self, kind: str, files: Optional[SessionFiles] = None, payload: Any = None):
        self.kind = kind
        self.files = files
        self.payload = payload


class FileWriter:
    """
    The writer thread's side: the open files of the current session, and
    what each queued item does to them.

    @param report: logs an error (on the reactor thread, where there is one).
    @param fsync_interval: longest time (s) between syncs to the disk; None
        syncs only when a session closes.
    @param clock_us: a monotonic clock (µs), for when to sync next.
    """

    def __init__(
        self,
        report: Callable[..., None],
        fsync_interval: Optional[float],
        clock_us: MicrosecondClock,
    ):
        self.report = report
        self.fsync_interval = fsync_interval
        self.clock_us = clock_us
        self.files: Optional[SessionFiles] = None
        self.last_us: Optional[int] = None  # system_time_us of the last record written
        self.gaze: Optional[BinaryIO] = None
        self.events: Optional[BinaryIO] = None
        self.text: Optional[TextWriter] = None
        self.barriers: List[threading.Event] = []
        self.next_fsync_us: Optional[int] = None

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
            if item.__class__ is not Command:
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
            self.report(
                "recording: unexpected error in {step}: {error!r}",
                step=operation.__name__,
                error=e,
            )

    def fail(self, files: SessionFiles, what: str, error: OSError) -> None:
        message = f"{what}: {error.strerror or error}"
        files.error = message
        self.report(
            "recording of session {n} stopped: {message}; later samples of it are lost",
            n=files.session,
            message=message,
        )
        for stream in (self.gaze, self.events):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass  # the failure that stopped the recording is reported above
        self.gaze = self.events = None
        self._stop_text(files, None)

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
        # the sessions before are no longer what get_data answers
        clear_text_dir(os.path.dirname(files.gaze_path))
        if files.text is not None and files.error is None:
            try:
                self.text = TextWriter(files.text)
            except OSError as e:
                files.text = None
                self._text_stopped(files, f"cannot create it: {e.strerror or e}")
        self._schedule_fsync()

    def _stop_text(self, files: SessionFiles, why: Optional[str]) -> None:
        """End the session's text cache and delete it; say why, if there is a why."""
        text, self.text = self.text, None
        files.text = None
        files.text_flushed = (0, None)
        if text is not None:
            text.stop(why or "the recording stopped")
        if why is not None:
            self._text_stopped(files, why)

    def _text_stopped(self, files: SessionFiles, why: str) -> None:
        self.report(
            "get_data's text of session {n} stopped ({why}); get_data encodes its samples "
            "when asked instead (slower); the recording goes on",
            n=files.session,
            why=why,
        )

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
        text = self.text
        if text is not None:
            text.add(data)
            if text.stopped is not None:
                self._stop_text(files, text.stopped)
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
            self.report(
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
        self._flush_text(files, finish=False)
        if self.next_fsync_us is not None and self.clock_us() >= self.next_fsync_us:
            self.fsync()
            self._schedule_fsync()

    def _schedule_fsync(self) -> None:
        interval = self.fsync_interval
        self.next_fsync_us = (
            None if interval is None else self.clock_us() + int(round(interval * 1e6))
        )

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
        self._flush_text(files, finish=True)
        text, self.text = self.text, None
        if text is not None:
            text.close()  # kept: get_data answers the last session after it ended
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

    def _flush_text(self, files: SessionFiles, finish: bool) -> None:
        text = self.text
        if text is None:
            return
        flushed = text.flush(finish)
        if text.stopped is not None:
            self._stop_text(files, text.stopped)
        else:
            files.text_flushed = flushed

    def close_all(self, directory: Optional[str] = None) -> None:
        """Close the open session; with C{directory}, delete its get_data text cache."""
        if self.files is not None:
            self.close(self.files, None, None)
        if directory is not None:
            clear_text_dir(directory)
        self.release_barriers()
