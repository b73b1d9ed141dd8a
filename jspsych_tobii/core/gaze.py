# -*- test-case-name: tests.test_gaze -*-
"""
From binocular records to what the jsPsych client reads.

A sample's C{gaze} object holds x and y averaged over the valid eyes (null
when both are lost), the time stamps in ms, validities, pupil diameters and
each eye's point.  This module renders a batch of L{GAZE_DTYPE} records in
three forms that carry the same fields and the same digits:

  - L{encode_frames}: one complete C{{"type":"gaze_data","gaze":{...}}}
    text per sample, the live push (encoded once, sent to every client);
  - L{encode_objects}: the samples' C{gaze} objects joined by commas, the
    body of a C{get_data} reply's array (L{encode_rows}: the same text with
    each object's length, what the recording's text cache keeps);
  - L{sample_dicts}: dicts, for small replies.

Two encoders make the text.  For a few samples (what a tracker hands over
per reactor turn) each record is unpacked into Python values with one
C{struct} call and formatted with one C{%} operation: numpy's per-call cost
would be most of the time there.  For many samples (C{get_data}, a reactor
that fell behind) the text is assembled with numpy at once: every number is
turned into its digits through a table of 4-digit groups, into a byte matrix
of fixed-width slots, and the padding is squeezed out at the end.  Both give
exactly the digits of C{"%.6f" % value} (the vectorised encoder hands a batch
to the other one in the rare cases where it could not be sure of that: a
value within a rounding error of a tie, or too large for its slot).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np

from jspsych_tobii.interfaces import GAZE_DTYPE

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

#: Decimal places of each field, as in the frames; None: not a float.
DIGITS = (6, 6, 3, None, None, 4, 4, 6, 6, 6, 6, 3, None, 3)

#: Batches at least this long are encoded with numpy.
VECTOR_THRESHOLD = 256

FRAME_PREFIX = b'{"type":"gaze_data","gaze":'
FRAME_SUFFIX = b"}"

_INF = math.inf
_RECORD = struct.Struct("<4q9d3?9d3?")
_SIZE = _RECORD.size
assert _SIZE == GAZE_DTYPE.itemsize, "GAZE_DTYPE changed: update _RECORD"
#: The bytes of one record of GAZE_DTYPE.
RECORD_SIZE = _SIZE
_STAMP = struct.Struct("<qq")  # seq, server_time_us

#: The columns the text is made of, in the dtype's order.
_TEXT_COLUMNS = (
    "device_time_us",
    "system_time_us",
    "seq",
    "server_time_us",
    "left_x",
    "left_y",
    "left_pupil",
    "left_gaze_valid",
    "left_pupil_valid",
    "right_x",
    "right_y",
    "right_pupil",
    "right_gaze_valid",
    "right_pupil_valid",
)


def _reader(dtype: np.dtype, columns: Tuple[str, ...]) -> struct.Struct:
    """A struct that reads C{columns} of a record of C{dtype} and skips the rest."""
    codes = {"i8": "q", "f8": "d", "b1": "?"}
    parts = []
    for name in dtype.names or ():
        kind = dtype.fields[name][0] if dtype.fields else None
        assert kind is not None
        code = codes[kind.str[1:]]
        parts.append(code if name in columns else f"{kind.itemsize}x")
    assert [n for n in dtype.names or () if n in columns] == list(columns)
    return struct.Struct("<" + "".join(parts))


_TEXT_RECORD = _reader(GAZE_DTYPE, _TEXT_COLUMNS)
_FIELDS = GAZE_DTYPE.fields
assert _FIELDS is not None, "GAZE_DTYPE is a structured dtype"
_STAMP_AT: int = _FIELDS["seq"][1]
assert _FIELDS["server_time_us"][1] == _STAMP_AT + 8, "GAZE_DTYPE changed"

_OBJECT = (
    b'{"x":%s,"y":%s,"timestamp":%.3f,"leftValid":%s,"rightValid":%s,'
    b'"leftPupilDiameter":%s,"rightPupilDiameter":%s,'
    b'"leftX":%s,"leftY":%s,"rightX":%s,"rightY":%s,'
    b'"deviceTimestamp":%.3f,"seq":%d,"server_timestamp":%.3f}'
)
# Both eyes and both pupils valid, the usual case: one formatting operation.
_BOTH_OBJECT = (
    b'{"x":%.6f,"y":%.6f,"timestamp":%.3f,"leftValid":true,"rightValid":true,'
    b'"leftPupilDiameter":%.4f,"rightPupilDiameter":%.4f,'
    b'"leftX":%.6f,"leftY":%.6f,"rightX":%.6f,"rightY":%.6f,'
    b'"deviceTimestamp":%.3f,"seq":%d,"server_timestamp":%.3f}'
)
_BOTH_FRAME = FRAME_PREFIX + _BOTH_OBJECT + FRAME_SUFFIX
_FRAME = FRAME_PREFIX + _OBJECT + FRAME_SUFFIX
_NULL_TEXT, _TRUE_TEXT, _FALSE_TEXT = b"null", b"true", b"false"


def _num(value: float, fmt: bytes) -> bytes:
    if -_INF < value < _INF:
        return fmt % value
    return _NULL_TEXT


def _format(records: bytes | bytearray, both: bytes, general: bytes) -> List[bytes]:
    """Each record as text, through one of the two templates."""
    if len(records) == _SIZE:  # the usual case on the live path: one sample
        return [_format_one(_TEXT_RECORD.unpack(records), both, general)]
    return [_format_one(values, both, general) for values in _TEXT_RECORD.iter_unpack(records)]


def _format_one(values: tuple, both: bytes, general: bytes) -> bytes:
    """One record's values (as L{_TEXT_RECORD} reads them) as text."""
    dev, sys_, seq, srv, lx, ly, lp, lgv, lpv, rx, ry, rp, rgv, rpv = values
    lv = lgv and -_INF < lx < _INF and -_INF < ly < _INF
    rv = rgv and -_INF < rx < _INF and -_INF < ry < _INF
    if lv and rv:
        x, y = (lx + rx) * 0.5, (ly + ry) * 0.5
        if (
            lpv
            and rpv
            and -_INF < lp < _INF
            and -_INF < rp < _INF
            and -_INF < x < _INF
            and -_INF < y < _INF
        ):
            return both % (
                x,
                y,
                sys_ / 1000.0,
                lp,
                rp,
                lx,
                ly,
                rx,
                ry,
                dev / 1000.0,
                seq,
                srv / 1000.0,
            )
        if -_INF < x < _INF and -_INF < y < _INF:
            xt, yt = b"%.6f" % x, b"%.6f" % y
        else:
            xt = yt = _NULL_TEXT
    elif lv:
        xt, yt = b"%.6f" % lx, b"%.6f" % ly
    elif rv:
        xt, yt = b"%.6f" % rx, b"%.6f" % ry
    else:
        xt = yt = _NULL_TEXT
    return general % (
        xt,
        yt,
        sys_ / 1000.0,
        _TRUE_TEXT if lv else _FALSE_TEXT,
        _TRUE_TEXT if rv else _FALSE_TEXT,
        _num(lp, b"%.4f") if lpv else _NULL_TEXT,
        _num(rp, b"%.4f") if rpv else _NULL_TEXT,
        b"%.6f" % lx if lv else _NULL_TEXT,
        b"%.6f" % ly if lv else _NULL_TEXT,
        b"%.6f" % rx if rv else _NULL_TEXT,
        b"%.6f" % ry if rv else _NULL_TEXT,
        dev / 1000.0,
        seq,
        srv / 1000.0,
    )


def _records(batch: np.ndarray) -> bytes:
    if batch.dtype != GAZE_DTYPE:
        raise TypeError(f"expected records of GAZE_DTYPE, got {batch.dtype}")
    return batch.tobytes()


def encode_frames(batch: np.ndarray, records: Optional[bytes | bytearray] = None) -> List[bytes]:
    """
    One complete C{gaze_data} text frame per sample, as UTF-8 bytes.

    @param records: the batch's bytes, if the caller has them already.
    """
    if len(batch) >= VECTOR_THRESHOLD:
        text = _Vector(batch, FRAME_PREFIX, FRAME_SUFFIX).encode(lengths=True)
        if text is not None:
            joined, lengths = text
            assert lengths is not None  # asked for
            return _split(joined, lengths)
    return _format(_records(batch) if records is None else records, _BOTH_FRAME, _FRAME)


def record_frames(records: bytes | bytearray) -> List[bytes]:
    """L{encode_frames} of a few records given as bytes (per record, no numpy)."""
    return _format(records, _BOTH_FRAME, _FRAME)


def stamp(records: bytearray, first_seq: int, server_time_us: int) -> None:
    """
    Write sequence numbers (from C{first_seq}) and the server's receipt
    time into records of L{GAZE_DTYPE} given as bytes, in place: for a few
    records, a struct call each costs far less than numpy's field access.
    """
    pack_into = _STAMP.pack_into
    if len(records) == _SIZE:
        pack_into(records, _STAMP_AT, first_seq, server_time_us)
        return
    for i in range(len(records) // _SIZE):
        pack_into(records, i * _SIZE + _STAMP_AT, first_seq + i, server_time_us)


def encode_objects(batch: np.ndarray, lead: bytes = b"") -> bytes:
    """
    The samples' C{gaze} objects, joined by commas (no brackets), after
    C{lead} (C{b","} for a batch that continues an array: for a long batch
    that costs no copy of its text).
    """
    if len(batch) >= VECTOR_THRESHOLD:
        text = _Vector(batch, b",", b"").encode()
        if text is not None:
            return text[0] if lead == b"," else lead + text[0][1:]
    return lead + b",".join(_format(_records(batch), _BOTH_OBJECT, _OBJECT))


class EncodedSamples(NamedTuple):
    """
    Samples whose C{gaze} objects are encoded already (L{encode_rows}):
    the objects of C{samples} samples, each preceded by a comma.
    """

    text: bytes
    samples: int


def encode_rows(batch: np.ndarray) -> Tuple[bytes, np.ndarray]:
    """
    The samples' C{gaze} objects, each preceded by a comma (the text of
    L{encode_objects} with C{lead=b","}), and each one's length in bytes,
    its comma included.
    """
    if len(batch) >= VECTOR_THRESHOLD:
        text = _Vector(batch, b",", b"").encode(lengths=True)
        if text is not None:
            joined, lengths = text
            assert lengths is not None  # asked for
            return joined, lengths
    rows = _format(_records(batch), _BOTH_OBJECT, _OBJECT)
    lengths = np.fromiter((len(row) + 1 for row in rows), np.int64, len(rows))
    return b"," + b",".join(rows) if rows else b"", lengths


def sample_dicts(batch: np.ndarray) -> List[dict]:
    """The reply form of a batch: dicts with None where a value is missing."""
    return json.loads(b"[" + encode_objects(batch) + b"]")


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def dumps(message: dict) -> bytes:
    """Encode a reply; NaN is never written (it is a bug to pass one)."""
    return _ENCODER.encode(message).encode("utf-8")


# -- the vectorised encoder

_FILL = 0  # a byte that marks padding, squeezed out at the end
_FILL_BYTE = bytes([_FILL])
_GROUPS32 = np.frombuffer(b"".join(b"%04d" % i for i in range(10000)), np.uint32)
_TRUE = np.frombuffer(b"true\0", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_NULL = np.frombuffer(b"null", np.uint8)
_POINT, _MINUS = ord("."), ord("-")
#: Largest magnitude encoded with numpy (scaled by 10^6 it stays exact in int64).
_LARGEST = 1e9


def _digits(m: np.ndarray, width: int) -> np.ndarray:
    """The decimal digits of C{m} (int64, >= 0) as ASCII, C{width} columns, zero-padded."""
    groups = -(-width // 4)
    out = np.empty((len(m), groups), np.uint32)
    for g in range(groups - 1, 0, -1):
        # (floor division by a constant is several times faster than divmod)
        q = m // 10000
        out[:, g] = _GROUPS32[m - q * 10000]
        m = q
    out[:, 0] = _GROUPS32[m - (m // 10000) * 10000]
    return out.view(np.uint8)[:, groups * 4 - width :]


def _count_digits(m: np.ndarray) -> np.ndarray:
    """Digits of each C{m} >= 0 (1 for 0)."""
    if len(m) == 0:
        return np.ones(0, np.int64)
    top, bottom = int(m.max()), int(m.min())
    # the powers of ten at most the smallest value add a digit to every one
    common, p = 1, 10
    while p <= bottom:
        common += 1
        p *= 10
    count = np.full(len(m), common, np.int64)
    while p <= top:
        count += m >= p
        p *= 10
    return count


class _Vector:
    """
    One batch assembled as a byte matrix, a row per sample: literal columns
    and fixed-width slots, padding marked with L{_FILL}.
    """

    def __init__(self, batch: np.ndarray, prefix: bytes, suffix: bytes):
        self.batch = batch
        self.prefix = prefix
        self.suffix = suffix
        self.pieces: list = []  # literal bytes, or (width, writer) slots

    def literal(self, text: bytes) -> None:
        self.pieces.append(text)

    def fixed(self, values: np.ndarray, decimals: int, ok: np.ndarray) -> bool:
        """A float column with C{decimals} places, null where not C{ok}."""
        scale = 10.0**decimals
        magnitude = np.where(ok, np.abs(values), 0.0)
        if magnitude.max(initial=0.0) >= _LARGEST:
            return False
        scaled = magnitude * scale
        m = np.rint(scaled)
        # scaled may be off the exact value by half an ulp: where that could
        # move it across a tie, only exact formatting knows the last digit
        if np.any(np.abs(np.abs(scaled - m) - 0.5) <= scaled * 4e-16):
            return False
        self._number(m.astype(np.int64), decimals, np.signbit(values) & ok, ok)
        return True

    def micros(self, values: np.ndarray) -> None:
        """Integer µs as ms with three places."""
        self._number(np.abs(values), 3, values < 0, None)

    def integer(self, values: np.ndarray) -> None:
        self._number(np.abs(values), 0, values < 0, None)

    def _number(
        self, m: np.ndarray, decimals: int, negative: np.ndarray, ok: Optional[np.ndarray]
    ) -> None:
        unit = 10**decimals
        count = _count_digits(m // unit)
        whole = int(count.max(initial=1))
        # a column with no negative number in this batch has no sign slot
        signed = bool(negative.any())
        digits_width = whole + (1 + decimals if decimals else 0)
        width = int(signed) + digits_width
        if ok is not None:
            width = max(width, 4)

        def write(out: np.ndarray) -> None:
            digits = _digits(m, whole + decimals)
            pad = width - digits_width - int(signed)
            if pad:
                out[:, :pad] = _FILL
            if signed:
                out[:, pad] = np.where(negative, _MINUS, _FILL)
            at = pad + int(signed)
            body = out[:, at : at + whole]
            if whole > 1 and count.min() < whole:
                # leading zeros become padding
                np.multiply(
                    digits[:, :whole],
                    np.arange(whole)[None, :] >= (whole - count)[:, None],
                    out=body,
                    casting="unsafe",
                )
            else:
                body[...] = digits[:, :whole]
            if decimals:
                out[:, at + whole] = _POINT
                out[:, at + whole + 1 :] = digits[:, whole:]
            if ok is not None and not ok.all():
                lost = ~ok
                out[lost, : width - 4] = _FILL
                out[lost, width - 4 :] = _NULL

        self.pieces.append((width, write))

    def flag(self, values: np.ndarray) -> None:
        if values.all():
            self.literal(b"true")  # the usual case: no slot to fill
            return

        def write(out: np.ndarray) -> None:
            out[...] = np.where(values[:, None], _TRUE[None, :], _FALSE[None, :])

        self.pieces.append((5, write))

    def encode(self, lengths: bool = False) -> Optional[Tuple[bytes, Optional[np.ndarray]]]:
        """
        The rows' text, and each row's length if asked, or None (use the
        other encoder).
        """
        b = self.batch
        lv = b["left_gaze_valid"] & np.isfinite(b["left_x"]) & np.isfinite(b["left_y"])
        rv = b["right_gaze_valid"] & np.isfinite(b["right_x"]) & np.isfinite(b["right_y"])
        both = lv & rv
        with np.errstate(invalid="ignore", over="ignore"):
            x = np.where(
                both, (b["left_x"] + b["right_x"]) * 0.5, np.where(lv, b["left_x"], b["right_x"])
            )
            y = np.where(
                both, (b["left_y"] + b["right_y"]) * 0.5, np.where(lv, b["left_y"], b["right_y"])
            )
            xy_ok = (lv | rv) & np.isfinite(x) & np.isfinite(y)
            lp_ok = b["left_pupil_valid"] & np.isfinite(b["left_pupil"])
            rp_ok = b["right_pupil_valid"] & np.isfinite(b["right_pupil"])
            self.literal(self.prefix + b'{"x":')
            if not self.fixed(x, 6, xy_ok):
                return None
            self.literal(b',"y":')
            if not self.fixed(y, 6, xy_ok):
                return None
            self.literal(b',"timestamp":')
            self.micros(b["system_time_us"])
            self.literal(b',"leftValid":')
            self.flag(lv)
            self.literal(b',"rightValid":')
            self.flag(rv)
            self.literal(b',"leftPupilDiameter":')
            if not self.fixed(b["left_pupil"], 4, lp_ok):
                return None
            self.literal(b',"rightPupilDiameter":')
            if not self.fixed(b["right_pupil"], 4, rp_ok):
                return None
            for name, column, valid in (
                ("leftX", "left_x", lv),
                ("leftY", "left_y", lv),
                ("rightX", "right_x", rv),
                ("rightY", "right_y", rv),
            ):
                self.literal(b',"%s":' % name.encode())
                if not self.fixed(b[column], 6, valid):
                    return None
            self.literal(b',"deviceTimestamp":')
            self.micros(b["device_time_us"])
            self.literal(b',"seq":')
            self.integer(b["seq"])
            self.literal(b',"server_timestamp":')
            self.micros(b["server_time_us"])
            self.literal(b"}" + self.suffix)
        return self._assemble(lengths)

    def _assemble(self, lengths: bool) -> Tuple[bytes, Optional[np.ndarray]]:
        # adjacent literals (and all-true flags) become one template piece
        pieces: List[Any] = []
        for piece in self.pieces:
            if isinstance(piece, bytes) and pieces and isinstance(pieces[-1], bytes):
                pieces[-1] += piece
            else:
                pieces.append(piece)
        widths = [len(p) if isinstance(p, bytes) else p[0] for p in pieces]
        template = b"".join(p if isinstance(p, bytes) else b"\0" * p[0] for p in pieces)
        out = np.empty((len(self.batch), len(template)), np.uint8)
        out[...] = np.frombuffer(template, np.uint8)
        at = 0
        for piece, width in zip(pieces, widths):
            if not isinstance(piece, bytes):
                piece[1](out[:, at : at + width])
            at += width
        if not lengths:
            # few padding bytes are left per row: deleting them from the
            # text is cheaper than selecting the others with a mask
            return out.tobytes().replace(_FILL_BYTE, b""), None
        keep = out != _FILL
        return out[keep].tobytes(), np.count_nonzero(keep, axis=1)


def _split(text: bytes, lengths: np.ndarray) -> List[bytes]:
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    return [text[s:e] for s, e in zip(starts, ends)]
