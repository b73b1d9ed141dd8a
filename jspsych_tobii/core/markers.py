# -*- test-case-name: tests.test_markers -*-
"""
Event markers in memory, within limits.

A marker's label and data are the client's to choose, so each is checked
against L{MAX_MARKER_BYTES} (L{json_size} measures a parsed value without
encoding a large one), and the markers of a tracking session are kept in a
L{MarkerLog}: at most L{MAX_MARKERS_IN_MEMORY} of them and
L{MAX_MARKER_MEMORY_BYTES} of their JSON text, the oldest let go first.  The
recording (C{--record-dir}) keeps every marker; memory only serves
C{get_markers}.  Markers are held as their encoded JSON, so what is counted
is what is held, and a reply joins them without encoding them again.
"""

from __future__ import annotations

import collections
import json
from typing import Any, List

#: Largest label plus data of one marker, as compact JSON.
MAX_MARKER_BYTES = 64 * 1024
#: Markers of one tracking session kept in memory, at most ...
MAX_MARKERS_IN_MEMORY = 10_000
#: ... and at most this much of their JSON text.
MAX_MARKER_MEMORY_BYTES = 4 * 1024 * 1024


def json_size(value: Any, limit: int) -> int:
    """
    The length of C{value}'s compact JSON text (as the server writes it:
    C{separators=(",", ":")}, non-ASCII escaped), or some number larger than
    C{limit} as soon as it is known to be larger: the walk stops there, so
    measuring a huge value costs no more than measuring C{limit} bytes of it.
    C{value} is what the JSON decoder produced (dicts with string keys,
    lists, strings, numbers, booleans, None).
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if len(item) > limit:  # the text is longer than the string
                total += len(item) + 2
            elif item.isascii() and item.isprintable() and '"' not in item and "\\" not in item:
                total += len(item) + 2  # nothing to escape
            else:
                total += len(json.dumps(item))
        elif kind is int or kind is float:
            total += len(repr(item))
        elif item is None or item is True:
            total += 4
        elif item is False:
            total += 5
        elif kind is dict:
            total += 2 + len(item) + max(len(item) - 1, 0)  # braces, colons, commas
            if total <= limit:
                for key, member in item.items():
                    stack.append(str(key))
                    stack.append(member)
        elif kind is list:
            total += 2 + max(len(item) - 1, 0)  # brackets, commas
            if total <= limit:
                stack.extend(item)
        else:
            total += len(json.dumps(item))
    return total


class MarkerLog:
    """The encoded markers of one session, the newest within the limits."""

    def __init__(
        self, max_count: int = MAX_MARKERS_IN_MEMORY, max_bytes: int = MAX_MARKER_MEMORY_BYTES
    ):
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: collections.deque = collections.deque()
        self.bytes = 0
        self.evicted = 0  # markers of this session let go from memory

    def __len__(self) -> int:
        return len(self._items)

    def add(self, encoded: bytes) -> None:
        self._items.append(encoded)
        self.bytes += len(encoded)
        while len(self._items) > self.max_count or self.bytes > self.max_bytes:
            self.bytes -= len(self._items.popleft())
            self.evicted += 1

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
        self.evicted = 0

    def encoded(self) -> List[bytes]:
        """The markers held, oldest first, each as its JSON text."""
        return list(self._items)
