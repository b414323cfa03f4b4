"""The engine interface: one checked query (a sqlglot AST) in, one Arrow table out.

The query service hands an engine the guard's product only, the rewritten stats
query (``sandbox.query.rewrite``) as an AST, never the operator's text.  An engine
runs it under its deployment's limits (a timeout and a rows cap: a larger result is
refused, never truncated) and reports any failure while it read data as
:func:`sandbox.enclave.enclave.limits_failure`, the one error that says nothing
about why.

The engine of a query is its datasets' (``DatasetRecord.engine``); a query over
datasets on different engines is refused (``engine.mixed``): no engine reads
another's data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.enclave.catalog import DatasetRecord
from sandbox.enclave.registry import ENGINES

__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "engine_of"]

DEFAULT_ENGINE = ENGINES[0]  # the enclave file; registration's list names every engine


class Engine(Protocol):
    """Runs checked stats queries over one deployment's governed data."""

    @property
    def name(self) -> str:
        """``duckdb`` or ``spark``: what ``DatasetRecord.engine`` names."""
        ...

    def run(
        self,
        query: exp.Expr | str,
        *,
        max_rows: int | None,
        before: Callable[[Any], None] | None = None,
    ) -> pa.Table:
        """The rows of ``query`` (a single checked SELECT, as an AST or as its text in
        DuckDB's dialect, which an engine that needs the AST parses); more than
        ``max_rows`` (the engine's own limit if None) is
        :class:`~sandbox.core.errors.ResultTooLarge`.  ``before`` is called before any
        row is read, where the engine's view of the data no longer changes for the run,
        with the cursor the query will run on (DuckDB) or None (what it raises,
        propagates)."""
        ...

    def close(self) -> None:
        """Release what the engine holds (connections, a Spark session)."""
        ...


def engine_of(records: Iterable[DatasetRecord]) -> str:
    """The one engine every dataset of a query lives on; refused if they differ."""
    names = {record.engine or DEFAULT_ENGINE for record in records}
    if len(names) > 1:
        raise QueryRefused(
            "the query reads datasets held on different engines ("
            + ", ".join(sorted(names))
            + "); query each engine's datasets separately",
            rule="engine.mixed",
        )
    return names.pop() if names else DEFAULT_ENGINE
