# -*- test-case-name: tests.test_buffer -*-
"""
L{GazeBuffer}: a fixed-size numpy ring of full binocular gaze records.

Records arrive in time order within a tracking session (the server clears the
buffer when a new session starts), so a time-range query is two binary
searches per stored segment (C{bisect} over the records' times where they
are: C{np.searchsorted} would first copy every record's time out of the
records, reading all of the buffer's memory, ~0.2-0.9 ms on the reactor for
the default 10 000).  Appending a batch is one or two slice copies.
A large query is copied into memory the buffer keeps for it (L{_Spare})
when that is free.
"""

from __future__ import annotations

import bisect
import weakref
from typing import Optional

import numpy as np

from jspsych_tobii.interfaces import GAZE_DTYPE

#: A buffer up to this size has its memory written once when it is made:
#: the operating system maps fresh memory page by page on first write, and
#: the live path would otherwise take a page fault every 20 samples until
#: the buffer has wrapped once (8 s at 1200 Hz with the default size).
PREFAULT_BYTES = 64 * 1024 * 1024

#: A query whose copy is at least this large goes into the buffer's spare
#: memory when no other copy holds it.  Fresh memory takes a page fault per
#: 4 KiB page on first write: copying the default 10 000 records (1.8 MB)
#: into new memory took 0.65-0.9 ms of the reactor's CPU time here, 445
#: faults, against 0.05 ms into memory already written (and up to 1.4 ms
#: during a busy get_data bench).
SPARE_FROM_BYTES = 256 * 1024

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
        nbytes = self._data.nbytes
        self._spare = _Spare(nbytes) if SPARE_FROM_BYTES <= nbytes <= PREFAULT_BYTES else None
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
            lo = 0 if start_us is None else bisect.bisect_left(times, start_us)
            hi = len(times) if end_us is None else bisect.bisect_right(times, end_us)
            if left is not None:
                hi = min(hi, lo + left)
                left -= max(0, hi - lo)
            if hi > lo:
                parts.append(segment[lo:hi].view(_RAW))  # copied as bytes: twice as fast
        if not parts:
            return self._data[:0].copy()
        count = sum(len(part) for part in parts)
        spare = self._spare
        into = spare.lend(count * _SIZE) if spare and count * _SIZE >= SPARE_FROM_BYTES else None
        if into is not None:
            copy, at = into.view(_RAW), 0
            for part in parts:
                copy[at : at + len(part)] = part
                at += len(part)
            return copy.view(GAZE_DTYPE)
        if len(parts) == 1:
            return parts[0].copy().view(GAZE_DTYPE)
        return np.concatenate(parts).view(GAZE_DTYPE)


class _Spare:
    """
    Memory for one copy at a time, written once when made so that copying
    into it takes no page faults.  It is lent as a numpy array, and comes
    back when that array and every view of it are gone (a view's base is
    the array lent, whose own base is not an array).  While it is lent,
    queries copy into fresh memory as before.
    """

    def __init__(self, nbytes: int):
        self._free: Optional[bytearray] = bytearray(nbytes)  # zeroed: every page written

    def lend(self, nbytes: int) -> Optional[np.ndarray]:
        """The first C{nbytes} of the spare memory as uint8, or None if it is lent."""
        memory, self._free = self._free, None
        if memory is None:
            return None
        whole = np.frombuffer(memory, np.uint8)
        weakref.finalize(whole, self._back, memory)
        return whole[:nbytes]

    def _back(self, memory: bytearray) -> None:
        # on whichever thread let go of the last view (one assignment)
        self._free = memory
