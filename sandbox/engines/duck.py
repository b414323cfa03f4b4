"""The DuckDB engine: the locked enclave file (:class:`sandbox.enclave.enclave.Enclave`).

The stats query's DuckDB text (an AST is rendered to it) runs by :meth:`Enclave.query` under the
enclave's own limits (lockdown, timeout, rows cap, one failure message).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from sqlglot import exp

from sandbox.enclave.enclave import Enclave

__all__ = ["DuckDBEngine"]


class DuckDBEngine:
    """:class:`~sandbox.engines.base.Engine` over the enclave file."""

    name = "duckdb"

    def __init__(self, enclave: Enclave) -> None:
        self.enclave = enclave

    def run(
        self,
        query: exp.Expr | str,
        *,
        max_rows: int | None,
        before: Callable[[Any], None] | None = None,
    ) -> pa.Table:
        # The rewrite's text runs as it is: parsing and rendering it again would cost a
        # small query a millisecond or two and change nothing.
        sql = query if isinstance(query, str) else query.sql(dialect="duckdb")
        return self.enclave.query(sql, max_rows=max_rows, before=before)

    def close(self) -> None:
        """The enclave belongs to the platform, which closes it."""
