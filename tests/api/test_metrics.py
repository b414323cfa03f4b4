"""``GET /metrics`` against real ``sandbox serve`` processes (two workers).

Scrape, run one answered query and one refused, scrape again: the shared counters
(read from the trail and the control plane) and the per-process ones (summed over
both workers through prometheus-client's multiprocess files) moved by exactly that.
Who may scrape: admin and auditor tokens; an operator is refused with
``metrics.not_permitted`` (audited); no token is a 401; ``metrics_loopback_open``
lets a loopback client in without one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import LiveServer, deployment

ANSWERED = "SELECT count(*) AS n FROM health.claims WHERE gender = 'F'"
REFUSED = "SELECT card_id FROM transport.trips"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def total(s: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in s.items() if n == name and want <= set(ls))


def scrape(live: LiveServer, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{live.url}/metrics", headers=headers, timeout=60)


def query(live: LiveServer, token: str, sql: str) -> dict[str, object]:
    answer = httpx.post(
        f"{live.url}/v1/jobs?wait=true&timeout=60",
        json={"sql": sql},
        headers={"Authorization": f"Bearer {token}"},
        timeout=90,
    )
    body: dict[str, object] = answer.json()
    return body


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("metrics") / "home"
    server = LiveServer(home, deployment(home), env={"SANDBOX_JOB_WORKERS": "1"})
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


def test_counters_move_by_exactly_one_query_and_one_refusal(live: LiveServer) -> None:
    auditor = live.tokens["auditor"]
    first = scrape(live, auditor)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
    before = samples(first.text)

    answered = query(live, live.tokens["op-insurer"], ANSWERED)
    assert answered.get("state") == "succeeded", answered
    refused = query(live, live.tokens["op-planner"], REFUSED)
    rule = refused.get("rule") or (refused.get("error") or {}).get("rule")  # type: ignore[union-attr]
    assert isinstance(rule, str) and rule, refused

    # Several scrapes, answered by either worker: every one reports the same shared totals.
    after = [samples(scrape(live, live.tokens["admin"]).text) for _ in range(4)]
    shared = {
        name: {k: v for k, v in s.items() if k[0] == name}
        for s in after[:1]
        for name in ("sandbox_audit_entries_total", "sandbox_refusals_total")
    }
    for s in after[1:]:
        for name, series in shared.items():
            assert {k: v for k, v in s.items() if k[0] == name} == series
    now = after[0]

    entries = "sandbox_audit_entries_total"
    for decision in ("allow", "deny"):
        moved = value(now, entries, action="dataset.query", decision=decision) - value(
            before, entries, action="dataset.query", decision=decision
        )
        assert moved == 1, (decision, moved)
    refusals = "sandbox_refusals_total"
    assert (
        value(now, refusals, action="dataset.query", rule=rule)
        - value(before, refusals, action="dataset.query", rule=rule)
        == 1
    )
    assert (
        total(now, refusals, action="dataset.query")
        - total(before, refusals, action="dataset.query")
        == 1
    )

    spent, claims = "sandbox_epsilon_spent", {"dataset": "health.claims"}
    assert value(now, spent, **claims) > value(before, spent, **claims)
    assert (
        value(now, "sandbox_jobs", state="succeeded")
        - value(before, "sandbox_jobs", state="succeeded")
        == 1
    )
    assert value(now, "sandbox_jobs", state="queued") == 0
    for severity in ("info", "warning", "high"):
        assert ("sandbox_alerts", (("severity", severity), ("state", "open"))) in now

    # Per process, summed over both workers: the two POSTs, whichever worker took them.
    posts = "sandbox_http_requests_total"
    assert (
        total(now, posts, method="POST", route="/v1/jobs")
        - total(before, posts, method="POST", route="/v1/jobs")
        == 2
    )
    appended = "sandbox_audit_append_seconds_count"
    assert total(now, appended) - total(before, appended) >= 2

    # Labels name rules, actions, decisions, severities, states and datasets: no SQL.
    assert "card_id" not in scrape(live, auditor).text


def test_only_admin_and_auditors_scrape(live: LiveServer) -> None:
    assert scrape(live, None).status_code == 401
    before = samples(scrape(live, live.tokens["auditor"]).text)
    denied = scrape(live, live.tokens["op-bank"])
    assert denied.status_code == 403
    assert denied.json()["rule"] == "metrics.not_permitted"
    assert scrape(live, live.tokens["bureau-health"]).status_code == 403
    now = samples(scrape(live, live.tokens["auditor"]).text)
    key = {"action": "metrics.read", "rule": "metrics.not_permitted"}
    assert (
        value(now, "sandbox_refusals_total", **key) - value(before, "sandbox_refusals_total", **key)
        == 2
    )


def test_loopback_scrape_without_a_token_when_opened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"SANDBOX_METRICS_LOOPBACK_OPEN": "true", "SANDBOX_JOB_WORKERS": "1"}
    server = LiveServer(home, deployment(home), env=env).start()
    try:
        answer = scrape(server, None)
        assert answer.status_code == 200, answer.text
        assert "sandbox_audit_entries_total" in answer.text
    finally:
        server.stop()


def test_only_loopback_addresses_count_as_loopback() -> None:
    from sandbox.api.metrics import _loopback

    assert _loopback("127.0.0.1") and _loopback("127.8.9.10") and _loopback("::1")
    for client in ("10.0.0.1", "192.168.1.1", "::ffff:8.8.8.8", "testclient", "", None):
        assert not _loopback(client), client


def test_a_request_is_counted_before_its_answer_reaches_the_client() -> None:
    """The client may scrape the other worker the moment its answer arrives: the count
    must already be there when the last body message goes out (it raced when counted
    after the app returned)."""
    import asyncio

    from starlette.routing import Route

    from sandbox.api.metrics import HTTP_REQUESTS, CountRequests

    key = ("POST", "/v1/race", "201")
    seen: list[float] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        scope["route"] = Route("/v1/race", endpoint=lambda request: None)
        await send({"type": "http.response.start", "status": 201, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"a", "more_body": True})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"b"})  # type: ignore[operator]

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            seen.append(HTTP_REQUESTS.labels(*key)._value.get())

    before = HTTP_REQUESTS.labels(*key)._value.get()

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    asyncio.run(CountRequests(app)({"type": "http", "method": "POST"}, receive, send))
    assert seen == [before, before + 1]
    assert HTTP_REQUESTS.labels(*key)._value.get() == before + 1
