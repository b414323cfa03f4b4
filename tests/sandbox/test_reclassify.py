"""A reclassification and a registration of the same dataset, at the same time.

The reclassification reads the table's columns, validates the new classification
against them and writes a new version; a registration swapping in a table whose column
types differ must not land in between, or the new version would describe columns the
table no longer has (a stale ``schema_sha256``, types a plan would trust).  The
reclassification holds an enclave cursor throughout, and the registration's writer
waits for it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from connectors.files import FileSource
from policies import Actor
from sandbox.core.classification import parse_classification
from sandbox.enclave.catalog import table_schema_sha256
from sandbox.platform import Platform

FIRMS = """
[dataset]
id = "trade.firms"
entity_key = "code"
one_row_per_entity = true

[columns.code]
level = "L2"
role = "identifier"

[columns.founded]
level = "L1"
role = "dimension"
"""


def _csv(path: Path, founded: list[str]) -> Path:
    lines = ["code,founded", *(f"F{i:04d},{year}" for i, year in enumerate(founded))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_registration_waits_for_a_reclassification_in_progress(
    platform: Platform, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import sandbox.reclassify as module

    spec = parse_classification(FIRMS)
    staging = platform.settings.staging_dir
    platform.register(spec, FileSource(_csv(tmp_path / "a.csv", ["1999"] * 30), staging))
    # The next file reads one founding year as text: DuckDB infers VARCHAR for the column.
    changed = _csv(tmp_path / "b.csv", ["1999"] * 29 + ["unknown"])

    validated, go = threading.Event(), threading.Event()
    original = module.validate_against_schema

    def paused(spec, schema):  # type: ignore[no-untyped-def]
        typed = original(spec, schema)
        validated.set()
        assert go.wait(30)
        return typed

    monkeypatch.setattr(module, "validate_against_schema", paused)
    failures: list[BaseException] = []

    def run(target) -> threading.Thread:  # type: ignore[no-untyped-def]
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # reported below
                failures.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    revised = parse_classification(FIRMS.replace('level = "L1"', 'level = "L2"'))
    reclassifying = run(lambda: module.reclassify(platform, revised, Actor.host("tests")))
    assert validated.wait(30)
    registering = run(lambda: platform.register(spec, FileSource(changed, staging)))
    registering.join(1.0)
    assert registering.is_alive()  # its writer waits for the reclassification's cursor
    go.set()
    reclassifying.join(30)
    registering.join(30)
    assert not failures, failures
    latest = platform.catalog.get("trade.firms")
    assert latest.version == 3  # 2: the reclassification; 3: the registration after it
    with platform.enclave.cursor() as cur:
        assert latest.schema_sha256 == table_schema_sha256(cur, "trade.firms")


def test_a_revision_reviewed_against_an_older_version_is_refused(
    platform: Platform, tmp_path: Path
) -> None:
    """The registration procedure passes the version a revision was reviewed against;
    checked under the reclassification's cursor, a version registered since refuses it."""
    import pytest

    from sandbox.core.errors import Conflict
    from sandbox.reclassify import reclassify

    spec = parse_classification(FIRMS)
    staging = platform.settings.staging_dir
    platform.register(spec, FileSource(_csv(tmp_path / "a.csv", ["1999"] * 30), staging))
    platform.register(spec, FileSource(_csv(tmp_path / "b.csv", ["2001"] * 30), staging))
    revised = parse_classification(FIRMS.replace('level = "L1"', 'level = "L2"'))
    with pytest.raises(Conflict) as refused:
        reclassify(platform, revised, Actor.host("tests"), expected_version=1)
    assert refused.value.rule == "registration.source_changed"
    assert platform.catalog.get("trade.firms").version == 2
    done = reclassify(platform, revised, Actor.host("tests"), expected_version=2)
    assert done.record.version == 3
