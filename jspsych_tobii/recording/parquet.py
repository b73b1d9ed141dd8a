# -*- test-case-name: tests.test_export_formats -*-
"""
A recorded session as Parquet (C{jspsych-tobii-export FILE --format parquet}).

One file holds every sample of the session, with the CSV export's columns
typed: C{sample} int64, times float64 milliseconds, C{unix_time} a UTC
timestamp (µs), gaze and eye values float64 (a lost value is null), validity
flags boolean.  A second file beside it holds the events (one column per
event field, typed where every value agrees, JSON text otherwise).  Both
carry the recording's header as file metadata (C{jspsych_tobii.header},
JSON), and each column its unit (field metadata C{unit}).

    pd.read_parquet("s1.parquet")          # pandas
    pl.read_parquet("s1.parquet")          # polars

Needs pyarrow: C{pip install "jspsych-tobii[parquet]"}.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from jspsych_tobii.core.jsonsafe import json_safe
from jspsych_tobii.recording.columns import (
    TimeBase,
    binocular,
    column_unit,
    event_keys,
    event_time_ms,
)
from jspsych_tobii.recording.export import ExportError, _column_for, sample_columns, writing

__all__ = ["write_session", "sample_table", "HEADER_KEY", "load_pyarrow"]

#: File-metadata key of the recording's header (JSON).
HEADER_KEY = b"jspsych_tobii.header"
#: File-metadata key of the sentence saying how unix_time is derived.
TIME_KEY = b"jspsych_tobii.unix_time"
#: Samples per row group.
ROW_GROUP = 250_000

UNIX_TIME_NOTE = (
    "unix_time = started_unix + (system_time_us - started_us) / 1e6: the session's "
    "wall-clock start plus the monotonic time since it (see docs/RECORDING.md)"
)


def load_pyarrow():
    """pyarrow and pyarrow.parquet, or a one-line L{ExportError} saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ExportError(
            '--format parquet needs pyarrow: pip install "jspsych-tobii[parquet]"'
        ) from None
    return pyarrow, pyarrow.parquet


def _schema(pa: Any, dtype: np.dtype, header: Dict[str, Any]):
    fields = []
    for column in sample_columns(dtype):
        if column == "unix_time":
            kind = pa.timestamp("us", tz="UTC")
        elif column == "sample":
            kind = pa.int64()
        elif column.endswith("_valid"):
            kind = pa.bool_()
        else:
            kind = pa.float64()
        fields.append(pa.field(column, kind, metadata={"unit": column_unit(column)}))
    return pa.schema(fields, metadata=_file_metadata(header))


def _file_metadata(header: Dict[str, Any]) -> Dict[bytes, bytes]:
    return {
        HEADER_KEY: json.dumps(json_safe(header), separators=(",", ":")).encode("utf-8"),
        TIME_KEY: UNIX_TIME_NOTE.encode("utf-8"),
    }


def sample_table(chunk: np.ndarray, timebase: TimeBase, schema: Any) -> Any:
    """The samples of C{chunk} as a pyarrow Table of C{schema} (the CSV export's columns)."""
    pa, _ = load_pyarrow()
    dtype = chunk.dtype
    sources = {_column_for(name, dtype[name])[0]: name for name in dtype.names or ()}
    arrays = []
    both = None
    for field in schema:
        column = field.name
        if column == "unix_time":
            unix_us = timebase.unix_us(chunk["system_time_us"])
            if unix_us is None:
                arrays.append(pa.nulls(len(chunk), field.type))
            else:
                arrays.append(pa.array(unix_us, pa.int64()).cast(field.type))
            continue
        if column == "elapsed_ms":
            values = timebase.elapsed_us(chunk["system_time_us"]) / 1000.0
        elif column in ("gaze_x", "gaze_y"):
            if both is None:
                both = binocular(chunk)
            values = both[0] if column == "gaze_x" else both[1]
        else:
            name = sources[column]
            values = chunk[name]
            if name.endswith("_us"):
                values = values / 1000.0
        values = np.ascontiguousarray(values)
        if values.dtype.kind == "f":
            arrays.append(pa.array(values, field.type, mask=np.isnan(values)))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _event_values(values: List[Any]) -> Any:
    """One events column: typed when every value present agrees, else JSON text."""
    pa, _ = load_pyarrow()
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if all(isinstance(v, str) for v in present):
        return pa.array(values, pa.string())
    return pa.array(
        [None if v is None else json.dumps(json_safe(v), separators=(",", ":")) for v in values],
        pa.string(),
    )


def events_table(events: Sequence[Dict[str, Any]], timebase: TimeBase, header: Dict[str, Any]):
    """The events as a pyarrow Table: time_ms, unix_time, elapsed_ms, kind, then every field."""
    pa, _ = load_pyarrow()
    keys = event_keys(events)
    times: List[Optional[float]] = [event_time_ms(event) for event in events]
    unix_us = []
    elapsed = []
    for t in times:
        unix_ms = None if t is None else timebase.unix_ms(t)
        unix_us.append(None if unix_ms is None else int(round(unix_ms * 1000)))
        elapsed.append(None if t is None else timebase.elapsed_ms(t))
    columns = {
        "time_ms": pa.array(times, pa.float64()),
        "unix_time": pa.array(unix_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "elapsed_ms": pa.array(elapsed, pa.float64()),
        "kind": pa.array([e.get("kind") for e in events], pa.string()),
    }
    for key in keys:
        name = key if key not in columns else f"field_{key}"
        columns[name] = _event_values([e.get(key) for e in events])
    table = pa.table(columns)
    return table.replace_schema_metadata(_file_metadata(header))


def write_session(
    out: str,
    events_out: str,
    header: Dict[str, Any],
    samples: np.ndarray,
    events: Sequence[Dict[str, Any]],
    timebase: TimeBase,
    progress: Any = None,
) -> None:
    """
    Write the samples to C{out} and the events to C{events_out}, each under a
    C{.part} name renamed when complete.

    @raise ExportError: pyarrow is missing, or a file cannot be written.
    """
    pa, pq = load_pyarrow()
    schema = _schema(pa, samples.dtype, header)
    parts = [out + ".part", events_out + ".part"]
    with writing(parts, out, progress, len(samples)):
        with pq.ParquetWriter(parts[0], schema, compression="zstd") as writer:
            total = len(samples)
            if total == 0:
                writer.write_table(schema.empty_table())
            for start in range(0, total, ROW_GROUP):
                chunk = np.asarray(samples[start : start + ROW_GROUP])
                writer.write_table(sample_table(chunk, timebase, schema))
                if progress is not None:
                    progress.update(min(total, start + ROW_GROUP))
        pq.write_table(events_table(events, timebase, header), parts[1], compression="zstd")
        os.replace(parts[0], out)
        os.replace(parts[1], events_out)
