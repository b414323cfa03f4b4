"""``[contribution]``: C and G declared by the data owner, validated with named keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.core.classification import Contribution, parse_classification
from sandbox.core.classification_file import MAX_CONTRIBUTION
from sandbox.core.errors import ClassificationError
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec

BASE = """
[dataset]
id = "health.visits"
entity_key = "person_id"

[columns.person_id]
level = "L3"
role = "identifier"

[columns.amount]
level = "L2"
role = "measure"
bounds = [0, 1000]
"""

DEFAULT = Contribution(2, 3)


def _with(section: str) -> str:
    return BASE + "\n[contribution]\n" + section


def test_declared_bounds_are_read_and_survive_the_stored_form() -> None:
    spec = parse_classification(_with("max_rows_per_entity = 1\nmax_groups_per_entity = 4\n"))
    assert spec.contribution == Contribution(1, 4)
    assert spec.contribution_or(DEFAULT) == Contribution(1, 4)
    assert spec.to_dict()["contribution"] == {"max_rows_per_entity": 1, "max_groups_per_entity": 4}
    stored = parse_classification(spec.to_dict())
    assert stored == spec and stored.sha256() == spec.sha256()


def test_without_the_section_the_platform_default_applies() -> None:
    spec = parse_classification(BASE)
    assert spec.contribution is None and spec.contribution_or(DEFAULT) == DEFAULT


@pytest.mark.parametrize(
    ("section", "problems"),
    [
        (
            "max_rows_per_entity = 0\nmax_groups_per_entity = 2\n",
            [
                f"contribution.max_rows_per_entity: max_rows_per_entity must be between 1 and "
                f"{MAX_CONTRIBUTION}"
            ],
        ),
        (
            "max_rows_per_entity = 2.5\nmax_groups_per_entity = true\n",
            [
                "contribution.max_rows_per_entity: max_rows_per_entity must be a whole number",
                "contribution.max_groups_per_entity: max_groups_per_entity must be a whole number",
            ],
        ),
        (
            "max_rows_per_entity = 3\n",
            ["contribution.max_groups_per_entity: is required"],
        ),
        (
            "max_rows_per_entity = 3\nmax_groups_per_entity = 1\nmax_rows = 4\n",
            ["contribution: unknown keys ['max_rows']"],
        ),
        (
            'max_rows_per_entity = "3"\nmax_groups_per_entity = 1001\n',
            [
                "contribution.max_rows_per_entity: max_rows_per_entity must be a whole number",
                "contribution.max_groups_per_entity: max_groups_per_entity must be between 1 "
                f"and {MAX_CONTRIBUTION}",
            ],
        ),
    ],
)
def test_every_problem_is_named_by_its_key_never_its_value(
    section: str, problems: list[str]
) -> None:
    with pytest.raises(ClassificationError) as info:
        parse_classification(_with(section), source_name="visits.toml")
    assert info.value.rule == "classification.invalid"
    assert info.value.message == "visits.toml: " + "; ".join(problems)
    assert "2.5" not in info.value.message and "1001" not in info.value.message


def test_the_section_must_be_a_table() -> None:
    with pytest.raises(ClassificationError) as info:
        parse_classification({**parse_classification(BASE).to_dict(), "contribution": 3})
    assert "contribution: must be a table" in info.value.message


@given(
    st.integers(1, MAX_CONTRIBUTION),
    st.integers(1, MAX_CONTRIBUTION),
    st.none() | st.integers(1, 2 * MAX_CONTRIBUTION),
    st.none() | st.integers(1, 2 * MAX_CONTRIBUTION),
)
def test_narrowing_never_widens(c: int, g: int, c2: int | None, g2: int | None) -> None:
    narrowed = Contribution(c, g).narrowed(c2, g2)
    assert narrowed.max_rows_per_entity == min(c, c2 or c) <= c
    assert narrowed.max_groups_per_entity == min(g, g2 or g) <= g


@pytest.mark.parametrize("dataset_id", DEMO_DATASETS)
def test_every_demo_dataset_declares_its_bounds(dataset_id: str) -> None:
    contribution = demo_spec(dataset_id).contribution
    assert contribution is not None
    one_row_per_entity = dataset_id == "market.enterprises"
    assert (contribution == Contribution(1, 1)) is one_row_per_entity
