"""``entity_words.in_analyst_words``: refusals over per-entity tables in the analyst's
words (the platform's name for the table never shown; a HAVING called HAVING)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandbox.core.errors import QueryRefused
from sandbox.query.entity_words import TableName, in_analyst_words

T = TableName("health.claims_per_person_id", "t", "person_id", frozenset({"min(age)"}))
BARE = TableName("health.claims_per_person_id", None, "person_id")


def worded(message: str, *tables: TableName) -> str:
    return in_analyst_words(QueryRefused(message, rule="guard.x"), tables).message


def test_a_column_by_the_alias_and_the_table_by_its_name() -> None:
    assert worded("measure column health.claims_per_person_id.s in max()", T) == (
        "measure column t.s in max()"
    )
    assert worded("zz is not a column of health.claims_per_person_id (…)", T) == (
        "zz is not a column of t (…)"
    )


def test_without_an_alias_a_column_by_its_name_and_the_table_by_its_key() -> None:
    assert worded("identifier health.claims_per_person_id.person_id in GROUP BY", BARE) == (
        "identifier person_id in GROUP BY"
    )
    assert worded("zz is not a column of health.claims_per_person_id", BARE) == (
        "zz is not a column of the derived table grouped by person_id"
    )


def test_a_hidden_having_column_says_having() -> None:
    message = "health.claims_per_person_id.min(age) is released in bands of 10 (in WHERE): …"
    assert worded(message, T) == "min(age) is released in bands of 10 (in the HAVING of t): …"
    # a visible column's refusal keeps its WHERE
    visible = "health.claims_per_person_id.a is released in bands of 10 (in WHERE): …"
    assert worded(visible, T) == "t.a is released in bands of 10 (in WHERE): …"


def test_two_tables_of_one_dataset_each_by_its_own_name() -> None:
    first = TableName("health.claims_per_person_id", "a", "person_id")
    second = TableName("health.claims_per_person_id_2", "b", "person_id")
    message = "health.claims_per_person_id_2.n and health.claims_per_person_id.n"
    assert worded(message, first, second) == "b.n and a.n"
    assert worded(message, second, first) == "b.n and a.n"


def test_the_rule_is_kept_and_an_untouched_refusal_is_the_same_object() -> None:
    refusal = QueryRefused("health.claims.x in max()", rule="guard.aggregate_record_value")
    assert in_analyst_words(refusal, [T]) is refusal
    changed = in_analyst_words(QueryRefused("health.claims_per_person_id.s", rule="r"), [T])
    assert changed.rule == "r"


@given(st.text(max_size=80).filter(lambda t: "_per_" not in t))
def test_no_platform_name_survives(text: str) -> None:
    message = f"{text} health.claims_per_person_id.s ({text}) health.claims_per_person_id {text}"
    for table in (T, BARE):
        assert "_per_person_id" not in worded(message, table)
