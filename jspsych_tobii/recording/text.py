# -*- test-case-name: tests.test_text_cache -*-
"""
The text of a recorded session's samples, kept for C{get_data}.

A C{get_data} answer of a minute at 1200 Hz is 72,000 samples and ~20 MB of
JSON.  Encoded when it is asked for, that is 40-60 ms of a core on the
server while the answer is sent, a core the tracker's and the reactor's
threads want too.  So while a session is recorded, the writer thread also
encodes its samples, a block of L{BLOCK} at a time (~1.5 ms of numpy per
1.7 s at 1200 Hz), into a text file beside the recording, and the byte
offset after each sample into an index file: a range of samples is then
one read of bytes.  Samples not yet in a block (the last ~1.7 s) and those
of a session whose text stopped are encoded when asked, as before.

The two files are a cache, not part of the recording: they live in the
L{TEXT_DIR} folder of the recording folder, and a session's are deleted when
the next session starts and when the recorder closes (what is left after a
crash is deleted when the next session starts).  They take ~290 bytes per
sample (~1.2 GB an hour at 1200 Hz) while they exist; the writer stops the
cache, and deletes it, when the disk has less than L{MIN_FREE_BYTES} free,
so it never costs the recording itself its space.

The text file holds each sample's C{gaze} object preceded by a comma (what
L{encode_rows<jspsych_tobii.core.gaze.encode_rows>} makes); the index file
holds, per sample, the text's length up to and including that sample, as
little-endian uint64.  Nothing here imports Twisted.
"""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO, Callable, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from jspsych_tobii.core.gaze import RECORD_SIZE, EncodedSamples, encode_rows
from jspsych_tobii.core.history import Chunk
from jspsych_tobii.interfaces import GAZE_DTYPE
from jspsych_tobii.recording.format import read_range, record_span

__all__ = [
    "TEXT_DIR",
    "BLOCK",
    "MIN_FREE_BYTES",
    "TextPaths",
    "TextWriter",
    "clear_text_dir",
    "read_text_range",
]

#: The folder, inside the recording folder, that holds the cache.
TEXT_DIR = ".get_data-text"

#: Samples encoded at a time by the writer thread (~1.7 s at 1200 Hz).
BLOCK = 2048

#: The cache stops (and is deleted) when the disk has less free than this.
MIN_FREE_BYTES = 1 << 30

_END = np.dtype("<u8")
_END_SIZE = _END.itemsize


class TextPaths(NamedTuple):
    """A session's two cache files."""

    text: str
    ends: str

    @classmethod
    def for_session(cls, directory: str, stem: str) -> "TextPaths":
        folder = os.path.join(directory, TEXT_DIR)
        return cls(os.path.join(folder, stem + ".text"), os.path.join(folder, stem + ".ends"))

    def remove(self) -> None:
        """Delete both files (those already gone, or still held open elsewhere, are left)."""
        for path in self:
            try:
                os.unlink(path)
            except OSError:
                pass  # gone already, or (Windows) still open: clear_text_dir takes it later


def clear_text_dir(directory: str, keep: Optional[TextPaths] = None) -> None:
    """
    Delete the cache files in C{directory}'s L{TEXT_DIR} but C{keep}'s
    (those of sessions before, or of a server that died).
    """
    folder = os.path.join(directory, TEXT_DIR)
    try:
        names = os.listdir(folder)
    except OSError:
        return  # no cache yet
    kept = set() if keep is None else {os.path.basename(p) for p in keep}
    for name in names:
        if name not in kept:
            path = os.path.join(folder, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass  # (Windows) still open by a reader: the next clear takes it


class TextWriter:
    """
    The writer thread's side of one session's cache: takes the records as
    they are written, encodes whole blocks, and says how many samples' text
    is flushed.

    @param free_bytes: the free space (bytes) of the disk holding a path.
    """

    def __init__(
        self,
        paths: TextPaths,
        free_bytes: Callable[[str], int] = lambda path: shutil.disk_usage(path).free,
    ):
        self.paths = paths
        self._free_bytes = free_bytes
        self._pending = bytearray()
        self._length = 0  # bytes of text written
        self.encoded = 0  # samples whose text is written
        self.until_us: Optional[int] = None  # system_time_us of the last of them
        #: why the cache stopped (then get_data encodes instead); None while it runs
        self.stopped: Optional[str] = None
        os.makedirs(os.path.dirname(paths.text), exist_ok=True)
        self._text = open(paths.text, "wb", buffering=1 << 20)
        try:
            self._ends = open(paths.ends, "wb", buffering=1 << 16)
        except OSError:
            self._text.close()
            raise

    def add(self, records: Union[bytes, bytearray]) -> None:
        """Records (L{GAZE_DTYPE} bytes) just written to the recording, in order."""
        if self.stopped is not None:
            return
        self._pending += records
        # a block at a time, also after a backlog: the encoder's temporary
        # memory stays that of one block (~2 MB)
        while self.stopped is None and len(self._pending) >= BLOCK * RECORD_SIZE:
            self._encode(BLOCK)

    def flush(self, finish: bool = False) -> Tuple[int, Optional[int]]:
        """
        Flush the files (with C{finish}, after encoding the samples short of
        a block too); the number of samples whose text is readable now, and
        the C{system_time_us} of the last of them.
        """
        if self.stopped is not None:
            return 0, None
        if finish and self._pending:
            self._encode(len(self._pending) // RECORD_SIZE)
        try:
            self._text.flush()
            self._ends.flush()
        except OSError as e:
            self.stop(f"cannot write its text: {e.strerror or e}")
            return 0, None
        return self.encoded, self.until_us

    def close(self) -> None:
        for stream in (self._text, self._ends):
            try:
                stream.close()
            except OSError:
                pass  # a cache: what was not written is encoded when asked

    def stop(self, why: str) -> None:
        """Stop the cache and delete its files."""
        if self.stopped is None:
            self.stopped = why
        self._pending = bytearray()
        self.close()
        self.paths.remove()

    def _encode(self, count: int) -> None:
        size = count * RECORD_SIZE
        try:
            free = self._free_bytes(os.path.dirname(self.paths.text))
        except OSError as e:
            self.stop(f"cannot see the disk's free space: {e.strerror or e}")
            return
        if free < MIN_FREE_BYTES:
            self.stop(f"less than {MIN_FREE_BYTES >> 20} MB free on the disk")
            return
        records = self._pending[:size]  # a copy of its own: the pending bytes can shrink
        batch = np.frombuffer(records, GAZE_DTYPE)
        text, lengths = encode_rows(batch)
        ends = np.cumsum(lengths, dtype=_END)
        ends += self._length
        try:
            self._text.write(text)
            self._ends.write(ends.tobytes())
        except OSError as e:
            self.stop(f"cannot write its text: {e.strerror or e}")
            return
        self._length += len(text)
        self.encoded += count
        self.until_us = int(batch["system_time_us"][-1])
        del self._pending[:size]


class CachedSession(NamedTuple):
    """What L{read_text_range} needs of a recorded session."""

    gaze_path: str
    records: int  # flushed records
    text: Optional[TextPaths]
    texts: int  # samples whose text is flushed (at most C{records})


def read_text_range(
    session: CachedSession,
    start_us: Optional[int] = None,
    end_us: Optional[int] = None,
    chunk: int = 2000,
) -> Iterator[Chunk]:
    """
    What L{read_range<jspsych_tobii.recording.format.read_range>} gives for
    the same range, the samples the cache holds as their text
    (L{EncodedSamples}, at most C{chunk} a piece), the rest as records.  A
    cache that cannot be opened is left out (the records are read instead).

    @raise OSError: the recording cannot be read.
    """
    path, count = session.gaze_path, session.records
    lo, hi = record_span(path, count, start_us, end_us)
    texts = min(session.texts, count) if session.text is not None else 0
    done = lo
    if lo < min(hi, texts):
        assert session.text is not None
        pieces = _text_pieces(session.text, lo, min(hi, texts), max(1, int(chunk)))
        if pieces is not None:
            yield from pieces
            done = min(hi, texts)
    if done < hi:
        yield from read_range(path, count, start_us, end_us, chunk, first=done)


def _text_pieces(paths: TextPaths, lo: int, hi: int, step: int) -> Optional[Iterator[Chunk]]:
    """The text of samples C{lo} to C{hi}; None if the cache is gone."""
    try:
        text = open(paths.text, "rb", buffering=0)
    except OSError:
        return None
    try:
        ends = open(paths.ends, "rb", buffering=0)
    except OSError:
        text.close()
        return None
    return _read_pieces(text, ends, lo, hi, step)


def _read_pieces(text: BinaryIO, ends: BinaryIO, lo: int, hi: int, step: int) -> Iterator[Chunk]:
    with text, ends:
        at = 0 if lo == 0 else _end(ends, lo - 1)
        for i in range(lo, hi, step):
            j = min(hi, i + step)
            end = _end(ends, j - 1)
            yield EncodedSamples(_read_at(text, end - at, at), j - i)
            at = end


def _end(ends: BinaryIO, i: int) -> int:
    return int(np.frombuffer(_read_at(ends, _END_SIZE, i * _END_SIZE), _END)[0])


def _read_at(f: BinaryIO, size: int, offset: int) -> bytes:
    """C{size} bytes at C{offset}; raises C{OSError} if the file is shorter."""
    f.seek(offset)
    parts: List[bytes] = []
    got = 0
    while got < size:
        part = f.read(size - got)
        if not part:
            raise OSError(f"the get_data text cache is shorter than its index ({offset + got})")
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)
