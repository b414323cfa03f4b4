"""PostgreSQL connector: a table or a query, read through ADBC straight into Arrow.

The session is opened with ``default_transaction_read_only=on`` so a bureau's
query can never change its own database.  The recorded source digest is the
SHA-256 of the Arrow IPC stream of exactly the batches that were loaded, and
the recorded URI carries no password.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc

from connectors.base import HashingSink, LoadedSource, load_arrow
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


def _read_only_url(url: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-c%20default_transaction_read_only%3Don"


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

    def load_into(self, con: duckdb.DuckDBPyConnection, target: str) -> LoadedSource:
        try:
            import adbc_driver_manager
            import adbc_driver_postgresql.dbapi as pg
        except ImportError:  # the core install has no PostgreSQL drivers
            raise ConnectorError(
                "PostgreSQL sources need the postgres extra: pip install 'sandbox[postgres]'",
                rule="connector.postgresql.extra",
            ) from None

        sql = self._sql()
        url = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
        sink = HashingSink()
        try:
            with pg.connect(_read_only_url(url)) as conn, conn.cursor() as cur:
                cur.execute(sql)
                upstream = cur.fetch_record_batch()
                writer = ipc.new_stream(pa.PythonFile(sink, mode="w"), upstream.schema)

                def batches():  # type: ignore[no-untyped-def]
                    for batch in upstream:
                        writer.write_batch(batch)
                        yield batch

                reader = pa.RecordBatchReader.from_batches(upstream.schema, batches())
                load_arrow(con, target, reader, what="postgresql")
                writer.close()
        except adbc_driver_manager.Error as exc:
            state = getattr(exc, "sqlstate", None) or type(exc).__name__
            raise ConnectorError(
                f"PostgreSQL source failed ({state})", rule="connector.postgresql"
            ) from None
        where = redact_url(url)
        query_digest = hashlib.sha256(sql.encode()).hexdigest()[:16]
        uri = f"{where}#table={self.table}" if self.table else f"{where}#query={query_digest}"
        return LoadedSource(connector="postgresql", uri=uri, sha256=sink.hash.hexdigest())
