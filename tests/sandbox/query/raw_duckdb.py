"""Queries run side by side in raw DuckDB over one throw-away table ``t``: how the tests
of equivalent forms (normalize, measure_terms, comoments, projecting_source) compare the
query as written with the query as the guard reads it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb


def answers(
    create: str, rows: Sequence[tuple[Any, ...]], *queries: str
) -> list[tuple[list[str], list[tuple[Any, ...]]]]:
    """Each query's (column names, rows) over ``t`` made by ``create`` and filled with ``rows``."""
    con = duckdb.connect()
    try:
        con.execute(create)
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO t VALUES ({marks})", rows)
        out = []
        for sql in queries:
            relation = con.sql(sql)
            out.append((relation.columns, relation.fetchall()))
        return out
    finally:
        con.close()
