"""
The servers bench_path.py compares, each run in a process of its own:

    python bench/path_server.py MODE PORT RATE

MODE is one of:

  - C{ours}: the whole server (L{makeService}, as jspsych-tobii-server builds
    it) over the real Tobii adapter, L{TobiiTracker}, with the fake SDK of
    tests/fake_tobii_research.py: one device thread calling back once per
    sample at RATE, each sample stamped with the time it was due.
  - C{child}: the same server with the adapter in a child process
    (L{ChildTracker}, as C{--sdk-python} runs it), the fake SDK in the child.
  - C{mock}: the same server with its mock tracker, as C{--mock} runs it
    (each sample handed over when due, from the mock's pacing thread);
    C{mock-batched}: with C{--mock-delivery batched} (a reactor timer).
  - C{floor}: the least a server can do with the same SDK stream: the fake
    SDK's callback hands each sample's two time stamps to the reactor through
    the same L{ThreadHandoff}; there, every sample becomes a pre-encoded
    C{gaze_data} frame of the same size with its sequence number and times
    spliced in, framed by hand (an unmasked header and the payload), and
    written to every tracking client's transport.  No buffer, no encoding,
    no flow control.  It answers C{start_tracking} and C{time_sync} (with
    C{serverTime} read just before the write) and nothing else.

Every server prints C{ready} once it listens.
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

RATE_ENV = "JSPSYCH_TOBII_BENCH_RATE"

TEMPLATE = (
    '{"type":"gaze_data","gaze":{"x":0.512345,"y":0.487654,"timestamp":%.3f,'
    '"leftValid":true,"rightValid":true,"leftPupilDiameter":3.0000,'
    '"rightPupilDiameter":3.1000,"leftX":0.512345,"leftY":0.487654,"rightX":0.512345,'
    '"rightY":0.487654,"deviceTimestamp":%.3f,"seq":%d,"server_timestamp":%.3f}}'
)


def fake_sdk(rate):
    from tests import fake_tobii_research as fake

    sdk = fake.make_sdk("2.x")
    sdk.add_device(frequency=rate)
    return sdk


def child_sdk():
    """Called in the SDK process (sdk_module path_server:child_sdk)."""
    return fake_sdk(float(os.environ.get(RATE_ENV, "1200")))


def ws_header(length):
    """The header of an unmasked, final text frame of C{length} bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def floor_stream(reactor, tracking):
    """
    The floor's gaze path: the SDK callback it returns hands each sample's
    two time stamps to the reactor through a L{ThreadHandoff}; there each
    becomes a pre-encoded frame written to every transport in C{tracking}.
    """
    from jspsych_tobii.trackers.handoff import ThreadHandoff

    state = {"seq": 0}

    def deliver(items):
        server_ms = time.monotonic_ns() / 1e6
        seq = state["seq"]
        for system_us, device_us in items:
            payload = (TEMPLATE % (system_us / 1e3, device_us / 1e3, seq, server_ms)).encode()
            frame = ws_header(len(payload)) + payload
            seq += 1
            for transport in tracking:
                transport.write(frame)
        state["seq"] = seq

    handoff = ThreadHandoff(reactor, deliver)

    def on_gaze(d):
        handoff.put((d["system_time_stamp"], d["device_time_stamp"]))

    return on_gaze


def run_floor(port, rate):
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet import reactor

    tracking = []

    class Floor(WebSocketServerProtocol):
        def connectionMade(self):
            super().connectionMade()
            self.transport.setTcpNoDelay(True)

        def onMessage(self, payload, isBinary):
            request = json.loads(payload)
            kind = request.get("type")
            if kind == "start_tracking":
                if self.transport not in tracking:
                    tracking.append(self.transport)
                reply = {"type": "start_tracking_response", "success": True, "tracking": True}
            elif kind == "time_sync":
                reply = {
                    "type": "time_sync_response",
                    "clientTime": request.get("clientTime"),
                    "success": True,
                }
            else:
                reply = {"type": "error", "success": False}
            reply["requestId"] = request.get("requestId")
            if kind == "time_sync":
                reply["serverTime"] = time.monotonic_ns() / 1e6
            self.sendMessage(json.dumps(reply).encode())

        def onClose(self, wasClean, code, reason):
            if self.transport in tracking:
                tracking.remove(self.transport)

    on_gaze = floor_stream(reactor, tracking)
    sdk = fake_sdk(rate)
    tracker = sdk.find_all_eyetrackers()[0]
    tracker.subscribe_to(sdk.EYETRACKER_GAZE_DATA, on_gaze, as_dictionary=True)
    factory = WebSocketServerFactory()
    factory.protocol = Floor
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()
    sdk.shutdown()


def run_server(mode, port, rate):
    from twisted.internet import reactor

    from jspsych_tobii import logs
    from jspsych_tobii.config import ServerConfig
    from jspsych_tobii.core.timesync import monotonic_us
    from jspsych_tobii.tap import makeService

    settings = dict(host="127.0.0.1", port=str(port), log_level="ERROR")
    make_tracker = None
    sdk = None
    if mode == "ours":
        from jspsych_tobii.trackers.tobii import TobiiTracker

        sdk = fake_sdk(rate)
        make_tracker = lambda: TobiiTracker(reactor, monotonic_us, sdk=sdk)  # noqa: E731
    elif mode == "child":
        from jspsych_tobii.trackers.child.tracker import ChildTracker

        make_tracker = lambda: ChildTracker(  # noqa: E731
            reactor,
            monotonic_us,
            sys.executable,
            frequency=rate,
            sdk_module="path_server:child_sdk",
            python_path=[ROOT, HERE],
            env={RATE_ENV: str(rate)},
        )
    elif mode == "mock":
        settings.update(mock=True, mock_rate=rate)
    elif mode == "mock-batched":
        settings.update(mock=True, mock_rate=rate, mock_delivery="batched")
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    logs.start_logging("ERROR", stream=sys.stderr)
    service = makeService(ServerConfig(**settings), reactor, make_tracker=make_tracker)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()
    if sdk is not None:
        sdk.shutdown()


def main():
    mode, port, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if mode == "floor":
        run_floor(port, rate)
    else:
        run_server(mode, port, rate)


if __name__ == "__main__":
    main()
