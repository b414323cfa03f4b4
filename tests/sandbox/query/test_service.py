"""A query's whole path on a demo deployment: refusals, releases, budget, cache, receipts, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.errors import StoreUnavailable
from sandbox.core.errors import AuditUnavailable, QueryRefused, SandboxError
from sandbox.query.receipts import verify_receipt
from sandbox.query.release import result_sha256
from sandbox.query.service import Held, QueryResult, QueryService
from tests.conftest import build_deployment
from tests.reviewing import reviewing

# The attack samples we were given, vendored (see shared_attacks/SOURCE.md): never skipped.
SHARED_ATTACKS = Path(__file__).parent / "shared_attacks" / "samples.jsonl"
W1 = (
    "SELECT district, diagnosis_code, count(*) AS n, count(DISTINCT person_id) AS persons, "
    "avg(claim_amount) AS mean_amount FROM health.claims GROUP BY 1, 2"
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """This module's own deployment: it spends budgets and freezes datasets."""
    platform, tokens = build_deployment(tmp_path_factory.mktemp("service") / "home")
    yield platform, tokens
    platform.close()


@pytest.fixture(scope="module")
def identifier_values(deployment) -> set[str]:
    """Every identifier value of the demo data (for the leak check)."""
    platform, _ = deployment
    values: set[str] = set()
    queries = {
        "health.claims": ["claim_id", "person_id", "name", "id_number"],
        "market.enterprises": ["credit_code", "name"],
        "transport.trips": ["card_id"],
    }
    with platform.enclave.cursor() as cur:
        for table, columns in queries.items():
            for column in columns:
                values |= {
                    r[0] for r in cur.sql(f"SELECT DISTINCT {column} FROM {table}").fetchall()
                }
    return values


def actor(deployment, name: str):
    platform, tokens = deployment
    return platform.authority.authenticate(tokens[name])


def released(deployment, sql: str, who: str = "op-bank") -> QueryResult:
    """Run ``sql`` as a job and release it as the owning bureau approves (op-bank's grants are
    ``reviewed``: exact values only after a recorded review)."""
    platform, _ = deployment
    with reviewing(platform, QueryService(platform)) as desk:
        return desk.run(actor(deployment, who), sql)


def audit_size(platform) -> int:
    return platform.audit.size()


def entry_by_hash(platform, entry_hash: str):
    """The audit entry a receipt or a result names by its hash (what an auditor looks up)."""
    for entry in platform.audit.entries(limit=10_000, newest_first=True):
        if bytes(platform.audit.store.entry_row(entry.seq).entry_hash).hex() == entry_hash:
            return entry
    raise AssertionError(f"no audit entry with hash {entry_hash}")


def assert_no_leak(text: str, values: set[str]) -> None:
    leaked = [v for v in values if len(v) >= 6 and v in text]
    assert not leaked, f"identifier values leaked: {leaked[:3]}"


def test_shared_attack_samples_end_to_end(deployment, identifier_values) -> None:
    platform, _ = deployment
    service = QueryService(platform)
    bank = actor(deployment, "op-bank")
    for line in SHARED_ATTACKS.read_text().splitlines():
        sample = json.loads(line)
        before = audit_size(platform)
        if sample["expect"] == "refuse":
            with pytest.raises(SandboxError) as info:
                service.run(bank, sample["sql"])
            assert info.value.rule, sample["id"]
            assert_no_leak(str(info.value), identifier_values)
        else:  # what the reviewer would release: the held table
            held = service.run_job(bank, sample["sql"])
            assert isinstance(held, Held), sample["id"]
            assert held.table.num_rows > 0, sample["id"]
            assert_no_leak(json.dumps(held.table.to_pylist(), default=str), identifier_values)
        assert audit_size(platform) == before + 1, f"{sample['id']} must be audited once"


def test_refusal_is_audited_with_its_rule(deployment) -> None:
    platform, _ = deployment
    service = QueryService(platform)
    with pytest.raises(QueryRefused):
        service.run(
            actor(deployment, "op-bank"), "SELECT name, count(*) FROM health.claims GROUP BY 1"
        )
    entry = platform.audit.entry(platform.audit.size() - 1)
    assert entry.decision == "deny"
    assert entry.rule == "guard.identifier"
    assert entry.action == "dataset.query"


def test_low_count_filter_against_true_counts(deployment) -> None:
    platform, _ = deployment
    result = released(deployment, W1)
    with platform.enclave.cursor() as cur:
        truth = cur.sql(
            "SELECT district, diagnosis_code, count(*), count(DISTINCT person_id) "
            "FROM health.claims GROUP BY 1, 2"
        ).fetchall()
    expected = {(d, c): (n, p) for d, c, n, p in truth if p >= 10}
    rows = {(r["district"], r["diagnosis_code"]): r for r in result.table.to_pylist()}
    assert set(rows) == set(expected)
    assert len(truth) - len(expected) > 0  # some groups were withheld ...
    assert result.meta["groups_suppressed"] is None  # ... and no count of them is reported
    for key, (n, persons) in expected.items():
        assert rows[key]["n"] == n and rows[key]["persons"] == persons


def test_operator_without_grant_is_refused(deployment) -> None:
    platform, _ = deployment
    with pytest.raises(SandboxError) as info:
        QueryService(platform).run(
            actor(deployment, "op-planner"),
            "SELECT district, count(*) FROM health.claims GROUP BY 1",
        )
    # Answered as a dataset that does not exist (404); the trail records grant.missing.
    assert (info.value.status, info.value.rule) == (404, "dataset.unknown")
    assert platform.audit.entry(platform.audit.size() - 1).rule == "grant.missing"


def test_budget_cache_and_exhaustion(deployment) -> None:
    platform, _ = deployment
    service = QueryService(platform)
    insurer = actor(deployment, "op-insurer")
    first = service.run(insurer, "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1")
    assert first.meta["epsilon_spent"] == pytest.approx(1.0)
    remaining = first.meta["epsilon_remaining"]
    again = service.run(insurer, "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1")
    assert again.meta["cached"] and again.table.equals(first.table)
    assert again.receipt == first.receipt
    # Spend the rest, then the next new query is refused before it runs.
    spent = 0
    while remaining - spent >= 1.0 - 1e-9:
        band = f"age >= {10 * spent}"  # a new query each time (age only in bands of 10)
        service.run(insurer, f"SELECT gender, count(*) FROM health.claims WHERE {band} GROUP BY 1")
        spent += 1
    with pytest.raises(SandboxError) as info:
        service.run(insurer, "SELECT district, count(*) FROM health.claims GROUP BY 1")
    assert info.value.rule == "budget.exhausted"
    assert platform.audit.entry(platform.audit.size() - 1).rule == "budget.exhausted"
    # Once the budget is gone the grant's use is over: repeats are refused too.
    with pytest.raises(SandboxError):
        service.run(insurer, "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1")


def test_receipt_verifies_offline_and_binds_the_result(deployment) -> None:
    platform, _ = deployment
    result = released(deployment, "SELECT hospital_id, count(*) FROM health.claims GROUP BY 1")
    keys = platform.keyring.public_keys()
    body = verify_receipt(result.receipt, keys)
    assert body["result_sha256"] == result_sha256(result.table)
    assert (
        body["datasets"][0]["source_sha256"] == platform.catalog.get("health.claims").source_sha256
    )
    # Nothing platform-wide: no audit seq, no policy version (either counts other accounts).
    assert set(body["audit"]) == {"entry_hash"} and "policy_version" not in body
    entry = entry_by_hash(platform, body["audit"]["entry_hash"])
    assert entry.request_id == body["request_id"]
    assert entry.details["result_sha256"] == body["result_sha256"]
    tampered = json.loads(json.dumps(result.receipt))
    tampered["receipt"]["rows"] += 1
    with pytest.raises(SandboxError):
        verify_receipt(tampered, keys)


def test_nothing_is_released_when_the_audit_fails(deployment, monkeypatch) -> None:
    platform, _ = deployment
    service = QueryService(platform)
    insurer = actor(deployment, "op-insurer")

    def broken(**_fields):
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(platform.audit, "append", broken)
    with pytest.raises(AuditUnavailable):
        service.run_job(
            actor(deployment, "op-bank"),
            "SELECT status, count(*) FROM market.enterprises GROUP BY 1",
        )
    monkeypatch.undo()
    # Not cached: running it again executes, is reviewed and released for real.
    result = released(deployment, "SELECT status, count(*) FROM market.enterprises GROUP BY 1")
    assert not result.meta["cached"]
    assert insurer.name == "op-insurer"


def test_explain_reports_without_running(deployment) -> None:
    platform, _ = deployment
    service = QueryService(platform)
    before = audit_size(platform)
    verdict = service.explain(actor(deployment, "op-bank"), W1)
    assert verdict["accepted"] and verdict["epsilon"] == 0
    assert "health.claims.person_id" in verdict["columns"]
    refused = service.explain(actor(deployment, "op-bank"), "SELECT * FROM health.claims")
    assert refused == {
        "accepted": False,
        "rule": "guard.not_aggregated",
        "message": refused["message"],
    }
    assert audit_size(platform) == before + 2


def test_the_configured_sql_length_applies_to_explain_check_and_run(deployment) -> None:
    """``max_sql_length`` is the deployment's on every path, not only on job submission."""
    from dataclasses import replace

    platform, _ = deployment
    bank = actor(deployment, "op-bank")
    sql = W1 + " " * 100
    base = platform.settings
    assert QueryService(platform).explain(bank, sql)["accepted"]  # under the default limit
    platform.settings = replace(base, max_sql_length=len(sql) - 1)
    try:
        service = QueryService(platform)
        verdict = service.explain(bank, sql)
        assert (verdict["accepted"], verdict["rule"]) == (False, "guard.sql_length")
        assert f"longer than {len(sql) - 1} characters" in verdict["message"]
        for path in (service.check, service.run):
            with pytest.raises(QueryRefused) as info:
                path(bank, sql)
            assert info.value.rule == "guard.sql_length"
            entry = platform.audit.entry(platform.audit.size() - 1)
            assert (entry.decision, entry.rule) == ("deny", "guard.sql_length")
            assert entry.details["sql"] == sql[: len(sql) - 1]  # recorded up to the limit
        assert service.explain(bank, W1)["accepted"]
    finally:
        platform.settings = base


def test_frozen_dataset_is_refused_at_once(deployment) -> None:
    from policies import Actor, Administration

    platform, _ = deployment
    admin = Administration(platform.authority, k_floor=10)
    host = Actor.host("tests")
    admin.set_dataset_frozen(host, "transport.trips", True, reason="incident drill")
    try:
        with pytest.raises(SandboxError) as info:
            QueryService(platform).run(
                actor(deployment, "op-planner"),
                "SELECT board_station, count(*) FROM transport.trips GROUP BY 1",
            )
        assert "frozen" in info.value.rule
    finally:
        admin.set_dataset_frozen(host, "transport.trips", False, reason="drill over")
    result = QueryService(platform).run(  # a dp grant: noised, released at once
        actor(deployment, "op-planner"), "SELECT count(*) AS trips FROM transport.trips"
    )
    assert result.table.num_rows == 1


def test_the_grants_rounding_and_dominance_govern_the_release(deployment) -> None:
    """A bureau narrows its grant's disclosure terms; the next release follows them."""
    from policies import Administration

    platform, _ = deployment
    bureau = actor(deployment, "bureau-market")
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    (grant,) = [g for g in admin.list_grants(bureau) if g.operator == "op-bank"]
    sql = "SELECT industry, sum(registered_capital) AS capital FROM market.enterprises GROUP BY 1"
    before = released(deployment, sql)
    admin.narrow_grant(bureau, grant.id, round_digits=-3, dominance_p=0.3, reason="coarser")
    after = released(deployment, f"{sql} ORDER BY 1")
    assert after.table.num_rows < before.table.num_rows
    capitals = [row["capital"] for row in after.table.to_pylist()]
    assert capitals and all(c % 1000 == 0 for c in capitals)
    assert any(row["capital"] % 1000 for row in before.table.to_pylist())


def test_filtered_cells_pass_the_low_count_filter_themselves(deployment) -> None:
    """A FILTER makes a finer group: its cell is NULL unless k entities pass the filter."""
    platform, _ = deployment
    sql = (
        "SELECT hospital_id, count(*) AS n, count(*) FILTER (WHERE age >= 80) AS old, "
        "avg(claim_amount) FILTER (WHERE age >= 80) AS old_mean, "
        "count(DISTINCT person_id) FILTER (WHERE age >= 80) AS old_persons "
        "FROM health.claims GROUP BY 1"
    )
    result = released(deployment, sql)
    with platform.enclave.cursor() as cur:
        truth = dict(
            cur.sql(
                "SELECT hospital_id, count(DISTINCT person_id) FILTER (WHERE age >= 80) "
                "FROM health.claims GROUP BY 1"
            ).fetchall()
        )
    rows = result.table.to_pylist()
    shown = [r for r in rows if r["old_persons"] is not None]
    hidden = [r for r in rows if r["old_persons"] is None]
    assert shown and hidden, "the data should have cells on both sides of k"
    for row in shown:
        assert row["old_persons"] == truth[row["hospital_id"]] >= 10
        assert row["old"] >= row["old_persons"] and row["old_mean"] is not None
    for row in hidden:
        assert truth[row["hospital_id"]] < 10
        assert row["old"] is None and row["old_mean"] is None and row["n"] is not None


def test_a_query_that_does_not_bind_is_refused_not_an_internal_error(deployment) -> None:
    """A type mismatch is the operator's mistake, found from the schema alone: 422, audited."""
    platform, _ = deployment
    sql = (
        "SELECT district, count(*) FROM health.claims WHERE coalesce(claim_date, 0) > 1 GROUP BY 1"
    )
    with pytest.raises(QueryRefused) as info:  # run as a job would (the grant is reviewed)
        QueryService(platform).run_job(actor(deployment, "op-bank"), sql)
    assert (info.value.status, info.value.rule) == (422, "enclave.bind")
    assert "BinderException" in info.value.message and "claim_date" not in info.value.message
    last = platform.audit.entry(platform.audit.size() - 1)
    assert (last.decision, last.rule) == ("deny", "enclave.bind")


def test_a_refusal_records_the_normalized_sql_not_only_its_hash(deployment) -> None:
    """An auditor sees what was attempted; the refusal message itself echoes no value."""
    import hashlib

    platform, _ = deployment
    literal = "110101199001011234"
    sql = f"select NAME, count(*) from health.claims where id_number = '{literal}' group by 1"
    with pytest.raises(QueryRefused) as info:
        QueryService(platform).run(actor(deployment, "op-bank"), sql)
    assert literal not in info.value.message
    entry = platform.audit.entry(platform.audit.size() - 1)
    assert (entry.decision, entry.rule) == ("deny", "guard.identifier")
    assert literal not in entry.details["reason"]
    normalized = entry.details["normalized_sql"]
    assert normalized == (
        f"SELECT name, COUNT(*) FROM health.claims WHERE id_number = '{literal}' GROUP BY 1"
    )
    assert entry.details["query_sha256"] == hashlib.sha256(normalized.encode()).hexdigest()
    # SQL that does not parse is recorded as sent.
    with pytest.raises(QueryRefused):
        QueryService(platform).run(actor(deployment, "op-bank"), "SELEC district FRM x")
    entry = platform.audit.entry(platform.audit.size() - 1)
    assert entry.details["sql"] == "SELEC district FRM x" and "normalized_sql" not in entry.details
    # So does explain's refusal.
    QueryService(platform).explain(actor(deployment, "op-bank"), "SELECT * FROM health.claims")
    entry = platform.audit.entry(platform.audit.size() - 1)
    assert entry.details["normalized_sql"] == "SELECT * FROM health.claims"


def test_refusal_and_release_of_one_query_carry_the_same_hash(deployment) -> None:
    platform, _ = deployment
    service = QueryService(platform)
    sql = "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1"
    with pytest.raises(SandboxError):  # op-bank holds no grant on transport.trips
        service.run(actor(deployment, "op-bank"), sql)
    refused = platform.audit.entry(platform.audit.size() - 1)
    result = service.run(actor(deployment, "op-planner"), sql.lower())
    released = entry_by_hash(platform, result.meta["audit_entry_hash"])
    assert refused.details["query_sha256"] == released.details["query_sha256"]
    assert refused.details["normalized_sql"] == released.details["normalized_sql"]


def test_a_cached_answer_has_its_own_audit_entry(deployment) -> None:
    """The repeat gets (and reports) its own entry; the receipt still signs the first release."""
    platform, _ = deployment
    service = QueryService(platform)
    bank = actor(deployment, "op-bank")
    sql = "SELECT status, industry, count(*) AS firms FROM market.enterprises GROUP BY 1, 2"
    first = released(deployment, sql)  # reviewed, then released
    again = service.run_job(bank, sql, request_id="the-repeat")  # no new review: the cache
    assert isinstance(again, QueryResult)
    assert again.meta["cached"] and again.receipt == first.receipt
    assert first.meta["audit_entry_hash"] == first.receipt["receipt"]["audit"]["entry_hash"]
    entry = entry_by_hash(platform, again.meta["audit_entry_hash"])
    assert entry.seq == platform.audit.size() - 1
    assert entry.seq > entry_by_hash(platform, first.meta["audit_entry_hash"]).seq
    assert again.meta["request_id"] == "the-repeat"
    assert again.meta["released_by"] == first.meta["request_id"]
    assert (entry.action, entry.decision, entry.request_id) == (
        "dataset.query",
        "allow",
        "the-repeat",
    )
    assert entry.details["cache"] is True and entry.details["epsilon_spent"] == 0
    assert (
        entry.details["normalized_sql"]
        == entry_by_hash(platform, first.meta["audit_entry_hash"]).details["normalized_sql"]
    )


def test_the_callers_record_of_a_release_commits_with_it_or_not_at_all(tmp_path) -> None:
    """``run_job(with_release=...)``: the caller's write (a job's end) runs in the
    transaction that stores the release; if it fails, the release's cached copy is not
    stored either, and the same query runs again rather than being answered from it."""
    platform, tokens = build_deployment(tmp_path / "home")  # a budget of its own
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    sql = (
        "SELECT gender, count(*) AS n FROM health.claims "
        "WHERE age >= 70 AND district IS NOT NULL GROUP BY 1"
    )
    written = []

    class Refused(Exception):
        pass

    def fail(conn, result) -> None:
        written.append(result.meta["result_sha256"])
        raise Refused("the caller's write failed")

    groups = platform.control_writer.groups
    with pytest.raises(Refused):
        service.run_job(insurer, sql, with_release=fail)
    assert len(written) == 1
    # The charge, then the release with the caller's write: two transactions.
    assert platform.control_writer.groups == groups + 2

    def record(conn, result) -> None:
        written.append(result.meta["cached"])

    again = service.run_job(insurer, sql, with_release=record)
    assert written[1:] == [False]  # computed again: nothing was cached by the failed one
    repeat = service.run_job(insurer, sql, with_release=record)
    assert repeat.meta["cached"] and written[1:] == [False]  # not called for a cached answer
    assert repeat.table.equals(again.table)
    platform.close()


def test_the_callers_write_with_the_charge_commits_with_it_or_not_at_all(
    tmp_path, monkeypatch
) -> None:
    """``run_job(with_charge=...)``: the caller's write (a job's row) runs in the very
    function that spends the budget, so neither commits without the other."""
    platform, tokens = build_deployment(tmp_path / "home")
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    sql = "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"
    with platform.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE caller_rows (k INTEGER PRIMARY KEY)")

    def row(conn) -> None:
        conn.exec_driver_sql("INSERT INTO caller_rows VALUES (1)")

    def count_rows() -> int:
        with platform.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM caller_rows").scalar_one()

    def broken(*args, **kwargs):
        raise RuntimeError("the spend failed")

    with monkeypatch.context() as patched:
        patched.setattr(platform.authority, "record_usage", broken)
        with pytest.raises(RuntimeError):
            service.run_job(insurer, sql, with_charge=row)
    assert count_rows() == 0  # undone with the spend
    service.run_job(insurer, sql, with_charge=row)
    assert count_rows() == 1
    platform.close()
