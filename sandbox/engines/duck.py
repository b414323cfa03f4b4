"""The DuckDB engine: the locked enclave file (:class:`sandbox.enclave.enclave.Enclave`).

The AST is rendered to DuckDB's dialect and run by :meth:`Enclave.query` under the
enclave's own limits (lockdown, timeout, rows cap, one failure message).
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sandbox.enclave.enclave import Enclave

__all__ = ["DuckDBEngine"]


class DuckDBEngine:
    """:class:`~sandbox.engines.base.Engine` over the enclave file."""

    name = "duckdb"

    def __init__(self, enclave: Enclave) -> None:
        self.enclave = enclave

    def run(self, query: exp.Expr, *, max_rows: int | None) -> pa.Table:
        return self.enclave.query(query.sql(dialect="duckdb"), max_rows=max_rows)

    def close(self) -> None:
        """The enclave belongs to the platform, which closes it."""
