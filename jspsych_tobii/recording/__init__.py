# -*- test-case-name: tests.test_history -*-
"""
Session recording: every gaze sample and event of a tracking session, on disk.

  - L{format}: the file pair of one session (a C{.gaze} file of raw
    L{GAZE_DTYPE<jspsych_tobii.interfaces.GAZE_DTYPE>} records behind a
    fixed-size JSON header, and a C{.events.jsonl} file) and its readers;
  - L{writer}: L{SessionRecorder}, which writes them from one background
    thread while the reactor only enqueues (L{filewriter}: what that thread
    does to the files; L{text}: the samples' JSON text it keeps for get_data);
  - L{export}: C{jspsych-tobii-export}, recordings to CSV/TSV (L{parquet};
    L{bids}, with L{bids_names} and L{bids_sidecars}; L{columns}).

The format, the export and the replay need no Twisted: L{SessionRecorder}
and L{RecorderService} (which do) are imported from L{writer} only when
asked for.  The get_data query over a recording and the gaze buffer is
L{jspsych_tobii.core.history.session_range}; it reads the recording with
L{format.read_range} (get_data's reply: L{session_text_range
<jspsych_tobii.core.history.session_text_range>}, through L{text.read_text_range}).

The replay tracker lives with the other trackers, in
L{jspsych_tobii.trackers.replay}.  The format is described for users in
C{docs/RECORDING.md}.
"""

from typing import Any

from jspsych_tobii.recording.format import (
    HEADER_SIZE,
    RecordingFormatError,
    events_path_for,
    gaze_path_for,
    read_events,
    read_gaze,
    read_header,
)

#: what is imported from the writer when first asked for (it imports Twisted)
_FROM_WRITER = ("RecorderService", "SessionRecorder")

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


def __getattr__(name: str) -> Any:
    if name in _FROM_WRITER:
        from jspsych_tobii.recording import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
