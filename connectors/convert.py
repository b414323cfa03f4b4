"""The child process that parses one source: ``python -m connectors.convert``, job on stdin.

A parser bug (pyarrow's JSON reader recursing 20,000 levels deep), a decompression
bomb or a table of a hundred million rows must cost a child process, never the
server.  So :mod:`connectors.isolation` starts this module with a job (input file,
format, compression, output file, limits), and the child:

1. confines itself before it reads a byte: ``RLIMIT_AS``, ``RLIMIT_CPU``,
   ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, no core file (it would hold data), at most
   two pyarrow threads, and death with its parent;
2. streams the input, decompressing it itself, and refuses past the limits while it
   streams: CSV and JSON text goes through :class:`~connectors.scan.LineChecker`
   (decompressed size, line length, JSON nesting) before pyarrow sees it; Parquet's
   row count, uncompressed size and type nesting are read from its footer before any
   row is; every format's rows and decoded bytes are counted batch by batch;
3. writes the finished table as an Arrow IPC file and its verdict to ``result.json``:
   ``{"ok": true, "rows": n}`` or ``{"ok": false, "rule": ..., "reason": ...}``, a
   reason that names a limit or a parse error's kind and never quotes the data.

A PostgreSQL source (format ``postgresql``: ``url`` and ``sql`` in the job, never on
the command line) is read the same way: the child opens a read-only ADBC session,
streams the result's Arrow batches into the output file under the same limits
(rows, decoded bytes, time, memory), and reports the SHA-256 of the Arrow IPC stream
of exactly those batches as the source's digest.  The enclave's writer is taken only
afterwards, to swap the finished file in.

Anything the kernel ends (a crash, a resource limit) leaves no verdict: the parent
reads it from the exit status.  Only the standard library, pyarrow, the PostgreSQL
ADBC driver (for that format) and this package's small pure modules are imported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.limits import OPEN_FILES, IngestLimits
from connectors.reasons import safe_reason
from connectors.scan import LimitExceeded, LineChecker

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["COMPRESSIONS", "OUTPUT", "RESULT", "main"]

COMPRESSIONS = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".bz2": "bz2",
    ".lz4": "lz4",
}
"""Compressed CSV and JSON, by the file's last suffix (as pyarrow's readers decided before)."""

OUTPUT = "table.arrow"
RESULT = "result.json"
CHUNK = 1 << 18
_TEXT_BLOCK = 1 << 20  # pyarrow's default block size

Batches = tuple["pa.Schema", Iterator["pa.RecordBatch"]]


def _cap(which: int, soft: int, hard: int | None = None) -> None:
    """Lower a resource limit (never above a hard limit set from outside)."""
    _, current = resource.getrlimit(which)
    wanted_hard = soft if hard is None else hard
    if current != resource.RLIM_INFINITY:
        wanted_hard = min(wanted_hard, current)
    resource.setrlimit(which, (min(soft, wanted_hard), wanted_hard))


def confine(limits: IngestLimits, parent: int) -> None:
    """Bound this process before it reads any input."""
    _cap(resource.RLIMIT_CORE, 0)
    _cap(resource.RLIMIT_AS, limits.memory_bytes)
    _cap(resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1)  # SIGXCPU, then SIGKILL
    _cap(resource.RLIMIT_FSIZE, limits.max_output_bytes)
    _cap(resource.RLIMIT_NOFILE, OPEN_FILES)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; die, not a short write
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


class CheckedReader:
    """A read-only file object that yields only text :class:`LineChecker` passed.

    A refusal is also noted in ``refusals``: pyarrow may re-raise it as its own error.
    """

    def __init__(self, raw: Any, checker: LineChecker, refusals: list[str]) -> None:
        self._raw = raw
        self._checker = checker
        self._buffer = bytearray()
        self._eof = False
        self.refusals = refusals
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        try:
            while not self._eof and (size < 0 or len(self._buffer) < size):
                chunk = self._raw.read(CHUNK)
                if chunk:
                    self._buffer += self._checker.feed(chunk)
                else:
                    self._buffer += self._checker.finish()
                    self._eof = True
        except LimitExceeded as exc:
            self.refusals.append(exc.reason)
            raise
        count = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        out = bytes(self._buffer[:count])
        del self._buffer[:count]
        return out

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._raw.close()


def _text(job: dict[str, Any], limits: IngestLimits, depth: int | None, refusals: list[str]) -> Any:
    import pyarrow as pa

    raw: Any = pa.OSFile(job["input"])
    if job.get("compression"):
        raw = pa.CompressedInputStream(raw, job["compression"])
    checker = LineChecker(
        max_bytes=limits.max_bytes, max_line_bytes=limits.max_line_bytes, max_depth=depth
    )
    return pa.PythonFile(CheckedReader(raw, checker, refusals), mode="r")


def _too_deep(schema: pa.Schema, limit: int) -> bool:
    stack = [(field.type, 0) for field in schema]
    while stack:
        kind, depth = stack.pop()
        if kind.num_fields:
            depth += 1
            if depth > limit:
                return True
            stack.extend((kind.field(i).type, depth) for i in range(kind.num_fields))
    return False


def _csv(job: dict[str, Any], limits: IngestLimits, refusals: list[str]) -> Batches:
    import pyarrow.csv as pacsv

    # A blank text field is a missing value, as for numbers and as DuckDB's read_csv reads
    # it (pyarrow keeps it as ''): an analyst's `x IS NULL` found none of them (outside
    # rehearsal, December 2026).  Text spelled as a missing value (NA, NULL, N/A, nan)
    # is missing too, as numbers' already are.
    options = pacsv.ConvertOptions(strings_can_be_null=True)
    reader = pacsv.open_csv(_text(job, limits, None, refusals), convert_options=options)
    return reader.schema, iter(reader)


def _json(job: dict[str, Any], limits: IngestLimits, refusals: list[str]) -> Batches:
    import pyarrow.json as pajson

    # The whole file, as before: types are inferred from every line, not the first block.
    options = pajson.ReadOptions(block_size=max(_TEXT_BLOCK, limits.max_line_bytes + 1))
    table = pajson.read_json(_text(job, limits, limits.max_depth, refusals), read_options=options)
    return table.schema, iter(table.to_batches())


def _parquet(job: dict[str, Any], limits: IngestLimits, refusals: list[str]) -> Batches:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(job["input"])
    meta = parquet.metadata
    if meta.num_rows > limits.max_rows:
        raise LimitExceeded(_rows_reason(limits))
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if size > limits.max_bytes:
        raise LimitExceeded(_bytes_reason(limits))
    return parquet.schema_arrow, parquet.iter_batches()


def _arrow(job: dict[str, Any], limits: IngestLimits, refusals: list[str]) -> Batches:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with open(job["input"], "rb") as handle:
        is_file_format = handle.read(6) == b"ARROW1"
    source = pa.OSFile(job["input"])
    if is_file_format:
        reader = ipc.open_file(source)
        count = reader.num_record_batches
        return reader.schema, (reader.get_batch(i) for i in range(count))
    stream = ipc.open_stream(source)
    return stream.schema, iter(stream)


class SourceFailed(Exception):
    """A source that could not be read (not a limit): ``rule`` and a reason without data."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


class _Digest:
    """A write-only file object that only hashes (the digest of an Arrow IPC stream)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


def _read_only_url(url: str) -> str:
    url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-c%20default_transaction_read_only%3Don"


def _postgresql(job: dict[str, Any], limits: IngestLimits, refusals: list[str]) -> Batches:
    """The result of ``job["sql"]`` in a read-only session, batch by batch, hashed as read."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as pg
    except ImportError:  # the core install has no PostgreSQL drivers
        raise SourceFailed(
            "connector.postgresql.extra",
            "PostgreSQL sources need the postgres extra: pip install 'sandbox[postgres]'",
        ) from None

    def failed(exc: BaseException) -> SourceFailed:
        state = getattr(exc, "sqlstate", None) or type(exc).__name__
        return SourceFailed("connector.postgresql", f"PostgreSQL source failed ({state})")

    try:
        conn = pg.connect(_read_only_url(job["url"]))
        cursor = conn.cursor()
        cursor.execute(job["sql"])
        upstream = cursor.fetch_record_batch()
    except adbc_driver_manager.Error as exc:
        raise failed(exc) from None
    digest = _Digest()
    stream = ipc.new_stream(pa.PythonFile(digest, mode="w"), upstream.schema)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in upstream:
                stream.write_batch(batch)
                yield batch
            stream.close()
            job["sha256"] = digest.hash.hexdigest()
        except adbc_driver_manager.Error as exc:
            raise failed(exc) from None
        finally:
            cursor.close()
            conn.close()

    return upstream.schema, batches()


_READERS: dict[str, Callable[[dict[str, Any], IngestLimits, list[str]], Batches]] = {
    "csv": _csv,
    "json": _json,
    "parquet": _parquet,
    "arrow": _arrow,
    "postgresql": _postgresql,
}


def _rows_reason(limits: IngestLimits) -> str:
    return f"row count above {limits.max_rows} (ingest_max_rows)"


def _bytes_reason(limits: IngestLimits) -> str:
    return f"decompressed size above {limits.max_bytes} bytes (ingest_max_bytes)"


def _decoded(batch: pa.RecordBatch, plain: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    if batch.schema.equals(plain):
        return batch
    columns = [
        column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, schema=plain)


_DECODED_FORMATS = ("parquet", "arrow", "postgresql")
"""Formats whose decoded bytes count towards ``max_bytes`` (text is counted as it streams)."""


def _write(schema: pa.Schema, batches: Iterator[pa.RecordBatch], job: dict[str, Any]) -> int:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    limits = IngestLimits.from_dict(job["limits"])
    if _too_deep(schema, limits.max_depth):
        raise LimitExceeded(f"nesting depth above {limits.max_depth} (ingest_max_depth)")
    # Dictionary columns are decoded here, so their full size counts (DuckDB would decode
    # them under the writer: a few KB of Parquet can hold one long string a million times).
    plain = pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
    )
    rows = size = 0
    with ipc.new_file(job["output"], plain) as writer:
        for encoded in batches:
            batch = _decoded(encoded, plain)
            rows += batch.num_rows
            size += batch.nbytes
            if rows > limits.max_rows:
                raise LimitExceeded(_rows_reason(limits))
            if job["format"] in _DECODED_FORMATS and size > limits.max_bytes:
                raise LimitExceeded(_bytes_reason(limits))
            writer.write_batch(batch)
    return rows


def convert(job: dict[str, Any]) -> dict[str, Any]:
    """Parse ``job["input"]`` into ``job["output"]``; the verdict (never quoting data)."""
    limits = IngestLimits.from_dict(job["limits"])
    memory = f"memory above {limits.memory_bytes} bytes (ingest_memory_bytes)"
    refusals: list[str] = []
    try:
        import pyarrow as pa

        pa.set_cpu_count(min(2, os.cpu_count() or 1))
        pa.set_io_thread_count(2)
        schema, batches = _READERS[job["format"]](job, limits, refusals)
        rows = _write(schema, batches, job)
    except LimitExceeded as exc:
        return {"ok": False, "rule": "ingest.failed", "reason": exc.reason}
    except SourceFailed as exc:
        return {"ok": False, "rule": exc.rule, "reason": exc.reason}
    except MemoryError:
        return {"ok": False, "rule": "ingest.failed", "reason": memory}
    except Exception as exc:
        if refusals:  # pyarrow re-raised the checker's refusal as its own error
            return {"ok": False, "rule": "ingest.failed", "reason": refusals[0]}
        if type(exc).__name__ == "ArrowMemoryError":
            return {"ok": False, "rule": "ingest.failed", "reason": memory}
        reason = f"{job['format']} input is malformed: {safe_reason(exc)}"
        return {"ok": False, "rule": "connector.parse", "reason": reason}
    verdict: dict[str, Any] = {"ok": True, "rows": rows}
    if "sha256" in job:
        verdict["sha256"] = job["sha256"]
    return verdict


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    confine(IngestLimits.from_dict(job["limits"]), int(job["parent"]))
    result = convert(job)
    Path(job["result"]).write_text(json.dumps(result))
    # No interpreter shutdown: after a refusal raised inside pyarrow's reader, joining its
    # I/O threads at exit can wait for ever (seen with read_json on a 1 GB stream).
    os._exit(0)


if __name__ == "__main__":
    main()
