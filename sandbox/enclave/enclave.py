"""The governed DuckDB enclave: one database file, read-only and locked down for queries.

Defence in depth below the SQL guard: even a statement that reached DuckDB
cannot read or write files, attach databases, load extensions or change
settings, because the query connection is opened read-only with external
access off, extension autoload/autoinstall off and the configuration locked.
Every query runs under a timer that interrupts it, and a result larger than
the limit is refused rather than truncated.  A run that fails on the data
(timeout, out of memory, any execution error) ends with one error,
``enclave.limits``, whose message does not depend on why.

DuckDB lets one process open a file either read-only or read-write, not both,
so loads take the writer (which waits for running queries, closes the reader,
and the reader reopens lazily afterwards).  A file held by another process
(a running server) is reported as :class:`EnclaveBusy`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from sandbox.core.errors import (
    EnclaveBusy,
    EnclaveError,
    Forbidden,
    QueryRefused,
    QueryTimeout,
    ResultTooLarge,
)
from sandbox.core.settings import Settings
from sandbox.core.wording import counted
from sandbox.enclave.catalog import table_schema_sha256
from sandbox.enclave.encrypted import cursor_of, open_connection
from sandbox.enclave.watchdog import Watchdog

__all__ = ["LIMITS_MESSAGE", "LOCKDOWN", "Enclave", "limits_failure"]

#: Connect-time options shared by reader and writer: nothing outside the file is reachable.
LOCKDOWN: dict[str, Any] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
}

_BATCH_ROWS = 8192

#: What the operator learns of a run that failed while it read data: nothing about why.
LIMITS_MESSAGE = "the query could not be completed within its limits"


def limits_failure() -> QueryTimeout:
    """The one error of a run that failed on the data (timeout, memory, any execution error).

    Timeout, out of memory and an error raised by a row are told apart by no code,
    status, rule or message: each could be made to happen iff some row matches.
    """
    return QueryTimeout(LIMITS_MESSAGE, rule="enclave.limits")


class Enclave:
    """Owns the enclave file; hands out locked query cursors and a transactional writer."""

    def __init__(
        self,
        path: Path,
        *,
        memory_limit: str = "2GB",
        threads: int = 2,
        timeout_s: float = 30.0,
        max_result_rows: int = 10_000,
        encryption_key: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        self.encryption_key = encryption_key
        self.memory_limit = memory_limit
        self.threads = threads
        self.timeout_s = timeout_s
        self.max_result_rows = max_result_rows
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._digests: dict[str, str] = {}  # the open reader's tables (schema_digest)
        self._gate = threading.Condition()
        self._active = 0
        self._writing = False
        self._watchdog = Watchdog()  # interrupts a query at its timeout

    @classmethod
    def from_settings(cls, settings: Settings, encryption_key: bytes | None = None) -> Enclave:
        return cls(
            settings.enclave_path,
            memory_limit=settings.memory_limit,
            threads=settings.threads,
            timeout_s=settings.query_timeout_s,
            max_result_rows=settings.max_result_rows,
            encryption_key=encryption_key,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def create(self) -> None:
        """Create the database file if it does not exist yet."""
        if self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.writer():
            pass

    def close(self) -> None:
        with self._gate:
            self._gate.wait_for(lambda: self._active == 0)
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._watchdog.close()

    def _connect(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        config = dict(LOCKDOWN, memory_limit=self.memory_limit, threads=self.threads)
        if read_only and not self.path.exists():
            raise EnclaveError(
                f"enclave file {self.path} does not exist: run `sandbox init`",
                rule="enclave.missing",
            )
        try:
            con = open_connection(
                self.path, read_only=read_only, config=config, key=self.encryption_key
            )
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise EnclaveBusy(
                    "the enclave file is in use by another process (a running server?); "
                    "stop it or register through its API",
                    rule="enclave.locked",
                ) from None
            raise EnclaveError(
                f"the enclave file {self.path.name} cannot be opened (corrupt or unreadable)",
                rule="enclave.open",
            ) from None
        except duckdb.Error:
            raise EnclaveError(
                f"the enclave file {self.path.name} cannot be opened (corrupt or unreadable)",
                rule="enclave.open",
            ) from None
        con.execute("SET lock_configuration = true")
        return con

    # -- queries ---------------------------------------------------------------------------

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the locked read-only connection (for this thread, this query)."""
        with self._gate:
            self._gate.wait_for(lambda: not self._writing)
            if self._reader is None:
                self._reader = self._connect(read_only=True)
                self._digests = {}
            cur = cursor_of(self._reader, self.encryption_key)
            self._active += 1
        try:
            yield cur
        finally:
            cur.close()
            with self._gate:
                self._active -= 1
                self._gate.notify_all()

    def query(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        timeout_s: float | None = None,
        max_rows: int | None = None,
        before: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> pa.Table:
        """Run ``sql`` in the enclave; interrupt after the timeout; refuse oversized results.

        ``before``: called with the cursor once it is held and before ``sql`` runs; no
        load swaps a table while a cursor is held (a writer waits for running queries),
        so what it checks on it (a table's columns, a dataset's version) holds for the
        whole run.  What it raises, propagates.
        """
        limit = self.max_result_rows if max_rows is None else max_rows
        seconds = self.timeout_s if timeout_s is None else timeout_s
        with self.cursor() as cur:
            deadline = self._watchdog.arm(seconds, cur.interrupt)
            try:
                if before is not None:  # its own DuckDB errors are the run's (limits)
                    before(cur)
                relation = cur.sql(sql, params=list(params) if params else None)
                if relation is None:  # a statement without a result
                    return pa.table({})
                reader = relation.to_arrow_reader(_BATCH_ROWS)
                batches: list[pa.RecordBatch] = []
                rows = 0
                for batch in reader:
                    rows += batch.num_rows
                    if rows > limit:
                        raise ResultTooLarge(
                            f"the result has more than {counted(limit, 'row')}",
                            rule="enclave.max_result_rows",
                        )
                    batches.append(batch)
                return pa.Table.from_batches(batches, schema=reader.schema)
            except duckdb.InterruptException:
                raise limits_failure() from None
            except duckdb.PermissionException:
                raise Forbidden(
                    "the enclave does not permit this operation", rule="enclave.lockdown"
                ) from None
            except (
                duckdb.BinderException,
                duckdb.ParserException,
                duckdb.CatalogException,
            ) as exc:
                # Raised while binding, before any row is read: a property of the query and
                # the schema (a type mismatch, an unknown overload), never of the data.
                raise QueryRefused(
                    f"the query does not type-check in the enclave ({type(exc).__name__}): "
                    "check the argument types of its functions and operators",
                    rule="enclave.bind",
                ) from None
            except duckdb.Error:
                # Whether a run times out, runs out of memory or fails on a value can
                # depend on the rows (a string that grows iff one row matches): one
                # message for all, never the exception's kind or text.
                raise limits_failure() from None
            finally:
                deadline.disarm()

    def schema_digest(self, cursor: duckdb.DuckDBPyConnection, dataset_id: str) -> str:
        """``schema_sha256`` of a dataset's table as ``cursor`` (a cursor of the open
        reader, held) sees it: read on it once per reader connection.  The file does not
        change under an open reader: a write in this process closes the reader first, and
        DuckDB lets no other process write while one reads (a server's other processes
        ask this one to close it first: :class:`~sandbox.enclave.shared.SharedEnclave`).
        """
        found = self._digests.get(dataset_id)
        if found is None:
            found = self._digests[dataset_id] = table_schema_sha256(cursor, dataset_id)
        return found

    # -- loads -----------------------------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An exclusive read-write connection, locked down like the reader.

        Waits for running queries, closes the reader, and reopens nothing: the
        next query reopens the reader and sees the committed state.
        """
        with self._gate:
            self._gate.wait_for(lambda: self._active == 0 and not self._writing)
            self._writing = True
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = self._connect(read_only=False)
            try:
                yield con
            finally:
                con.close()
        finally:
            with self._gate:
                self._writing = False
                self._gate.notify_all()
