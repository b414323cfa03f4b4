"""Risk monitoring against a live server (issue 16): scripted attacks raise their alerts.

Its own demo home and ``sandbox serve`` process (responses freeze and suspend the demo
operators, so the suite's shared server is left alone).  Each attack session states
within how many queries its alert is raised, and checks that the bureau's response
policy took effect (the next query is refused with the response's rule) and that the
bureau reverses it with a reason (the query after that is answered again).  Alerts,
acknowledgements and resolutions are read back as their audit entries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.blackbox.conftest import DemoHome, Server, call, make_demo_home, sandbox, serving


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    return make_demo_home(tmp_path_factory.mktemp("monitoring") / "home")


@pytest.fixture(scope="module")
def live(home: DemoHome) -> Iterator[Server]:
    with serving(home) as running:
        yield running


def query(live: Server, token: str, sql: str) -> tuple[int, Any]:
    return call(live, "POST", "/v1/jobs?wait=true&timeout=60", token, {"sql": sql})


def rule_of(answer: tuple[int, Any]) -> str:
    status, body = answer
    if status == 200 and body.get("state") == "succeeded":
        return "ok"
    return str(body.get("rule") or body.get("error", {}).get("rule") or body)


def alert_of(
    live: Server, token: str, detector: str, operator: str, severity: str = "info"
) -> dict[str, Any] | None:
    """The unresolved alert of ``detector`` on ``operator`` at ``severity`` or above (waits
    for the monitor a little: it evaluates each decision just after it was recorded)."""
    deadline = time.monotonic() + 15
    while True:
        path = f"/v1/alerts?operator={operator}&severity={severity}"
        status, found = call(live, "GET", path, token)
        assert status == 200, found
        for alert in found:
            if alert["detector"] == detector and alert["state"] != "resolved":
                return alert
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def set_policy(live: Server, token: str, **body: Any) -> None:
    status, answer = call(live, "PUT", "/v1/alerts/policies", token, body)
    assert status == 200, answer


def resolve(live: Server, token: str, alert: dict[str, Any], *, reverse: bool) -> dict[str, Any]:
    status, done = call(
        live,
        "POST",
        f"/v1/alerts/{alert['id']}/resolve",
        token,
        {"reason": "drill: the attack was ours", "reverse": reverse},
    )
    assert status == 200, done
    return dict(done)


HEALTH_BASE = "SELECT count(*) AS n FROM health.claims WHERE gender = 'F'"


def test_operators_see_no_alerts(live: Server, home: DemoHome) -> None:
    status, body = call(live, "GET", "/v1/alerts", home.tokens["op-insurer"])
    assert status == 403 and body["rule"] == "alerts.not_visible"
    status, body = call(live, "GET", "/v1/alerts", home.tokens["auditor"])
    assert status == 200


def test_differencing_by_one_person_freezes_the_operator(live: Server, home: DemoHome) -> None:
    """Within 2 queries: a count, then the same count excluding a narrow condition."""
    insurer, bureau = home.tokens["op-insurer"], home.tokens["bureau-health"]
    set_policy(
        live, bureau, scope="dataset", target="health.claims", action="freeze", reason="drill"
    )
    assert rule_of(query(live, insurer, HEALTH_BASE)) == "ok"
    second = HEALTH_BASE + " AND NOT (diagnosis_code = 'J45' AND age >= 80)"
    assert rule_of(query(live, insurer, second)) == "ok"
    alert = alert_of(live, bureau, "differencing", "op-insurer")
    assert alert is not None and alert["severity"] == "high"
    assert len(alert["evidence"]) == 2
    assert alert["responses"] == [{"action": "freeze", "operator": "op-insurer"}]
    assert rule_of(query(live, insurer, HEALTH_BASE)) != "ok"  # frozen, on the next query
    done = resolve(live, bureau, alert, reverse=True)
    assert done["state"] == "resolved" and done["reversed"]
    assert rule_of(query(live, insurer, HEALTH_BASE)) == "ok"  # cached: answered, nothing spent


def test_complement_inside_one_query_holds_results(live: Server, home: DemoHome) -> None:
    """Within 1 query: a count beside the same count with FILTER (WHERE NOT ...)."""
    insurer, bureau = home.tokens["op-insurer"], home.tokens["bureau-health"]
    status, grants = call(live, "GET", "/v1/grants", insurer)
    assert status == 200, grants
    grant = next(g for g in grants if g["dataset"] == "health.claims")
    # The strongest of the dataset's and the grant's policies acts: the dataset's back to notify.
    set_policy(live, bureau, scope="dataset", target="health.claims", action="notify", reason="-")
    set_policy(live, bureau, scope="grant", target=grant["id"], action="hold", reason="drill")
    sql = (
        "SELECT count(*) AS n, count(*) FILTER (WHERE NOT (diagnosis_code = 'E11')) AS rest "
        "FROM health.claims WHERE gender = 'M'"
    )
    assert rule_of(query(live, insurer, sql)) == "ok"
    alert = alert_of(live, bureau, "differencing", "op-insurer")
    assert alert is not None and alert["evidence"] and len(alert["evidence"]) == 1
    assert alert["responses"][0]["action"] == "hold"
    status, held = query(live, insurer, "SELECT count(*) AS n FROM health.claims WHERE age < 40")
    assert status in (200, 202) and held.get("state") != "succeeded"  # held for review
    done = resolve(live, bureau, alert, reverse=True)
    assert [r["action"] for r in done["reversed"]] == ["hold"]


def test_exact_value_probing_suspends_the_grant(live: Server, home: DemoHome) -> None:
    """Within 8 queries: the same refusal again and again (a fare of one card)."""
    planner, bureau = home.tokens["op-planner"], home.tokens["bureau-transport"]
    status, grants = call(live, "GET", "/v1/grants", planner)
    grant = next(g for g in grants if g["dataset"] == "transport.trips")
    set_policy(
        live,
        bureau,
        scope="grant",
        target=grant["id"],
        action="suspend",
        min_severity="warning",
        reason="drill",
    )
    rules = set()
    for n in range(8):
        sql = f"SELECT fare FROM transport.trips WHERE card_id = 'C{n:05d}'"
        rules.add(rule_of(query(live, planner, sql)))
    assert "ok" not in rules and len(rules) == 1, rules
    alert = alert_of(live, bureau, "probing", "op-planner")
    assert alert is not None and alert["severity"] == "warning"
    assert alert["responses"] == [{"action": "suspend", "grant": grant["id"]}]
    after = rule_of(query(live, planner, "SELECT count(*) AS n FROM transport.trips"))
    assert after.startswith("grant"), after
    done = resolve(live, bureau, alert, reverse=True)
    assert done["reversed"] == [{"action": "suspend", "grant": grant["id"]}]
    status, grants = call(live, "GET", "/v1/grants", planner)
    assert status == 200
    assert next(g for g in grants if g["id"] == grant["id"])["status"] == "active"


def test_refusal_burst_is_high_and_freezes(live: Server, home: DemoHome) -> None:
    """Within 20 queries: refusals by several rules."""
    bank, bureau, auditor = (
        home.tokens["op-bank"],
        home.tokens["bureau-health"],
        home.tokens["auditor"],
    )
    attempts = [
        "SELECT person_id FROM health.claims",
        "SELECT name, count(*) FROM health.claims GROUP BY name",
        "SELECT id_number FROM health.claims",
        "SELECT nonexistent FROM health.claims",
    ]
    set_policy(
        live, bureau, scope="dataset", target="health.claims", action="freeze", reason="drill"
    )
    for n in range(20):
        assert rule_of(query(live, bank, attempts[n % 4])) != "ok"
    alert = alert_of(live, auditor, "probing", "op-bank", "high")
    assert alert is not None and alert["severity"] == "high", alert
    assert alert["responses"] == [{"action": "freeze", "operator": "op-bank"}]
    assert rule_of(query(live, bank, "SELECT count(*) AS n FROM health.claims")) == (
        "operator.frozen"
    )
    status, acked = call(
        live, "POST", f"/v1/alerts/{alert['id']}/ack", bureau, {"reason": "looking into it"}
    )
    assert status == 200 and acked["state"] == "acknowledged", acked
    done = resolve(live, bureau, alert, reverse=True)
    assert done["reversed"] == [{"action": "freeze", "operator": "op-bank"}]


def test_alerts_and_acts_on_them_are_audit_entries(live: Server, home: DemoHome) -> None:
    result = sandbox("--home", str(home.home), "alerts", "list", "--json")
    assert result.code == 0, str(result)
    listed = json.loads(result.out)
    assert {a["detector"] for a in listed} >= {"differencing", "probing"}
    status, page = call(
        live, "GET", "/v1/audit/entries?actor=monitor&limit=1000", home.tokens["auditor"]
    )
    assert status == 200
    actions = {e["action"] for e in page["entries"]}
    assert {"alert.open", "alert.respond"} <= actions
    status, page = call(
        live, "GET", "/v1/audit/entries?action=alert.resolve&limit=100", home.tokens["auditor"]
    )
    assert status == 200 and len(page["entries"]) >= 4
    assert all(e["decision"] == "allow" for e in page["entries"])


def test_the_command_line_acts_like_the_routes(live: Server, home: DemoHome) -> None:
    """`sandbox alerts ack|resolve ID --reason …` as the host console; operators refused."""
    refused = sandbox("--home", str(home.home), "alerts", "list", "--token", home.tokens["op-bank"])
    assert refused.code != 0 and "alerts.not_visible" in refused.err, str(refused)
    for _ in range(8):  # a fresh burst by one rule: a warning to act on
        query(live, home.tokens["op-planner"], "SELECT card_id FROM transport.trips")
    alert = alert_of(live, home.tokens["auditor"], "probing", "op-planner", "warning")
    assert alert is not None
    run = lambda *args: sandbox("--home", str(home.home), "alerts", *args)  # noqa: E731
    no_reason = run("ack", alert["id"])
    assert no_reason.code != 0 and "alerts.reason" in no_reason.err, str(no_reason)
    acked = run("ack", alert["id"], "--reason", "the host console looks")
    assert acked.code == 0 and "acknowledged" in acked.out, str(acked)
    done = run("resolve", alert["id"], "--reason", "drill", "--reverse")
    assert done.code == 0 and "resolved" in done.out, str(done)
    shown = json.loads(run("list", "--state", "resolved", "--json").out)
    mine = next(a for a in shown if a["id"] == alert["id"])
    assert mine["acknowledged_by"].startswith("host:") and mine["resolved_reason"] == "drill"


def test_across_two_server_processes(home: DemoHome) -> None:
    """``serve --workers 2``: the two halves of a differencing pair may reach different
    processes; the second one's monitor reads the first from the audit store, and the
    freeze it sets holds on every process at once."""
    insurer, bureau = home.tokens["op-insurer"], home.tokens["bureau-health"]
    with serving(home, "--workers", "2") as two:
        set_policy(
            two, bureau, scope="dataset", target="health.claims", action="freeze", reason="drill"
        )
        base = "SELECT count(*) AS n FROM health.claims WHERE district = 'D03'"
        assert rule_of(query(two, insurer, base)) == "ok"
        assert rule_of(query(two, insurer, base + " AND NOT (gender = 'F' AND age >= 90)")) == "ok"
        alert = alert_of(two, bureau, "differencing", "op-insurer", "high")
        assert alert is not None and alert["responses"][0]["action"] == "freeze"
        refused = {rule_of(query(two, insurer, base)) for _ in range(6)}  # both processes
        assert refused == {"operator.frozen"}, refused
        done = resolve(two, bureau, alert, reverse=True)
        assert done["reversed"] == [{"action": "freeze", "operator": "op-insurer"}]
