# -*- test-case-name: tests.test_lsl -*-
"""
L{LslPublisher}: the gaze stream and the session's events as Lab Streaming
Layer outlets (C{--lsl}), so that LabRecorder (or any LSL inlet) records them
beside EEG, motion capture or other devices on one time line.

Two outlets per eye tracker, named from its model and serial number (a
server restart, or a reconnect of the same tracker, publishes the same
C{source_id}, which LSL inlets use to recover):

  - C{Gaze}: one sample per gaze sample, at the tracker's frequency, with the
    channels of L{GAZE_CHANNELS} (averaged and per-eye display position,
    pupil diameters, validities, the sample number) and their label, eye,
    type and unit in the stream's metadata.
  - C{Markers}: one string sample (a JSON object with C{kind} and the event's
    fields) for every event the server records: C{marker} requests,
    calibration and validation results, session starts and ends, tracker
    notifications.

Each sample is stamped with its capture time on LSL's clock
(C{local_clock()}).  On Linux the tracker's system time stamp is
CLOCK_MONOTONIC, which is LSL's clock: the stamp is the capture time itself.
Elsewhere (and with a test clock) the offset between the server clock and
LSL's clock is measured when each tracking session starts, and logged.

The outlets open at the first event once the tracker is known (a page
connecting, a tracking session starting) and stay open between sessions, so
an inlet keeps its streams from one session to the next; they close when the
server stops.

Pushing is a copy into liblsl's send queue, on the reactor thread: the gaze
batches of up to L{FLUSH_INTERVAL} (10 ms) are pushed as one chunk, and
liblsl's own threads do the network I/O, so nothing here waits.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from twisted.application import service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from jspsych_tobii.core.jsonsafe import json_safe
from jspsych_tobii.core.timesync import ServerClock
from jspsych_tobii.interfaces import IEventSink, IGazeObserver, ISessionListener
from jspsych_tobii.logs import Logger

__all__ = [
    "LSL_INSTALL",
    "GAZE_CHANNELS",
    "LslUnavailable",
    "load_pylsl",
    "ClockMapping",
    "LslPublisher",
    "LslService",
    "gaze_chunk",
    "source_ids",
]

LSL_INSTALL = 'pip install "jspsych-tobii[lsl]"'

#: The gaze outlet's channels: (label, eye, type, unit, how to compute it).
GAZE_CHANNELS: Tuple[Tuple[str, str, str, str], ...] = (
    ("gaze_x", "both", "ScreenX", "normalized"),
    ("gaze_y", "both", "ScreenY", "normalized"),
    ("left_x", "left", "ScreenX", "normalized"),
    ("left_y", "left", "ScreenY", "normalized"),
    ("right_x", "right", "ScreenX", "normalized"),
    ("right_y", "right", "ScreenY", "normalized"),
    ("left_pupil", "left", "Diameter", "mm"),
    ("right_pupil", "right", "Diameter", "mm"),
    ("left_gaze_valid", "left", "Validity", "boolean"),
    ("right_gaze_valid", "right", "Validity", "boolean"),
    ("left_pupil_valid", "left", "Validity", "boolean"),
    ("right_pupil_valid", "right", "Validity", "boolean"),
    ("seq", "", "SampleNumber", "count"),
)

#: Rounds of reading both clocks when measuring their offset.
OFFSET_ROUNDS = 25
#: Gaze batches are gathered for at most this long (s) and pushed as one chunk:
#: each push wakes liblsl's sending thread, so fewer, larger pushes cost less CPU.
FLUSH_INTERVAL = 0.01


class LslUnavailable(Exception):
    """pylsl (or its liblsl) cannot be loaded; the message says how to install it."""


def load_pylsl() -> Any:
    """The pylsl module, or L{LslUnavailable} with a one-line message."""
    try:
        import pylsl
    except (ImportError, OSError, RuntimeError) as e:
        detail = "" if isinstance(e, ImportError) else f" ({e})"
        raise LslUnavailable(
            f"--lsl needs pylsl, the Lab Streaming Layer library{detail}: {LSL_INSTALL}"
        ) from None
    return pylsl


def gaze_chunk(batch: np.ndarray) -> np.ndarray:
    """A batch of gaze records as an (n, len(GAZE_CHANNELS)) float64 array, in channel order."""
    out = np.empty((len(batch), len(GAZE_CHANNELS)), dtype=np.float64)
    lv = batch["left_gaze_valid"] & np.isfinite(batch["left_x"]) & np.isfinite(batch["left_y"])
    rv = batch["right_gaze_valid"] & np.isfinite(batch["right_x"]) & np.isfinite(batch["right_y"])
    for column, axis in ((0, "x"), (1, "y")):
        left = np.where(lv, batch[f"left_{axis}"], np.nan)
        right = np.where(rv, batch[f"right_{axis}"], np.nan)
        out[:, column] = np.where(lv & rv, (left + right) * 0.5, np.where(lv, left, right))
    for column, (label, _, _, _) in enumerate(GAZE_CHANNELS[2:], start=2):
        out[:, column] = batch[label] if label != "seq" else batch["seq"]
    return out


def source_ids(tracker: Dict[str, Any]) -> Tuple[str, str]:
    """The gaze and marker outlets' C{source_id}: the same for the same tracker, always."""
    base = f"jspsych-tobii:{tracker.get('model') or 'unknown'}:{tracker.get('serialNumber') or ''}"
    return base + ":gaze", base + ":markers"


class ClockMapping:
    """
    Server-clock time (µs, the clock of C{system_time_us}) to LSL time (s):
    C{lsl = us / 1e6 + offset_s}.

    @ivar exact: True when the offset is known by construction (Linux, where
        both are CLOCK_MONOTONIC), False when it was measured.
    @ivar uncertainty_s: half the width of the measurement's bracket.
    """

    def __init__(self, offset_s: float, exact: bool, uncertainty_s: float = 0.0):
        self.offset_s = offset_s
        self.exact = exact
        self.uncertainty_s = uncertainty_s

    @classmethod
    def measure(
        cls,
        server_us: Callable[[], int],
        lsl_seconds: Callable[[], float],
        rounds: int = OFFSET_ROUNDS,
    ) -> "ClockMapping":
        """Read LSL's clock between two readings of the server clock; keep the tightest round."""
        best: Optional[Tuple[int, float]] = None
        for _ in range(rounds):
            before = server_us()
            lsl = lsl_seconds()
            after = server_us()
            width = after - before
            offset = lsl - (before + after) / 2e6
            if best is None or width < best[0]:
                best = (width, offset)
        width, offset = best  # type: ignore[misc]
        return cls(offset, exact=False, uncertainty_s=width / 2e6)

    def seconds(self, times_us: np.ndarray) -> np.ndarray:
        return np.asarray(times_us, dtype=np.float64) / 1e6 + self.offset_s


@implementer(ISessionListener, IGazeObserver, IEventSink)
class LslPublisher:
    """
    A hub observer (L{write_batch}), session listener (L{session_started},
    L{session_ended}) and event sink (L{write_event}, from
    L{ServerState.record_event<jspsych_tobii.server.state.ServerState.record_event>}).

    @param pylsl: the pylsl module (L{load_pylsl}).
    @param reactor: schedules the pushes of gathered gaze (C{callLater}).
    @param clock: the server clock.
    @param tracker_info: returns the connected tracker's C{TrackerInfo}, or None.
    @param same_clock: the server clock's source is LSL's clock (CLOCK_MONOTONIC
        on Linux): time stamps need no measured offset.
    @param server_version: written into the streams' metadata.
    """

    log = Logger()

    def __init__(
        self,
        pylsl: Any,
        reactor: IReactorTime,
        clock: ServerClock,
        tracker_info: Callable[[], Any],
        same_clock: bool,
        server_version: str = "",
        flush_interval: float = FLUSH_INTERVAL,
    ):
        self._pylsl = pylsl
        self._reactor = reactor
        self.flush_interval = flush_interval
        self._pending: List[Tuple[np.ndarray, np.ndarray]] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._clock = clock
        self._tracker_info = tracker_info
        self._same_clock = same_clock
        self._server_version = server_version
        self._identity: Optional[Tuple[str, float]] = None
        self.gaze_outlet: Any = None
        self.marker_outlet: Any = None
        self.mapping: Optional[ClockMapping] = None
        self.markers = 0
        self.failures = 0
        self._failed_once = False

    # -- outlets

    def _open(self, tracker: Optional[Dict[str, Any]]) -> bool:
        """Open (or keep) the outlets for C{tracker}; False when there is no tracker to name."""
        if not tracker:
            return self.gaze_outlet is not None
        frequency = tracker.get("frequency") or 0.0
        identity = (source_ids(tracker)[0], float(frequency))
        if identity == self._identity:
            return True
        self.close()
        pylsl = self._pylsl
        gaze_id, marker_id = source_ids(tracker)
        label = f"{tracker.get('model') or 'eye tracker'} {tracker.get('serialNumber') or ''}"
        gaze = pylsl.StreamInfo(
            name=f"jspsych-tobii gaze ({label.strip()})",
            type="Gaze",
            channel_count=len(GAZE_CHANNELS),
            nominal_srate=float(frequency),
            channel_format=pylsl.cf_double64,
            source_id=gaze_id,
        )
        channels = gaze.desc().append_child("channels")
        for name, eye, kind, unit in GAZE_CHANNELS:
            channel = channels.append_child("channel")
            channel.append_child_value("label", name)
            channel.append_child_value("eye", eye)
            channel.append_child_value("type", kind)
            channel.append_child_value("unit", unit)
        self._describe(gaze, tracker)
        markers = pylsl.StreamInfo(
            name=f"jspsych-tobii markers ({label.strip()})",
            type="Markers",
            channel_count=1,
            nominal_srate=pylsl.IRREGULAR_RATE,
            channel_format=pylsl.cf_string,
            source_id=marker_id,
        )
        self._describe(markers, tracker)
        self.gaze_outlet = pylsl.StreamOutlet(gaze)
        self.marker_outlet = pylsl.StreamOutlet(markers)
        self._identity = identity
        self.log.info(
            "LSL: publishing gaze ({frequency:g} Hz) and markers of {label} as {source}",
            frequency=float(frequency),
            label=label.strip(),
            source=gaze_id.rsplit(":", 1)[0],
        )
        return True

    def _describe(self, info: Any, tracker: Dict[str, Any]) -> None:
        acquisition = info.desc().append_child("acquisition")
        mock = str(tracker.get("address", "")).startswith("mock:")
        acquisition.append_child_value("manufacturer", "jspsych-tobii mock" if mock else "Tobii")
        for key, name in (
            ("model", "model"),
            ("serialNumber", "serial_number"),
            ("firmwareVersion", "firmware_version"),
            ("address", "address"),
        ):
            acquisition.append_child_value(name, str(tracker.get(key) or ""))
        acquisition.append_child_value("software", f"jspsych-tobii {self._server_version}")
        acquisition.append_child_value(
            "time_stamps", "capture time of each sample (the tracker's system time stamp)"
        )

    def close(self) -> None:
        """Push what is gathered, then withdraw the outlets (inlets see the streams end)."""
        self.flush()
        # dropping the last reference destroys the outlet (pylsl's __del__)
        self.gaze_outlet = self.marker_outlet = None
        self._identity = None

    # -- time

    def _map_clocks(self) -> None:
        if self._same_clock:
            offset = -self._clock.offset_us / 1e6
            if self.mapping is not None and self.mapping.offset_s == offset:
                return  # the same as before: nothing new to say
            self.mapping = ClockMapping(offset, exact=True)
            self.log.info(
                "LSL: time stamps are the capture times (the tracker's system clock is "
                "CLOCK_MONOTONIC, LSL's clock)"
            )
            return
        self.mapping = ClockMapping.measure(self._clock.now_us, self._pylsl.local_clock)
        self.log.info(
            "LSL: time stamps mapped to LSL's clock by a measured offset of {offset:.6f} s "
            "(+/- {uncertainty:.1f} us)",
            offset=self.mapping.offset_s,
            uncertainty=self.mapping.uncertainty_s * 1e6,
        )

    def _mapping(self) -> ClockMapping:
        if self.mapping is None:
            self._map_clocks()
        return self.mapping  # type: ignore[return-value]

    # -- the hub's session listener

    def session_started(self, session: int, started_us: Optional[int] = None, tracker=None):
        self._map_clocks()
        if not self._open(tracker):
            self.log.warn("LSL: tracking session {n} has no tracker description", n=session)
            return
        self._failed_once = False
        self.write_event("session_started", t_server_ms=None, session=session)

    def session_ended(self, reason: str = "stopped", **fields: Any) -> None:
        self.flush()
        self.write_event("session_ended", reason=reason, **fields)

    # -- the hub's observer

    def write_batch(self, batch: np.ndarray) -> None:
        """
        Gather a batch of gaze samples, each stamped with its capture time,
        for the next push (at most L{flush_interval} later).  Never raises.
        """
        if self.gaze_outlet is None or not len(batch):
            return
        try:
            stamps = self._mapping().seconds(batch["system_time_us"])
            self._pending.append((gaze_chunk(batch), stamps))
            if self._flush_call is None:
                self._flush_call = self._reactor.callLater(self.flush_interval, self.flush)
        except Exception:
            self._failed("gaze samples")

    def flush(self) -> None:
        """Push the gathered gaze samples as one chunk (copied into liblsl); never raises."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        pending, self._pending = self._pending, []
        outlet = self.gaze_outlet
        if not pending or outlet is None:
            return
        try:
            data = np.concatenate([chunk for chunk, _ in pending])
            stamps = np.concatenate([times for _, times in pending])
            outlet.push_chunk(data, stamps.tolist())
        except Exception:
            self._failed("gaze samples")

    # -- the state's event sink

    def write_event(self, kind: str, t_server_ms: Optional[float] = None, **fields: Any) -> None:
        """Push one event to the marker outlet, stamped with when it happened. Never raises."""
        try:
            if self.marker_outlet is None:
                info = self._tracker_info()
                if info is None or not self._open(info.to_dict()):
                    return
            time_ms = t_server_ms
            tracker_ms = fields.get("trackerTime") if kind == "marker" else None
            if isinstance(tracker_ms, (int, float)) and not isinstance(tracker_ms, bool):
                time_ms = float(tracker_ms)  # a marker is placed on the sample clock
            if time_ms is None:
                time_ms = self._clock.now_us() / 1000.0
            stamp = float(self._mapping().seconds(np.array([time_ms * 1000.0]))[0])
            text = json.dumps(
                json_safe(dict(fields, kind=kind)), separators=(",", ":"), ensure_ascii=False
            )
            self.marker_outlet.push_sample([text], stamp)
            self.markers += 1
        except Exception:
            self._failed(f"the {kind} event")

    def _failed(self, what: str) -> None:
        self.failures += 1
        if not self._failed_once:
            self._failed_once = True
            self.log.failure(
                "LSL: could not publish {what} (further failures are counted)", what=what
            )


class LslService(service.Service):
    """The publisher as a child of the server: stopping it withdraws the outlets."""

    name = "lsl"  # type: ignore[assignment]  # Twisted declares it None

    def __init__(self, publisher: LslPublisher):
        self.publisher = publisher

    def stopService(self):
        super().stopService()
        self.publisher.close()


def clocks_agree(clock_is_monotonic: bool, platform: str = sys.platform) -> bool:
    """
    Whether server time stamps are on LSL's clock by construction: the
    server clock is the process's monotonic clock, which on Linux is
    CLOCK_MONOTONIC, the clock of liblsl's C{local_clock()}.
    """
    return clock_is_monotonic and platform.startswith("linux")
