"""Fixtures shared by the query tests."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from sandbox.enclave.demo_data import GENERATORS

#: The demo deployment's scale (tests/conftest.py build_deployment).
DEMO_SCALE = 0.01


@pytest.fixture(scope="module")
def raw_demo() -> Iterator[duckdb.DuckDBPyConnection]:
    """The demo tables in a plain in-memory DuckDB: what a query means, ungoverned."""
    con = duckdb.connect()
    for dataset, generate in GENERATORS.items():
        schema, _ = dataset.split(".")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(f"CREATE TABLE {dataset} AS {generate(DEMO_SCALE)}")
    yield con
    con.close()
