"""The Parquet warehouse's files, and registration's all-or-nothing around them."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.files import FileSource
from sandbox.core.classification import parse_classification
from sandbox.core.errors import SandboxError
from sandbox.core.settings import Settings
from sandbox.enclave import registry
from sandbox.enclave.encrypted import connect_home
from sandbox.enclave.warehouse import (
    STAGED_TTL_S,
    dataset_dir,
    parquet_files,
    publish,
    remove_version,
    version_row_count,
    write_staged,
)
from sandbox.platform import Platform
from sandbox.startup import check_enclave_contents

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DATASET = "health.visits"


def table(rows: int) -> pa.Table:
    return pa.table({"n": pa.array(range(rows), pa.int64()), "s": [f"r{i}" for i in range(rows)]})


def test_files_and_row_groups_are_bounded_and_hold_every_row(tmp_path: Path) -> None:
    data = table(2_500)
    staged = write_staged(
        tmp_path,
        DATASET,
        1,
        data.to_batches(max_chunksize=700),
        data.schema,
        rows_per_file=1_000,
        row_group_rows=300,
    )
    assert staged.parent == dataset_dir(tmp_path, DATASET, 1).parent
    assert staged.name.startswith(".v1.") and staged.name.endswith(".tmp")
    final = publish(staged, tmp_path, DATASET, 1)
    assert not staged.exists() and final == dataset_dir(tmp_path, DATASET, 1)
    files = parquet_files(final)
    metas = [pq.ParquetFile(f).metadata for f in files]
    assert [m.num_rows for m in metas] == [1_000, 1_000, 500]
    assert all(m.row_group(i).num_rows <= 300 for m in metas for i in range(m.num_row_groups))
    assert pq.read_table(final).equals(data)
    assert version_row_count(final) == 2_500
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    for directory in (tmp_path / "health", final.parent, final):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_an_empty_table_keeps_its_schema(tmp_path: Path) -> None:
    data = table(0)
    final = publish(write_staged(tmp_path, DATASET, 1, [], data.schema), tmp_path, DATASET, 1)
    assert version_row_count(final) == 0
    assert pq.read_table(final).schema.names == ["n", "s"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def batches() -> Iterator[pa.RecordBatch]:
        yield from table(10).to_batches()
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_staged(tmp_path, DATASET, 1, batches(), table(0).schema)
    assert list(dataset_dir(tmp_path, DATASET, 1).parent.iterdir()) == []


def test_leftovers_of_a_killed_registration_are_removed(tmp_path: Path) -> None:
    data = table(5)
    leftover = dataset_dir(tmp_path, DATASET, 2)
    leftover.mkdir(parents=True)
    (leftover / "part-00000.parquet").write_bytes(b"half")
    old_staged = leftover.parent / ".v1.0123456789ab.tmp"
    old_staged.mkdir()
    ancient = time.time() - STAGED_TTL_S - 60
    os.utime(old_staged, (ancient, ancient))
    staged = write_staged(tmp_path, DATASET, 2, data.to_batches(), data.schema)
    assert not old_staged.exists()  # swept
    publish(staged, tmp_path, DATASET, 2)  # replaces the directory no catalog named
    assert pq.read_table(leftover).equals(data)
    remove_version(tmp_path, DATASET, 2)
    remove_version(tmp_path, DATASET, 2)  # twice: nothing left to remove
    assert sorted(p.name for p in leftover.parent.iterdir()) == []


# -- registration ---------------------------------------------------------------------------


@pytest.fixture()
def platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform(Settings(home=tmp_path / "home", threads=2, memory_limit="1GB"))
    plat.init()
    yield plat
    plat.close()


def register(platform: Platform, engine: str) -> registry.Registration:
    spec = parse_classification((EXAMPLES / "visits.toml").read_text(), source_name="visits.toml")
    source = FileSource(EXAMPLES / "visits.csv", platform.settings.staging_dir, None)
    return platform.register(spec, source, engine=engine)


def enclave_tables(platform: Platform) -> set[str]:
    platform.enclave.close()
    con = connect_home(platform.settings)
    try:
        rows = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    finally:
        con.close()
    return {f"{schema}.{name}" for schema, name in rows}


@pytest.mark.parametrize("before", ["spark", "duckdb"])
def test_a_failure_after_the_warehouse_write_undoes_it(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, before: str
) -> None:
    """The Parquet directory is in place and the table dropped when the step after fails:
    the new directory goes, the previous version (in either engine) stays as it was."""
    register(platform, before)
    real = registry._move_to_warehouse

    def then_fail(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        assert dataset_dir(platform.settings.warehouse_dir, DATASET, 2).is_dir()
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(registry, "_move_to_warehouse", then_fail)
    with pytest.raises(SandboxError) as raised:
        register(platform, "spark")
    assert raised.value.rule == "registry.load"
    record = platform.catalog.get(DATASET)
    assert (record.version, record.engine) == (1, before)
    table_dir = dataset_dir(platform.settings.warehouse_dir, DATASET, 1).parent
    left = sorted(p.name for p in table_dir.iterdir()) if table_dir.exists() else []
    assert left == (["v1"] if before == "spark" else [])
    assert (DATASET in enclave_tables(platform)) == (before == "duckdb")
    check_enclave_contents(platform)  # the home still checks out


def test_startup_checks_the_warehouse_version(platform: Platform) -> None:
    register(platform, "spark")
    check_enclave_contents(platform)
    v1 = dataset_dir(platform.settings.warehouse_dir, DATASET, 1)
    part = parquet_files(v1)[0]
    pq.write_table(pq.read_table(part).slice(0, 10), part)  # rows lost
    with pytest.raises(SandboxError) as raised:
        check_enclave_contents(platform)
    assert raised.value.rule == "startup.warehouse" and "other rows" in raised.value.message
    part.unlink()
    with pytest.raises(SandboxError) as raised:
        check_enclave_contents(platform)
    assert raised.value.rule == "startup.warehouse" and "missing" in raised.value.message


def test_a_dataset_in_the_warehouse_is_not_reclassified_in_place(platform: Platform) -> None:
    from policies import Actor
    from sandbox.reclassify import reclassify

    reg = register(platform, "spark")
    with pytest.raises(SandboxError) as raised:
        reclassify(platform, reg.record.spec, Actor.host("tests"))
    assert raised.value.rule == "registry.engine"
    assert platform.catalog.get(DATASET).version == 1
