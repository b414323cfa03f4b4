"""Each detector on hand-made histories: it fires where it should, and not where it should not."""

from __future__ import annotations

from dataclasses import replace

import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.monitoring.detectors import (
    Budget,
    History,
    Thresholds,
    budget_burn,
    differencing,
    evaluate,
    new_client,
    off_hours,
    probing,
    repeated,
    scan,
    suppressions,
    volume,
)
from sandbox.monitoring.events import Event
from sandbox.monitoring.fingerprint import predicate_fingerprint

T0 = 1_789_956_800.0  # 10:13 in UTC+8
TH = Thresholds()
DS = "health.claims"


def fp(sql: str) -> dict[str, object]:
    """The fingerprint of ``sql`` as the audit records it (normalized by sqlglot)."""
    normalized = sqlglot.parse_one(sql, read="duckdb").sql(dialect="duckdb", normalize=True)
    return predicate_fingerprint(normalized)


def allowed(seq: int, at: float, sql: str, **extra: object) -> Event:
    f = fp(sql)
    return Event(
        seq=seq,
        at=at,
        operator="op",
        dataset=DS,
        allowed=True,
        rule="grant.allow",
        client="10.0.0.1",
        query=sql,
        shape=str(f["shape"]),
        template=str(f["template"]),
        sets=tuple(tuple(s) for s in f["sets"]),  # type: ignore[attr-defined]
        **extra,  # type: ignore[arg-type]
    )


def denied(seq: int, at: float, rule: str = "guard.band") -> Event:
    return Event(seq=seq, at=at, operator="op", dataset=DS, allowed=False, rule=rule)


def run(events: list[Event], detector, th: Thresholds = TH):  # type: ignore[no-untyped-def]
    history = History("op")
    out = []
    for event in events:
        out.append(detector(history, history.append(event), th))
    return out


# -- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_hides_constants_and_marks_exclusions() -> None:
    a = fp("SELECT count(*) FROM t WHERE district = 'Dxyz'")
    b = fp("SELECT count(*) FROM t WHERE district = 'Dxyz' AND NOT (job = 'wombat')")
    c = fp("SELECT count(*) FROM t WHERE district = 'D02'")
    assert a["shape"] == b["shape"] == c["shape"]
    assert a["template"] == c["template"] != b["template"]
    assert "xyz" not in repr(a) and "wombat" not in repr(b)  # hashes are hex
    assert [s for s in b["sets"][0] if s.startswith("!")]  # type: ignore[index]
    nulls = fp("SELECT count(*) FROM t WHERE x IS NOT NULL")
    assert not any(s.startswith("!") for s in nulls["sets"][0])  # type: ignore[index]


def test_fingerprint_of_filters_is_one_set_per_aggregate() -> None:
    f = fp("SELECT count(*), count(*) FILTER (WHERE x <> 'y') FROM t WHERE z = 1")
    assert len(f["sets"]) == 2  # type: ignore[arg-type]


# -- probing --------------------------------------------------------------------------------


def test_probing_warns_on_one_rule_and_is_high_on_many() -> None:
    events = [denied(i, T0 + i) for i in range(TH.probe_total_high)]
    found = run(events, probing)
    assert found[TH.probe_rule_warning - 2] is None
    assert found[TH.probe_rule_warning - 1].severity == "warning"  # type: ignore[union-attr]
    assert found[-1].severity == "high"  # type: ignore[union-attr]
    assert found[-1].evidence[-1] == TH.probe_total_high - 1  # type: ignore[union-attr]


def test_probing_spread_out_is_nothing() -> None:
    events = [denied(i, T0 + i * TH.probe_window_s) for i in range(50)]
    assert all(f is None for f in run(events, probing))


# -- differencing ---------------------------------------------------------------------------

BASE = "SELECT count(*), sum(amount) FROM health.claims WHERE district = 'D01'"


def test_differencing_pair_with_an_exclusion() -> None:
    events = [
        allowed(1, T0, BASE),
        allowed(2, T0 + 60, BASE + " AND NOT (age = 47 AND gender = 'F')"),
    ]
    found = run(events, differencing)
    assert found[0] is None
    assert found[1] is not None and found[1].severity == "high"
    assert found[1].evidence == (1, 2)


def test_differencing_complement_inside_one_query() -> None:
    sql = (
        "SELECT count(*), count(*) FILTER (WHERE NOT (age = 47 AND gender = 'F')) "
        "FROM health.claims WHERE district = 'D01'"
    )
    assert run([allowed(1, T0, sql)], differencing)[0] is not None


def test_drill_down_is_not_differencing() -> None:
    events = [
        allowed(1, T0, BASE),
        allowed(2, T0 + 60, BASE + " AND gender = 'F'"),
        allowed(
            3, T0 + 120, "SELECT count(*), sum(amount) FROM health.claims WHERE district = 'D02'"
        ),
    ]
    assert all(f is None for f in run(events, differencing))


def test_differencing_outside_the_window_is_nothing() -> None:
    events = [
        allowed(1, T0, BASE),
        allowed(2, T0 + TH.diff_window_s + 1, BASE + " AND NOT (age = 47)"),
    ]
    assert run(events, differencing)[1] is None


# -- repeated, volume, suppressions, budget, clients, hours -----------------------------------


def test_repeated_variants_of_one_template() -> None:
    events = [
        allowed(i, T0 + i, f"SELECT count(*) FROM health.claims WHERE age = {20 + i}")
        for i in range(TH.repeat_high)
    ]
    found = run(events, repeated)
    assert found[TH.repeat_warning - 2] is None
    assert found[TH.repeat_warning - 1].severity == "warning"  # type: ignore[union-attr]
    assert found[-1].severity == "high"  # type: ignore[union-attr]


def test_the_same_query_again_is_not_a_variant() -> None:
    events = [allowed(i, T0 + i, BASE) for i in range(40)]
    assert all(f is None for f in run(events, repeated))


def test_volume_against_the_operators_own_baseline() -> None:
    th = replace(TH, volume_floor_per_hour=50)
    day1 = [allowed(i, T0 + i * 60, BASE) for i in range(40)]  # 40 in under an hour
    day2 = [allowed(100 + i, T0 + 86400 + i * 5, BASE) for i in range(200)]
    found = run(day1 + day2, volume, th)
    assert all(f is None for f in found[:40])
    fired = [f for f in found[40:] if f is not None]
    assert fired and fired[0].severity == "warning"
    # 121 in the hour is the first count above 3 x 40
    assert found[40 + 120] is not None and found[40 + 119] is None


def test_suppressions_in_many_queries() -> None:
    events = [allowed(i, T0 + i, BASE, suppressed=3) for i in range(TH.suppress_queries)]
    found = run(events, suppressions)
    assert found[-2] is None and found[-1] is not None


def test_budget_burn_against_validity() -> None:
    budget = {DS: Budget(10.0, T0 - 60, T0 + 365 * 86400)}
    fast = allowed(1, T0, BASE, epsilon_spent=1.0, epsilon_remaining=7.0)
    slow = allowed(1, T0, BASE, epsilon_spent=1.0, epsilon_remaining=8.0)
    history = History("op")
    assert budget_burn(history, history.append(fast), TH, budget) is not None
    history = History("op")
    assert budget_burn(history, history.append(slow), TH, budget) is None
    late = {DS: Budget(10.0, T0 - 300 * 86400, T0 + 65 * 86400)}
    history = History("op")
    assert budget_burn(history, history.append(fast), TH, late) is None


def test_new_client_and_off_hours_are_info() -> None:
    first = allowed(1, T0, BASE)
    usual = [allowed(i, T0 + i, BASE) for i in range(TH.new_client_after)]
    other = replace(allowed(99, T0 + 99, BASE), client="10.9.9.9")
    found = run([*usual, other], new_client)
    assert all(f is None for f in found[:-1])
    assert found[-1].severity == "info"  # type: ignore[union-attr]
    assert run([first, other], new_client)[1] is None  # too little history to judge
    night = allowed(3, T0 + 14 * 3600, BASE)  # 00:13 local
    office = replace(TH, work_hours=(7, 22))
    assert run([first], off_hours, office)[0] is None
    assert run([night], off_hours, office)[0].severity == "info"  # type: ignore[union-attr]
    assert run([night], off_hours)[0] is None  # the default: all day is working time


# -- the whole -----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 30)), max_size=60))
def test_scan_equals_evaluating_each_event_as_it_came(steps: list[tuple[bool, int, int]]) -> None:
    """A history re-evaluated at once finds what evaluating it event by event found."""
    events: list[Event] = []
    at = T0
    for seq, (ok, variant, gap) in enumerate(steps):
        at += gap
        sql = f"SELECT count(*) FROM health.claims WHERE age = {variant}"
        events.append(allowed(seq, at, sql) if ok else denied(seq, at, f"guard.r{variant % 2}"))
    live = History("op")
    one_by_one = []
    for event in events:
        one_by_one.extend(evaluate(live, live.append(event), TH, {}))
    assert scan("op", events, TH) == one_by_one


def test_a_derived_tables_condition_is_shared_not_a_complement() -> None:
    """utility cte-08: the inner WHERE holds for the outer aggregate: one set, no pair."""
    f = fp(
        "SELECT x.gender, avg(x.claim_amount) AS m FROM (SELECT gender, claim_amount "
        "FROM health.claims WHERE district <> 'D01') x GROUP BY x.gender"
    )
    assert len(f["sets"]) == 1  # type: ignore[arg-type]
    assert (
        run(
            [allowed(1, T0, "SELECT count(*) FROM (SELECT * FROM t WHERE NOT a = 1) x")],
            differencing,
        )[0]
        is None
    )


def test_events_from_audit_entries() -> None:
    from sandbox.monitoring.events import event_from_entry

    base = {"seq": 7, "time": "2026-12-02T03:00:00.000000Z", "actor": "op", "client": None}
    refused = event_from_entry(
        {
            **base,
            "action": "dataset.query",
            "decision": "deny",
            "rule": "guard.identifier",
            "dataset": None,
            "details": {"normalized_sql": "SELECT person_id FROM health.claims"},
        },
        datasets=["health.claims", "market.enterprises"],
    )
    assert refused is not None and refused.dataset == "health.claims" and not refused.allowed
    assert refused.shape is None  # refusals are counted, not fingerprinted
    answered = event_from_entry(
        {
            **base,
            "action": "dataset.query",
            "decision": "allow",
            "rule": "grant.allow",
            "dataset": DS,
            "details": {
                "normalized_sql": BASE,
                "groups_suppressed": 2,
                "epsilon_spent": 1.0,
                "epsilon_remaining": 9.0,
                "cache": True,
            },
        },
    )
    assert answered is not None and answered.shape and answered.sets and answered.cached
    assert (answered.suppressed, answered.epsilon_spent, answered.epsilon_remaining) == (2, 1, 9)
    assert event_from_entry({**base, "action": "grant.read", "decision": "allow"}) is None
