"""
Session recording: every gaze sample and event of a tracking session, on disk.

  - L{format}: the file pair of one session (a C{.gaze} file of raw
    L{GAZE_DTYPE<jspsych_tobii.interfaces.GAZE_DTYPE>} records behind a
    fixed-size JSON header, and a C{.events.jsonl} file) and its readers;
  - L{writer}: L{SessionRecorder}, which writes them from one background
    thread while the reactor only enqueues;
  - L{export}: C{jspsych-tobii-export}, recordings to CSV/TSV.

The replay tracker lives with the other trackers, in
L{jspsych_tobii.trackers.replay}.  The format is described for users in
C{docs/RECORDING.md}.
"""

from jspsych_tobii.recording.format import (
    HEADER_SIZE,
    RecordingFormatError,
    events_path_for,
    gaze_path_for,
    read_events,
    read_gaze,
    read_header,
)
from jspsych_tobii.recording.writer import RecorderService, SessionRecorder

__all__ = [
    "HEADER_SIZE",
    "RecordingFormatError",
    "RecorderService",
    "SessionRecorder",
    "events_path_for",
    "gaze_path_for",
    "read_events",
    "read_gaze",
    "read_header",
]
