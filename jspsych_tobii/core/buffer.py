# -*- test-case-name: tests.test_buffer -*-
"""
L{GazeBuffer}: a fixed-size numpy ring of full binocular gaze records.

Records arrive in time order within a tracking session (the server clears the
buffer when a new session starts), so a time-range query is two binary
searches per stored segment.  Appending a batch is one or two slice copies.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from jspsych_tobii.interfaces import GAZE_DTYPE

#: A buffer up to this size has its memory written once when it is made:
#: the operating system maps fresh memory page by page on first write, and
#: the live path would otherwise take a page fault every 20 samples until
#: the buffer has wrapped once (8 s at 1200 Hz with the default size).
PREFAULT_BYTES = 64 * 1024 * 1024

_RAW = np.dtype((np.void, GAZE_DTYPE.itemsize))
_SIZE = GAZE_DTYPE.itemsize


class GazeBuffer:
    """
    @param capacity: how many records are kept; older ones are overwritten.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self._data = np.zeros(capacity, dtype=GAZE_DTYPE)
        if self._data.nbytes <= PREFAULT_BYTES:
            self._data.view(np.uint8).fill(0)
        # the same memory as opaque records: copying those is one memcpy,
        # where a structured copy goes field by field (~15 µs per batch)
        self._raw = self._data.view(_RAW)
        self._bytes = memoryview(self._data.view(np.uint8).data)
        self._head = 0  # where the next record goes
        self._size = 0
        self.appended = 0  # records appended since the last clear

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        self._head = 0
        self._size = 0
        self.appended = 0

    def extend(self, batch: np.ndarray) -> None:
        n = len(batch)
        if n == 0:
            return
        if batch.dtype != GAZE_DTYPE:
            raise TypeError(f"expected records of GAZE_DTYPE, got {batch.dtype}")
        batch = batch.view(_RAW)
        cap = self.capacity
        self.appended += n
        if n >= cap:
            self._raw[:] = batch[n - cap :]
            self._head = 0
            self._size = cap
            return
        head = self._head
        first = min(n, cap - head)
        self._raw[head : head + first] = batch[:first]
        if first < n:
            self._raw[: n - first] = batch[first:]
        self._head = (head + n) % cap
        self._size = min(cap, self._size + n)

    def extend_records(self, records: bytes | bytearray) -> None:
        """
        Append records of L{GAZE_DTYPE} given as bytes (a few at a time, on
        the live path: memory copies, no numpy call).
        """
        size = _SIZE
        n = len(records) // size
        cap = self.capacity
        head = self._head
        if 0 < n <= cap - head:  # one copy, no wrap: nearly always
            self._bytes[head * size : (head + n) * size] = records
        elif n == 0:
            return
        elif n >= cap:
            self.extend(np.frombuffer(records, GAZE_DTYPE))
            return
        else:
            first = cap - head
            view = memoryview(records)
            self._bytes[head * size :] = view[: first * size]
            self._bytes[: (n - first) * size] = view[first * size : n * size]
        self.appended += n
        head += n
        self._head = head if head < cap else head - cap
        size_now = self._size + n
        self._size = size_now if size_now < cap else cap

    def _segments(self):
        """The stored records as (older, newer) views, in time order."""
        if self._size < self.capacity:
            return (self._data[: self._size],)
        return (self._data[self._head :], self._data[: self._head])

    def latest(self) -> Optional[np.void]:
        if self._size == 0:
            return None
        return self._data[(self._head - 1) % self.capacity].copy()

    def oldest_time_us(self) -> Optional[int]:
        if self._size == 0:
            return None
        return int(self._segments()[0]["system_time_us"][0])

    def snapshot(self) -> np.ndarray:
        """A time-ordered copy of everything stored."""
        return np.concatenate(self._segments()) if self._size else self._data[:0].copy()

    def query(
        self,
        start_us: Optional[int] = None,
        end_us: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> np.ndarray:
        """
        Records with C{start_us <= system_time_us <= end_us} (either bound may
        be None), as a time-ordered copy: the first C{limit} of them when
        C{limit} is given.
        """
        parts = []
        left = limit
        for segment in self._segments():
            times = segment["system_time_us"]
            lo = 0 if start_us is None else int(np.searchsorted(times, start_us, "left"))
            hi = len(times) if end_us is None else int(np.searchsorted(times, end_us, "right"))
            if left is not None:
                hi = min(hi, lo + left)
                left -= max(0, hi - lo)
            if hi > lo:
                parts.append(segment[lo:hi].view(_RAW))  # copied as bytes: twice as fast
        if not parts:
            return self._data[:0].copy()
        if len(parts) == 1:
            return parts[0].copy().view(GAZE_DTYPE)
        return np.concatenate(parts).view(GAZE_DTYPE)
