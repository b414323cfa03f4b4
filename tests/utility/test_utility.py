"""The utility corpus: legitimate aggregate queries, written as analysts write them, answered.

Every line of ``queries.jsonl`` is a query a correct guard answers on the demo data
(scale 0.01): its groups hold at least k entities there, so it must be released, not
refused and not failed, with at least one row and no identifier value.  Lines today's
guard still refuses are listed in ``known_refusals.txt`` and expected to fail *strictly*:
the moment a fix makes one answered, its test fails as XPASS, to say "remove me from the
list".  ``python -m tests.utility.report`` prints the counts per class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.conftest import LeakCheck, identifier_values
from tests.utility.enclave import (
    BUDGET_OPERATOR,
    UtilityEnclave,
    known_refusals,
    load_corpus,
)

CORPUS = load_corpus()
KNOWN = known_refusals()
FIELDS = {"id", "sql", "as", "class", "budget", "why"}
#: The classes issue 13 asks the corpus to cover, each with a few lines at least.
REQUIRED_CLASSES = {
    "count",
    "distinct",
    "sum",
    "avg",
    "variance",
    "ratio",
    "band",
    "order_limit",
    "filter",
    "having",
    "cte",
    "join",
    "date",
    "cast",
    "constant",
    "case",
    "where",
    "multi_use",
    "dialect",
    "median",
}


def _param(line: dict[str, Any]) -> Any:
    marks = []
    if line["id"] in KNOWN:
        marks.append(
            pytest.mark.xfail(
                strict=True,
                reason="refused by today's guard (tests/utility/known_refusals.txt): issue 13",
            )
        )
    return pytest.param(line, id=line["id"], marks=marks)


@pytest.fixture(scope="module")
def enclave(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UtilityEnclave]:
    built = UtilityEnclave(tmp_path_factory.mktemp("utility") / "home")
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="module")
def leaks(enclave: UtilityEnclave) -> LeakCheck:
    return LeakCheck.of(identifier_values(enclave.platform))


@pytest.mark.parametrize("line", [_param(line) for line in CORPUS])
def test_legitimate_query_is_answered(
    enclave: UtilityEnclave, leaks: LeakCheck, line: dict[str, Any]
) -> None:
    outcome = enclave.run(line)
    assert outcome.verdict == "answered", (
        f"{line['id']} ({line['why']}): {outcome.verdict} {outcome.rule}: {outcome.message}"
    )
    assert outcome.rows > 0
    leaks.assert_clean(outcome.released, line["sql"])


def test_corpus_is_large_and_well_formed() -> None:
    """Shrinking the corpus, a malformed line or a stale known-refusal id fails here."""
    assert len(CORPUS) >= 150
    ids = [line["id"] for line in CORPUS]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for line in CORPUS:
        assert set(line) == FIELDS, f"{line.get('id')}: fields {sorted(line)}"
        assert isinstance(line["budget"], bool), line["id"]
        assert line["budget"] == (line["as"] == BUDGET_OPERATOR), (
            f"{line['id']}: budgeted lines run as {BUDGET_OPERATOR}, the others without ε"
        )
        assert line["sql"].strip() and line["why"].strip(), line["id"]
    per_class = Counter(line["class"] for line in CORPUS)
    thin = {c: per_class[c] for c in REQUIRED_CLASSES if per_class[c] < 5}
    assert not thin, f"classes with fewer than 5 lines: {thin}"
    assert KNOWN <= set(ids), f"known refusals not in the corpus: {sorted(KNOWN - set(ids))}"
