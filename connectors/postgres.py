"""PostgreSQL connector: a table or a query, read through ADBC straight into Arrow.

The read happens in the same confined child as a file's parse
(:mod:`connectors.convert`, format ``postgresql``), before the enclave's writer is
taken: the child streams the result into a finished Arrow IPC file within the
``ingest_*`` limits (rows, decoded bytes, CPU and wall-clock time, memory), and only
the swap-in of that file holds the writer (``sandbox/enclave/registry.py``).  The URL
reaches the child on its stdin, never on a command line, and the child sees none of
the server's environment beyond libpq's own variables.

The session is opened with ``default_transaction_read_only=on`` so a bureau's
query can never change its own database.  The recorded source digest is the
SHA-256 of the Arrow IPC stream of exactly the batches that were loaded, and
the recorded URI carries no password.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import duckdb

from connectors.base import LoadedSource
from connectors.convert import OUTPUT
from connectors.files import FinishedFile
from connectors.isolation import LIBPQ_ENVIRONMENT, run_isolated
from connectors.limits import IngestLimits
from sandbox.core.errors import ConnectorError

__all__ = ["PostgresSource", "redact_url"]

_QUALIFIED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def redact_url(url: str) -> str:
    """The URL without its password (for provenance and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


@dataclass(frozen=True)
class PostgresSource:
    """``url`` is a libpq URL (``postgresql://user@host:port/db``); give a table or a query."""

    url: str
    table: str | None = None
    query: str | None = None
    connector: str = "postgresql"

    def _sql(self) -> str:
        if (self.table is None) == (self.query is None):
            raise ConnectorError(
                "give exactly one of a table or a query", rule="connector.postgresql.args"
            )
        if self.table is not None:
            if not _QUALIFIED.fullmatch(self.table):
                raise ConnectorError(
                    "the table must be 'name' or 'schema.name'", rule="connector.postgresql.args"
                )
            return "SELECT * FROM " + ".".join(f'"{p}"' for p in self.table.split("."))
        return str(self.query)

    def _libpq_url(self) -> str:
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)

    def uri(self, sql: str) -> str:
        """Provenance: where (no password) and what (the table, or a digest of the query)."""
        where = redact_url(self._libpq_url())
        if self.table:
            return f"{where}#table={self.table}"
        return f"{where}#query={hashlib.sha256(sql.encode()).hexdigest()[:16]}"

    def prepare(self, workdir: Path, limits: IngestLimits) -> FinishedFile:
        """Stream the rows into a finished Arrow file in a confined child (no enclave lock)."""
        if importlib.util.find_spec("adbc_driver_postgresql") is None:
            # Said here, before a child starts, in the same words the child would use.
            raise ConnectorError(
                "PostgreSQL sources need the postgres extra: pip install 'sandbox[postgres]'",
                rule="connector.postgresql.extra",
            )
        sql = self._sql()
        output = workdir / OUTPUT
        job = {"format": "postgresql", "url": self._libpq_url(), "sql": sql}
        verdict = run_isolated(
            job, workdir=workdir, output=output, limits=limits, environment=LIBPQ_ENVIRONMENT
        )
        loaded = LoadedSource(connector="postgresql", uri=self.uri(sql), sha256=verdict["sha256"])
        finished = FinishedFile(output, loaded, int(verdict["rows"]))
        finished.check(limits)
        return finished

    def load_into(self, con: duckdb.DuckDBPyConnection, target: str) -> LoadedSource:
        """Prepare (default limits, a private work directory) and load in one step; the
        registry calls the two apart, so that only the load holds the writer."""
        workdir = Path(tempfile.mkdtemp(prefix="sandbox-pg-"))  # mode 0700
        try:
            return self.prepare(workdir, IngestLimits()).load_into(con, target)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
