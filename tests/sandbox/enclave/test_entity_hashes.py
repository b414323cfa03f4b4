"""Registration refuses a table two of whose entity keys share the caps' 64-bit hash.

A real collision of DuckDB's ``hash()`` takes about 2^32 keys to find, so the tests make
one with a weaker hash (``hash(x) % 2``) passed as the function the check uses.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from connectors.files import FileSource
from sandbox.core.classification import parse_classification
from sandbox.core.errors import InvalidInput
from sandbox.enclave import registry
from sandbox.enclave.entity_hashes import check_entity_hashes
from sandbox.platform import Platform

WEAK = "CREATE OR REPLACE TEMP MACRO weak(x) AS hash(x) % 2"


def _table(keys: list[str | None]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (person_id VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[k] for k in keys])
    con.execute(WEAK)
    return con


def test_distinct_keys_pass_and_a_collision_is_refused_naming_the_column_only() -> None:
    con = _table(["secret-a", "secret-b", "secret-c", None, None])
    check_entity_hashes(con, "t", "person_id")  # DuckDB's own hash: no collision here
    with pytest.raises(InvalidInput) as refused:
        check_entity_hashes(con, "t", "person_id", hash_function="weak")
    assert refused.value.rule == "registry.entity_hash"
    assert "person_id" in str(refused.value) and "secret" not in str(refused.value)


def test_nulls_and_repeated_keys_are_no_collision() -> None:
    con = _table(["a", "a", "a", None, None])  # one entity, its rows repeated, and NULLs
    check_entity_hashes(con, "t", "person_id", hash_function="weak")


FIRMS = """
[dataset]
id = "trade.firms"
entity_key = "code"

[columns.code]
level = "L2"
role = "identifier"

[columns.sector]
level = "L1"
role = "dimension"
"""


def test_a_registration_with_colliding_keys_is_refused_and_changes_nothing(
    platform: Platform, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    def weak(con, table, key):  # type: ignore[no-untyped-def]
        con.execute(WEAK)
        check_entity_hashes(con, table, key, hash_function="weak")

    csv = tmp_path / "firms.csv"
    csv.write_text("code,sector\n" + "".join(f"F{i},retail\n" for i in range(20)))
    monkeypatch.setattr(registry, "check_entity_hashes", weak)
    spec = parse_classification(FIRMS)
    with pytest.raises(InvalidInput) as refused:
        platform.register(spec, FileSource(csv, platform.settings.staging_dir))
    assert refused.value.rule == "registry.entity_hash"
    assert "trade.firms" not in {d.id for d in platform.catalog.list()}
    monkeypatch.undo()
    platform.register(spec, FileSource(csv, platform.settings.staging_dir))
    assert platform.catalog.get("trade.firms").row_count == 20


def _forget_checks(platform: Platform) -> None:
    """As a catalog written before registrations checked the hashes: nothing marked."""
    import sqlalchemy as sa

    from sandbox.core.db import datasets

    with platform.engine.begin() as conn:
        conn.execute(sa.update(datasets).values(entity_hashes_checked=False))


def test_startup_refuses_a_table_registered_before_the_check(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A table already in the enclave, its version never checked, is checked at the start."""
    from functools import partial

    from sandbox import startup
    from sandbox.core.errors import EnclaveError
    from tests.conftest import build_deployment

    platform, _tokens = build_deployment(tmp_path / "home")
    try:
        _forget_checks(platform)
        with platform.enclave.writer() as con:  # a persistent macro: the reader sees it
            con.execute("CREATE OR REPLACE MACRO weak(x) AS hash(x) % 2")
        monkeypatch.setattr(
            startup, "check_entity_hashes", partial(check_entity_hashes, hash_function="weak")
        )
        with pytest.raises(EnclaveError) as refused:
            startup.check_enclave_contents(platform)
        assert "entity keys share the 64-bit hash" in refused.value.message
        assert not any(d.entity_hashes_checked for d in platform.catalog.list())
    finally:
        platform.close()


def test_startup_checks_each_version_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Registration marks its version checked; a start checks only unmarked versions, once
    (the check reads the whole key column: seconds at 10 M rows, on every start)."""
    from sandbox import startup
    from tests.conftest import build_deployment

    platform, _tokens = build_deployment(tmp_path / "home")
    try:
        registered = platform.catalog.list()
        assert registered and all(d.entity_hashes_checked for d in registered)
        calls: list[str] = []

        def counted(con, table, key):  # type: ignore[no-untyped-def]
            calls.append(table)
            check_entity_hashes(con, table, key)

        monkeypatch.setattr(startup, "check_entity_hashes", counted)
        startup.check_enclave_contents(platform)
        assert calls == []  # every version was checked at its registration
        _forget_checks(platform)
        startup.check_enclave_contents(platform)
        assert len(calls) == len([d for d in registered if d.engine == "duckdb"])
        assert all(d.entity_hashes_checked for d in platform.catalog.list())
        calls.clear()
        startup.check_enclave_contents(platform)
        assert calls == []
    finally:
        platform.close()


FIRMS_BY_SECTOR = FIRMS.replace('entity_key = "code"', 'entity_key = "sector"').replace(
    'level = "L1"\nrole = "dimension"', 'level = "L2"\nrole = "identifier"'
)


def test_a_reclassification_naming_another_entity_key_checks_its_hashes(
    platform: Platform, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import sandbox.reclassify as module
    from policies import Actor

    csv = tmp_path / "firms.csv"
    csv.write_text("code,sector\n" + "".join(f"F{i},s{i % 7}\n" for i in range(20)))
    spec = parse_classification(FIRMS)
    platform.register(spec, FileSource(csv, platform.settings.staging_dir))
    calls: list[str] = []

    def weak(con, table, key):  # type: ignore[no-untyped-def]
        calls.append(key)
        con.execute(WEAK)
        check_entity_hashes(con, table, key, hash_function="weak")

    monkeypatch.setattr(module, "check_entity_hashes", weak)
    revised = parse_classification(FIRMS.replace('level = "L1"', 'level = "L2"'))
    assert module.reclassify(platform, revised, Actor.host("tests")).record.version == 2
    assert calls == []  # the same key, checked at registration: not read again
    with pytest.raises(InvalidInput) as refused:
        module.reclassify(platform, parse_classification(FIRMS_BY_SECTOR), Actor.host("tests"))
    assert refused.value.rule == "registry.entity_hash" and calls == ["sector"]
    assert "s1" not in str(refused.value)
    record = platform.catalog.get("trade.firms")
    assert (record.version, record.entity_key) == (2, "code")
