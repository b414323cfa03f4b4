"""The PostgreSQL connector against a real server (started by the pg_server fixture)."""

from __future__ import annotations

import hashlib

import psycopg
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from connectors.postgres import PostgresSource, redact_url
from sandbox.core.errors import ConnectorError
from tests.connectors.helpers import visits_spec


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def source_db(pg_url: str) -> str:
    with psycopg.connect(_libpq(pg_url), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA clinic")
        conn.execute(
            "CREATE TABLE clinic.visits (person_id text, district text, amount double precision)"
        )
        with conn.cursor().copy("COPY clinic.visits FROM STDIN") as copy:
            for i in range(500):
                copy.write_row((f"P{i:05d}", f"D{i % 7 + 1:02d}", float(i)))
    return _libpq(pg_url)


def test_table_loads_with_digest_of_loaded_batches(platform, source_db: str) -> None:
    reg = platform.register(visits_spec(), PostgresSource(source_db, table="clinic.visits"))
    assert reg.record.row_count == 500
    assert reg.record.connector == "postgresql"
    assert reg.record.source_uri.endswith("#table=clinic.visits")
    total = platform.enclave.query("SELECT sum(amount) FROM health.visits").column(0)[0].as_py()
    assert total == sum(range(500))
    assert len(reg.record.source_sha256) == 64


def test_query_loads(platform, source_db: str) -> None:
    source = PostgresSource(source_db, query="SELECT * FROM clinic.visits WHERE amount < 100")
    reg = platform.register(visits_spec(), source)
    assert reg.record.row_count == 100
    assert "#query=" in reg.record.source_uri


def test_same_rows_same_digest(platform, source_db: str) -> None:
    query = "SELECT * FROM clinic.visits ORDER BY person_id"
    first = platform.register(visits_spec(), PostgresSource(source_db, query=query))
    second = platform.register(visits_spec(), PostgresSource(source_db, query=query))
    assert first.record.source_sha256 == second.record.source_sha256


def test_session_is_read_only(platform, source_db: str) -> None:
    source = PostgresSource(
        source_db, query="WITH d AS (DELETE FROM clinic.visits RETURNING *) SELECT * FROM d"
    )
    with pytest.raises(ConnectorError) as info:
        platform.register(visits_spec(), source)
    assert info.value.rule == "connector.postgresql"
    with psycopg.connect(source_db) as conn:
        assert conn.execute("SELECT count(*) FROM clinic.visits").fetchone() == (500,)
    assert not platform.catalog.exists("health.visits")


def test_missing_table_is_a_clear_error_and_atomic(platform, source_db: str) -> None:
    platform.register(visits_spec(), PostgresSource(source_db, table="clinic.visits"))
    with pytest.raises(ConnectorError, match="PostgreSQL source failed"):
        platform.register(visits_spec(), PostgresSource(source_db, table="clinic.absent"))
    assert platform.catalog.get("health.visits").version == 1
    count = platform.enclave.query("SELECT count(*) FROM health.visits").column(0)[0].as_py()
    assert count == 500


@pytest.mark.parametrize("table", ["clinic.visits; DROP TABLE x", 'a"b', "a.b.c", ""])
def test_table_names_are_validated(platform, source_db: str, table: str) -> None:
    with pytest.raises(ConnectorError):
        platform.register(visits_spec(), PostgresSource(source_db, table=table))


def test_exactly_one_of_table_or_query(platform, source_db: str) -> None:
    with pytest.raises(ConnectorError, match="exactly one"):
        platform.register(visits_spec(), PostgresSource(source_db))


def test_password_is_redacted() -> None:
    assert redact_url("postgresql://bob:hunter2@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact_url("postgresql://bob@db/x") == "postgresql://bob@db/x"


def test_digest_is_arrow_ipc_stream_of_rows() -> None:
    # The documented digest: SHA-256 of the Arrow IPC stream of the loaded batches.
    table = pa.table({"a": [1, 2]})
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)
    assert len(hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()) == 64


def _prepare_refusal(source: PostgresSource, tmp_path, limits) -> ConnectorError:  # type: ignore[no-untyped-def]
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(ConnectorError) as info:
        source.prepare(workdir, limits)
    assert not list(workdir.iterdir()), "the child's files are removed"
    return info.value


def test_rows_are_read_in_the_bounded_child(source_db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from connectors.limits import IngestLimits

    refused = _prepare_refusal(
        PostgresSource(source_db, table="clinic.visits"), tmp_path, IngestLimits(max_rows=100)
    )
    assert refused.rule == "ingest.failed"
    assert refused.message.startswith("ingest.failed: row count above 100 (ingest_max_rows)")


def test_a_slow_source_is_stopped_by_the_ingest_timeout(source_db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from connectors.limits import IngestLimits

    slow = PostgresSource(source_db, query="SELECT pg_sleep(60), * FROM clinic.visits")
    refused = _prepare_refusal(slow, tmp_path, IngestLimits(timeout_s=1))
    assert refused.message.startswith("ingest.failed: timed out after 1 s (ingest_timeout_s)")


def test_the_finished_file_is_what_is_loaded(source_db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from connectors.limits import IngestLimits

    workdir = tmp_path / "work"
    workdir.mkdir()
    finished = PostgresSource(source_db, table="clinic.visits").prepare(workdir, IngestLimits())
    assert finished.rows == 500 and finished.path.parent == workdir
    table = ipc.open_file(pa.memory_map(str(finished.path))).read_all()
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)
    # The digest is of the Arrow IPC stream of the batches read (here: the same batches).
    assert finished.loaded.sha256 == hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
