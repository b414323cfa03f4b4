"""A generated entity key (``entity_key_generated``): an extract with no person number,
one row per person, numbered by the enclave at registration.

Real DuckDB through the platform's registration: the rows get 1, 2, … in the declared
key column, every row a distinct entity (the planner's one-row-per-entity fact holds),
the certificate binds the declaration; a source that already has the column, a key that
is not BIGINT and a joinable generated key are refused.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from connectors.files import FileSource
from sandbox.core.classification import parse_classification
from sandbox.core.errors import ClassificationError, ConnectorError
from sandbox.enclave.entity_rows import entity_is_row
from sandbox.platform import Platform

PERSONS = """
[dataset]
id = "survey.persons"
entity_key = "row_no"
entity_key_generated = true

[columns.row_no]
level = "L3"
role = "identifier"
{extra}

[columns.sex]
level = "L1"
role = "dimension"

[columns.income]
level = "L2"
role = "measure"
bounds = [0, 100000]
"""


def _csv(tmp: Path, rows: int = 300, **more: list[object]) -> Path:
    path = tmp / "persons.csv"
    columns: dict[str, list[object]] = {
        "sex": [("F", "M")[i % 2] for i in range(rows)],
        "income": [float(i * 100) for i in range(rows)],
        **more,
    }
    pacsv.write_csv(pa.table(columns), path)
    return path


def test_the_declaration_implies_one_row_per_entity_and_is_in_the_digest() -> None:
    spec = parse_classification(PERSONS.format(extra=""))
    assert spec.entity_key_generated and spec.one_row_per_entity
    assert spec.to_dict()["dataset"]["entity_key_generated"] is True
    plain = parse_classification(
        PERSONS.format(extra="").replace("entity_key_generated = true\n", "")
    )
    assert "entity_key_generated" not in plain.to_dict()["dataset"]
    assert plain.sha256() != spec.sha256()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ('type = "VARCHAR"', "a generated entity key is BIGINT"),
        ('joinable = ["survey.visits.row_no"]', "cannot be joinable"),
    ],
)
def test_a_generated_key_is_a_bigint_no_one_joins_on(extra: str, said: str) -> None:
    with pytest.raises(ClassificationError) as info:
        parse_classification(PERSONS.format(extra=extra))
    assert said in info.value.message


def test_registration_numbers_the_rows(platform: Platform, tmp_path: Path) -> None:
    spec = parse_classification(PERSONS.format(extra=""))
    reg = platform.register(spec, FileSource(_csv(tmp_path), platform.settings.staging_dir))
    assert reg.record.row_count == 300
    found = platform.enclave.query(
        "SELECT count(DISTINCT row_no), min(row_no), max(row_no), typeof(any_value(row_no)) "
        'FROM "survey"."persons"'
    ).to_pylist()[0]
    assert list(found.values()) == [300, 1, 300, "BIGINT"]
    assert entity_is_row(platform.enclave, reg.record.spec)
    assert reg.record.spec.column("row_no").type == "BIGINT"
    assert reg.record.spec.entity_key_generated
    assert reg.certificate["certificate"]["classification_sha256"] == reg.record.spec.sha256()


def test_a_source_with_the_column_already_is_refused_and_nothing_changes(
    platform: Platform, tmp_path: Path
) -> None:
    spec = parse_classification(PERSONS.format(extra=""))
    csv = _csv(tmp_path, 10, row_no=list(range(10)))
    with pytest.raises(ConnectorError) as info:
        platform.register(spec, FileSource(csv, platform.settings.staging_dir))
    assert info.value.rule == "registry.entity_key"
    assert "declare that column the entity key" in info.value.message
    tables = platform.enclave.query(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'survey'"
    ).to_pylist()[0]
    assert list(tables.values()) == [0]
