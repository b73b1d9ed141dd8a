"""
L{ServerState}: what every connection of one server shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

from jspsych_tobii.core.timesync import ServerClock


@dataclass
class ServerState:
    reactor: Any
    clock: ServerClock
    trackers: Any  # TrackerService
    hub: Any  # GazeHub
    calibration: Any  # CalibrationCoordinator
    resumes: Any  # ResumeRegistry
    version: str
    config: Any = None  # ServerConfig
    recorder: Any = None  # SessionRecorder, with --record-dir
    #: the last tracking session for which a truncated get_data was logged
    truncation_logged: int = 0
    #: told of every event too, with C{write_event(kind, **fields)} (the LSL publisher)
    event_sinks: List[Any] = field(default_factory=list)
    work: Any = None  # WorkerPool: heavy pure work, off the reactor

    def record_event(self, kind: str, **fields: Any) -> None:
        """Add an event to the session's recording, when recording, and to every event sink."""
        if self.recorder is not None:
            self.recorder.write_event(kind, **fields)
        for sink in self.event_sinks:
            sink.write_event(kind, **fields)
