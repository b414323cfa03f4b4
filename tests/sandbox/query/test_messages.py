"""Every refusal the guard gives, read as the analyst reads it (issue 13, item 9).

The refused queries of ``guard_cases/*.jsonl``, of the attack corpus
(``tests/security/attacks/*.jsonl``) and the utility corpus's known refusals go
through ``QueryService.explain`` on a demo deployment, as their account; each
message must:

- carry no sqlglot internals (positions, node class names) and no rewrite names;
- name a column or function in the analyst's words: a column it names is one the
  query wrote (or reached through a star), a function one the query called;
- echo no identifier value of the enclave (the security suite's leak check).

A message known to fail is listed in ``KNOWN`` with the text proposed for it, and
its case is ``xfail(strict=True)``: once the wording is fixed the marker must go.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.security.conftest import LeakCheck, identifier_values
from tests.utility.enclave import CORPUS, known_refusals

HERE = Path(__file__).parent
GUARD_CASES = HERE / "guard_cases"
ATTACKS = HERE.parents[1] / "security" / "attacks"

INTERNALS = re.compile(
    r"Line: \d+, Col: \d+|\bExpression\b|\bexp\.[A-Z]|sqlglot|<class |object at 0x|Traceback"
    r"|\b(?:Anonymous|Paren|Alias|Column|Identifier|Literal|Tuple|Struct|Dot|Cast|Func)\b(?!\s*\()"
)
#: sqlglot's own resolution errors, passed through.
SQLGLOT_TEXT = re.compile(r"Unknown column: |could not be resolved")
#: A keyword or type a message names as the query's: it must be one the analyst wrote.
WRITTEN = re.compile(r"^(\w+) syntax is not|a cast to (\w+)|, not ([A-Z]+)$")
#: A clause named by half its keyword (sqlglot's arg name: "group", "order").
HALF_KEYWORD = re.compile(r"\b(GROUP|ORDER)\b(?! BY)")
REWRITE_NAMES = re.compile(r"__\w+")
QUALIFIED = re.compile(r"\b(\w+)\.(\w+)\.(\w+)\b")
FUNCTION = re.compile(r"\b([A-Za-z_]\w*)\(\)")
#: A star that is not count(*)'s: the columns it reaches are not written out.
STAR = re.compile(r"(?<!\()\*(?!\s*\))|\bCOLUMNS\s*\(", re.IGNORECASE)

#: Messages that fail a check today, by query (line numbers in the case files move),
#: with the wording proposed for them.
KNOWN: dict[str, str] = {}


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(GUARD_CASES.glob("*.jsonl")):
        for n, case in enumerate(_lines(path), 1):
            if case.get("expect", "refuse") == "refuse" and "rule" in case:
                cases.append({"id": f"{path.stem}-{n}", "as": "op-bank", **case})
    # Analysts' queries the guard still refuses: their messages matter most.
    known = set(known_refusals())
    for case in _lines(CORPUS):
        if case["id"] in known:
            cases.append({**case, "id": f"utility-{case['id']}"})
    for path in sorted(ATTACKS.glob("*.jsonl")):
        for n, case in enumerate(_lines(path), 1):
            if case.get("expect") == "refuse":
                cases.append({"id": case.get("id") or f"{path.stem}-{n}", **case})
    return cases


CASES = _cases()
COLUMNS = {c.name.lower() for d in DEMO_DATASETS for c in demo_spec(d).columns}


def _params() -> list[Any]:
    return [
        pytest.param(
            case,
            id=case["id"],
            marks=[
                pytest.mark.xfail(
                    raises=AssertionError, strict=True, reason=f"proposed: {KNOWN[case['sql']]}"
                )
            ]
            if case["sql"] in KNOWN
            else [],
        )
        for case in CASES
    ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QueryService, Any, LeakCheck]]:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("messages") / "home")
    try:
        leaks = LeakCheck.of(identifier_values(platform))
        yield QueryService(platform), (platform, tokens), leaks
    finally:
        platform.close()


def problems(sql: str, message: str, leaks: LeakCheck) -> list[str]:
    """What is wrong with ``message`` as the answer to ``sql`` (empty: nothing)."""
    found: list[str] = []
    if m := INTERNALS.search(message):
        found.append(f"sqlglot internals {m.group(0)!r}")
    if m := SQLGLOT_TEXT.search(message):
        found.append(f"sqlglot's message {m.group(0)!r}")
    if (m := WRITTEN.search(message)) and next(
        w for w in m.groups() if w
    ).lower() not in sql.lower():
        found.append(f"{next(w for w in m.groups() if w)!r} is not what the query wrote")
    if m := HALF_KEYWORD.search(message):
        found.append(f"{m.group(0)} without BY")
    if m := REWRITE_NAMES.search(message):
        found.append(f"rewrite name {m.group(0)!r}")
    # The subject is the first column or function a message names; any later one may be
    # the accepted form it proposes ("use floor(age / 10) * 10").
    lowered = sql.lower()
    subject = QUALIFIED.search(message)
    if subject and subject.group(3).lower() in COLUMNS and not STAR.search(sql):
        if subject.group(3).lower() not in lowered:
            found.append(f"column {subject.group(3)!r} is not one the query wrote")
    called = FUNCTION.search(message)
    if called and called.group(1).lower() not in lowered:
        found.append(f"function {called.group(1)}() is not one the query called")
    if leaked := leaks.found(message, sql):
        found.append(f"{len(leaked)} identifier value(s)")
    return found


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 400, len(CASES)


def test_every_known_failure_is_still_a_case() -> None:
    assert set(KNOWN) <= {case["sql"] for case in CASES}


@pytest.mark.parametrize("case", _params())
def test_refusal_message_in_the_analysts_words(case: dict[str, Any], demo) -> None:  # type: ignore[no-untyped-def]
    service, (platform, tokens), leaks = demo
    actor = platform.authority.authenticate(tokens[case["as"]])
    verdict = service.explain(actor, case["sql"])
    if verdict["accepted"]:
        pytest.skip("accepted at explain (refused later, at release): no guard message")
    message = verdict["message"]
    assert message, verdict
    found = problems(case["sql"], message, leaks)
    assert not found, (found, message)


def test_the_checks_can_fail() -> None:
    leaks = LeakCheck.of({"110101199003071234"})
    sql = "SELECT count(*) FROM health.claims"
    banded = "SELECT round(age, -1), count(*) FROM health.claims GROUP BY 1"
    assert not problems(banded, "health.claims.age is in bands: use floor(age / 10) * 10", leaks)
    assert problems(sql, "Invalid expression / Unexpected token. Line: 1, Col: 7.", leaks)
    assert problems(sql, "__sbx_entities is not allowed", leaks)
    assert problems(sql, "identifier health.claims.name cannot be grouped", leaks)
    assert problems(sql, "function stddev_samp() is not on the allowlist", leaks)
    assert problems(sql, "value 110101199003071234 matched", leaks)
    assert problems(sql, "GROUP is allowed only in the outermost SELECT", leaks)
    assert problems(sql, "IGNORENULLS syntax is not on the allowlist", leaks)
    assert problems(sql, "only SELECT queries are allowed, not TRANSACTION", leaks)
    assert problems(sql, "the query's columns cannot be resolved: Unknown column: name", leaks)
    assert not problems(sql, "the result must be aggregated", leaks)
