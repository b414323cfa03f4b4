"""What every connector provides: a way to fill one enclave table, and its provenance.

A connector never lets DuckDB touch the outside world.  It reads its source with
pyarrow (or a database driver) into Arrow batches and hands them to the
enclave's locked-down writer, inside the caller's transaction, so a failure
anywhere leaves the enclave exactly as it was.  The SHA-256 of the source bytes
is computed from the same bytes that are loaded (file sources are copied into
the registration's work directory under the home's staging directory first,
hashing as they copy, so a file swapped underneath us cannot make the hash and
the data disagree).  A :class:`StagedSource` does its reading and parsing before
the writer is taken (files and PostgreSQL: in a confined child process,
``files.py``, ``postgres.py``; the demo generator in a private DuckDB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import duckdb
import pyarrow as pa

from connectors.limits import IngestLimits
from connectors.reasons import safe_reason
from sandbox.core.errors import ConnectorError

__all__ = [
    "LoadedSource",
    "Source",
    "StagedSource",
    "load_arrow",
    "safe_reason",
]


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


@runtime_checkable
class StagedSource(Protocol):
    """A source whose reading and parsing happen before the enclave's writer is taken.

    ``prepare`` does all the work in ``workdir`` (private to this registration, removed
    afterwards) within ``limits``; the :class:`Source` it returns only loads a finished
    file, so the writer is held for as short a time as the load itself.
    """

    connector: str

    def prepare(self, workdir: Path, limits: IngestLimits) -> Source: ...


def load_arrow(
    con: duckdb.DuckDBPyConnection,
    target: str,
    reader: pa.RecordBatchReader | pa.Table,
    *,
    what: str,
) -> None:
    """Copy ``reader`` into ``target`` through the writer connection (no file access)."""
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
