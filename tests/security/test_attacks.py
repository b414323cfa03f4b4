"""The attack corpus, run against the demo deployment behind a real ``sandbox serve``.

Every line of ``attacks/<class>.jsonl`` is one attack of one class of
``docs/threat-model.md``: it must be refused with the rule it names (through
``POST /v1/explain`` and through ``POST /v1/jobs?wait=true``, audited as a denial),
fail with only the exception kind, or be answered within the disclosure rules
(no group under k, no identifier value).  ``attacks/legitimate.jsonl`` holds what
analysts really ask: it must keep being answered, or the guard is just a wall.

The differencing class spends privacy budget, so it runs on a server of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlglot
from sqlglot import exp

from sandbox.client import SandboxClient
from tests.security.conftest import SecurityServer, start_security_server

ATTACKS = Path(__file__).parent / "attacks"
LEGITIMATE = "legitimate"
BUDGET_CLASS = "differencing"


def _load(name: str) -> list[dict[str, Any]]:
    path = ATTACKS / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


#: Run on a deployment whose lists name items (tests/security/test_negative_list_attacks.py).
OWN_SERVER = ("negative_list",)
CLASSES = sorted(
    p.stem for p in ATTACKS.glob("*.jsonl") if p.stem != LEGITIMATE and p.stem not in OWN_SERVER
)
CORPUS: list[tuple[str, dict[str, Any]]] = [(cls, line) for cls in CLASSES for line in _load(cls)]
LEGIT = _load(LEGITIMATE)
SHARED = [(cls, line) for cls, line in CORPUS if cls != BUDGET_CLASS]
BUDGETED = [line for cls, line in CORPUS if cls == BUDGET_CLASS]

#: What a refusal's message must name, per rule (a column, a function, the clause ...).
SUBJECT = {
    "guard.duplicate_column": r"names two columns '\w+'",
    "guard.reserved_name": r"reserved",
    "disclosure.extreme": r"min and max",
    "guard.statement": r"only SELECT",
    "guard.single_statement": r"one statement",
    "guard.syntax": r"does not parse",
    "guard.function": r"function \w+\(\)|COLLATE|literals `",
    "guard.table": r"table",
    "dataset.unknown": r"dataset \w+\.\w+",
    "guard.identifier": r"identifier \w+\.\w+\.\w+",
    "guard.l4_column": r"\w+\.\w+\.\w+ is level L4",
    # a per-entity table's column by its alias or CTE name (t.total): the analyst's words
    "guard.aggregate_record_value": r"column \w+(\.\w+){1,2}",
    "guard.aggregate_argument": r"\w+\(\)",
    "guard.quasi": r"quasi column \w+\.\w+\.\w+",
    "guard.join": r"join",
    "guard.set_operation": r"set operation",
    "guard.subquery_predicate": r"subquer",
    "guard.count_distinct": r"count\(DISTINCT \w+\)",
    "guard.inner_scope": r"aggregate",
    "guard.columns_expression": r"COLUMNS",
    "guard.placeholder": r"parameters",
    "guard.recursive_cte": r"recursive",
    "guard.sql_length": r"longer than \d+ characters",
    "guard.syntax_element": r"syntax|bare word|is not on the allowlist",
    "guard.limit": r"LIMIT",
    "guard.generalisation": r"\w+\.\w+\.\w+ is released (in bands|truncated|as its first)",
    "guard.resolve": r"is not a column of",
    "guard.not_aggregated": r"aggregat",
    "guard.nesting": r"nest",
    "guard.row_value": r"\w+ stands for the whole row of [\w. ]+: name the columns you need",
    "guard.star": r"\*",
    "guard.unsupported": r"not supported|no DuckDB form|nested value",
    "budget.exhausted": r"budget",
    "guard.quantile_needs_budget": r"\w+\(\) needs a privacy budget",
    "guard.cost": r"reads \S+ [\d,]+ times|[\d,]+ rows|copies of column values|constant string",
    "guard.too_complex": r"CTEs|syntax nodes|SELECT blocks",
}
#: A failure on the data says nothing of why (timeout, memory, a value): one message.
FAILURE_MESSAGE = re.compile(r"^the query could not be completed within its limits$")


@dataclass
class Record:
    """What the corpus did to the shared server: refusals to find in the audit trail."""

    refusals: dict[str, tuple[str, str]] = field(default_factory=dict)  # request id -> (id, rule)
    exercised: set[str] = field(default_factory=set)


RECORD = Record()


@dataclass
class _Borrowed(httpx.BaseTransport):
    """The server's recording transport, lent to a short-lived client that must not close it."""

    inner: httpx.BaseTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)

    def close(self) -> None:
        pass


def _http(server: SecurityServer, who: str) -> httpx.Client:
    """A raw client on the recording transport: status codes and headers, not exceptions."""
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.tokens[who]}"},
        transport=_Borrowed(server.transport),
        timeout=60,
    )


def _client(server: SecurityServer, who: str) -> SandboxClient:
    """A SandboxClient whose responses the leak check sees, closable without the transport."""
    return SandboxClient(server.url, server.tokens[who], transport=_Borrowed(server.transport))


def _explain(server: SecurityServer, who: str, sql: str) -> httpx.Response:
    with _http(server, who) as http:
        return http.post("/v1/explain", json={"sql": sql})


def _submit(server: SecurityServer, who: str, sql: str) -> httpx.Response:
    with _http(server, who) as http:
        return http.post("/v1/jobs", params={"wait": "true", "timeout": 30}, json={"sql": sql})


def _assert_refusal_message(line: dict[str, Any], message: str) -> None:
    rule = line["rule"]
    assert re.search(SUBJECT[rule], message), f"{rule}: message does not name it: {message!r}"
    if "subject" in line:
        assert line["subject"] in message, f"message does not name {line['subject']}: {message!r}"


def _refused(server: SecurityServer, line: dict[str, Any]) -> None:
    """Refused by explain (a verdict) and by job submission (an error), with the same rule.

    ``audited``: the rule the trail records when the caller is answered another (a
    dataset without a grant answers as one that does not exist).
    """
    who, sql, rule = line["as"], line["sql"], line["rule"]
    audited = line.get("audited", rule)
    verdict = _explain(server, who, sql)
    assert verdict.status_code == 200, verdict.text[:300]
    body = verdict.json()
    assert body["accepted"] is False, f"{line['id']} was accepted by explain"
    assert body["rule"] == rule, f"{line['id']}: explain refused with {body['rule']}"
    _assert_refusal_message(line, body["message"])
    RECORD.refusals[verdict.headers["x-request-id"]] = (line["id"], audited)

    job = _submit(server, who, sql)
    assert 400 <= job.status_code < 500, f"{line['id']}: job answered {job.status_code}"
    error = job.json()
    assert set(error) == {"code", "message", "rule"}, error
    assert error["rule"] == rule, f"{line['id']}: job refused with {error['rule']}"
    _assert_refusal_message(line, error["message"])
    RECORD.refusals[job.headers["x-request-id"]] = (line["id"], audited)


def _count_positions(sql: str) -> list[int]:
    """Output positions that are ``count(*)`` or ``count(DISTINCT key)``: each is >= k.

    Without a budget a released group has at least k distinct entities, and each of
    them contributes at least one row, so both counts are at least k.
    """
    root = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(root, exp.Select)
    positions = []
    for i, proj in enumerate(root.expressions):
        node = proj.unalias()
        if isinstance(node, exp.Count) and (
            isinstance(node.this, exp.Star) or isinstance(node.this, exp.Distinct)
        ):
            positions.append(i)
    return positions


def _withheld_counts(body: Any) -> list[Any]:
    """Every ``groups_suppressed`` anywhere in a response (metadata, receipt, job)."""
    if isinstance(body, dict):
        found = [body["groups_suppressed"]] if "groups_suppressed" in body else []
        return found + [c for v in body.values() for c in _withheld_counts(v)]
    if isinstance(body, list):
        return [c for v in body for c in _withheld_counts(v)]
    return []


def _reviewed(server: SecurityServer, job: dict[str, Any]) -> list[httpx.Response]:
    """What each owning bureau's review shows of a held job: what approval would release."""
    shown = []
    for dataset in job["review_datasets"]:
        with _http(server, "bureau-" + dataset.split(".", 1)[0]) as http:
            response = http.get(f"/v1/reviews/{job['id']}")
        assert response.status_code == 200, response.text[:300]
        shown.append(response)
    return shown


def _answered(server: SecurityServer, line: dict[str, Any]) -> dict[str, Any]:
    """Accepted and released (under a reviewed grant: held, nothing data-dependent shown to
    the operator, and what the reviewer would release checked instead); rows within k and
    free of identifiers; the job returned."""
    who, sql = line["as"], line["sql"]
    verdict = _explain(server, who, sql).json()
    assert verdict["accepted"] is True, f"{line['id']} refused: {verdict['rule']}"
    response = _submit(server, who, sql)
    job = response.json()
    responses = [response]
    if job["state"] == "awaiting_review":
        # never waited for (202): nothing that moves with its run (sandbox/jobs/held_view.py)
        assert response.status_code == 202, response.text[:300]
        assert job["result"] is None and job["meta"] is None, line["id"]
        assert not _withheld_counts(job), line["id"]
        responses += _reviewed(server, job)
        result = responses[-1].json()["result"]
        k = responses[-1].json()["job"]["meta"]["k"]
    else:
        assert response.status_code == 200, response.text[:300]
        assert job["state"] == "succeeded", f"{line['id']}: {job['state']} {job['rule']}"
        result = job["result"]
        k = job["meta"]["k"]
    assert k >= 10
    for pos in _count_positions(sql):
        name = result["columns"][pos]
        small = [r[name] for r in result["rows"] if r[name] is not None and r[name] < k]
        assert not small, f"{line['id']}: released {name} under k={k}: {small[:3]}"
    for each in responses:
        server.leaks.assert_clean(each.text, sql)
    check = line.get("check", "k")
    if check == "suppressed":
        # Groups under k were withheld, and (without a budget) nothing in the answer says
        # how many: a count would answer "does anybody match?" (docs/disclosure.md).
        counts = [c for each in responses for c in _withheld_counts(each.json())]
        held = job["state"] == "awaiting_review"
        assert (held or counts) and set(counts) <= {None}, f"{line['id']}: withheld groups counted"
    elif check == "absent":
        # A group the disclosure rules must withhold (e.g. one firm dominating it).
        group = line["absent"]
        hit = [r for r in result["rows"] if all(r.get(c) == v for c, v in group.items())]
        assert not hit, f"{line['id']}: released the group {group}"
    elif check == "rows":
        assert result["rows"], f"{line['id']}: a legitimate query released nothing"
    else:
        assert check == "k", check
    return job


def _failed(server: SecurityServer, line: dict[str, Any]) -> None:
    """Accepted, then failed in the enclave: the job says which rule, never which value."""
    who, sql = line["as"], line["sql"]
    assert _explain(server, who, sql).json()["accepted"] is True
    response = _submit(server, who, sql)
    assert response.status_code == 200, response.text[:300]
    job = response.json()
    assert job["state"] == "failed", f"{line['id']}: {job['state']}"
    assert job["rule"] == line["rule"], f"{line['id']}: failed with {job['rule']}"
    assert FAILURE_MESSAGE.match(job["message"]), job["message"]
    assert job.get("result") is None


def _run(server: SecurityServer, line: dict[str, Any]) -> None:
    RECORD.exercised.add(line["id"])
    expect = line["expect"]
    if expect == "refuse":
        _refused(server, line)
    elif expect == "fail":
        _failed(server, line)
    else:
        assert expect == "answer", expect
        _answered(server, line)


@pytest.mark.parametrize(
    "line", [line for _, line in SHARED], ids=[f"{cls}:{line['id']}" for cls, line in SHARED]
)
def test_attack(security_server: SecurityServer, line: dict[str, Any]) -> None:
    _run(security_server, line)


@pytest.mark.parametrize("line", LEGIT, ids=[line["id"] for line in LEGIT])
def test_legitimate_query_is_answered(
    security_server: SecurityServer, line: dict[str, Any]
) -> None:
    _run(security_server, line)


def test_every_refusal_is_audited_as_a_denial_with_its_rule(
    security_server: SecurityServer,
) -> None:
    """The trail holds one ``deny`` entry per refused request, with the refusing rule."""
    for _, line in SHARED:
        if line["expect"] == "refuse" and line["id"] not in RECORD.exercised:
            _run(security_server, line)  # this test was selected on its own
    expected = dict(RECORD.refusals)
    assert len(expected) >= 2 * sum(1 for _, line in SHARED if line["expect"] == "refuse")
    found: dict[str, dict[str, Any]] = {}
    with _client(security_server, "auditor") as auditor:
        offset = 0
        while True:
            page = auditor.audit_entries(decision="deny", offset=offset, limit=500)
            found.update({e["request_id"]: e for e in page if e["request_id"] in expected})
            if len(page) < 500:
                break
            offset += 500
    missing = sorted(expected[r][0] for r in expected if r not in found)
    assert not missing, f"refusals without a deny entry: {missing[:5]}"
    for request_id, (attack, rule) in expected.items():
        entry = found[request_id]
        assert entry["decision"] == "deny"
        assert entry["rule"] == rule, f"{attack}: audited as {entry['rule']}"
        assert entry["action"] == "dataset.query"


# -- differencing and averaging: a server of its own, its op-insurer budget spent ----------


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityServer]:
    """A fresh demo deployment whose op-insurer budget (10 ε, 1 per query) these tests spend."""
    server = start_security_server(tmp_path_factory.mktemp("budget") / "home")
    try:
        yield server
        assert server.assert_no_leaks() > 0
    finally:
        server.live.stop()
        server.transport.close()


def _remaining(server: SecurityServer) -> float:
    with _client(server, "op-insurer") as client:
        (grant,) = client.grants()
    return float(grant["usage"]["epsilon_remaining"])


def _rows(job: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in job["result"]["rows"])


#: The first rows op-insurer received for each query (what a repeat must return).
RELEASED: dict[str, list[tuple[Any, ...]]] = {}


def _job(server: SecurityServer, who: str, sql: str) -> tuple[int, dict[str, Any]]:
    response = _submit(server, who, sql)
    server.leaks.assert_clean(response.text, sql)
    body = response.json()
    if who == "op-insurer" and response.status_code == 200 and body["state"] == "succeeded":
        RELEASED.setdefault(sql, _rows(body))
    return response.status_code, body


def _exhaust(server: SecurityServer, sql: str) -> tuple[int, dict[str, Any]]:
    """Reword ``sql`` (a new LIMIT each time) until the ledger refuses: averaging by variants."""
    start = _remaining(server)
    for n in range(1, 100):
        status, body = _job(server, "op-insurer", f"{sql} LIMIT {1000 + n}")
        if status != 200:
            assert n - 1 == int(start), f"{n - 1} variants answered with {start} ε left"
            return status, body
        assert body["state"] == "succeeded" and body["meta"]["epsilon_spent"] == 1.0
    raise AssertionError("the budget never ran out")


def _repeat(server: SecurityServer, line: dict[str, Any]) -> None:
    before = _remaining(server)
    status, first = _job(server, "op-insurer", line["sql"])
    assert status == 200 and first["state"] == "succeeded", first
    status, second = _job(server, "op-insurer", line["sql"])
    assert status == 200 and second["state"] == "succeeded", second
    assert _rows(first) == _rows(second), "a repeat drew new noise: averaging would work"
    assert second["meta"]["cached"] is True
    assert first["meta"]["epsilon_spent"] == 1.0
    assert _remaining(server) == before - 1.0, "the repeat spent ε again"


def _difference(server: SecurityServer, line: dict[str, Any]) -> None:
    before = _remaining(server)
    noisy = [_job(server, "op-insurer", q)[1] for q in (line["sql"], line["pair"])]
    held = [_job(server, "op-bank", q)[1] for q in (line["sql"], line["pair"])]
    for job in noisy:
        assert job["state"] == "succeeded", job
    for job in held:  # op-bank's grant is reviewed: exact, but only for its reviewer now
        assert job["state"] == "awaiting_review" and job["result"] is None, job
    exact = [_reviewed(server, job)[-1].json() for job in held]
    assert _remaining(server) == before - 2.0
    (noisy_a,), (noisy_b,) = (j["result"]["rows"] for j in noisy)
    (exact_a,), (exact_b,) = (j["result"]["rows"] for j in exact)
    true_diff = {c: exact_a[c] - exact_b[c] for c in exact_a}
    noisy_diff = {c: noisy_a[c] - noisy_b[c] for c in noisy_a}
    assert true_diff["n"] > 0, "the pair does not differ: the attack tests nothing"
    # Independent noise on each statistic of each release: all exact by chance is ~ 1e-5.
    assert noisy_diff != true_diff, "the difference of two releases is the true difference"
    assert noisy_a != exact_a, "op-insurer's statistics are not noised"


def _exhaustion(server: SecurityServer, line: dict[str, Any]) -> None:
    status, error = _exhaust(server, line["sql"])
    assert status == 403, error
    assert error["rule"] == line["rule"] and error["code"] == "budget_exhausted", error
    assert re.search(SUBJECT[line["rule"]], error["message"]), error["message"]
    assert _remaining(server) < 1.0


def _cached_after_exhaustion(server: SecurityServer, line: dict[str, Any]) -> None:
    """Once the budget is spent a repeat is never a fresh draw: the cached rows, or refused.

    (The service checks the budget before the release cache, so today it is refused.)
    """
    _job(server, "op-insurer", line["sql"])
    if _remaining(server) >= 1.0:
        _exhaust(server, "SELECT district, count(*) AS n FROM health.claims GROUP BY 1")
    assert line["sql"] in RELEASED, "the query was never released: nothing to repeat"
    status, again = _job(server, "op-insurer", line["sql"])
    if status == 200:
        assert again["meta"]["cached"] is True, "a new draw after the budget ran out"
        assert _rows(again) == RELEASED[line["sql"]]
    else:
        assert status == 403 and again["rule"] == "budget.exhausted", again


BUDGET_CHECKS = {
    "repeat": _repeat,
    "difference": _difference,
    "exhaust": _exhaustion,
    "cached_after_exhaustion": _cached_after_exhaustion,
}


@pytest.mark.parametrize("line", BUDGETED, ids=[line["id"] for line in BUDGETED])
def test_differencing_and_averaging(budget_server: SecurityServer, line: dict[str, Any]) -> None:
    assert line["as"] == "op-insurer"
    BUDGET_CHECKS[line["check"]](budget_server, line)


# -- the corpus itself, and the final word -------------------------------------------------


def test_corpus_is_large_and_well_formed() -> None:
    """Shrinking the corpus, or a malformed line, fails here."""
    assert len(CORPUS) >= 150
    assert len(CLASSES) >= 9
    assert len(LEGIT) >= 20
    ids = [line["id"] for _, line in CORPUS] + [line["id"] for line in LEGIT]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for cls, line in CORPUS:
        assert line["expect"] in ("refuse", "answer", "fail"), line["id"]
        assert line["why"] and line["sql"] and line["as"].startswith("op-"), line["id"]
        if line["expect"] != "answer":
            assert line["rule"] in SUBJECT or line["expect"] == "fail", line["id"]
        if cls != BUDGET_CLASS:
            assert line.get("check", "k") in ("k", "suppressed", "absent"), line["id"]
    refusals = [line for _, line in CORPUS if line["expect"] == "refuse"]
    assert len(refusals) >= 150, len(refusals)
    per_class = {cls: sum(1 for c, _ in CORPUS if c == cls) for cls in CLASSES}
    assert min(per_class.values()) >= 4, per_class
    assert all(line["check"] == "rows" for line in LEGIT)


def test_zz_no_identifier_leaked_in_any_response(security_server: SecurityServer) -> None:
    """Last in the module: every response the corpus received, checked for identifiers."""
    for _, line in SHARED:
        if line["id"] not in RECORD.exercised:
            _explain(security_server, line["as"], line["sql"])  # selected on its own
    checked = security_server.assert_no_leaks()
    assert checked >= len(CORPUS) + len(LEGIT), checked
