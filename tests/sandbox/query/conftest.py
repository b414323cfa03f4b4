"""Fixtures shared by the query tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from sandbox.enclave.demo_data import GENERATORS
from tests.conftest import build_deployment

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


@pytest.fixture(scope="module")
def demo_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A demo deployment (platform, tokens) of the module's own, closed after it."""
    platform, tokens = build_deployment(tmp_path_factory.mktemp("deployment") / "home")
    yield platform, tokens
    platform.close()
