"""Classification files are validated with errors that name the column and the problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.core.classification import (
    Level,
    Role,
    parse_classification,
    parse_dataset_id,
    validate_against_schema,
)
from sandbox.core.errors import ClassificationError
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec

BASE = """
[dataset]
id = "health.visits"
title = "Visits"
entity_key = "person_id"

[columns.person_id]
level = "L3"
role = "identifier"

[columns.age]
level = "L2"
role = "quasi"
generalize = { band = 10 }

[columns.amount]
level = "L2"
role = "measure"
bounds = [0, 1000]
"""

SCHEMA = {"person_id": "VARCHAR", "age": "INTEGER", "amount": "DECIMAL(12,2)"}


def test_valid_file_parses() -> None:
    spec = parse_classification(BASE)
    assert spec.id == "health.visits" and spec.domain == "health" and spec.table == "visits"
    assert spec.column("AGE").role is Role.QUASI  # case-insensitive lookup
    assert spec.column("amount").bounds == (0.0, 1000.0)
    typed = validate_against_schema(spec, SCHEMA)
    assert typed.column("amount").type == "DECIMAL(12,2)"


@pytest.mark.parametrize("dataset_id", DEMO_DATASETS)
def test_demo_classifications_are_valid(dataset_id: str) -> None:
    spec = demo_spec(dataset_id)
    assert spec.id == dataset_id
    assert spec.column(spec.entity_key).role is Role.IDENTIFIER


def test_demo_claims_matches_the_agreed_classification() -> None:
    spec = demo_spec("health.claims")
    assert spec.column("id_number").level is Level.L4
    assert spec.column("diagnosis_code").role is Role.SENSITIVE
    assert spec.column("age").generalize is not None
    assert spec.column("age").generalize.width == 10
    assert spec.column("claim_amount").bounds == (0.0, 200000.0)
    market = demo_spec("market.enterprises")
    assert market.column("credit_code").joinable == ("hrss.social_insurance.credit_code",)


def _replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


BAD_FILES = {
    "measure without bounds": (_replace("bounds = [0, 1000]\n", ""), "needs clamping bounds"),
    "inverted bounds": (_replace("[0, 1000]", "[1000, 0]"), "low < high"),
    "bounds on identifier": (
        _replace('role = "identifier"\n', 'role = "identifier"\nbounds = [0, 1]\n'),
        "bounds apply to measures only",
    ),
    "unknown level": (_replace('level = "L3"', 'level = "L7"'), "level must be one of"),
    "unknown role": (_replace('role = "identifier"', 'role = "secret"'), "role must be one of"),
    "unknown key": (
        _replace('role = "identifier"\n', 'role = "identifier"\ncolour = "red"\n'),
        "unknown keys ['colour']",
    ),
    "joinable without target": (
        _replace('role = "identifier"\n', 'role = "identifier"\njoinable = []\n'),
        "declared joinable without a target",
    ),
    "malformed join target": (
        _replace('role = "identifier"\n', 'role = "identifier"\njoinable = ["market"]\n'),
        "is not 'domain.table.column'",
    ),
    "generalize on a measure": (
        _replace("bounds = [0, 1000]\n", "bounds = [0, 1000]\ngeneralize = { band = 5 }\n"),
        "generalize applies to quasi-identifiers only",
    ),
    "bad generalisation": (_replace("{ band = 10 }", "{ band = -1 }"), "generalize must be"),
    "entity key missing": (
        _replace('entity_key = "person_id"', 'entity_key = "nobody"'),
        "is not a classified column",
    ),
    "entity key not identifier": (
        _replace('entity_key = "person_id"', 'entity_key = "age"'),
        "must have role 'identifier'",
    ),
    "bad dataset id": (_replace('"health.visits"', '"Health Visits"'), "domain.table"),
    "not toml": ("[dataset\nid=", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_invalid_files_are_refused_with_a_clear_error(case: str) -> None:
    text, expected = BAD_FILES[case]
    with pytest.raises(ClassificationError) as info:
        parse_classification(text, source_name="visits.toml")
    assert expected in str(info.value)
    assert "visits.toml" in str(info.value)


def test_l4_column_cannot_be_joinable() -> None:
    text = _replace(
        '[columns.person_id]\nlevel = "L3"\nrole = "identifier"\n',
        '[columns.person_id]\nlevel = "L4"\nrole = "identifier"\njoinable = ["a.b.c"]\n',
    )
    with pytest.raises(ClassificationError, match="L4 column can never be a join key"):
        parse_classification(text)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({**SCHEMA, "extra": "VARCHAR"}, "column 'extra' is in the data but not classified"),
        ({"person_id": "VARCHAR", "amount": "DOUBLE"}, "column 'age' is classified but not in"),
        ({**SCHEMA, "amount": "VARCHAR"}, "is a measure but its type VARCHAR is not numeric"),
        ({**SCHEMA, "age": "VARCHAR"}, "band generalisation needs a numeric type"),
    ],
)
def test_schema_mismatch_is_refused(schema: dict[str, str], expected: str) -> None:
    with pytest.raises(ClassificationError) as info:
        validate_against_schema(parse_classification(BASE), schema)
    assert expected in str(info.value)
    assert info.value.rule == "classification.schema_mismatch"


def test_all_problems_are_reported_together() -> None:
    text = _replace("bounds = [0, 1000]\n", "").replace('level = "L3"', 'level = "L9"')
    with pytest.raises(ClassificationError) as info:
        parse_classification(text)
    assert "needs clamping bounds" in str(info.value)
    assert "level must be one of" in str(info.value)


@given(st.one_of(st.text(max_size=40), st.sampled_from(["a.b\n", "a.b.c", "1a.b", "a.b"])))
def test_dataset_id_parser_accepts_only_domain_dot_table(text: str) -> None:
    try:
        domain, table = parse_dataset_id(text)
    except ClassificationError:
        return
    assert f"{domain}.{table}" == text
    assert domain.isascii() and table.isascii()
    assert '"' not in text and " " not in text
