"""
Tests for L{jspsych_tobii.core.quality}: every metric against fixtures whose
expected values are worked out by hand in the comments, or, for the
conventions Titta users compare with, by the published definitions written
out sample by sample here; and the validation window option from the command
line to the reply, through the whole server on a fake clock.

Geometry used throughout: a flat 400 x 300 mm display area in the plane
z = 0, centred on the origin of the user coordinate system, and an eye
600 mm in front of its centre.  A gaze point at horizontal angle a from the
eye's straight-ahead direction is then (600 tan a, 0, 0).
"""

from __future__ import annotations

import json
import math

import numpy as np
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from jspsych_tobii.core import geometry, quality
from jspsych_tobii.interfaces import empty_gaze
from jspsych_tobii.tap import Options
from tests.quality_support import (
    DISPLAY,
    AssertionsMixin,
    at_angle,
    binocular,
    make_samples,
    to_norm,
)
from tests.support import FakeServer, mock_tracker


class EyeMetricsTests(SynchronousTestCase, AssertionsMixin):
    """Metrics of one eye over one validation point."""

    def metrics(self, samples, eye="left", target=(0.5, 0.5), display=DISPLAY):
        result = quality.signal_metrics(samples, target[0], target[1], display, eye)
        self.assertJSONSafe(result)
        return result

    def test_constant_offset(self):
        """
        Ten samples all 1 degree right of the target: accuracy 1 degree,
        and no spread at all, so both precisions are 0.
        """
        result = self.metrics(make_samples([at_angle(1.0)] * 10))
        self.assertClose(result["accuracyDeg"], 1.0)
        self.assertClose(result["precisionRmsS2SDeg"], 0.0)
        self.assertClose(result["precisionStdDeg"], 0.0)
        self.assertEqual(result["dataLoss"], 0.0)
        self.assertEqual((result["numSamples"], result["numSamplesTotal"]), (10, 10))

    def test_alternating(self):
        """
        Samples alternating 0.1 degree left and right of the target, all in
        one horizontal plane through the eye:
          - every sample is 0.1 degree off: accuracy 0.1;
          - neighbours are 0.2 degree apart: RMS-S2S 0.2;
          - the mean gaze point is the target, so every sample is 0.1 degree
            from it: STD sqrt(10 * 0.1^2 / (10 - 1));
          - the offsets cancel: the offset of the mean is 0.
        """
        result = self.metrics(make_samples([at_angle(0.1), at_angle(-0.1)] * 5))
        self.assertClose(result["accuracyDeg"], 0.1)
        self.assertClose(result["accuracyOffsetOfMeanDeg"], 0.0)
        self.assertClose(result["precisionRmsS2SDeg"], 0.2)
        self.assertClose(result["precisionStdDeg"], 0.1 * math.sqrt(10.0 / 9.0))

    def test_rms_s2s_skips_gaps(self):
        """
        Angles 0, 1, (invalid), 0, 3 degrees: the usable neighbour pairs
        are (0, 1) and (0, 3), 1 and 3 degrees apart, so RMS-S2S is
        sqrt((1 + 9) / 2) = sqrt(5).  Bridging the gap would add the pair
        (1, 0).  One sample in five is lost.
        """
        points = [at_angle(0), at_angle(1), None, at_angle(0), at_angle(3)]
        result = self.metrics(make_samples(points))
        self.assertClose(result["precisionRmsS2SDeg"], math.sqrt(5.0))
        self.assertClose(result["accuracyDeg"], (0 + 1 + 0 + 3) / 4)
        self.assertClose(result["dataLoss"], 0.2)
        self.assertEqual((result["numSamples"], result["numSamplesTotal"]), (4, 5))

    def test_std_of_three(self):
        """
        Gaze at -1, 0 and +1 degree: the mean gaze point is at 0 degree, the
        distances from it are 1, 0, 1, so STD = sqrt(2 / (3 - 1)) = 1.
        """
        result = self.metrics(make_samples([at_angle(-1), at_angle(0), at_angle(1)]))
        self.assertClose(result["precisionStdDeg"], 1.0)
        # RMS-S2S: two steps of 1 degree each.
        self.assertClose(result["precisionRmsS2SDeg"], 1.0)

    def test_std_two_dimensional(self):
        """
        Gaze 0.5 degree right, up, left and down: the mean gaze point is the
        target and each sample is 0.5 degree from it, so accuracy is 0.5
        and STD 0.5 sqrt(4 / 3).  Neighbouring right and up samples, in directions
        d1 = (t, 0, -1) and d2 = (0, t, -1) with t = tan 0.5 deg, make
        cos(angle) = 1 / (1 + t^2), as do all four neighbour pairs.
        """
        points = [at_angle(0.5), at_angle(0, 0.5), at_angle(-0.5), at_angle(0, -0.5)]
        result = self.metrics(make_samples(points))
        self.assertClose(result["precisionStdDeg"], 0.5 * math.sqrt(4.0 / 3.0))
        self.assertClose(result["accuracyDeg"], 0.5)
        self.assertClose(result["accuracyOffsetOfMeanDeg"], 0.0)
        t = math.tan(math.radians(0.5))
        step = math.degrees(math.acos(1.0 / (1.0 + t * t)))
        self.assertClose(result["precisionRmsS2SDeg"], step, places=6)

    def test_head_movement(self):
        """
        The head moves 2 mm per sample to the right while the gaze point
        stays exactly on the target: the gaze direction turns (by about
        0.19 degree per sample), but the tracker made no error, so accuracy
        and both precisions are 0.  Then the gaze point moves with the head,
        keeping the gaze direction fixed: successive points are 2 mm apart,
        seen from the eye halfway between the two positions (1 mm from
        each), so each step is 2 atan(1 / 600); sample i is 2i mm from the
        target, seen from straight above it: atan(2i / 600).
        """
        n = 10
        origins = [(2.0 * i, 0.0, 600.0) for i in range(n)]
        fixed = make_samples([(0.0, 0.0, 0.0)] * n)
        moving = make_samples([(o[0], 0.0, 0.0) for o in origins])
        for samples in (fixed, moving):
            samples["left_origin_x"] = [o[0] for o in origins]
        still = self.metrics(fixed)
        self.assertClose(still["accuracyDeg"], 0.0)
        self.assertClose(still["precisionRmsS2SDeg"], 0.0)
        self.assertClose(still["precisionStdDeg"], 0.0)
        sliding = self.metrics(moving)
        self.assertClose(sliding["precisionRmsS2SDeg"], 2 * math.degrees(math.atan(1 / 600)))
        expected = sum(math.degrees(math.atan(2.0 * i / 600.0)) for i in range(n)) / n
        self.assertClose(sliding["accuracyDeg"], expected)

    def test_normalised_metrics(self):
        """
        Normalised gaze alternating at x = 0.5 +/- 0.01 around the mean
        (0.53, 0.54) when the target is (0.5, 0.5): the mean is 0.05 from
        the target (a 3-4-5 triangle), every sample 0.01 from the mean.
        """
        samples = make_samples([(0.0, 0.0, 0.0)] * 4)
        samples["left_x"] = [0.54, 0.52, 0.54, 0.52]
        samples["left_y"] = 0.54
        result = self.metrics(samples)
        self.assertClose(result["meanGaze"]["x"], 0.53)
        self.assertClose(result["meanGaze"]["y"], 0.54)
        self.assertClose(result["accuracyNorm"], 0.05)
        self.assertClose(result["precisionNorm"], 0.01)

    def test_normalised_from_geometry(self):
        """A gaze point 20 mm right of the centre is 20 / 400 = 0.05 right."""
        result = self.metrics(make_samples([(20.0, 0.0, 0.0)] * 3))
        self.assertClose(result["meanGaze"]["x"], 0.55)
        self.assertClose(result["meanGaze"]["y"], 0.5)
        self.assertClose(result["accuracyNorm"], 0.05)
        self.assertClose(result["precisionNorm"], 0.0)

    def test_target_off_centre(self):
        """
        Target (0.75, 0.5) is at (100, 0, 0); gaze exactly there is 0
        degree off, and gaze at the centre is atan(100 / 600) off.
        """
        on = self.metrics(make_samples([(100.0, 0.0, 0.0)] * 2), target=(0.75, 0.5))
        self.assertClose(on["accuracyDeg"], 0.0)
        off = self.metrics(make_samples([(0.0, 0.0, 0.0)] * 2), target=(0.75, 0.5))
        self.assertClose(off["accuracyDeg"], math.degrees(math.atan(100.0 / 600.0)))

    def test_data_loss(self):
        """
        Three of ten left samples invalid: left loses 0.3, the right eye,
        always valid, loses nothing, and so does the binocular signal.
        """
        left = [at_angle(0.2)] * 10
        for i in (1, 4, 5):
            left[i] = None
        samples = make_samples(left, [at_angle(0.2)] * 10)
        self.assertClose(self.metrics(samples, "left")["dataLoss"], 0.3)
        self.assertEqual(self.metrics(samples, "left")["numSamples"], 7)
        self.assertEqual(self.metrics(samples, "right")["dataLoss"], 0.0)
        self.assertEqual(self.metrics(samples, "average")["dataLoss"], 0.0)

    def test_no_display_area(self):
        """Without geometry the degree metrics are None, the rest remain."""
        result = self.metrics(make_samples([at_angle(1)] * 3), display=None)
        self.assertIsNone(result["accuracyDeg"])
        self.assertIsNone(result["precisionRmsS2SDeg"])
        self.assertIsNone(result["precisionStdDeg"])
        self.assertIsNotNone(result["accuracyNorm"])
        self.assertEqual(result["dataLoss"], 0.0)

    def test_empty(self):
        """No samples at all: every metric None, data loss 1.0."""
        for samples in (empty_gaze(0), None):
            result = self.metrics(samples)
            self.assertEqual(result["dataLoss"], 1.0)
            self.assertEqual((result["numSamples"], result["numSamplesTotal"]), (0, 0))
            for key in ("meanGaze", "accuracyNorm", "precisionNorm", "accuracyDeg"):
                self.assertIsNone(result[key])
            self.assertIsNone(result["precisionRmsS2SDeg"])
            self.assertIsNone(result["precisionStdDeg"])

    def test_all_invalid(self):
        """Samples that are all invalid: None metrics, data loss 1.0."""
        result = self.metrics(make_samples([None] * 6))
        self.assertEqual(result["dataLoss"], 1.0)
        self.assertEqual((result["numSamples"], result["numSamplesTotal"]), (0, 6))
        self.assertIsNone(result["accuracyDeg"])
        self.assertIsNone(result["meanGaze"])

    def test_single_sample(self):
        """
        One sample has an accuracy, but no spread to speak of: the
        precisions are None.
        """
        result = self.metrics(make_samples([at_angle(0.7)]))
        self.assertClose(result["accuracyDeg"], 0.7)
        self.assertIsNone(result["precisionRmsS2SDeg"])
        self.assertIsNone(result["precisionStdDeg"])
        self.assertIsNone(result["precisionNorm"])

    def test_valid_flag_with_nan(self):
        """A sample flagged valid but holding NaN coordinates is not used."""
        samples = make_samples([at_angle(1)] * 4)
        samples[2]["left_x"] = np.nan
        samples[2]["left_point_x"] = np.nan
        result = self.metrics(samples)
        self.assertEqual(result["numSamples"], 3)
        self.assertClose(result["dataLoss"], 0.25)
        self.assertClose(result["accuracyDeg"], 1.0)

    def test_invalid_origin(self):
        """
        Gaze valid but its origin invalid: the sample counts for the
        normalised metrics and data loss, not for degrees, and it is lost
        for the data loss in degrees (Titta's).
        """
        samples = make_samples([at_angle(1), at_angle(3), at_angle(1)])
        samples[1]["left_origin_valid"] = False
        result = self.metrics(samples)
        self.assertEqual(result["numSamples"], 3)
        self.assertEqual(result["dataLoss"], 0.0)
        self.assertEqual(result["numSamplesDeg"], 2)
        self.assertClose(result["dataLossDeg"], 1.0 / 3.0)
        self.assertClose(result["accuracyDeg"], 1.0)
        self.assertIsNone(result["precisionRmsS2SDeg"])

    def test_unknown_eye(self):
        self.assertRaises(
            ValueError, quality.signal_metrics, make_samples([None]), 0.5, 0.5, None, "x"
        )


class BinocularTests(SynchronousTestCase, AssertionsMixin):
    """The binocular signal averages the usable eyes sample by sample."""

    def test_errors_cancel(self):
        """
        Eyes 30 mm left and right of centre, the left one looking 10.5 mm
        right of the target and the right one 10.5 mm left: each eye is
        off, but the mean gaze point is the target and the mean origin is
        (0, 0, 600), so the binocular signal is exactly on target.
        The left eye's error: atan((10.5 + 30) / 600) - atan(30 / 600).
        """
        n = 6
        samples = make_samples(
            [(10.5, 0.0, 0.0)] * n,
            [(-10.5, 0.0, 0.0)] * n,
            left_origin=(-30.0, 0.0, 600.0),
            right_origin=(30.0, 0.0, 600.0),
        )
        both = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "average")
        left = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "left")
        right = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "right")
        expected = math.degrees(math.atan(40.5 / 600.0) - math.atan(30.0 / 600.0))
        self.assertClose(left["accuracyDeg"], expected)
        self.assertClose(right["accuracyDeg"], expected)
        self.assertClose(both["accuracyDeg"], 0.0)
        self.assertClose(left["accuracyNorm"], 10.5 / 400.0)
        self.assertClose(both["accuracyNorm"], 0.0)
        self.assertClose(both["meanGaze"]["x"], 0.5)

    def test_one_eye_fills_in(self):
        """
        Samples: both eyes at +1 and -1 degree (mean: on target), only the
        left at +1, neither, only the right at -1.  The binocular signal is
        0, +1, (lost), -1 degree: accuracy 2/3, loss 1/4, and its one
        usable neighbour pair (0, +1) gives RMS-S2S 1.
        """
        samples = make_samples(
            [at_angle(1), at_angle(1), None, None],
            [at_angle(-1), None, None, at_angle(-1)],
        )
        result = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "average")
        self.assertClose(result["accuracyDeg"], 2.0 / 3.0)
        self.assertClose(result["dataLoss"], 0.25)
        self.assertEqual(result["numSamples"], 3)
        self.assertClose(result["precisionRmsS2SDeg"], 1.0)
        left = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "left")
        right = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "right")
        self.assertClose(left["dataLoss"], 0.5)
        self.assertClose(right["dataLoss"], 0.5)


class StatisticalTests(SynchronousTestCase, AssertionsMixin):
    """Known systematic error and noise come back out."""

    def test_offset_and_noise(self):
        """
        1000 samples 0.5 degree right of the target with isotropic noise of
        0.1 degree RMS (0.1 / sqrt 2 on each axis).  The mean offset is
        about 0.5 (plus a little from the noise at right angles to the
        offset: about 0.005), the STD about 0.1, and for white noise
        RMS-S2S is about sqrt(2) * 0.1.
        """
        rng = np.random.default_rng(20240401)
        noise = rng.normal(0.0, 0.1 / math.sqrt(2.0), size=(1000, 2))
        points = [at_angle(0.5 + h, v) for h, v in noise]
        samples = make_samples(points, points)
        result = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "average")
        self.assertWithin(result["accuracyDeg"], 0.5, 0.05)
        self.assertWithin(result["precisionStdDeg"], 0.1, 0.01)
        self.assertWithin(result["precisionRmsS2SDeg"], 0.1 * math.sqrt(2.0), 0.015)
        self.assertEqual(result["dataLoss"], 0.0)

    def test_independent_eyes(self):
        """
        The same, with independent noise in each eye: each eye's STD is
        about 0.1, and averaging the two eyes per sample divides the noise
        by about sqrt(2), so the binocular STD is about 0.1 / sqrt(2).
        """
        rng = np.random.default_rng(7)
        noise = rng.normal(0.0, 0.1 / math.sqrt(2.0), size=(2, 1000, 2))
        left = [at_angle(0.5 + h, v) for h, v in noise[0]]
        right = [at_angle(0.5 + h, v) for h, v in noise[1]]
        samples = make_samples(left, right)
        for eye in ("left", "right"):
            result = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, eye)
            self.assertWithin(result["precisionStdDeg"], 0.1, 0.01)
            self.assertWithin(result["accuracyDeg"], 0.5, 0.05)
        both = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "average")
        self.assertWithin(both["precisionStdDeg"], 0.1 / math.sqrt(2.0), 0.01)
        self.assertWithin(both["accuracyDeg"], 0.5, 0.05)


# --------------------------------------------------------------------------
# The conventions, each against its published definition re-implemented here
# sample by sample in plain Python (no code shared with quality.py).


def look(origin, target, h_deg, v_deg):
    """
    The point on the display plane (z = 0) that an eye at C{origin} looks at
    when its gaze is turned C{h_deg} to the right and C{v_deg} up from the
    direction of C{target}: the angle between the two gazes is then exactly
    atan(sqrt(tan(h)^2 + tan(v)^2)).
    """
    d = np.subtract(target, origin)
    d = d / np.linalg.norm(d)
    right = np.cross(d, (0.0, 1.0, 0.0))
    right = right / np.linalg.norm(right)
    up = np.cross(right, d)
    gaze = d + math.tan(math.radians(h_deg)) * right + math.tan(math.radians(v_deg)) * up
    t = -origin[2] / gaze[2]
    return tuple(np.asarray(origin) + t * gaze)


def angle_deg(eye, a, b):
    """The angle at C{eye} between positions C{a} and C{b}, by acos of the cosine."""
    u = [a[k] - eye[k] for k in range(3)]
    w = [b[k] - eye[k] for k in range(3)]
    dot = sum(u[k] * w[k] for k in range(3))
    cosine = dot / math.sqrt(sum(x * x for x in u) * sum(x * x for x in w))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def eye_rows(samples, eye):
    """Per sample: (gaze valid, origin valid, origin, gaze point, normalised gaze)."""
    rows = []
    for s in samples:
        rows.append(
            (
                bool(s[f"{eye}_gaze_valid"]),
                bool(s[f"{eye}_origin_valid"]),
                tuple(float(s[f"{eye}_origin_{a}"]) for a in "xyz"),
                tuple(float(s[f"{eye}_point_{a}"]) for a in "xyz"),
                (float(s[f"{eye}_x"]), float(s[f"{eye}_y"])),
            )
        )
    return rows


def this_server_definitions(samples, eye, target_mm):
    """docs/DATA_QUALITY.md's formulas for one eye, written out."""
    rows = eye_rows(samples, eye)
    used = [(o, p) for g, ov, o, p, _ in rows if g and ov]
    offsets = [angle_deg(o, p, target_mm) for o, p in used]
    steps = []
    for (g1, ov1, o1, p1, _), (g2, ov2, o2, p2, _) in zip(rows, rows[1:]):
        if g1 and ov1 and g2 and ov2:
            middle = tuple((o1[k] + o2[k]) / 2 for k in range(3))
            steps.append(angle_deg(middle, p1, p2))
    mean_point = tuple(sum(p[k] for _, p in used) / len(used) for k in range(3))
    spread = [angle_deg(o, p, mean_point) for o, p in used]
    n = len(rows)
    return {
        "accuracyDeg": sum(offsets) / len(offsets),
        "precisionRmsS2SDeg": math.sqrt(sum(x * x for x in steps) / len(steps)),
        "precisionStdDeg": math.sqrt(sum(x * x for x in spread) / (len(spread) - 1)),
        "dataLoss": sum(1 for g, *_ in rows if not g) / n,
        "dataLossDeg": 1 - len(used) / n,
    }


def titta_matlab(samples, eye, target_norm, display):
    """
    MATLAB Titta's getDataQuality (Niehorster, Andersson & Nystrom 2020) for
    one eye: per sample, the angle at the eye between gaze point and target,
    turned into an x/y offset by the on-screen direction from the target to
    the gaze (normalised offsets scaled by the display's width and height);
    accuracy is the length of the mean offset, RMS and STD are taken per
    axis (STD with n - 1) and combined with hypot; a sample without a valid
    gaze point or gaze origin is lost.
    """
    top_left, top_right, bottom_left = (
        np.asarray(c) for c in (display.top_left, display.top_right, display.bottom_left)
    )
    width = float(np.linalg.norm(top_right - top_left))
    height = float(np.linalg.norm(bottom_left - top_left))
    tx, ty = target_norm
    target = top_left + tx * (top_right - top_left) + ty * (bottom_left - top_left)
    offsets, lost = [], []
    for g, ov, o, p, (gx, gy) in eye_rows(samples, eye):
        lost.append(not (g and ov))
        if lost[-1]:
            offsets.append((math.nan, math.nan))
            continue
        a = np.subtract(target, o)
        b = np.subtract(p, o)
        size = math.degrees(math.atan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b)))
        direction = math.atan2((gy - ty) * height, (gx - tx) * width)
        offsets.append((size * math.cos(direction), size * math.sin(direction)))
    offsets = np.array(offsets)
    steps = np.diff(offsets, axis=0)
    return {
        "acc": math.hypot(*np.nanmean(offsets, axis=0)),
        "rms": math.hypot(*np.sqrt(np.nanmean(steps**2, axis=0))),
        "std": math.hypot(*np.nanstd(offsets, axis=0, ddof=1)),
        "dataLoss": sum(lost) / len(lost),
    }


def titta_python(samples, eye, target_mm):
    """
    Titta-Python's _compute_data_quality (PyPI titta 2.2.2) for one eye:
    the median of the per-sample offsets; "RMS" from the differences of the
    angles between successive gaze I{directions}; "SD" the spread (n) of
    those angles.
    """
    offsets, between = [], []
    previous = None
    for g, ov, o, p, _ in eye_rows(samples, eye):
        gaze = np.subtract(p, o) if g and ov else np.full(3, math.nan)
        offsets.append(angle_deg(o, p, target_mm) if g and ov else math.nan)
        if previous is not None:
            if np.all(np.isfinite(gaze)) and np.all(np.isfinite(previous)):
                between.append(angle_deg((0, 0, 0), gaze, previous))
            else:
                between.append(math.nan)
        previous = gaze
    between = np.array(between)
    return {
        "accuracy": float(np.nanmedian(offsets)),
        "rms": float(np.sqrt(np.nanmean(np.diff(between) ** 2))),
        "sd": float(np.nanstd(between)),
    }


class TittaConventionsTests(SynchronousTestCase, AssertionsMixin):
    """
    One fixed synthetic validation point, each eye with its own known offset,
    noise, head movement and lost samples; every number of each eye is
    checked against the definition it claims, worked out independently
    above.
    """

    TARGET = (0.7, 0.4)  # at (80, 30, 0) mm on DISPLAY
    OFFSETS = {"left": (0.3, 0.0), "right": (-0.2, 0.25)}  # degrees: right, up
    NOISE = 0.5  # degrees RMS from the mean direction, isotropic
    N = 400

    def setUp(self):
        target = geometry.target_position_mm(DISPLAY, *self.TARGET)
        rng = np.random.default_rng(15)
        samples = empty_gaze(self.N)
        samples["system_time_us"] = np.arange(self.N) * 1667
        for eye, base in (("left", (-32.0, 5.0, 600.0)), ("right", (31.0, 4.0, 605.0))):
            h, v = self.OFFSETS[eye]
            noise = rng.normal(0.0, self.NOISE / math.sqrt(2.0), size=(self.N, 2))
            for i in range(self.N):
                origin = (base[0] + 4.0 * math.sin(i / 40.0), base[1], base[2] - 0.02 * i)
                point = look(origin, target, h + noise[i, 0], v + noise[i, 1])
                row = samples[i]
                row[f"{eye}_x"], row[f"{eye}_y"] = to_norm(point)
                for axis, p, o in zip("xyz", point, origin, strict=True):
                    row[f"{eye}_point_{axis}"] = p
                    row[f"{eye}_origin_{axis}"] = o
                row[f"{eye}_gaze_valid"] = row[f"{eye}_origin_valid"] = True
        # a blink in both eyes, a lost right eye, eye positions lost alone
        samples["left_gaze_valid"][100:112] = samples["left_origin_valid"][100:112] = False
        samples["right_gaze_valid"][100:112] = samples["right_origin_valid"][100:112] = False
        samples["right_gaze_valid"][250:270] = samples["right_origin_valid"][250:270] = False
        samples["left_origin_valid"][[30, 31, 300]] = False
        samples["right_origin_valid"][[5]] = False
        self.samples = samples
        self.target_mm = tuple(target)
        self.summary = quality.validation_summary([(*self.TARGET, samples)], DISPLAY)
        self.assertJSONSafe(self.summary)

    def metrics(self, eye):
        return self.summary["pointData"][0][eye]

    def test_this_server(self):
        """accuracyDeg, the precisions and both data losses as documented."""
        for eye in ("left", "right"):
            ours, expected = self.metrics(eye), this_server_definitions(
                self.samples, eye, self.target_mm
            )
            for key, value in expected.items():
                self.assertClose(ours[key], value, places=9)
            self.assertClose(self.summary[eye]["averageAccuracyDeg"], expected["accuracyDeg"])
            self.assertClose(
                self.summary[eye]["averageDataLossDeg"], expected["dataLossDeg"], places=12
            )

    def test_titta_matlab(self):
        """
        accuracyOffsetOfMeanDeg and dataLossDeg are MATLAB Titta's accuracy
        and data loss, to rounding; its RMS and STD, computed from the x/y
        offsets rather than from gaze positions, are within 1% of ours.
        """
        for eye in ("left", "right"):
            ours = self.metrics(eye)
            titta = titta_matlab(self.samples, eye, self.TARGET, DISPLAY)
            self.assertClose(ours["accuracyOffsetOfMeanDeg"], titta["acc"], places=9)
            self.assertClose(
                self.summary[eye]["averageAccuracyOffsetOfMeanDeg"], titta["acc"], places=9
            )
            self.assertClose(ours["dataLossDeg"], titta["dataLoss"], places=12)
            self.assertWithin(ours["precisionRmsS2SDeg"] / titta["rms"], 1.0, 0.01)
            self.assertWithin(ours["precisionStdDeg"] / titta["std"], 1.0, 0.01)

    def test_known_truth(self):
        """
        The offset of the mean recovers each eye's true offset (0.3 and
        0.32 degree) to within the noise of a mean of ~380 samples; the mean
        of offsets adds the noise (0.5 degree) to it and comes out far
        larger.  The STD recovers the noise.
        """
        for eye in ("left", "right"):
            truth = math.hypot(*self.OFFSETS[eye])
            ours = self.metrics(eye)
            self.assertWithin(ours["accuracyOffsetOfMeanDeg"], truth, 0.06)
            self.assertGreater(ours["accuracyDeg"], 1.4 * truth)
            self.assertWithin(ours["precisionStdDeg"], self.NOISE, 0.05)

    def test_titta_python_accuracy(self):
        """Titta-Python's accuracy is the median of the per-sample offsets."""
        for eye in ("left", "right"):
            python = titta_python(self.samples, eye, self.target_mm)
            offsets = [
                angle_deg(o, p, self.target_mm)
                for g, ov, o, p, _ in eye_rows(self.samples, eye)
                if g and ov
            ]
            self.assertClose(python["accuracy"], float(np.median(offsets)), places=12)
            self.assertLess(python["accuracy"], self.metrics(eye)["accuracyDeg"])

    def test_titta_python_precision(self):
        """
        Titta-Python's precision values are not RMS-S2S and STD: on 5000
        samples of white noise, ours are sqrt(2 / (4 - pi)) = 1.53 times
        its "SD" (the STD of a Rayleigh-distributed angle: closed form) and
        about 1.74 times its "RMS" (by simulation), as docs/DATA_QUALITY.md
        says.
        """
        n, origin = 5000, (0.0, 0.0, 600.0)
        target = geometry.target_position_mm(DISPLAY, 0.5, 0.5)
        noise = np.random.default_rng(1).normal(0.0, 0.3 / math.sqrt(2.0), size=(n, 2))
        points = [look(origin, target, 0.4 + h, v) for h, v in noise]
        samples = make_samples(points, left_origin=origin)
        ours = quality.signal_metrics(samples, 0.5, 0.5, DISPLAY, "left")
        python = titta_python(samples, "left", tuple(target))
        self.assertWithin(
            ours["precisionStdDeg"] / python["sd"], math.sqrt(2 / (4 - math.pi)), 0.03
        )
        self.assertWithin(ours["precisionRmsS2SDeg"] / python["rms"], 1.74, 0.05)

    def test_binocular_is_neither_eye(self):
        """The top level is the averaged signal: its STD is below each eye's."""
        both = self.summary["pointData"][0]
        for eye in ("left", "right"):
            self.assertLess(both["precisionStdDeg"], self.metrics(eye)["precisionStdDeg"])


class ValidationSummaryTests(SynchronousTestCase, AssertionsMixin):
    """The whole validation, in the shape the jsPsych plugin reads."""

    POINT_KEYS = {
        "point",
        "meanGaze",
        "accuracyNorm",
        "precisionNorm",
        "accuracyDeg",
        "accuracyOffsetOfMeanDeg",
        "precisionRmsS2SDeg",
        "precisionStdDeg",
        "dataLoss",
        "dataLossDeg",
        "numSamples",
        "numSamplesDeg",
        "numSamplesTotal",
        "accuracy",
        "precision",
        "left",
        "right",
    }
    EYE_KEYS = POINT_KEYS - {"point", "accuracy", "precision", "left", "right"}
    AVERAGE_KEYS = {
        "averageAccuracyNorm",
        "averagePrecisionNorm",
        "averageAccuracyDeg",
        "averageAccuracyOffsetOfMeanDeg",
        "averagePrecisionRmsS2SDeg",
        "averagePrecisionStdDeg",
        "averageDataLoss",
        "averageDataLossDeg",
    }

    def summary(self, points, **kwargs):
        result = quality.validation_summary(points, DISPLAY, **kwargs)
        self.assertJSONSafe(result)
        for item in result["pointData"]:
            self.assertEqual(set(item["point"]), {"x", "y"})
        return result

    def test_shape(self):
        """The exact keys of the reply, of a point and of an eye."""
        result = self.summary([(0.5, 0.5, binocular([at_angle(1)] * 4))])
        self.assertEqual(
            set(result),
            self.AVERAGE_KEYS
            | {
                "success",
                "averageAccuracy",
                "averagePrecision",
                "left",
                "right",
                "numPoints",
                "numPointsWithData",
                "pointData",
                "definitions",
            },
        )
        self.assertEqual(result["definitions"], quality.VALIDATION_DEFINITIONS)
        self.assertEqual(set(result["left"]), self.AVERAGE_KEYS)
        self.assertEqual(set(result["right"]), self.AVERAGE_KEYS)
        item = result["pointData"][0]
        self.assertEqual(set(item), self.POINT_KEYS)
        self.assertEqual(set(item["left"]), self.EYE_KEYS)
        self.assertEqual(set(item["right"]), self.EYE_KEYS)
        self.assertEqual(item["point"], {"x": 0.5, "y": 0.5})
        self.assertIs(result["success"], True)

    def test_averages_over_points(self):
        """
        Two points, 1 and 0.5 degree off with no noise: average accuracy
        0.75 degree, both precisions 0, no data lost; the aliases hold the
        same values; the per-eye averages match (both eyes see the same).
        """
        points = [
            (0.5, 0.5, binocular([at_angle(1)] * 4)),
            (0.5, 0.5, binocular([at_angle(0.5)] * 4)),
        ]
        result = self.summary(points)
        self.assertClose(result["averageAccuracyDeg"], 0.75)
        self.assertClose(result["averageAccuracy"], 0.75)
        self.assertClose(result["averagePrecisionRmsS2SDeg"], 0.0)
        self.assertClose(result["averagePrecision"], 0.0)
        self.assertClose(result["averagePrecisionStdDeg"], 0.0)
        self.assertEqual(result["averageDataLoss"], 0.0)
        self.assertClose(result["left"]["averageAccuracyDeg"], 0.75)
        self.assertClose(result["right"]["averageAccuracyDeg"], 0.75)
        # 600 tan(1 deg) / 400 and 600 tan(0.5 deg) / 400 normalised units.
        expected = (math.tan(math.radians(1)) + math.tan(math.radians(0.5))) * 600 / 400 / 2
        self.assertClose(result["averageAccuracyNorm"], expected)
        self.assertClose(result["averagePrecisionNorm"], 0.0)
        self.assertEqual((result["numPoints"], result["numPointsWithData"]), (2, 2))

    def test_point_without_data(self):
        """
        A point with no samples and one whose samples are all invalid still
        appear, in order, with None metrics and data loss 1.0; they count in
        the average data loss ((0 + 1 + 1) / 3) but not in the other
        averages.
        """
        points = [
            (0.1, 0.1, binocular([at_angle(1)] * 4)),
            (0.9, 0.1, empty_gaze(0)),
            (0.9, 0.9, binocular([None] * 5)),
        ]
        result = self.summary(points)
        self.assertIs(result["success"], True)
        self.assertEqual(
            [item["point"] for item in result["pointData"]],
            [{"x": 0.1, "y": 0.1}, {"x": 0.9, "y": 0.1}, {"x": 0.9, "y": 0.9}],
        )
        for item in result["pointData"][1:]:
            self.assertEqual(item["dataLoss"], 1.0)
            self.assertEqual(item["numSamples"], 0)
            self.assertIsNone(item["meanGaze"])
            self.assertIsNone(item["accuracyNorm"])
            self.assertIsNone(item["accuracyDeg"])
            self.assertEqual(item["left"]["dataLoss"], 1.0)
        self.assertEqual(result["pointData"][2]["numSamplesTotal"], 5)
        self.assertClose(result["averageDataLoss"], 2.0 / 3.0)
        self.assertEqual(result["numPointsWithData"], 1)
        self.assertClose(
            result["averageAccuracyDeg"], result["pointData"][0]["accuracyDeg"], places=12
        )

    def test_nothing_usable(self):
        """
        No usable gaze anywhere: success is False (the plugin would read a
        None accuracy as 0 and pass), with an error; averages are None.
        """
        result = self.summary([(0.5, 0.5, None), (0.1, 0.1, binocular([None] * 3))])
        self.assertIs(result["success"], False)
        self.assertIsInstance(result["error"], str)
        for key in self.AVERAGE_KEYS - {"averageDataLoss", "averageDataLossDeg"}:
            self.assertIsNone(result[key])
        self.assertEqual(result["averageDataLoss"], 1.0)
        self.assertEqual(result["averageDataLossDeg"], 1.0)
        self.assertEqual(len(result["pointData"]), 2)

    def test_no_points(self):
        """No points at all: not a success, and still JSON-safe."""
        result = self.summary([])
        self.assertIs(result["success"], False)
        self.assertEqual(result["pointData"], [])
        self.assertIsNone(result["averageDataLoss"])

    def test_without_display_area(self):
        """Without geometry the degree averages are None, the rest remain."""
        result = quality.validation_summary([(0.5, 0.5, binocular([at_angle(1)] * 3))], None)
        self.assertJSONSafe(result)
        self.assertIs(result["success"], True)
        self.assertIsNone(result["averageAccuracyDeg"])
        self.assertIsNone(result["averageAccuracy"])
        self.assertIsNotNone(result["averageAccuracyNorm"])

    def test_nan_everywhere(self):
        """
        Samples flagged valid whose every float is NaN produce no NaN in
        the reply.
        """
        samples = empty_gaze(4)
        for eye in ("left", "right"):
            samples[f"{eye}_gaze_valid"] = True
            samples[f"{eye}_origin_valid"] = True
        result = self.summary([(0.5, 0.5, samples)], max_gaze_samples=10)
        self.assertIs(result["success"], False)
        self.assertEqual(result["pointData"][0]["gazeSamples"], [])

    def test_gaze_samples(self):
        """
        C{max_gaze_samples} adds up to that many binocular samples, evenly
        spread and including the first and the last.
        """
        points = [(20.0 * i / 99.0, 0.0, 0.0) for i in range(100)]
        result = self.summary([(0.5, 0.5, binocular(points))], max_gaze_samples=10)
        shown = result["pointData"][0]["gazeSamples"]
        self.assertEqual(len(shown), 10)
        self.assertClose(shown[0]["x"], 0.5)
        self.assertClose(shown[-1]["x"], 0.55)
        self.assertNotIn(
            "gazeSamples", self.summary([(0.5, 0.5, binocular(points))])["pointData"][0]
        )

    def test_bad_target(self):
        """A target without finite coordinates is a caller's error."""
        self.assertRaises(ValueError, quality.validation_summary, [(math.nan, 0.5, None)])
        self.assertRaises(ValueError, quality.validation_summary, [(None, 0.5, None)])


class _Events:
    """Stands in for the session recorder: keeps the events written to it."""

    def __init__(self, events):
        self.events = events

    def write_event(self, kind, **fields):
        self.events.append((kind, fields))


class ValidationWindowServerTests(SynchronousTestCase, AssertionsMixin):
    """
    --validation-window-ms, from the command line to the validation_compute
    reply, through the whole server on a fake clock.  At each point the mock
    participant first looks at the opposite corner for 550 ms, then at the
    target for 450 ms: only a window inside the last 450 ms is on target.
    """

    TARGETS = [(0.2, 0.2), (0.8, 0.3), (0.5, 0.8)]

    def validate(self, argv):
        tracker = mock_tracker(rate=300, offset_deg=0.0, noise_deg=0.05, blinks=False)
        server = FakeServer(clock=tracker._reactor, tracker=tracker, rate=300, argv=argv)
        client = server.client()
        client.send({"type": "validation_start"})
        client.request("start_tracking")
        for x, y in self.TARGETS:
            client.request("mock_look_at", point={"x": 1 - x, "y": 1 - y})
            start = len(client.gaze)
            server.advance(0.55)
            client.request("mock_look_at", point={"x": x, "y": y})
            server.advance(0.45)
            point = {"x": x, "y": y}
            client.send(
                {"type": "validation_point", "point": point, "gaze_samples": client.gaze[start:]}
            )
        recorded = []
        server.state.recorder = _Events(recorded)
        report = client.request("validation_compute")
        self.assertIs(report["success"], True)
        # what goes into the recording is the reply, with the same names
        self.assertEqual([kind for kind, _ in recorded], ["validation_result"])
        reply = {k: v for k, v in report.items() if k not in ("type", "requestId")}
        self.assertEqual(json.loads(json.dumps(recorded[0][1]["result"])), reply)
        return report

    def test_last_ms(self):
        """
        --validation-window-ms 400: 400 ms of each point (121 samples at
        300 Hz, both ends included), all on target; the reply says so.
        """
        report = self.validate(["--validation-window-ms", "400"])
        self.assertEqual((report["windowMs"], report["skipInitialMs"]), (400, 300))
        for eye in ("left", "right"):
            self.assertIsInstance(report[eye]["averageAccuracyOffsetOfMeanDeg"], float)
            for item in report["pointData"]:
                self.assertIsInstance(item[eye]["accuracyOffsetOfMeanDeg"], float)
                self.assertIsInstance(item[eye]["accuracyDeg"], float)
        self.assertIn("last 400 ms", report["definitions"]["window"])
        self.assertLess(report["averageAccuracyDeg"], 0.3)
        for item in report["pointData"]:
            self.assertWithin(item["numSamplesTotal"], 121, 1)
            window = item["window"]
            self.assertClose(window["endMs"] - window["startMs"], 400.0)
            self.assertEqual(item["sampleSource"], "server")

    def test_default_is_everything_after_the_skip(self):
        """
        Without the option every point's samples from 300 ms on are used,
        250 ms of them at the opposite corner: the accuracy is many degrees.
        """
        report = self.validate([])
        self.assertEqual((report["windowMs"], report["skipInitialMs"]), (0, 300))
        self.assertGreater(report["averageAccuracyDeg"], 5.0)
        for item in report["pointData"]:
            self.assertWithin(item["numSamplesTotal"], 210, 2)

    def test_titta_matlab_window(self):
        """Titta's MATLAB window: no skip, the last 500 ms."""
        report = self.validate(["--validation-skip-ms", "0", "--validation-window-ms", "500"])
        self.assertEqual((report["windowMs"], report["skipInitialMs"]), (500, 0))
        for item in report["pointData"]:
            self.assertWithin(item["numSamplesTotal"], 151, 1)

    def test_bad_values(self):
        for bad in ("-1", "60001", "nan", "soon"):
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(["--validation-window-ms", bad])
            self.assertIn("--validation-window-ms", str(caught.exception))
