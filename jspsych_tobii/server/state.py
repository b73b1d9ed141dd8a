# -*- test-case-name: tests.test_state -*-
"""
L{ServerState}: what every connection of one server shares, built once by
L{jspsych_tobii.tap.makeService} from parts that are complete when built;
and L{EventLog}, where the server's events go (the recording and every
L{IEventSink}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, List, Optional

from twisted.internet.interfaces import IReactorTime

from jspsych_tobii.core.timesync import ServerClock
from jspsych_tobii.interfaces import IEventSink

if TYPE_CHECKING:  # only for the annotations: no import cycle at run time
    from jspsych_tobii.config import ServerConfig
    from jspsych_tobii.recording.writer import SessionRecorder
    from jspsych_tobii.server.calibration import CalibrationCoordinator
    from jspsych_tobii.server.hub import GazeHub
    from jspsych_tobii.server.resume import ResumeRegistry
    from jspsych_tobii.server.service import TrackerService
    from jspsych_tobii.server.work import WorkerPool


class EventLog:
    """
    Where events go: the session recording (with C{--record-dir}) and every
    event sink (the LSL publisher, the status board).

    @param recorder: the L{SessionRecorder}, or None without a recording.
    @param sinks: told of every event too.
    """

    def __init__(
        self, recorder: Optional[SessionRecorder] = None, sinks: Iterable[IEventSink] = ()
    ):
        self.recorder = recorder
        self.sinks: List[IEventSink] = list(sinks)

    def record(self, kind: str, **fields: Any) -> None:
        """Add an event to the session's recording, when recording, and to every sink."""
        if self.recorder is not None:
            self.recorder.write_event(kind, **fields)
        for sink in self.sinks:
            sink.write_event(kind, **fields)


@dataclass
class ServerState:
    reactor: IReactorTime
    clock: ServerClock
    trackers: TrackerService
    hub: GazeHub
    calibration: CalibrationCoordinator
    resumes: ResumeRegistry
    version: str
    config: ServerConfig
    events: EventLog
    work: WorkerPool  # heavy pure work, off the reactor
    #: the last tracking session for which a truncated get_data was logged
    truncation_logged: int = 0

    @property
    def recorder(self) -> Optional[SessionRecorder]:
        """The L{SessionRecorder}, with C{--record-dir}."""
        return self.events.recorder

    @recorder.setter
    def recorder(self, recorder: Optional[SessionRecorder]) -> None:
        self.events.recorder = recorder

    @property
    def event_sinks(self) -> List[IEventSink]:
        """Told of every event too, with C{write_event(kind, **fields)}."""
        return self.events.sinks

    def record_event(self, kind: str, **fields: Any) -> None:
        """Add an event to the session's recording, when recording, and to every event sink."""
        self.events.record(kind, **fields)
