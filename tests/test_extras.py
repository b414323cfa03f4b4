"""Without an extra (pyproject.toml), its commands say which extra to install.

The core install is the CLI, local queries and ``audit verify``; the server and the
PostgreSQL drivers are extras. A missing module is simulated with ``sys.modules[name]
= None``, which makes both ``import name`` and ``find_spec(name)`` fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

from connectors.postgres import PostgresSource
from sandbox.cli.serve import serve_app
from sandbox.core.errors import ConnectorError, InvalidInput
from sandbox.core.settings import load_settings


@pytest.mark.parametrize("missing", ["uvicorn", "fastapi", "prometheus_client"])
def test_serve_without_the_server_extra(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    settings = load_settings({"SANDBOX_HOME": str(tmp_path / "home")})
    with pytest.raises(InvalidInput) as info:
        serve_app(settings, host=None, port=None, workers=None)
    assert info.value.rule == "cli.server_extra"
    assert "pip install 'sandbox[server]'" in info.value.message
    assert not (tmp_path / "home").exists()  # refused before preparing the home


def test_postgres_source_without_the_postgres_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql", None)
    source = PostgresSource("postgresql://u@127.0.0.1:9/db", table="public.visits")
    with pytest.raises(ConnectorError) as info:
        source.load_into(duckdb.connect(), "staged")
    assert info.value.rule == "connector.postgresql.extra"
    assert "pip install 'sandbox[postgres]'" in info.value.message
