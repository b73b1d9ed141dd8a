"""
A process for L{tests.test_crash}: a reactor, the mock tracker at 1200 Hz and
a L{SessionRecorder} writing its stream to the directory given, with an
event marker every 50 ms, the way the server records.  It prints "ready"
once samples have reached the file, and runs until killed (or, as a safety
net, for at most C{argv[2]} seconds).

    python tests/recording_child.py DIR [SECONDS]
"""

from __future__ import annotations

import sys


def main(directory: str, limit: float = 60.0) -> None:
    import numpy as np
    from twisted.internet import reactor, task

    from jspsych_tobii.core.timesync import monotonic_us
    from jspsych_tobii.recording.writer import SessionRecorder
    from jspsych_tobii.trackers.mock import MockTracker

    tracker = MockTracker(reactor, monotonic_us, rate=1200)
    recorder = SessionRecorder(directory, reactor, clock_us=monotonic_us)
    state = {"seq": 0, "ready": False, "markers": 0}

    def on_gaze(batch):
        n = len(batch)
        batch["seq"] = np.arange(state["seq"], state["seq"] + n)
        state["seq"] += n
        batch["server_time_us"] = monotonic_us()
        recorder.write_batch(batch)
        files = recorder.current
        if not state["ready"] and files is not None and files.flushed_records > 0:
            state["ready"] = True
            print("ready", flush=True)

    def marker():
        state["markers"] += 1
        recorder.write_event("marker", label=f"m{state['markers']}", seq=state["seq"])

    def started(info):
        recorder.session_started(1, monotonic_us(), info.to_dict())
        recorder.write_event("client_connected", peer="test")
        task.LoopingCall(marker).start(0.05)
        return tracker.startGaze(on_gaze)

    def stop():
        recorder.close().addBoth(lambda _: reactor.stop())

    tracker.connect().addCallback(started)
    reactor.callLater(limit, stop)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
