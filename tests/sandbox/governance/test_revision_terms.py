"""Which revisions of a classification only tighten it (take effect at once) and which
loosen it (the procedure with publicity): one row per field and direction."""

from __future__ import annotations

import pytest

from sandbox.core.classification import Contribution, DatasetSpec, parse_classification
from sandbox.governance.revision_terms import is_tightening, loosenings

DEFAULT = Contribution(6, 4)

HEAD = """
[dataset]
id = "health.visits"
title = "Visits"
entity_key = "person_id"
{dataset}

[columns.person_id]
level = "L3"
role = "identifier"

[columns.age]
{age}
{extra}
"""

AGE = 'level = "L2"\nrole = "quasi"\ngeneralize = { band = 10 }\nmeasure = { bounds = [0, 110] }'
DISTRICT = '[columns.district]\nlevel = "L1"\nrole = "dimension"'
JOIN = '\njoinable = ["market.shops.district"]'
DAY = 'level = "L2"\nrole = "quasi"\ngeneralize = { truncate = "month" }'


def spec(age: str = AGE, extra: str = "", dataset: str = "") -> DatasetSpec:
    return parse_classification(HEAD.format(age=age, extra=extra, dataset=dataset))


# (case, old, new, tightening): each field, each direction.
CASES: list[tuple[str, DatasetSpec, DatasetSpec, bool]] = [
    ("identical", spec(), spec(), True),
    ("title and description only", spec(), spec(dataset='description = "words"'), True),
    ("level raised", spec(), spec(AGE.replace('"L2"', '"L3"')), True),
    ("level lowered", spec(), spec(AGE.replace('"L2"', '"L1"')), False),
    ("role made identifier", spec(), spec('level = "L2"\nrole = "identifier"'), True),
    (
        "role quasi to dimension",
        spec('level = "L2"\nrole = "quasi"'),
        spec('level = "L2"\nrole = "dimension"'),
        False,
    ),
    (
        "role quasi to sensitive (not surely tighter: closed)",
        spec('level = "L2"\nrole = "quasi"'),
        spec('level = "L2"\nrole = "sensitive"'),
        False,
    ),
    ("band widened", spec(), spec(AGE.replace("band = 10", "band = 20")), True),
    (
        "band made exact-only",
        spec(),
        spec(AGE.replace("band = 10", "band = 10, exact_only = true")),
        False,
    ),
    (
        "band made binding under a budget too",
        spec(AGE.replace("band = 10", "band = 10, exact_only = true")),
        spec(),
        True,
    ),
    ("band narrowed", spec(), spec(AGE.replace("band = 10", "band = 5")), False),
    ("truncation coarser", spec(DAY), spec(DAY.replace("month", "year")), True),
    ("truncation finer", spec(DAY), spec(DAY.replace("month", "day")), False),
    ("truncation to week", spec(DAY), spec(DAY.replace("month", "week")), False),
    (
        "generalisation removed",
        spec(),
        spec(AGE.replace("generalize = { band = 10 }\n", "")),
        False,
    ),
    (
        "generalisation added",
        spec(AGE.replace("generalize = { band = 10 }\n", "")),
        spec(),
        True,
    ),
    ("bounds narrowed", spec(), spec(AGE.replace("[0, 110]", "[0, 100]")), True),
    ("bounds widened", spec(), spec(AGE.replace("[0, 110]", "[0, 120]")), False),
    ("bounds removed", spec(), spec(AGE.replace("\nmeasure = { bounds = [0, 110] }", "")), True),
    ("bounds added", spec(AGE.replace("\nmeasure = { bounds = [0, 110] }", "")), spec(), False),
    ("values_per_entity added", spec(), spec(AGE + "\nvalues_per_entity = 2"), True),
    (
        "values_per_entity lowered",
        spec(AGE + "\nvalues_per_entity = 3"),
        spec(AGE + "\nvalues_per_entity = 2"),
        True,
    ),
    (
        "values_per_entity raised",
        spec(AGE + "\nvalues_per_entity = 2"),
        spec(AGE + "\nvalues_per_entity = 3"),
        False,
    ),
    ("values_per_entity removed", spec(AGE + "\nvalues_per_entity = 2"), spec(), False),
    (
        "join partner removed",
        spec(extra=DISTRICT + JOIN),
        spec(extra=DISTRICT),
        True,
    ),
    (
        "join partner added",
        spec(extra=DISTRICT),
        spec(extra=DISTRICT + JOIN),
        False,
    ),
    (
        "declared values changed",
        spec(extra='[columns.sex]\nlevel = "L2"\nrole = "dimension"\nvalues = ["F", "M"]'),
        spec(extra='[columns.sex]\nlevel = "L2"\nrole = "dimension"\nvalues = ["F", "M", "X"]'),
        False,
    ),
    (
        "type declared (checked against the data, not here)",
        spec(AGE + '\ntype = "INTEGER"'),
        spec(AGE + '\ntype = "VARCHAR"'),
        True,
    ),
    ("column removed", spec(extra='[columns.d]\nlevel = "L1"\nrole = "dimension"'), spec(), True),
    ("column added", spec(), spec(extra='[columns.d]\nlevel = "L1"\nrole = "dimension"'), False),
    (
        "C and G lowered",
        spec(),
        spec(extra="[contribution]\nmax_rows_per_entity = 3\nmax_groups_per_entity = 2"),
        True,
    ),
    (
        "C raised over the default",
        spec(),
        spec(extra="[contribution]\nmax_rows_per_entity = 7\nmax_groups_per_entity = 4"),
        False,
    ),
    (
        "G raised",
        spec(extra="[contribution]\nmax_rows_per_entity = 3\nmax_groups_per_entity = 2"),
        spec(extra="[contribution]\nmax_rows_per_entity = 3\nmax_groups_per_entity = 3"),
        False,
    ),
    (
        "contribution removed (back to the larger default)",
        spec(extra="[contribution]\nmax_rows_per_entity = 3\nmax_groups_per_entity = 2"),
        spec(),
        False,
    ),
    ("one_row_per_entity changed", spec(), spec(dataset="one_row_per_entity = true"), False),
]


@pytest.mark.parametrize(("old", "new", "tight"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_is_tightening(old: DatasetSpec, new: DatasetSpec, tight: bool) -> None:
    assert is_tightening(old, new, DEFAULT) is tight
    # Every loosening is named, and a tightening names none.
    assert bool(loosenings(old, new, DEFAULT)) is not tight


def test_a_loosening_is_named_by_column_and_field_never_a_value() -> None:
    old, new = spec(), spec(AGE.replace('"L2"', '"L1"').replace("[0, 110]", "[0, 120]"))
    assert loosenings(old, new, DEFAULT) == [
        "column age: level lowered",
        "column age: bounds widened or added",
    ]


NEUTRAL = {
    "identical",
    "title and description only",
    "type declared (checked against the data, not here)",
}


def test_reversing_a_strict_tightening_loosens() -> None:
    """The opposite of each tightening above (but the neutral ones) is a loosening."""
    strict = [(o, n) for name, o, n, tight in CASES if tight and name not in NEUTRAL]
    assert len(strict) >= 10
    for old, new in strict:
        assert not is_tightening(new, old, DEFAULT), (old.to_dict(), new.to_dict())
