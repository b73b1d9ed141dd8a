"""
Tests for L{jspsych_tobii.trackers.tobii_sdk}: the SDK's records as ours.
Everything here is pure or blocking, so the tests call it directly, on the
fake SDK of L{tests.fake_tobii_research}; no reactor, no sleeping.
"""

from __future__ import annotations

import math

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.interfaces import GAZE_DTYPE, TrackerError
from jspsych_tobii.trackers import tobii_sdk
from jspsych_tobii.trackers.tobii_sdk import (
    GAZE_SOURCES,
    calibration_result,
    describe,
    display_area_from,
    find_trackers,
    gaze_row,
    gaze_rows_to_records,
    match_frequency,
    measure_clock_offset,
    offset_from_brackets,
    position_from_gaze,
    position_from_guide,
    row_plan,
    user_position,
)

from . import fake_tobii_research as fake


def numbered_record() -> dict:
    """A gaze record (dictionary form) whose every value says where it came from."""
    record = {}
    values = iter(range(1, 1000))
    for key, index in GAZE_SOURCES.values():
        if index is None:
            record[key] = next(values)
        else:
            record.setdefault(key, [])
            record[key].append(next(values))
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in record.items()
    }


def as_batch(rows):
    """The rows' records, as the hub reads them."""
    records = gaze_rows_to_records(rows)
    assert type(records) is bytearray  # the form the hub takes without numpy
    return np.frombuffer(records, GAZE_DTYPE)


class GazeRowTests(unittest.SynchronousTestCase):
    def test_every_column_from_its_source(self):
        """Each column of GAZE_DTYPE holds the value its source names, whatever the order."""
        record = numbered_record()
        [sample] = as_batch([gaze_row(record)])
        for name in GAZE_DTYPE.names:
            source = GAZE_SOURCES.get(name)
            if source is None:
                self.assertEqual(sample[name], 0, name)  # the server's: seq, server_time_us
                continue
            key, index = source
            expected = record[key] if index is None else record[key][index]
            self.assertEqual(sample[name], type(sample[name])(expected), name)

    def test_a_record_from_the_sdk(self):
        sdk = fake.make_sdk("2.x")
        device = sdk.add_device()
        self.addCleanup(sdk.shutdown)
        record = device._gaze(3, 1_000_000, 1e6 / 600)
        [sample] = as_batch([gaze_row(record)])
        self.assertEqual(sample["system_time_us"], record["system_time_stamp"])
        self.assertEqual(sample["device_time_us"], record["device_time_stamp"])
        self.assertEqual(sample["left_x"], record["left_gaze_point_on_display_area"][0])
        self.assertEqual(
            sample["right_origin_z"], record["right_gaze_origin_in_user_coordinate_system"][2]
        )
        self.assertEqual(sample["right_pupil"], 3.1)
        self.assertIs(bool(sample["left_gaze_valid"]), True)
        device.left_position = None
        [lost] = as_batch([gaze_row(device._gaze(4, 1_000_000, 1e6 / 600))])
        self.assertIs(bool(lost["left_gaze_valid"]), False)
        self.assertTrue(math.isnan(lost["left_x"]))

    def test_plan_follows_the_dtype(self):
        """Another column order gives rows in that order, from the same table."""
        names = list(GAZE_DTYPE.names)
        left = [n for n in names if n.startswith("left_")]
        right = [n for n in names if n.startswith("right_")]
        rest = [n for n in names if n not in left and n not in right]
        swapped = np.dtype([(n, GAZE_DTYPE.fields[n][0]) for n in right + rest + left])
        record = numbered_record()
        row = ()
        for step in row_plan(swapped, GAZE_SOURCES):
            row += step(record)
        [sample] = np.array([row], dtype=swapped)
        [expected] = as_batch([gaze_row(record)])
        for name in names:
            self.assertEqual(sample[name], expected[name], name)

    def test_plan_refuses_a_tuple_split_across_columns(self):
        sources = dict(GAZE_SOURCES)
        sources["left_y"], sources["left_point_x"] = sources["left_point_x"], sources["left_y"]
        self.assertRaises(ValueError, row_plan, GAZE_DTYPE, sources)

    def test_a_missing_field(self):
        record = numbered_record()
        del record["left_pupil_diameter"]
        with self.assertRaises(KeyError) as caught:
            gaze_row(record)
        self.assertEqual(str(caught.exception), "'left_pupil_diameter'")

    def test_a_tuple_of_the_wrong_length(self):
        record = numbered_record()
        record["left_gaze_point_on_display_area"] = (0.5, 0.5, 0.0)
        self.assertRaises(ValueError, gaze_rows_to_records, [gaze_row(record)])


class PositionTests(unittest.SynchronousTestCase):
    def test_mapping(self):
        self.assertEqual(tobii_sdk.guide_axes((0.0, 0.0, 0.0)), (1.0, 1.0, 1.0))
        self.assertEqual(tobii_sdk.guide_axes((1.0, 1.0, 1.0)), (0.0, 0.0, 0.0))
        self.assertEqual(tobii_sdk.guide_axes((1.3, -0.2, 0.5)), (0.0, 1.0, 0.5))
        self.assertIsNone(tobii_sdk.guide_axes((math.nan, 0.5, 0.5)))
        self.assertIsNone(tobii_sdk.guide_axes(None))

    def test_from_the_guide(self):
        """The guide carries no time stamp: the position is stamped when it arrives."""
        record = {
            "left_user_position": (0.2, 0.3, 0.4),
            "left_user_position_validity": 1,
            "right_user_position": (math.nan,) * 3,
            "right_user_position_validity": 0,
        }
        position = user_position(position_from_guide(record), now_us=123)
        for got, want in zip(position.left, (0.8, 0.7, 0.6), strict=True):
            self.assertAlmostEqual(got, want)
        self.assertIsNone(position.right)
        self.assertEqual(position.system_time_us, 123)

    def test_from_gaze_1x(self):
        """SDK 1.x: the gaze origin in track box coordinates, with the sample's time."""
        sdk = fake.make_sdk("1.x")
        device = sdk.add_device()
        self.addCleanup(sdk.shutdown)
        device.left_position = (0.2, 0.3, 0.4)
        record = device._gaze(0, 5_000, 1e6 / 300)
        position = user_position(position_from_gaze(record), now_us=99)
        for got, want in zip(position.left, (0.8, 0.7, 0.6), strict=True):
            self.assertAlmostEqual(got, want)
        self.assertEqual(position.system_time_us, 5_000)


class ClockTests(unittest.SynchronousTestCase):
    def test_narrowest_bracket_wins(self):
        brackets = [(0, 5_000, 100), (1_000, 6_040, 1_010), (2_000, 9_000, 2_500)]
        self.assertEqual(offset_from_brackets(brackets), 6_040 - 1_005)

    def test_within_the_bracket_is_zero(self):
        self.assertEqual(offset_from_brackets([(1_000, 1_003, 1_010), (2_000, 2_050, 2_100)]), 0)

    def test_measured_against_the_given_clock(self):
        """The SDK clock is compared with the server's clock_us, read around each reading."""
        sdk = fake.make_sdk("2.x")
        sdk.clock_offset_us = 2_500_000_123
        reads = []

        def clock_us():
            reads.append(None)
            return sdk._now() - sdk.clock_offset_us - 40_000_000  # 40 s behind the monotonic clock

        offset = measure_clock_offset(sdk, clock_us, rounds=5)
        self.assertLess(abs(offset - (2_500_000_123 + 40_000_000)), 1_000)
        self.assertEqual(len(reads), 10)
        self.assertEqual(len(sdk.calls_named("get_system_time_stamp")), 5)


class CalibrationResultTests(unittest.SynchronousTestCase):
    def test_points_and_validities(self):
        sdk = fake.make_sdk("2.x")
        device = sdk.add_device()
        self.addCleanup(sdk.shutdown)
        device.collect_seconds = 0.0
        calibration = sdk.ScreenBasedCalibration(sdk.EyeTracker(device.address))
        calibration.enter_calibration_mode()
        calibration.collect_data(0.1, 0.1)
        calibration.collect_data(0.5, 0.5)
        result = calibration_result(sdk, calibration.compute_and_apply())
        self.assertTrue(result.success)
        self.assertEqual(result.status, "success")
        self.assertEqual([(p.x, p.y) for p in result.points], [(0.1, 0.1), (0.5, 0.5)])
        validities = {s.validity for p in result.points for s in p.left + p.right}
        self.assertEqual(validities, {"valid_and_used", "valid_but_not_used", "invalid"})

    def test_failure(self):
        sdk = fake.make_sdk("2.x")
        result = calibration_result(sdk, fake.CalibrationResult(sdk.CALIBRATION_STATUS_FAILURE, ()))
        self.assertFalse(result.success)
        self.assertEqual(result.status, "failure")


class DisplayAreaTests(unittest.SynchronousTestCase):
    corners = {
        "top_left": (-250.0, 150.0, 0.0),
        "top_right": (250.0, 150.0, 0.0),
        "bottom_left": (-250.0, 0.0, 50.0),
    }

    def test_object_and_dictionary_forms(self):
        class Area:
            top_left = [-250, 150, 0]
            top_right = [250, 150, 0]
            bottom_left = [-250, 0, 50]

        for value in (Area(), dict(self.corners)):
            area = display_area_from(value)
            self.assertEqual(area.top_left, self.corners["top_left"])
            self.assertEqual(area.top_right, self.corners["top_right"])
            self.assertEqual(area.bottom_left, self.corners["bottom_left"])
            self.assertAlmostEqual(area.width_mm, 500.0)
        self.assertIsNone(display_area_from(None))

    def test_a_corner_needs_three_coordinates(self):
        for corner in ((250.0, 150.0), (250.0, 150.0, 0.0, 1.0)):
            self.assertRaises(ValueError, display_area_from, {**self.corners, "top_right": corner})


class FrequencyTests(unittest.SynchronousTestCase):
    def test_match(self):
        self.assertEqual(match_frequency("600", (60.0, 600.0)), 600.0)
        self.assertEqual(match_frequency(119.98, (60.0, 119.98)), 119.98)

    def test_no_match(self):
        with self.assertRaises(TrackerError) as caught:
            match_frequency(100, (60.0, 120.0, 150.0))
        self.assertIn("valid frequencies: 60, 120, 150", str(caught.exception))
        self.assertRaises(TrackerError, match_frequency, "fast", (60.0,))


class FindTrackersTests(unittest.SynchronousTestCase):
    def makeSDK(self, version="2.x", devices=1):
        sdk = fake.make_sdk(version)
        self.addCleanup(sdk.shutdown)
        for _ in range(devices):
            sdk.add_device()
        return sdk

    def test_find_and_describe(self):
        sdk = self.makeSDK(devices=2)
        infos = find_trackers(sdk)
        self.assertEqual(len(infos), 2)
        self.assertEqual([i.address for i in infos], list(sdk._devices))
        line = describe(infos[0])
        self.assertNotIn("\n", line)
        for part in (
            infos[0].address,
            "Tobii Pro Spectrum",
            infos[0].serial_number,
            infos[0].firmware_version,
            "60, 120, 150, 300, 600, 1200 Hz",
        ):
            self.assertIn(part, line)

    def test_none(self):
        self.assertEqual(find_trackers(self.makeSDK(devices=0)), [])

    def test_1x(self):
        [info] = find_trackers(self.makeSDK("1.x"))
        self.assertIn("60, 120, 300 Hz", describe(info))
        self.assertIn("track_box", info.capabilities)
