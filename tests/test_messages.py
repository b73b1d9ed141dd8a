"""
Tests for L{jspsych_tobii.core.messages}: parsing, validation, reply shapes.
"""

import json

from twisted.trial import unittest

from jspsych_tobii.core.messages import (
    SCHEMAS,
    RequestError,
    error_reply,
    parse_request,
    reply,
)


def parse(obj):
    return parse_request(json.dumps(obj).encode())


class ParseTests(unittest.SynchronousTestCase):
    def assertRejected(self, payload, fragment, request_id=None):
        with self.assertRaises(RequestError) as caught:
            parse_request(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        self.assertIn(fragment, str(caught.exception))
        self.assertEqual(caught.exception.request_id, request_id)
        return caught.exception

    def test_contract_types_known(self):
        """Every request type of CLIENT_CONTRACT.md has a schema."""
        for kind in (
            "time_sync start_tracking stop_tracking calibration_start calibration_point "
            "calibration_compute get_calibration_data validation_start validation_point "
            "validation_compute get_current_gaze get_data get_user_position "
            "get_device_clock_offset"
        ).split():
            self.assertIn(kind, SCHEMAS)

    def test_valid_request(self):
        request = parse(
            {"type": "calibration_point", "point": {"x": 0.1, "y": 1}, "requestId": "req_3"}
        )
        self.assertEqual(request.type, "calibration_point")
        self.assertEqual(request.request_id, "req_3")
        self.assertEqual(request.params["point"], {"x": 0.1, "y": 1.0})
        self.assertIsNone(request.params["timestamp"])

    def test_invalid_json(self):
        self.assertRejected(b"{nope", "invalid JSON")

    def test_invalid_json_salvages_request_id(self):
        self.assertRejected(
            b'{"type": "time_sync", "requestId": "req_9", oops', "invalid JSON", "req_9"
        )

    def test_invalid_utf8(self):
        self.assertRejected(b'{"type": "\xff"}', "invalid JSON")

    def test_nan_and_infinity_rejected(self):
        for token in (b"NaN", b"Infinity", b"-Infinity"):
            self.assertRejected(
                b'{"type": "time_sync", "requestId": "r", "clientTime": ' + token + b"}",
                "invalid JSON",
                "r",
            )

    def test_huge_integer(self):
        self.assertRejected(
            b'{"type": "time_sync", "requestId": "r", "clientTime": 1' + b"0" * 5000 + b"}",
            "invalid JSON",
            "r",
        )

    def test_huge_numbers(self):
        self.assertRejected(
            {"type": "time_sync", "requestId": 1, "clientTime": 1e300}, "out of range", 1
        )
        self.assertRejected(
            {"type": "time_sync", "requestId": 1, "clientTime": 10**20}, "out of range", 1
        )

    def test_non_object(self):
        for value in ([1, 2], "text", 3, None):
            self.assertRejected(value, "must be a JSON object")

    def test_missing_type(self):
        self.assertRejected({"requestId": "a"}, "string 'type'", "a")
        self.assertRejected({"type": 7, "requestId": "a"}, "string 'type'", "a")

    def test_unknown_type(self):
        error = self.assertRejected(
            {"type": "fly", "requestId": "req_1"}, "unknown message type", "req_1"
        )
        self.assertIn("fly", str(error))

    def test_ill_typed_fields(self):
        cases = [
            ({"type": "time_sync", "clientTime": "12"}, "'clientTime' must be a number"),
            ({"type": "time_sync", "clientTime": True}, "'clientTime' must be a number"),
            ({"type": "calibration_point"}, "'point' is required"),
            ({"type": "calibration_point", "point": [0.5, 0.5]}, "must be an object"),
            ({"type": "calibration_point", "point": {"x": 0.5}}, "'point.y' is missing"),
            ({"type": "calibration_point", "point": {"x": 1.5, "y": 0.5}}, "between 0 and 1"),
            ({"type": "calibration_point", "point": {"x": -0.1, "y": 0.5}}, "between 0 and 1"),
            ({"type": "calibration_point", "point": {"x": "a", "y": 0.5}}, "must be a number"),
            (
                {"type": "validation_point", "point": {"x": 0.5, "y": 0.5}, "gaze_samples": {}},
                "array",
            ),
            ({"type": "get_data", "start_time": 10, "end_time": 5}, "after end_time"),
            ({"type": "get_data", "start_time": "0"}, "must be a number"),
            ({"type": "marker", "label": 5}, "must be a string"),
        ]
        for message, fragment in cases:
            message["requestId"] = "req_x"
            self.assertRejected(message, fragment, "req_x")

    def test_equal_range_allowed(self):
        request = parse({"type": "get_data", "start_time": 5, "end_time": 5})
        self.assertEqual((request.params["start_time"], request.params["end_time"]), (5.0, 5.0))

    def test_binary_rejected(self):
        with self.assertRaises(RequestError):
            parse_request(b"{}", is_binary=True)

    def test_deep_nesting(self):
        self.assertRejected(b"[" * 100000 + b"]" * 100000, "invalid JSON")


#: What Python's own messages say; none of it may reach a client.
PYTHON_TEXTS = (
    "set_int_max_str_digits",
    "Exceeds the limit",
    "maximum recursion depth",
    "Expecting",
    "codec can't decode",
    "delimiter",
    "Error(",
)


class ParseErrorTextTests(unittest.SynchronousTestCase):
    """Parse errors are the server's own sentences, never Python's."""

    def error(self, payload):
        with self.assertRaises(RequestError) as caught:
            parse_request(payload)
        text = str(caught.exception)
        for python in PYTHON_TEXTS:
            self.assertNotIn(python, text)
        return caught.exception

    def test_5000_digit_number(self):
        e = self.error(
            b'{"type": "time_sync", "requestId": "r", "clientTime": ' + b"9" * 5000 + b"}"
        )
        self.assertEqual(str(e), "invalid JSON: a number has more than 4300 digits")
        self.assertEqual(e.request_id, "r")

    def test_deeply_nested_arrays(self):
        e = self.error(
            b'{"requestId": "deep", "type": "marker", "data": '
            + b"[" * 100000
            + b"]" * 100000
            + b"}"
        )
        self.assertEqual(str(e), "invalid JSON: arrays or objects nested too deeply")
        self.assertEqual(e.request_id, "deep")

    def test_syntax_error_says_where(self):
        e = self.error(b'{"type": "time_sync" "requestId": "h"}')
        self.assertEqual(str(e), "invalid JSON: not JSON at line 1, column 22 (character 21)")
        self.assertEqual(e.request_id, "h")
        e = self.error(b'{"type": "time_sync",\n "clientTime": }')
        self.assertEqual(str(e), "invalid JSON: not JSON at line 2, column 16 (character 37)")

    def test_bad_utf8(self):
        e = self.error(b'{"type": "\xff"}')
        self.assertEqual(str(e), "invalid JSON: not UTF-8 text (a bad byte at offset 10)")

    def test_constants(self):
        e = self.error(b'{"type": "time_sync", "clientTime": NaN}')
        self.assertEqual(
            str(e), "invalid JSON: NaN is not a JSON value (send a finite number or null)"
        )

    def test_huge_integer_that_parses(self):
        """A 400-digit integer is valid JSON: the field check answers, in its own words."""
        e = self.error(b'{"type": "time_sync", "clientTime": 1' + b"0" * 400 + b"}")
        self.assertEqual(str(e), "time_sync: 'clientTime' is too large")


class ReplyTests(unittest.SynchronousTestCase):
    def test_reply_echoes_request_id(self):
        request = parse({"type": "time_sync", "requestId": "req_5"})
        message = reply(request, serverTime=1.0)
        self.assertEqual(message, {"type": "time_sync", "serverTime": 1.0, "requestId": "req_5"})

    def test_reply_without_request_id(self):
        self.assertNotIn("requestId", reply(parse({"type": "validation_start"}), success=True))

    def test_error_reply(self):
        self.assertEqual(
            error_reply("bad", "req_1", "fly"),
            {
                "type": "error",
                "success": False,
                "error": "bad",
                "requestType": "fly",
                "requestId": "req_1",
            },
        )
