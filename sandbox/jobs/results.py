"""A released table as JSON, CSV, Parquet or Arrow IPC, streamed in chunks."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["MEDIA_TYPES", "encode", "json_value", "result_rows"]

MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_BATCH = 1024
_CHUNK = 1 << 16


def json_value(value: Any) -> Any:
    """A JSON-native form of a released value (decimals as numbers, times as RFC 3339)."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        # NaN and ±Infinity are not JSON (json.dumps writes them, which strict parsers
        # such as jq's refuse): a ratio of noisy sums over a noisy 0 (an outside
        # rehearsal's SUM(arrests) / SUM(murders) by year) has no finite value: null
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def result_rows(table: pa.Table) -> dict[str, Any]:
    return {
        "columns": table.column_names,
        "rows": [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()],
    }


def encode(table: pa.Table, fmt: str) -> Iterator[bytes]:
    """The table in ``fmt``, batch by batch."""
    if fmt == "json":
        yield b'{"columns": ' + json.dumps(table.column_names).encode() + b', "rows": ['
        first = True
        for batch in table.to_batches(_BATCH):
            rows = [{k: json_value(v) for k, v in r.items()} for r in batch.to_pylist()]
            if rows:
                text = ", ".join(json.dumps(r, ensure_ascii=False) for r in rows)
                yield (b"" if first else b", ") + text.encode()
                first = False
        yield b"]}"
    elif fmt == "csv":
        sink = io.BytesIO()
        with pacsv.CSVWriter(sink, table.schema) as writer:
            for batch in table.to_batches(_BATCH):
                writer.write_batch(batch)
                yield sink.getvalue()
                sink.seek(0)
                sink.truncate()
        yield sink.getvalue()
    elif fmt == "arrow":
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(_BATCH):
                writer.write_batch(batch)
                yield sink.getvalue()
                sink.seek(0)
                sink.truncate()
        yield sink.getvalue()
    elif fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink)
        data = sink.getvalue()
        for start in range(0, len(data), _CHUNK):
            yield data[start : start + _CHUNK]
    else:  # pragma: no cover - the schema allows only the four
        raise ValueError(fmt)
