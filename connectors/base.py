"""What every connector provides: a way to fill one enclave table, and its provenance.

A connector never lets DuckDB touch the outside world.  It reads its source with
pyarrow (or a database driver) into Arrow batches and hands them to the
enclave's locked-down writer, inside the caller's transaction, so a failure
anywhere leaves the enclave exactly as it was.  The SHA-256 of the source bytes
is computed from the same bytes that are loaded (file sources are copied into
the home's staging directory first, hashing as they copy, so a file swapped
underneath us cannot make the hash and the data disagree).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from sandbox.core.errors import ConnectorError

__all__ = ["HashingSink", "LoadedSource", "Source", "load_arrow", "safe_reason"]


@dataclass(frozen=True)
class LoadedSource:
    """Provenance of one load: which connector, from where, and the digest of what was read."""

    connector: str
    uri: str
    sha256: str


class Source(Protocol):
    """A source of rows for one dataset."""

    @property
    def connector(self) -> str:
        """The connector's name (read-only: sources are frozen dataclasses)."""
        ...

    def load_into(self, con: duckdb.DuckDBPyConnection, target: str) -> LoadedSource:
        """``CREATE OR REPLACE TABLE target`` from the source inside the open transaction."""
        ...


class HashingSink:
    """A write-only file object that only hashes (for digests of Arrow IPC streams)."""

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


_SAFE_PHRASES = (
    re.compile(r"Expected \d+ columns?, got \d+"),
    re.compile(r"Row #\d+"),
    re.compile(r"CSV column #\d+"),
    re.compile(r"Empty CSV file"),
    re.compile(r"straddling object straddles two block boundaries"),
    re.compile(r"JSON parse error: [A-Za-z ]+"),
    re.compile(r"Parquet magic bytes not found"),
    re.compile(r"Not an Arrow file"),
    re.compile(r"Invalid IPC stream"),
    re.compile(r"conversion error to \w+"),
)


def safe_reason(exc: BaseException) -> str:
    """Describe a parse error without quoting any of the input (allowlisted phrases only)."""
    text = str(exc)
    found = [m.group(0) for pattern in _SAFE_PHRASES if (m := pattern.search(text))]
    if found:
        return "; ".join(found)
    return f"the input could not be parsed ({type(exc).__name__})"


def load_arrow(
    con: duckdb.DuckDBPyConnection,
    target: str,
    reader: pa.RecordBatchReader,
    *,
    what: str,
) -> None:
    """Stream ``reader`` into ``target`` through the writer connection (no file access)."""
    view = "__sandbox_source"
    con.register(view, reader)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {view}")
    except (pa.ArrowException, duckdb.Error, ValueError, OSError) as exc:
        raise ConnectorError(
            f"{what} input is malformed: {safe_reason(exc)}", rule="connector.parse"
        ) from None
    finally:
        con.unregister(view)
