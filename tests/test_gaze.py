"""
Tests for L{jspsych_tobii.core.gaze}: the client-facing sample.
"""

import json
import math

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.core.gaze import FIELDS, GazeView, sample_dicts
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


class GazeViewTests(unittest.SynchronousTestCase):
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
        view = GazeView(samples())
        for frame, expected in zip(view.encode_frames(), view.to_dicts()):
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
        for frame in GazeView(b).encode_frames():
            self.assertNotIn(b"NaN", frame)
            self.assertNotIn(b"Infinity", frame)
            json.loads(frame, parse_constant=lambda c: self.fail(c))
