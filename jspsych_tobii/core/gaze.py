"""
From binocular records to what the jsPsych client reads.

L{GazeView} computes, once per batch and with numpy, the columns of the
client's C{gaze} object: x and y averaged over the valid eyes (null when both
are lost), the time stamps in ms, validities and pupil diameters.  It then
renders them either as JSON text frames for the live push (L{encode_frames},
one frame per sample) or as dicts for request replies (L{to_dicts}).  The two
renderings carry the same fields.
"""

from __future__ import annotations

import json
import math
from typing import List

import numpy as np

# Fields of one sample as sent to clients, in order.  x, y: binocular gaze on
# the display area (0..1, origin top-left); timestamp: capture time on the
# tracker system clock (C), ms; server_timestamp: when the server received it
# (B, the same clock), ms; deviceTimestamp: the tracker's own clock, ms;
# seq: sample number within the tracking session.
FIELDS = (
    "x",
    "y",
    "timestamp",
    "leftValid",
    "rightValid",
    "leftPupilDiameter",
    "rightPupilDiameter",
    "leftX",
    "leftY",
    "rightX",
    "rightY",
    "deviceTimestamp",
    "seq",
    "server_timestamp",
)


# Decimal places of each field, as in the frames; None: not a float.
_DIGITS = (6, 6, 3, None, None, 4, 4, 6, 6, 6, 6, 3, None, 3)
_INFINITIES = (math.inf, -math.inf)


def _masked(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, values, np.nan)


class GazeView:
    """The client-facing columns of a batch, computed once."""

    def __init__(self, batch: np.ndarray):
        lv = batch["left_gaze_valid"] & np.isfinite(batch["left_x"]) & np.isfinite(batch["left_y"])
        rv = (
            batch["right_gaze_valid"]
            & np.isfinite(batch["right_x"])
            & np.isfinite(batch["right_y"])
        )
        lx, ly = _masked(batch["left_x"], lv), _masked(batch["left_y"], lv)
        rx, ry = _masked(batch["right_x"], rv), _masked(batch["right_y"], rv)
        both = lv & rv
        x = np.where(both, (lx + rx) * 0.5, np.where(lv, lx, rx))
        y = np.where(both, (ly + ry) * 0.5, np.where(lv, ly, ry))
        lp = _masked(batch["left_pupil"], batch["left_pupil_valid"])
        rp = _masked(batch["right_pupil"], batch["right_pupil_valid"])
        self.columns = (
            x.tolist(),
            y.tolist(),
            (batch["system_time_us"] / 1000.0).tolist(),
            lv.tolist(),
            rv.tolist(),
            lp.tolist(),
            rp.tolist(),
            lx.tolist(),
            ly.tolist(),
            rx.tolist(),
            ry.tolist(),
            (batch["device_time_us"] / 1000.0).tolist(),
            batch["seq"].tolist(),
            (batch["server_time_us"] / 1000.0).tolist(),
        )
        self.size = len(batch)

    def to_dicts(self) -> List[dict]:
        """
        JSON-safe dicts (None where a value is missing), rounded as the
        frames are, so a sample fetched later equals the one pushed live.
        """
        out = []
        for values in zip(*self.columns):
            sample = {}
            for name, digits, value in zip(FIELDS, _DIGITS, values):
                if digits is not None:
                    value = None if value != value or value in _INFINITIES else round(value, digits)
                sample[name] = value
            out.append(sample)
        return out

    def encode_samples(self) -> List[bytes]:
        """Each sample's C{gaze} object as JSON text (UTF-8 bytes)."""
        out = []
        append = out.append
        for x, y, t, lv, rv, lp, rp, lx, ly, rx, ry, dt, seq, st in zip(*self.columns):
            append(
                (
                    '{"x":%s,"y":%s,"timestamp":%.3f,'
                    '"leftValid":%s,"rightValid":%s,'
                    '"leftPupilDiameter":%s,"rightPupilDiameter":%s,'
                    '"leftX":%s,"leftY":%s,"rightX":%s,"rightY":%s,'
                    '"deviceTimestamp":%.3f,"seq":%d,"server_timestamp":%.3f}'
                    % (
                        _num(x, "%.6f"),
                        _num(y, "%.6f"),
                        t,
                        "true" if lv else "false",
                        "true" if rv else "false",
                        _num(lp, "%.4f"),
                        _num(rp, "%.4f"),
                        _num(lx, "%.6f"),
                        _num(ly, "%.6f"),
                        _num(rx, "%.6f"),
                        _num(ry, "%.6f"),
                        dt,
                        seq,
                        st,
                    )
                ).encode("ascii")
            )
        return out

    def encode_frames(self) -> List[bytes]:
        """One C{gaze_data} JSON frame per sample, as UTF-8 bytes."""
        return [b'{"type":"gaze_data","gaze":' + gaze + b"}" for gaze in self.encode_samples()]


def _num(value: float, fmt: str) -> str:
    if value != value or value in (math.inf, -math.inf):
        return "null"
    return fmt % value


def sample_dicts(batch: np.ndarray) -> List[dict]:
    """The reply form of a batch."""
    return GazeView(batch).to_dicts()


def dumps(message: dict) -> bytes:
    """Encode a reply; NaN is never written (it is a bug to pass one)."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8")
