"""
Tests for L{jspsych_tobii.core.jsonsafe}: the one JSON sanitiser.
"""

from __future__ import annotations

import json

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from jspsych_tobii.core import jsonsafe


class JSONSafeTests(SynchronousTestCase):
    def test_conversions(self):
        value = {
            1: np.float64("nan"),
            "a": (np.int64(3), np.bool_(True), float("inf"), -0.5),
            "b": np.array([1.0, np.nan]),
            "c": None,
        }
        self.assertEqual(
            jsonsafe.json_safe(value),
            {"1": None, "a": [3, True, None, -0.5], "b": [1.0, None], "c": None},
        )
        converted = jsonsafe.json_safe(value)
        self.assertIs(type(converted["a"][0]), int)
        self.assertIs(type(converted["a"][1]), bool)

    def test_other_values(self):
        """What the recording's header and events may hold: all of it plain JSON."""

        class Info:
            def to_dict(self):
                return {"serial": "TX300", "rate": np.float32(120.0)}

        class Opaque:
            def __str__(self):
                return "opaque"

        value = {
            "set": {3, 1, 2},
            "info": Info(),
            "other": Opaque(),
            "float32": np.float32("inf"),
            "text": np.str_("s"),
            "when": np.datetime64("2026-01-02"),
        }
        converted = jsonsafe.json_safe(value)
        self.assertEqual(
            converted,
            {
                "set": [1, 2, 3],
                "info": {"serial": "TX300", "rate": 120.0},
                "other": "opaque",
                "float32": None,
                "text": "s",
                "when": "2026-01-02",
            },
        )
        json.dumps(converted, allow_nan=False)

    def test_helpers(self):
        self.assertIsNone(jsonsafe.finite(float("nan")))
        self.assertIsNone(jsonsafe.finite("x"))
        self.assertEqual(jsonsafe.finite(np.int64(2)), 2.0)
        self.assertIsNone(jsonsafe.point_or_none(0.5, None))
        self.assertEqual(jsonsafe.point_or_none(0.5, np.float64(0.25)), {"x": 0.5, "y": 0.25})
        self.assertIsNone(jsonsafe.mean_or_none([None, None]))
        self.assertEqual(jsonsafe.mean_or_none([1.0, None, 2.0]), 1.5)
