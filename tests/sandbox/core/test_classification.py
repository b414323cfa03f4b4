"""Classification files are validated with errors that name the column and the problem."""

from __future__ import annotations

import math
from pathlib import Path

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

ROOT = Path(__file__).resolve().parents[3]

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
    assert spec.column("claim_amount").bounds == (0.0, 13000.0)
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


# -- the file's structure: each problem names the file, the key's path and the reason ------

INVALID = "classification.invalid"
FINITE = "bounds must be finite numbers (inf, -inf and nan are refused)"

REFUSED = {
    "infinite upper bound": ("[0, 1000]", "[0, inf]", f"columns.amount.bounds: {FINITE}"),
    "infinite lower bound": ("[0, 1000]", "[-inf, 1000]", f"columns.amount.bounds: {FINITE}"),
    "nan bound": ("[0, 1000]", "[nan, 1000]", f"columns.amount.bounds: {FINITE}"),
    "inverted bounds": ("[0, 1000]", "[1000, 0]", "columns.amount.bounds: bounds need low < high"),
    "equal bounds": ("[0, 1000]", "[7, 7]", "columns.amount.bounds: bounds need low < high"),
    "one bound": (
        "[0, 1000]",
        "[0]",
        "columns.amount.bounds: bounds must be two numbers [low, high]",
    ),
    "bounds as strings": (
        "[0, 1000]",
        '["0", "1000"]',
        "columns.amount.bounds: bounds must be two numbers [low, high]",
    ),
    "a boolean bound": (
        "[0, 1000]",
        "[true, 1000]",
        "columns.amount.bounds: bounds must be two numbers [low, high]",
    ),
    "unknown column key": (
        'role = "identifier"\n',
        'role = "identifier"\ncolour = "red"\n',
        "columns.person_id: unknown keys ['colour']",
    ),
    "unknown dataset key": (
        'title = "Visits"\n',
        'title = "Visits"\nowner = "someone"\n',
        "dataset: unknown keys ['owner']",
    ),
    "title not a string": ('title = "Visits"', "title = 5", "dataset.title: must be a string"),
    "type not a string": (
        'role = "identifier"\n',
        'role = "identifier"\ntype = 12\n',
        "columns.person_id.type: must be a string",
    ),
    "description not a string": (
        'role = "identifier"\n',
        'role = "identifier"\ndescription = true\n',
        "columns.person_id.description: must be a string",
    ),
    "level not a string": (
        'level = "L3"',
        "level = 3",
        "columns.person_id.level: level must be one of L1, L2, L3, L4",
    ),
    "joinable not a list": (
        'role = "identifier"\n',
        'role = "identifier"\njoinable = 3\n',
        "columns.person_id.joinable: joinable must be a list of 'domain.table.column'",
    ),
    "infinite band": (
        "{ band = 10 }",
        "{ band = inf }",
        "columns.age.generalize: generalize must be band = positive number, truncate = one "
        "of ['year', 'quarter', 'month', 'week', 'day', 'hour', 'minute'], or prefix = "
        "positive integer (exact_only: true or false)",
    ),
    "column not a table": (
        '[columns.age]\nlevel = "L2"\nrole = "quasi"\ngeneralize = { band = 10 }\n',
        "[columns]\nage = 40\n",
        "columns.age: must be a table",
    ),
    "level missing": ('level = "L3"\n', "", "columns.person_id.level: is required"),
    "measure use without bounds": (
        "{ band = 10 }\n",
        "{ band = 10 }\nmeasure = {}\n",
        "columns.age.measure: measure is a table {bounds = [low, high]}",
    ),
    "measure use as a list": (
        "{ band = 10 }\n",
        "{ band = 10 }\nmeasure = [0, 120]\n",
        "columns.age.measure: measure is a table {bounds = [low, high]}",
    ),
    "measure use with an unknown key": (
        "{ band = 10 }\n",
        "{ band = 10 }\nmeasure = { bounds = [0, 120], clip = true }\n",
        "columns.age.measure: measure is a table {bounds = [low, high]}",
    ),
    "measure use with inverted bounds": (
        "{ band = 10 }\n",
        "{ band = 10 }\nmeasure = { bounds = [120, 0] }\n",
        "columns.age.measure: bounds need low < high",
    ),
    "measure use with an infinite bound": (
        "{ band = 10 }\n",
        "{ band = 10 }\nmeasure = { bounds = [0, inf] }\n",
        f"columns.age.measure: {FINITE}",
    ),
    "measure use on a measure": (
        "bounds = [0, 1000]\n",
        "bounds = [0, 1000]\nmeasure = { bounds = [0, 10] }\n",
        "columns.amount.measure: a measure column declares bounds = [low, high] directly",
    ),
    "measure use on an identifier": (
        'role = "identifier"\n',
        'role = "identifier"\nmeasure = { bounds = [0, 10] }\n',
        "columns.person_id.measure: an identifier cannot have a measure use",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_each_problem_names_the_file_the_key_and_the_reason(case: str) -> None:
    old, new, problem = REFUSED[case]
    with pytest.raises(ClassificationError) as info:
        parse_classification(_replace(old, new), source_name="visits.toml")
    assert info.value.message == f"visits.toml: {problem}"
    assert info.value.rule == INVALID


def test_a_file_with_infinite_bounds_is_refused_before_it_can_reach_the_noise() -> None:
    """Issue 11: ``bounds = [0, inf]`` was accepted, then crashed the ε path (a 500)."""
    text = (ROOT / "sandbox/enclave/demo/health.claims.toml").read_text("utf-8")
    assert "bounds = [0, 13000]" in text
    with pytest.raises(ClassificationError) as info:
        parse_classification(
            text.replace("bounds = [0, 13000]", "bounds = [0, inf]"),
            source_name="health.claims.toml",
        )
    assert str(info.value) == (
        f"health.claims.toml: columns.claim_amount.bounds: {FINITE} [rule: {INVALID}]"
    )


def test_a_stored_classification_with_infinite_bounds_is_refused_too() -> None:
    """A catalog row is re-parsed from its stored mapping: the same rules apply."""
    stored = parse_classification(BASE).to_dict()
    stored["columns"]["amount"]["bounds"] = [0.0, math.inf]
    with pytest.raises(ClassificationError) as info:
        parse_classification(stored, source_name="catalog:health.visits")
    assert info.value.message == f"catalog:health.visits: columns.amount.bounds: {FINITE}"


def test_several_problems_of_one_file_are_reported_together_with_their_paths() -> None:
    text = (
        _replace("[0, 1000]", "[0, nan]")
        .replace('title = "Visits"', "title = 5")
        .replace('role = "quasi"', 'role = "quasi"\nshade = 1')
    )
    with pytest.raises(ClassificationError) as info:
        parse_classification(text, source_name="visits.toml")
    problems = info.value.message.removeprefix("visits.toml: ").split("; ")
    assert sorted(problems) == sorted(
        [
            "dataset.title: must be a string",
            "columns.age: unknown keys ['shade']",
            f"columns.amount.bounds: {FINITE}",
        ]
    )


def test_no_problem_quotes_the_value_that_caused_it() -> None:
    text = _replace('title = "Visits"', "title = 123456789").replace("[0, 1000]", "[987654321, 5]")
    with pytest.raises(ClassificationError) as info:
        parse_classification(text, source_name="v.toml")
    assert "123456789" not in str(info.value) and "987654321" not in str(info.value)
    assert "dataset.title" in str(info.value) and "columns.amount.bounds" in str(info.value)


def _toml_number(value: float | int) -> str:
    return repr(value)  # inf, -inf, nan and 1e+300 are all TOML


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324]),
)


@given(NUMBERS, NUMBERS)
def test_bounds_are_accepted_exactly_when_finite_and_low_below_high(
    low: float | int, high: float | int
) -> None:
    text = _replace("[0, 1000]", f"[{_toml_number(low)}, {_toml_number(high)}]")
    finite = math.isfinite(low) and math.isfinite(high)
    if finite and float(low) < float(high):
        spec = parse_classification(text, source_name="visits.toml")
        assert spec.column("amount").bounds == (float(low), float(high))
        assert parse_classification(spec.to_dict()).sha256() == spec.sha256()
        return
    with pytest.raises(ClassificationError) as info:
        parse_classification(text, source_name="visits.toml")
    reason = FINITE if not finite else "bounds need low < high"
    assert info.value.message == f"visits.toml: columns.amount.bounds: {reason}"


# Digests of the demo classifications as parsed before the pydantic models (f8b0aff), e.g.
#   python -c 'from sandbox.enclave.demo_data import demo_spec as d
#   print(d("health.claims").sha256())'
# Certificates and stored classifications carry these: parsing must not change them.
# health.claims and transport.trips changed as files in issue 13 (age declares its type and
# a measure use, board_time its type); their earlier texts keep their earlier digests
# (OLD_DEMO_DIGESTS, checked against the files as of c5017c8).  Issue 14 added a
# [contribution] section to each; without it they keep the digests they had
# (PRE_CONTRIBUTION_DIGESTS).  Issue 14 then set health.claims' clamping bounds and C to
# what `propose-bounds` proposes (its digest was 1f6bc54b… before); with the earlier
# bounds restored its older texts keep their digests (_with_earlier_bounds).  Issue 17
# (quality) declared update_frequency, one_row_per_entity and values in the files; without
# them the earlier digests hold (_without_quality_keys).  Issue 14 then declared
# values_per_entity on three claims columns; without it health.claims keeps 2223b4d8…
# (PRE_VALUES_PER_ENTITY_DIGEST).  Issue 14 then declared caps_at = "registration" for
# health.claims; without it the file keeps 7eb18be3… (PRE_RANKS_DIGEST).  transport.trips
# then declared T = C = 15 and caps_at; with C = 12 and neither, it keeps 3274cd4d…
# (PRE_TRIPS_TOTAL_DIGEST).
DEMO_DIGESTS = {
    "health.claims": "373c4eaa8adcf4fcdbe877a0220dacb49731fefeed1ab2c03ac47e5bfbd65b89",
    "market.enterprises": "c4c6c1a7273c218b2fda865848260c1491f27ec178bc26c7425764e11c6337a2",
    "hrss.social_insurance": "81306f9a62f5398dc5d230ede1dbfbdd70821b29fa6dd1505e4ff8b3c955c26c",
    "transport.trips": "37e8ea9e729d619b078d0ca3de80536a6ffa4e2ea60ee403659f7ed1caf88c30",
}
PRE_CONTRIBUTION_DIGESTS = {
    "health.claims": "67d46319939474f72aed5eb0ec24ed2053962bf7f4d298f2dccc02e3892b3611",
    "market.enterprises": "d4f352c11b89ee4732950f0fe5231e0f21f37b430d09dfb7ec2a3278058f919f",
    "hrss.social_insurance": "83943b36fd75db1fa2a53124c54d9d316120909ed466e1c8d83bf39ab13fe42b",
    "transport.trips": "8428c503de9e35098bd578802cad40603cc0acea8c5ad1fde75cd6e2c14506a4",
}
PRE_TRIPS_TOTAL_DIGEST = "3274cd4d702a607a8d5b7550c7b26d7ef93f1baf73ae2f4499ccb9a0a07b97f3"
PRE_RANKS_DIGEST = "7eb18be3c27fa4fe555ba33bc1bddfcbfa36f49d87ba67493dbf6579af6a1602"
PRE_TOTAL_DIGEST = "8541d6defa32b8e02eb21e376a316c137c4da0da95891b6ba6f6648e51c70952"
PRE_VALUES_PER_ENTITY_DIGEST = "2223b4d8c4f3baf7fed4bd7f2e871656a1f3efe30ac3c754262a0d4c25eac777"
OLD_DEMO_DIGESTS = {
    "health.claims": "13a22c863614424d4f19676a75fb63bb6d0583f141824986a36414f9bd8e0d9b",
    "transport.trips": "f8a81652dd58da77a830a0ced65a5ef0653a112197486db1e855c9640fcaa777",
}


@pytest.mark.parametrize("dataset_id", sorted(DEMO_DIGESTS))
def test_canonical_digest_is_unchanged_and_survives_the_stored_form(dataset_id: str) -> None:
    spec = demo_spec(dataset_id)
    assert spec.sha256() == DEMO_DIGESTS[dataset_id]
    stored = parse_classification(spec.to_dict(), source_name=f"catalog:{dataset_id}")
    assert stored == spec and stored.sha256() == spec.sha256()


def _without_quality_keys(text: str) -> str:
    """A demo file as it was before issue 17 part 4 (quality): no update_frequency,
    one_row_per_entity or values declarations."""
    keys = ("update_frequency = ", "one_row_per_entity = ", "values = ")
    text = _without_values_per_entity(text)
    return "".join(x for x in text.splitlines(keepends=True) if not x.startswith(keys))


def _without_ranks(text: str) -> str:
    """A demo file as it was before ``caps_at = "registration"`` was declared."""
    return "".join(x for x in text.splitlines(keepends=True) if not x.startswith("caps_at = "))


def _without_total(text: str) -> str:
    """A demo file as it was before T (``max_total_rows_per_entity``) was declared."""
    lines = _without_ranks(text).splitlines(keepends=True)
    return "".join(x for x in lines if not x.startswith("max_total_rows_per_entity = "))


def _without_values_per_entity(text: str) -> str:
    """A demo file as it was before values_per_entity (and T, later) was declared."""
    lines = _without_total(text).splitlines(keepends=True)
    return "".join(x for x in lines if not x.startswith("values_per_entity = "))


def test_a_file_without_caps_at_keeps_its_digest() -> None:
    text = (ROOT / "sandbox/enclave/demo/health.claims.toml").read_text("utf-8")
    old = parse_classification(_without_ranks(text))
    assert old.contribution is not None and not old.contribution.ranked
    assert old.sha256() == PRE_RANKS_DIGEST != DEMO_DIGESTS["health.claims"]
    assert demo_spec("health.claims").contribution.ranked  # type: ignore[union-attr]


def test_trips_without_t_and_ranks_keep_their_digest() -> None:
    text = (ROOT / "sandbox/enclave/demo/transport.trips.toml").read_text("utf-8")
    before = _without_total(text).replace("max_rows_per_entity = 15", "max_rows_per_entity = 12")
    old = parse_classification(before)
    assert old.sha256() == PRE_TRIPS_TOTAL_DIGEST != DEMO_DIGESTS["transport.trips"]
    trips = demo_spec("transport.trips").contribution
    assert trips is not None and trips.ranked and trips.max_total_rows_per_entity == 15


def test_a_file_without_t_keeps_its_digest() -> None:
    text = (ROOT / "sandbox/enclave/demo/health.claims.toml").read_text("utf-8")
    old = parse_classification(_without_total(text))
    assert old.contribution is not None and old.contribution.max_total_rows_per_entity is None
    assert old.sha256() == PRE_TOTAL_DIGEST != DEMO_DIGESTS["health.claims"]


def test_a_file_without_values_per_entity_keeps_its_digest() -> None:
    text = (ROOT / "sandbox/enclave/demo/health.claims.toml").read_text("utf-8")
    old = parse_classification(_without_values_per_entity(text))
    assert all(c.values_per_entity is None for c in old.columns)
    assert old.sha256() == PRE_VALUES_PER_ENTITY_DIGEST != DEMO_DIGESTS["health.claims"]
    assert demo_spec("health.claims").column("gender").values_per_entity == 1


def _with_earlier_bounds(text: str) -> str:
    """health.claims' clamping bounds as declared before propose-bounds set them."""
    text = _without_quality_keys(text)
    text = text.replace("measure = { bounds = [0, 110] }", "measure = { bounds = [0, 120] }")
    return text.replace("bounds = [0, 13000]", "bounds = [0, 200000]")


def _without_contribution(text: str) -> str:
    """A demo file as it was before issue 14: no [contribution] section (the file's last)."""
    return _with_earlier_bounds(text).split("[contribution]", 1)[0]


def _without_issue_13_keys(text: str) -> str:
    """A demo file as it was before issue 13: no column types, no measure use."""
    lines = _without_contribution(text).splitlines(keepends=True)
    return "".join(x for x in lines if not x.startswith(("type = ", "measure = ")))


@pytest.mark.parametrize("dataset_id", sorted(PRE_CONTRIBUTION_DIGESTS))
def test_a_file_without_contribution_keeps_its_digest(dataset_id: str) -> None:
    """Registrations from before [contribution] keep their digests (and the default bounds)."""
    text = (ROOT / f"sandbox/enclave/demo/{dataset_id}.toml").read_text("utf-8")
    old = parse_classification(_without_contribution(text))
    assert old.contribution is None and "contribution" not in old.to_dict()
    assert old.sha256() == PRE_CONTRIBUTION_DIGESTS[dataset_id] != DEMO_DIGESTS[dataset_id]


@pytest.mark.parametrize("dataset_id", sorted(OLD_DEMO_DIGESTS))
def test_a_file_without_the_new_keys_keeps_its_digest(dataset_id: str) -> None:
    """The measure use changes nothing for files that do not use it (stored digests hold)."""
    text = (ROOT / f"sandbox/enclave/demo/{dataset_id}.toml").read_text("utf-8")
    old = parse_classification(_without_issue_13_keys(text))
    assert old.sha256() == OLD_DEMO_DIGESTS[dataset_id] != DEMO_DIGESTS[dataset_id]


def test_a_measure_use_is_a_second_use_of_a_quasi_column() -> None:
    """``age``: grouped in bands (quasi) and aggregated within bounds (measure use)."""
    spec = demo_spec("health.claims")
    age = spec.column("age")
    assert age.role is Role.QUASI and age.uses == ("quasi", "measure")
    assert age.bounds == (0.0, 110.0) and age.generalize is not None
    assert age.to_dict()["measure"] == {"bounds": [0.0, 110.0]} and "bounds" not in age.to_dict()
    assert spec.column("claim_amount").uses == ("measure",)
    assert spec.column("gender").uses == ("quasi",) and spec.column("gender").bounds is None
    stored = parse_classification(spec.to_dict())
    assert stored == spec


def test_a_measure_use_needs_a_numeric_column() -> None:
    text = BASE.replace("{ band = 10 }", '"x"').replace(
        'generalize = "x"', "measure = { bounds = [0, 120] }"
    )
    spec = parse_classification(text)
    assert spec.column("age").uses == ("quasi", "measure")
    with pytest.raises(ClassificationError) as info:
        validate_against_schema(spec, {**SCHEMA, "age": "VARCHAR"})
    assert "column 'age' declares a measure use but its type VARCHAR is not numeric" in (
        info.value.message
    )
    assert validate_against_schema(spec, SCHEMA).column("age").type == "INTEGER"


def test_a_declared_whole_number_type_matches_any_whole_number_type() -> None:
    """A CSV reader infers BIGINT where the bureau declared INTEGER: still whole numbers."""
    text = BASE.replace("[columns.age]\n", '[columns.age]\ntype = "INTEGER"\n', 1)
    spec = parse_classification(text)
    assert spec.column("age").type == "INTEGER"
    typed = validate_against_schema(spec, {**SCHEMA, "age": "BIGINT"})
    assert typed.column("age").type == "BIGINT"
    with pytest.raises(ClassificationError) as info:
        validate_against_schema(spec, {**SCHEMA, "age": "DOUBLE"})
    assert "column 'age' is declared INTEGER but the data is DOUBLE" in info.value.message


@pytest.mark.parametrize("loaded", ["TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"])
def test_a_declared_timestamp_matches_a_timestamp_of_any_precision(loaded: str) -> None:
    """A CSV of ``2016-10-16 18:20:14`` loads as TIMESTAMP_S; the bureau wrote TIMESTAMP."""
    text = BASE + '\n[columns.seen_at]\nlevel = "L1"\nrole = "dimension"\ntype = "TIMESTAMP"\n'
    spec = parse_classification(text)
    typed = validate_against_schema(spec, {**SCHEMA, "seen_at": loaded})
    assert typed.column("seen_at").type == loaded
    for other in ("TIMESTAMP WITH TIME ZONE", "DATE", "VARCHAR"):
        with pytest.raises(ClassificationError) as info:
            validate_against_schema(spec, {**SCHEMA, "seen_at": other})
        assert f"column 'seen_at' is declared TIMESTAMP but the data is {other}" in (
            info.value.message
        )


@pytest.mark.parametrize("value", ["0", "-1", "1001", '"1"', "1.5"])
def test_values_per_entity_is_a_whole_number_from_1(value: str) -> None:
    text = BASE.replace("generalize = { band = 10 }", f"values_per_entity = {value}")
    with pytest.raises(ClassificationError):
        parse_classification(text)
    ok = parse_classification(BASE.replace("generalize = { band = 10 }", "values_per_entity = 2"))
    assert ok.column("age").values_per_entity == 2
    assert ok.column("age").to_dict()["values_per_entity"] == 2
