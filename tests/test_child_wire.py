"""
Tests for L{jspsych_tobii.trackers.child.wire}: frames, partial reads, bad
frames, and the records' round trips.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.interfaces import (
    GAZE_DTYPE,
    CalibrationEyeSample,
    CalibrationPointResult,
    CalibrationResult,
    DisplayArea,
    NotificationKind,
    NoTrackerError,
    TrackerError,
    TrackerInfo,
    TrackerNotification,
    UserPosition,
    empty_gaze,
)
from jspsych_tobii.trackers.child import wire


def gaze(n: int, start: int = 0) -> np.ndarray:
    batch = empty_gaze(n)
    batch["system_time_us"] = np.arange(start, start + n) * 833
    batch["device_time_us"] = batch["system_time_us"] - 7
    batch["left_x"] = np.linspace(0.1, 0.9, n)
    batch["left_gaze_valid"] = True
    return batch


class FrameTests(unittest.SynchronousTestCase):
    def test_header(self):
        frame = wire.encode_frame(wire.MESSAGE, b"{}")
        self.assertEqual(frame, struct.pack(">IB", 2, ord("J")) + b"{}")

    def test_message_round_trip(self):
        message = {"type": "reply", "id": 7, "result": [1.5, None, "é"]}
        frames = wire.FrameDecoder().feed(wire.encode_message(message))
        self.assertEqual(len(frames), 1)
        kind, payload = frames[0]
        self.assertEqual(kind, wire.MESSAGE)
        self.assertEqual(wire.decode_message(payload), message)

    def test_nan_survives(self):
        """Both sides are Python: NaN in a calibration sample crosses as NaN."""
        frames = wire.FrameDecoder().feed(wire.encode_message({"x": math.nan}))
        self.assertTrue(math.isnan(wire.decode_message(frames[0][1])["x"]))

    def test_gaze_round_trip(self):
        batch = gaze(5)
        frame = wire.encode_gaze(batch)
        self.assertEqual(len(frame), wire.HEADER_SIZE + 5 * GAZE_DTYPE.itemsize)
        [(kind, payload)] = wire.FrameDecoder().feed(frame)
        self.assertEqual(kind, wire.GAZE)
        decoded = wire.decode_gaze(payload)
        self.assertEqual(decoded.dtype, GAZE_DTYPE)
        self.assertEqual(decoded.tobytes(), batch.tobytes())
        # the server stamps seq and server time into the batch: it must be writable
        decoded["seq"] = np.arange(5)
        self.assertEqual(list(decoded["seq"]), [0, 1, 2, 3, 4])

    def test_decode_gaze_from_bytes_is_writable(self):
        decoded = wire.decode_gaze(gaze(2).tobytes())
        decoded["seq"] = 3

    def test_gaze_as_bytes(self):
        """A batch handed over as its records' bytes travels as the array would."""
        batch = gaze(3, 7)
        records = bytearray(batch.tobytes())
        self.assertEqual(wire.encode_gaze(records), wire.encode_gaze(batch))
        [(kind, payload)] = wire.FrameDecoder().feed(wire.encode_gaze(records))
        self.assertIs(wire.gaze_records(payload), payload)
        self.assertEqual(bytes(wire.gaze_records(bytes(payload))), bytes(records))
        self.assertEqual(wire.first_system_time_us(payload), int(batch["system_time_us"][0]))
        with self.assertRaises(wire.WireError):
            wire.encode_gaze(records[:-1])
        with self.assertRaises(wire.WireError):
            wire.gaze_records(records[:-1])

    def test_gaze_wrong_dtype(self):
        with self.assertRaises(wire.WireError):
            wire.encode_gaze(np.zeros(3, dtype="f8"))

    def test_gaze_partial_record(self):
        with self.assertRaises(wire.WireError):
            wire.decode_gaze(bytearray(GAZE_DTYPE.itemsize + 1))

    def test_byte_by_byte(self):
        """Frames cut anywhere come out whole, in order."""
        stream = (
            wire.encode_message({"a": 1})
            + wire.encode_gaze(gaze(3))
            + wire.encode_message({"b": 2})
            + wire.encode_gaze(gaze(1, 3))
        )
        decoder = wire.FrameDecoder()
        frames = []
        for i in range(len(stream)):
            frames.extend(decoder.feed(stream[i : i + 1]))
        self.assertEqual([kind for kind, _ in frames], [wire.MESSAGE, wire.GAZE] * 2)
        self.assertEqual(wire.decode_message(frames[2][1]), {"b": 2})
        self.assertEqual(list(wire.decode_gaze(frames[3][1])["system_time_us"]), [3 * 833])
        self.assertEqual(decoder.pending, 0)

    def test_many_in_one_chunk(self):
        stream = b"".join(wire.encode_gaze(gaze(2, 2 * i)) for i in range(100))
        frames = wire.FrameDecoder().feed(stream + stream[:10])
        self.assertEqual(len(frames), 100)
        times = np.concatenate([wire.decode_gaze(p) for _, p in frames])["system_time_us"]
        self.assertEqual(list(times), [i * 833 for i in range(200)])

    def test_partial_header_and_payload(self):
        frame = wire.encode_message({"type": "hello"})
        decoder = wire.FrameDecoder()
        self.assertEqual(decoder.feed(frame[:3]), [])
        self.assertEqual(decoder.feed(frame[3:9]), [])
        self.assertEqual(decoder.pending, 9)
        [(kind, payload)] = decoder.feed(frame[9:])
        self.assertEqual(wire.decode_message(payload), {"type": "hello"})

    def test_empty_payload(self):
        [(kind, payload)] = wire.FrameDecoder().feed(wire.encode_frame(wire.GAZE, b""))
        self.assertEqual(len(wire.decode_gaze(payload)), 0)

    def test_unknown_kind(self):
        """Stray text on the frame pipe (a print) is refused, and stays refused."""
        decoder = wire.FrameDecoder()
        with self.assertRaises(wire.WireError) as caught:
            decoder.feed(b"hello from a print()\n")
        self.assertIn("not a frame", str(caught.exception))
        with self.assertRaises(wire.WireError):
            decoder.feed(wire.encode_message({}))

    def test_oversized(self):
        decoder = wire.FrameDecoder(max_payload=100)
        with self.assertRaises(wire.WireError) as caught:
            decoder.feed(struct.pack(">IB", 101, wire.MESSAGE))
        self.assertIn("too large", str(caught.exception))
        with self.assertRaises(wire.WireError):
            wire.encode_frame(wire.GAZE, b"x" * (wire.MAX_PAYLOAD + 1))

    def test_encode_unknown_kind(self):
        with self.assertRaises(wire.WireError):
            wire.encode_frame(ord("X"), b"")

    def test_bad_messages(self):
        for payload in (b"\xff\xfe", b"{not json", b"[1, 2]", b"3"):
            with self.assertRaises(wire.WireError):
                wire.decode_message(payload)


class DtypeTests(unittest.SynchronousTestCase):
    def test_descr_is_json_and_matches(self):
        import json

        descr = json.loads(json.dumps(wire.dtype_descr()))
        self.assertTrue(wire.same_dtype(descr))
        self.assertEqual(descr[0], ["device_time_us", "<i8"])
        self.assertIn(["left_gaze_valid", "|b1"], descr)

    def test_other_layout_refused(self):
        descr = wire.dtype_descr()
        self.assertFalse(wire.same_dtype(descr[:-1]))
        swapped = [list(d) for d in descr]
        swapped[0][1] = ">i8"
        self.assertFalse(wire.same_dtype(swapped))
        self.assertFalse(wire.same_dtype(None))


class RecordTests(unittest.SynchronousTestCase):
    def roundTrip(self, to_wire, from_wire, value):
        import json

        return from_wire(json.loads(json.dumps(to_wire(value))))

    def test_info(self):
        info = TrackerInfo(
            address="tobii-prp://TPSP1-1",
            model="Tobii Pro Spectrum",
            serial_number="TPSP1-1",
            firmware_version="2.6",
            device_name="lab",
            frequencies=(60.0, 1200.0),
            frequency=1200.0,
            capabilities=frozenset({"gaze", "calibration"}),
            display_area=DisplayArea(
                (-250.0, 150.0, 0.0), (250.0, 150.0, 0.0), (-250.0, 0.0, 50.0)
            ),
            sdk_version="2.1.0.1",
            system_clock_offset_us=-12,
        )
        self.assertEqual(self.roundTrip(wire.info_to_wire, wire.info_from_wire, info), info)
        bare = TrackerInfo("a", "m", "s", "f")
        self.assertEqual(self.roundTrip(wire.info_to_wire, wire.info_from_wire, bare), bare)

    def test_position(self):
        position = UserPosition((0.4, 0.5, 0.6), None, 123)
        self.assertEqual(
            self.roundTrip(wire.position_to_wire, wire.position_from_wire, position), position
        )
        self.assertIsNone(self.roundTrip(wire.position_to_wire, wire.position_from_wire, None))

    def test_points_need_three_coordinates(self):
        self.assertRaises(ValueError, wire.position_from_wire, {"left": [0.4, 0.5], "right": None})
        info = wire.info_to_wire(TrackerInfo("a", "m", "s", "f"))
        info["display_area"] = [[0, 0, 0], [1, 0], [0, 1, 0]]
        self.assertRaises(ValueError, wire.info_from_wire, info)

    def test_calibration(self):
        result = CalibrationResult(
            success=True,
            status="success",
            points=(
                CalibrationPointResult(
                    0.5,
                    0.5,
                    (CalibrationEyeSample(0.51, 0.49, "valid_and_used"),),
                    (CalibrationEyeSample(0.49, 0.5, "invalid"),),
                ),
                CalibrationPointResult(0.1, 0.9),
            ),
        )
        self.assertEqual(
            self.roundTrip(wire.calibration_to_wire, wire.calibration_from_wire, result), result
        )

    def test_notification(self):
        note = TrackerNotification(
            NotificationKind.DISPLAY_AREA_CHANGED, 99, "the display area changed", {"a": [1, 2]}
        )
        self.assertEqual(
            self.roundTrip(wire.notification_to_wire, wire.notification_from_wire, note), note
        )

    def test_errors(self):
        error = wire.error_from_wire(wire.error_to_wire(NoTrackerError()))
        self.assertIsInstance(error, NoTrackerError)
        self.assertEqual(str(error), "no eye tracker connected")
        error = wire.error_from_wire(wire.error_to_wire(TrackerError("bad frequency")))
        self.assertIs(type(error), TrackerError)
        self.assertEqual(str(error), "bad frequency")
        error = wire.error_from_wire(wire.error_to_wire(KeyError("x")))
        self.assertIs(type(error), TrackerError)
        self.assertIn("internal error in the SDK process: KeyError", str(error))
        self.assertIsInstance(wire.error_from_wire({}), TrackerError)
