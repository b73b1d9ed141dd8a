# -*- test-case-name: tests.test_mock -*-
"""
A synthetic participant in front of a synthetic screen, for the mock tracker.

L{EyeModel} produces binocular samples (L{GAZE_DTYPE}) for given capture
times: fixations, saccades, blinks and brief one-eye track loss, with gaze
computed in 3D from two eye positions ~65 cm from a 24" (531 x 299 mm)
display.  Everything is driven by a seeded random generator and the sample
times it is given, so the same seed and times give the same samples.

For data-quality tests the model has a known truth: C{offset_deg} rotates
every gaze direction horizontally by that angle and C{noise_deg} adds
Gaussian angular noise whose RMS distance from the mean direction is that
angle (the STD precision measure).  L{EyeModel.look_at} fixes the target,
as when a participant follows a calibration or validation point.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from jspsych_tobii.interfaces import GAZE_DTYPE, DisplayArea, Point3, UserPosition, empty_gaze

#: A 24-inch 16:9 monitor (531 x 299 mm) above a tracker, in the tracker's
#: user coordinate system (mm).
DEFAULT_DISPLAY = DisplayArea(
    top_left=(-265.5, 320.0, 40.0),
    top_right=(265.5, 320.0, 40.0),
    bottom_left=(-265.5, 21.0, 0.0),
)

EYE_SEPARATION_MM = 63.0
DEFAULT_HEAD = (0.0, 170.0, 650.0)

# The head box that user-position coordinates are relative to (mm).
HEAD_BOX_HALF_WIDTH = 150.0
HEAD_BOX_HALF_HEIGHT = 120.0
HEAD_BOX_NEAR, HEAD_BOX_FAR = 500.0, 800.0


class EyeModel:
    def __init__(
        self,
        seed: int = 0,
        display: DisplayArea = DEFAULT_DISPLAY,
        offset_deg: float = 0.0,
        noise_deg: float = 0.02,
        head: Tuple[float, float, float] = DEFAULT_HEAD,
        blinks: bool = True,
    ):
        self.rng = np.random.default_rng(seed)
        self.display = display
        self.offset_deg = offset_deg
        self.noise_deg = noise_deg
        self.head = np.asarray(head, dtype=float)
        self.blinks = blinks
        tl, tr, bl = (
            np.asarray(c, dtype=float)
            for c in (display.top_left, display.top_right, display.bottom_left)
        )
        self._tl, self._u, self._v = tl, tr - tl, bl - tl
        normal = np.cross(self._u, self._v)
        self._normal = normal / np.linalg.norm(normal)
        self._forced: Optional[Tuple[float, float]] = None
        # behaviour state: the current segment and what follows
        self._seg_end = -1
        self._seg_kind = "fix"
        self._from = (0.5, 0.5)
        self._to = (0.5, 0.5)
        self._seg_start = 0
        self._blink_until = -1
        self._lost_eye = 0  # 0 none, 1 left, 2 right
        self._lost_until = -1

    # -- behaviour

    def look_at(self, x: Optional[float], y: Optional[float] = None) -> None:
        """Fixate (x, y) until told otherwise; C{look_at(None)} frees the gaze."""
        if x is None:
            self._forced = None
        elif y is None:
            raise TypeError("look_at(x, y) needs both coordinates (or None for x alone)")
        else:
            self._forced = (float(x), float(y))
        self._seg_end = -1

    def _next_segment(self, t: int) -> None:
        rng = self.rng
        if self._seg_kind == "fix":
            # a saccade to a new point; duration grows with amplitude
            target = (float(rng.uniform(0.08, 0.92)), float(rng.uniform(0.08, 0.92)))
            amplitude = math.hypot(target[0] - self._to[0], (target[1] - self._to[1]) * 0.56) * 45
            self._seg_kind, self._from, self._to = "sac", self._to, target
            self._seg_start, self._seg_end = t, t + int((20 + 2.2 * amplitude) * 1000)
        else:
            self._seg_kind, self._from = "fix", self._to
            self._seg_start, self._seg_end = t, t + int((120 + rng.gamma(3.0, 60.0)) * 1000)
            if self.blinks and rng.random() < 0.06:
                self._blink_until = t + int(rng.uniform(80, 160) * 1000)
            elif self.blinks and rng.random() < 0.04:
                self._lost_eye = int(rng.integers(1, 3))
                self._lost_until = t + int(rng.uniform(15, 60) * 1000)

    def _targets(self, times: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per sample: target (x, y) and whether each eye is seen."""
        n = len(times)
        tx, ty = np.empty(n), np.empty(n)
        left_seen = np.ones(n, dtype=bool)
        right_seen = np.ones(n, dtype=bool)
        for i, t in enumerate(times.tolist()):
            if self._forced is not None:
                tx[i], ty[i] = self._forced
                continue
            if t >= self._seg_end:
                self._next_segment(t)
            if self._seg_kind == "sac":
                p = (t - self._seg_start) / max(1, self._seg_end - self._seg_start)
                p = p * p * (3 - 2 * p)
                tx[i] = self._from[0] + (self._to[0] - self._from[0]) * p
                ty[i] = self._from[1] + (self._to[1] - self._from[1]) * p
            else:
                tx[i], ty[i] = self._to
            if t < self._blink_until:
                left_seen[i] = right_seen[i] = False
            elif t < self._lost_until:
                if self._lost_eye == 1:
                    left_seen[i] = False
                else:
                    right_seen[i] = False
        return tx, ty, left_seen, right_seen

    # -- geometry

    def head_position(self, times: np.ndarray) -> np.ndarray:
        """Slow head sway (mm), a deterministic function of time."""
        s = np.asarray(times, dtype=float) / 1e6
        sway = np.stack(
            [8.0 * np.sin(s * 0.7), 5.0 * np.sin(s * 0.45 + 1.0), 12.0 * np.sin(s * 0.3 + 2.0)],
            axis=-1,
        )
        return self.head + sway

    def display_point(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Normalised display coordinates to 3D points (mm)."""
        x = np.asarray(x, dtype=float)[..., None]
        y = np.asarray(y, dtype=float)[..., None]
        return self._tl + x * self._u + y * self._v

    def _to_display(
        self, origin: np.ndarray, direction: np.ndarray
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intersect rays with the display plane: (x, y) normalised and the 3D point."""
        denom = direction @ self._normal
        t = ((self._tl - origin) @ self._normal) / denom
        point = origin + direction * t[:, None]
        rel = point - self._tl
        # solve rel = a*u + b*v (u, v orthogonal here but solve generally)
        uu, vv, uv = self._u @ self._u, self._v @ self._v, self._u @ self._v
        ru, rv = rel @ self._u, rel @ self._v
        det = uu * vv - uv * uv
        a = (ru * vv - rv * uv) / det
        b = (rv * uu - ru * uv) / det
        return a, b, point

    def _perturb(self, direction: np.ndarray) -> np.ndarray:
        """Apply the systematic offset and the angular noise to unit directions."""
        n = len(direction)
        if self.offset_deg:
            a = math.radians(self.offset_deg)
            c, s = math.cos(a), math.sin(a)
            x, z = direction[:, 0].copy(), direction[:, 2].copy()
            direction[:, 0] = c * x - s * z
            direction[:, 2] = s * x + c * z
        if self.noise_deg:
            # two orthogonal axes perpendicular to each direction
            up = np.array([0.0, 1.0, 0.0])
            e1 = np.cross(direction, up)
            e1 /= np.linalg.norm(e1, axis=1)[:, None]
            e2 = np.cross(direction, e1)
            sigma = math.radians(self.noise_deg) / math.sqrt(2.0)
            d1 = self.rng.normal(0.0, sigma, n)[:, None]
            d2 = self.rng.normal(0.0, sigma, n)[:, None]
            direction = direction + np.tan(d1) * e1 + np.tan(d2) * e2
            direction /= np.linalg.norm(direction, axis=1)[:, None]
        return direction

    def samples(self, times_us: np.ndarray, device_offset_us: int = 0) -> np.ndarray:
        """Samples captured at C{times_us} (system clock, µs), in order."""
        times_us = np.asarray(times_us, dtype=np.int64)
        n = len(times_us)
        batch = empty_gaze(n)
        if n == 0:
            return batch
        batch["system_time_us"] = times_us
        batch["device_time_us"] = times_us + device_offset_us
        tx, ty, left_seen, right_seen = self._targets(times_us)
        target = self.display_point(tx, ty)
        head = self.head_position(times_us)
        pupil = 3.2 + 0.25 * np.sin(times_us / 1e6 * 0.2) + self.rng.normal(0, 0.01, n)
        for eye, sign, seen in (("left", -1.0, left_seen), ("right", 1.0, right_seen)):
            origin = head + np.array([sign * EYE_SEPARATION_MM / 2.0, 0.0, 0.0])
            direction = target - origin
            direction /= np.linalg.norm(direction, axis=1)[:, None]
            direction = self._perturb(direction)
            x, y, point = self._to_display(origin, direction)
            on = seen & (x > -0.5) & (x < 1.5) & (y > -0.5) & (y < 1.5)
            batch[f"{eye}_x"] = np.where(on, x, np.nan)
            batch[f"{eye}_y"] = np.where(on, y, np.nan)
            for i, axis in enumerate("xyz"):
                batch[f"{eye}_point_{axis}"] = np.where(on, point[:, i], np.nan)
                batch[f"{eye}_origin_{axis}"] = np.where(seen, origin[:, i], np.nan)
            batch[f"{eye}_pupil"] = np.where(seen, pupil + sign * 0.03, np.nan)
            batch[f"{eye}_gaze_valid"] = on
            batch[f"{eye}_origin_valid"] = seen
            batch[f"{eye}_pupil_valid"] = seen
        assert batch.dtype == GAZE_DTYPE
        return batch

    def user_position(self, time_us: int) -> UserPosition:
        """Where the eyes are in the head box, on the user-position scale."""
        head = self.head_position(np.array([time_us]))[0]

        def place(sign: float) -> Point3:
            ox = head[0] + sign * EYE_SEPARATION_MM / 2.0
            return (
                float(np.clip((ox + HEAD_BOX_HALF_WIDTH) / (2 * HEAD_BOX_HALF_WIDTH), 0, 1)),
                float(
                    np.clip(
                        (head[1] - DEFAULT_HEAD[1] + HEAD_BOX_HALF_HEIGHT)
                        / (2 * HEAD_BOX_HALF_HEIGHT),
                        0,
                        1,
                    )
                ),
                float(np.clip((HEAD_BOX_FAR - head[2]) / (HEAD_BOX_FAR - HEAD_BOX_NEAR), 0, 1)),
            )

        return UserPosition(left=place(-1.0), right=place(1.0), system_time_us=int(time_us))
