"""The portable cap hash: the MD5 of a length-prefixed canonical string, computed in SQL.

Its definition in Python (what both engines must compute) against DuckDB's evaluation of
``entity_caps.portable_hash``; Spark's is compared in ``test_equivalence.py``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import duckdb
import pytest

from sandbox.query.entity_caps import portable_hash


def canonical(values: list[object]) -> str:
    parts = []
    for value in values:
        if value is None:
            parts.append("n")
            continue
        if isinstance(value, datetime):
            text = str(int(value.replace(tzinfo=UTC).timestamp() * 1_000_000))
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        parts.append(f"{len(text)}:{text}")
    return hashlib.md5("".join(parts).encode()).hexdigest()


@pytest.mark.parametrize(
    "row",
    [
        ["D01", 7, datetime(2025, 3, 1, 8, 0)],
        [None, -12, datetime(1969, 12, 31, 23, 59, 59)],
        ["长安区", None, None],
        ["a:1", 0, datetime(2025, 1, 1)],
    ],
)
def test_duckdb_computes_the_definition(row: list[object]) -> None:
    sql = portable_hash([("a", "text"), ("b", "text"), ("c", "time")])
    con = duckdb.connect()
    got = con.execute(
        f"SELECT {sql} FROM (SELECT ?::VARCHAR AS a, ?::BIGINT AS b, ?::TIMESTAMP AS c)", row
    ).fetchone()
    assert got is not None and got[0] == canonical(row)


def test_the_canonical_string_is_a_prefix_code() -> None:
    # ('a:1', '') and ('a', ':1') would meet if values were only joined with a separator.
    assert canonical(["a:1", ""]) != canonical(["a", ":1"])
    assert canonical([None, "n"]) != canonical(["n", None])
