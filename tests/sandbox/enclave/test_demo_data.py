"""The demo generator is a staged source: it generates outside the enclave, then swaps in."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc

from connectors.base import StagedSource
from connectors.limits import IngestLimits
from sandbox.enclave.demo_data import GENERATORS, DemoSource


def test_generation_needs_no_enclave(tmp_path: Path) -> None:
    source = DemoSource("market.enterprises", 0.001)
    assert isinstance(source, StagedSource)  # the registry prepares it before the writer
    finished = source.prepare(tmp_path, IngestLimits())
    assert list(tmp_path.iterdir()) == [finished.path]  # nothing but the finished file
    table = ipc.open_file(pa.memory_map(str(finished.path))).read_all()
    expected = duckdb.sql(GENERATORS["market.enterprises"](0.001)).to_arrow_table()
    assert finished.rows == table.num_rows == expected.num_rows == 200
    assert table.equals(expected)
    assert finished.loaded.uri == "demo://market.enterprises?scale=0.001"


def test_generation_is_bounded_by_the_row_limit(tmp_path: Path) -> None:
    import pytest

    from sandbox.core.errors import ConnectorError

    with pytest.raises(ConnectorError) as info:
        DemoSource("market.enterprises", 0.001).prepare(tmp_path, IngestLimits(max_rows=10))
    assert info.value.rule == "ingest.failed"
