"""
Tests for L{jspsych_tobii.core.gaze}: the client-facing sample.
"""

import json
import math

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.core import gaze
from jspsych_tobii.core.gaze import FIELDS, encode_frames, encode_objects, sample_dicts
from jspsych_tobii.interfaces import empty_gaze


def samples():
    b = empty_gaze(4)
    b["system_time_us"] = [1_000_000, 1_000_833, 1_001_667, 1_002_500]
    b["device_time_us"] = b["system_time_us"] + 5
    b["seq"] = [0, 1, 2, 3]
    b["server_time_us"] = [1_003_000] * 4
    # 0: both eyes; 1: left only; 2: right only; 3: none
    b["left_x"], b["left_y"] = [0.2, 0.3, 0.9, np.nan], [0.4, 0.5, 0.9, np.nan]
    b["right_x"], b["right_y"] = [0.4, 0.9, 0.7, np.nan], [0.6, 0.9, 0.1, np.nan]
    b["left_gaze_valid"] = [True, True, False, False]
    b["right_gaze_valid"] = [True, False, True, False]
    b["left_pupil"], b["left_pupil_valid"] = 3.0, [True, True, False, False]
    b["right_pupil"], b["right_pupil_valid"] = 3.5, [True, False, True, False]
    return b


class GazeTests(unittest.SynchronousTestCase):
    def test_binocular_average_of_valid_eyes(self):
        dicts = sample_dicts(samples())
        xy = [(d["x"], d["y"]) for d in dicts]
        self.assertTrue(math.isclose(xy[0][0], 0.3) and math.isclose(xy[0][1], 0.5))
        self.assertEqual(xy[1], (0.3, 0.5))  # left only
        self.assertEqual(xy[2], (0.7, 0.1))  # right only
        self.assertEqual(xy[3], (None, None))  # both lost: sent, client drops it

    def test_fields_and_units(self):
        d = sample_dicts(samples())[1]
        self.assertEqual(set(d), set(FIELDS))
        self.assertEqual(d["timestamp"], 1000.833)
        self.assertEqual(d["deviceTimestamp"], 1000.838)
        self.assertEqual(d["server_timestamp"], 1003.0)
        self.assertEqual((d["leftValid"], d["rightValid"]), (True, False))
        self.assertEqual((d["leftPupilDiameter"], d["rightPupilDiameter"]), (3.0, None))
        self.assertEqual(d["seq"], 1)

    def test_frames_match_dicts(self):
        """The fast frame encoder gives what json.dumps of the dicts would, to rounding."""
        for frame, expected in zip(encode_frames(samples()), sample_dicts(samples())):
            message = json.loads(frame)
            self.assertEqual(message["type"], "gaze_data")
            self.assertNotIn("requestId", message)
            gaze = message["gaze"]
            self.assertEqual(set(gaze), set(FIELDS))
            for key, value in expected.items():
                if isinstance(value, float):
                    self.assertTrue(math.isclose(gaze[key], value, abs_tol=1e-6), key)
                else:
                    self.assertEqual(gaze[key], value, key)

    def test_frames_never_contain_nan(self):
        b = samples()
        b["left_pupil_valid"] = True
        b["left_pupil"][0] = np.nan
        b["left_x"][1] = np.inf
        for frame in encode_frames(b):
            self.assertNotIn(b"NaN", frame)
            self.assertNotIn(b"Infinity", frame)
            json.loads(frame, parse_constant=lambda c: self.fail(c))


def random_samples(n, seed=1):
    """Samples with every case: lost eyes and pupils, NaN, infinities, negatives."""
    rng = np.random.default_rng(seed)
    b = empty_gaze(n)
    b["system_time_us"] = 1_234_567_890 + np.arange(n) * 833
    b["device_time_us"] = b["system_time_us"] - 7_340_000_000 + rng.integers(0, 3, n)
    b["seq"] = np.arange(n) + 99_990
    b["server_time_us"] = b["system_time_us"] + rng.integers(100, 5000, n)
    for side in ("left", "right"):
        b[f"{side}_x"] = rng.normal(0.5, 0.8, n)
        b[f"{side}_y"] = rng.normal(0.5, 0.8, n) * rng.choice([1, 100], n)
        b[f"{side}_pupil"] = rng.uniform(2, 12, n)
        b[f"{side}_gaze_valid"] = rng.random(n) > 0.1
        b[f"{side}_pupil_valid"] = rng.random(n) > 0.1
    b["left_x"][::17] = np.nan
    b["right_y"][::13] = np.inf
    b["left_pupil"][::19] = -np.inf
    b["right_x"][::23] = -0.0
    return b


class EncoderTests(unittest.SynchronousTestCase):
    """The two encoders (per record, and numpy for long batches) give the same bytes."""

    def per_record(self, batch, frames=True):
        """The per-record encoder alone, whatever the batch's length."""
        threshold = gaze.VECTOR_THRESHOLD
        gaze.VECTOR_THRESHOLD = 10**9
        try:
            return encode_frames(batch) if frames else encode_objects(batch)
        finally:
            gaze.VECTOR_THRESHOLD = threshold

    def test_vectorised_frames_identical(self):
        batch = random_samples(3000)
        self.assertGreaterEqual(len(batch), gaze.VECTOR_THRESHOLD)
        self.assertIsNotNone(
            gaze._Vector(batch, gaze.FRAME_PREFIX, gaze.FRAME_SUFFIX).encode(),
            "this batch should take the numpy path",
        )
        vectorised = encode_frames(batch)
        self.assertEqual(vectorised, self.per_record(batch))
        for frame in vectorised[:300]:
            json.loads(frame, parse_constant=lambda c: self.fail(c))

    def test_vectorised_objects_identical(self):
        batch = random_samples(1000, seed=2)
        text = encode_objects(batch)
        self.assertEqual(text, self.per_record(batch, frames=False))
        parsed = json.loads(b"[" + text + b"]")
        self.assertEqual(parsed, sample_dicts(batch[:1]) + sample_dicts(batch[1:]))

    def test_vectorised_clean_batches_identical(self):
        """
        Batches as a tracker gives them: no negative numbers (no sign slot)
        and both eyes valid (no flag slot); then one negative value, one
        lost eye, a sequence number crossing a power of ten.
        """
        batch = random_samples(1000, seed=6)
        for side in ("left", "right"):
            for axis in ("x", "y"):
                batch[f"{side}_{axis}"] = np.abs(np.nan_to_num(batch[f"{side}_{axis}"])) % 1
            batch[f"{side}_pupil"] = np.abs(np.nan_to_num(batch[f"{side}_pupil"], neginf=3.0))
            batch[f"{side}_gaze_valid"] = batch[f"{side}_pupil_valid"] = True
        variants = [batch.copy() for _ in range(4)]
        variants[1]["right_y"][5] = -0.25
        variants[2]["left_gaze_valid"][9] = False
        variants[3]["seq"] = np.arange(len(batch)) + 9_500
        for variant in variants:
            self.assertIsNotNone(gaze._Vector(variant, b"", b",").encode())
            self.assertEqual(encode_objects(variant), self.per_record(variant, frames=False))
            self.assertEqual(encode_frames(variant), self.per_record(variant))

    def test_objects_after_a_lead(self):
        """A batch that continues an array begins with its comma, on either encoder."""
        for n in (5, 600):
            batch = random_samples(n, seed=7)
            plain = encode_objects(batch)
            self.assertEqual(encode_objects(batch, b","), b"," + plain)
            self.assertEqual(self.per_record(batch, frames=False), plain)
            self.assertEqual(encode_objects(batch, b"["), b"[" + plain)

    def test_digits_as_printf(self):
        """Every number has exactly the digits of C{"%.6f"} (pupils .4f, times .3f)."""
        batch = random_samples(2000, seed=3)
        left = batch["left_gaze_valid"] & np.isfinite(batch["left_x"])
        left &= np.isfinite(batch["left_y"])
        for frame, row, valid in zip(encode_frames(batch), batch, left):
            text = frame.decode()
            expected = "%.6f" % row["left_x"] if valid else "null"
            self.assertIn('"leftX":%s,' % expected, text)
            self.assertIn('"timestamp":%.3f,' % (row["system_time_us"] / 1000.0), text)
            self.assertIn('"seq":%d,' % row["seq"], text)

    def test_ties_and_huge_values_fall_back(self):
        """Where numpy's rounding could differ from printf's, or a value is huge, per record."""
        for value in (123456.1234565, 0.0078125, 3e12, -1e300):
            batch = random_samples(400, seed=4)
            batch["left_x"][7] = value
            batch["left_gaze_valid"][7] = True
            batch["left_y"][7] = 0.5
            self.assertIsNone(gaze._Vector(batch, b"", b",").encode(), value)
            frames = encode_frames(batch)
            self.assertEqual(frames, self.per_record(batch))
            self.assertEqual(json.loads(frames[7])["gaze"]["leftX"], float("%.6f" % value))

    def test_small_batches(self):
        """One to three records (the live path) are complete frames, in order."""
        batch = random_samples(3, seed=5)
        for n in (1, 2, 3):
            frames = encode_frames(batch[:n])
            self.assertEqual(len(frames), n)
            for frame, row in zip(frames, batch[:n]):
                self.assertTrue(frame.startswith(b'{"type":"gaze_data","gaze":{"x":'))
                self.assertEqual(json.loads(frame)["gaze"]["seq"], int(row["seq"]))

    def test_empty(self):
        self.assertEqual(encode_frames(empty_gaze(0)), [])
        self.assertEqual(encode_objects(empty_gaze(0)), b"")
        self.assertEqual(sample_dicts(empty_gaze(0)), [])
