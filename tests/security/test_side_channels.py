"""What one operator can learn about other accounts' activity (issue 13, leak 9).

Two deployments built alike, each behind a real ``sandbox serve``: in the *busy* one,
other accounts work between two rounds of op-bank's requests (jobs, refusals, the
very query op-bank asks, budget spent, a cancelled job, explains); in the *quiet* one
nobody does.  Everything op-bank receives in its second round (status, headers, bodies
of receipts, results, job records, lists, explain, usage, statements, errors) must be
the same in both worlds once op-bank's own per-request values are masked: its own
ids, hashes that chain over the audit log, timestamps and signatures.  A platform-wide
counter (an audit seq, a global policy version, a sequential request or job id) would
differ between the worlds and fail here.

Masked, with why it is not a count of other accounts' activity:

- ids (``job_``, ``gr_``, ``tk_``, request ids): random (checked below: uuid4);
- hashes that chain over the log (``audit_entry_hash``) and signatures: one-way, and
  the audit log itself is closed to operators (403, checked below);
- timestamps: wall-clock; what they say about queueing is what an operator measures
  with its own clock by polling, bounded by the fair queue (docs/threat-model.md);
- ``cpu_ms`` / ``cpu_seconds``: op-bank's own CPU time, which varies run to run.  It
  is the running thread's CPU clock: the process clock it used to be also counted
  other operators' concurrent jobs (a timing effect this test cannot pin down).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import SecurityServer, start_security_server

OBSERVER = "op-bank"
OTHERS = ("op-insurer", "op-planner")
QUERY = "SELECT district, count(*) AS n FROM health.claims GROUP BY district"
REFUSED = "SELECT name, count(*) FROM health.claims GROUP BY name"
UUID4_HEX = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")

ID = re.compile(r"\b(job|gr|tk|up|rn|en)_[0-9a-f]{8,}\b")
HEX = re.compile(r"\b[0-9a-f]{32}\b")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?")
#: Keys whose values are op-bank's own per-request values or wall-clock measures.
MASKED_KEYS = {"audit_entry_hash", "entry_hash", "signature", "key_id", "cpu_ms"}
#: Headers that differ per request by nature (compared for presence only).
PER_REQUEST_HEADERS = {"date", "content-length", "x-request-id"}

Observed = dict[str, Any]


def mask(value: Any) -> Any:
    """op-bank's view with its own per-request values replaced by placeholders."""
    if isinstance(value, dict):
        return {k: "<masked>" if k in MASKED_KEYS else mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return HEX.sub("<hex>", ID.sub(r"\1_<id>", TIME.sub("<time>", value)))
    return value


def mask_statement(csv: str) -> str:
    """A statement CSV with its cpu_seconds column masked."""
    lines = csv.splitlines()
    if not lines:
        return csv
    header = lines[0].split(",")
    cpu = header.index("cpu_seconds") if "cpu_seconds" in header else -1
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if 0 <= cpu < len(cells):
            cells[cpu] = "<cpu>"
        out.append(",".join(cells))
    return "\n".join(out)


def caller(server: SecurityServer, who: str) -> Callable[..., httpx.Response]:
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.tokens[who]}"},
        timeout=60,
        transport=server.transport,
    )

    def call(method: str, path: str, **kw: Any) -> httpx.Response:
        return client.request(method, path, **kw)

    return call


def seen(response: httpx.Response) -> Observed:
    """One response as op-bank sees it, masked."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        body: Any = mask(response.json())
    elif kind.startswith("text/csv"):
        body = mask(mask_statement(response.text))
    else:
        body = mask(response.text)
    headers = {
        k: ("<present>" if k in PER_REQUEST_HEADERS else mask(v))
        for k, v in sorted(response.headers.items())
    }
    return {"status": response.status_code, "headers": headers, "body": body}


def wait_done(call: Callable[..., httpx.Response], job_id: str) -> httpx.Response:
    for _ in range(600):
        response = call("GET", f"/v1/jobs/{job_id}")
        if response.json()["state"] not in ("queued", "running"):
            return response
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def reviewed(server: SecurityServer, held: httpx.Response) -> httpx.Response:
    """op-bank's grants are reviewed: a held job is approved by the health bureau (in both
    worlds alike) and then read back; a job answered from op-bank's own cache is as is."""
    job = held.json()
    if job.get("state") != "awaiting_review":
        return held
    bureau = caller(server, "bureau-health")
    approval = bureau(
        "POST", f"/v1/reviews/{job['id']}", json={"verdict": "approve", "reason": "ok"}
    )
    assert approval.status_code == 200, approval.text[:300]
    return caller(server, OBSERVER)("GET", f"/v1/jobs/{job['id']}")


def observe(server: SecurityServer, month: str, foreign_job: str) -> dict[str, Observed]:
    """Every kind of answer op-bank can get, in a fixed order."""
    call = caller(server, OBSERVER)
    out: dict[str, Observed] = {}
    for name, path in (
        ("me", "/v1/me"),
        ("grants", "/v1/grants"),
        ("usage", "/v1/usage"),
        ("datasets", "/v1/datasets"),
        ("settings", "/v1/settings"),
        ("health", "/health"),
        ("statement", f"/v1/statements/{month}"),
        ("audit entries", "/v1/audit/entries"),
        ("tree head", "/v1/audit/tree-head"),
        ("no such job", "/v1/jobs/job_000000000000000000000000"),
        ("another operator's job", f"/v1/jobs/{foreign_job}"),
        ("another operator's receipt", f"/v1/jobs/{foreign_job}/receipt"),
        ("no such route", "/v1/nothing-here"),
    ):
        out[name] = seen(call("GET", path))
    out["explain"] = seen(call("POST", "/v1/explain", json={"sql": QUERY}))
    out["explain refused"] = seen(call("POST", "/v1/explain", json={"sql": REFUSED}))
    out["invalid body"] = seen(call("POST", "/v1/explain", json={"sql": ""}))
    out["refused job"] = seen(call("POST", "/v1/jobs?wait=true", json={"sql": REFUSED}))
    done = reviewed(server, call("POST", "/v1/jobs?wait=true", json={"sql": QUERY}))
    job_id = done.json()["id"]
    out["job"] = seen(done)
    out["job again"] = seen(call("GET", f"/v1/jobs/{job_id}"))
    out["receipt"] = seen(call("GET", f"/v1/jobs/{job_id}/receipt"))
    out["result"] = seen(call("GET", f"/v1/jobs/{job_id}/result?format=json"))
    out["result csv"] = seen(call("GET", f"/v1/jobs/{job_id}/result?format=csv"))
    fresh = "SELECT gender, count(*) AS n FROM health.claims GROUP BY gender"
    queued = call("POST", "/v1/jobs", json={"sql": fresh})
    # Its state and progress at this instant race the worker: compare its shape.
    out["queued"] = {"status": queued.status_code, "keys": sorted(queued.json())}
    out["async job"] = seen(reviewed(server, wait_done(call, queued.json()["id"])))
    out["cancel finished"] = seen(call("POST", f"/v1/jobs/{job_id}/cancel"))
    out["jobs"] = seen(call("GET", "/v1/jobs"))
    out["usage after"] = seen(call("GET", "/v1/usage"))
    return out


def others_work(server: SecurityServer) -> str:
    """Other accounts' activity between op-bank's rounds; returns a job id of theirs."""
    insurer = caller(server, "op-insurer")
    planner = caller(server, "op-planner")
    ids = []
    for _ in range(3):
        ids.append(insurer("POST", "/v1/jobs?wait=true", json={"sql": QUERY}).json()["id"])
        insurer("POST", "/v1/explain", json={"sql": REFUSED})
        insurer("POST", "/v1/jobs?wait=true", json={"sql": REFUSED})
        planner(
            "POST",
            "/v1/jobs?wait=true",
            json={"sql": "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1"},
        )
    slow = insurer("POST", "/v1/jobs", json={"sql": QUERY.replace("district", "gender")})
    insurer("POST", f"/v1/jobs/{slow.json()['id']}/cancel")
    insurer("GET", "/v1/usage")
    planner("GET", "/v1/jobs")
    return ids[0]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """op-bank's two rounds in a quiet and in a busy deployment."""
    from datetime import UTC, datetime

    month = datetime.now(UTC).strftime("%Y-%m")
    found: dict[str, Any] = {}
    for world in ("quiet", "busy"):
        server = start_security_server(tmp_path_factory.mktemp(world) / "home")
        try:
            placeholder = "job_" + "ab" * 12
            first = observe(server, month, placeholder)
            foreign = others_work(server) if world == "busy" else placeholder
            found[world] = {
                "first": first,
                "second": observe(server, month, foreign),
                "responses": server.assert_no_leaks(),
                "others": caller(server, "auditor")(
                    "GET", "/v1/audit/entries", params={"actor": "op-insurer", "limit": 1000}
                ).json()["entries"],
            }
        finally:
            server.live.stop()
            server.transport.close()
    yield found


def _diff(a: Observed, b: Observed) -> str:
    return json.dumps({"quiet": a, "busy": b}, ensure_ascii=False, indent=1)[:4000]


def test_the_busy_world_is_busier(worlds: dict[str, Any]) -> None:
    """The control: other accounts' work did reach the log, so a seq would have differed."""
    quiet, busy = len(worlds["quiet"]["others"]), len(worlds["busy"]["others"])
    assert busy >= quiet + 9, (quiet, busy)


def test_the_first_rounds_agree(worlds: dict[str, Any]) -> None:
    """Before anybody else works, the two deployments answer alike (the masking is enough)."""
    quiet, busy = worlds["quiet"]["first"], worlds["busy"]["first"]
    for name in quiet:
        assert quiet[name] == busy[name], f"{name}: {_diff(quiet[name], busy[name])}"


def test_nothing_op_bank_receives_counts_other_accounts_activity(worlds: dict[str, Any]) -> None:
    quiet, busy = worlds["quiet"]["second"], worlds["busy"]["second"]
    assert set(quiet) == set(busy)
    for name in quiet:
        assert quiet[name] == busy[name], f"{name}: {_diff(quiet[name], busy[name])}"


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def test_no_platform_wide_counter_by_name(worlds: dict[str, Any]) -> None:
    """Leak 9 itself: no audit seq or global policy version in anything op-bank receives."""
    names = {
        key
        for world in worlds.values()
        for round_ in ("first", "second")
        for seen_ in world[round_].values()
        for key in _keys(seen_.get("body"))
    }
    assert "audit_entry_hash" in names and "grants" in names  # the receipt was looked at
    assert not {n for n in names if re.search(r"seq|policy_version|sequence", n)}, names


def test_the_audit_log_is_closed_to_operators(worlds: dict[str, Any]) -> None:
    second = worlds["busy"]["second"]
    assert second["audit entries"]["status"] == 403
    assert second["tree head"]["status"] == 403


def test_another_operators_job_is_indistinguishable_from_none(worlds: dict[str, Any]) -> None:
    second = worlds["busy"]["second"]
    assert second["another operator's job"]["status"] == 404
    assert second["another operator's job"] == second["no such job"]
    assert second["another operator's receipt"]["status"] == 404


def test_a_repeat_of_another_operators_query_is_not_served_from_their_release(
    worlds: dict[str, Any],
) -> None:
    """The release cache is per account: op-insurer's identical query makes no difference."""
    job = worlds["busy"]["second"]["job"]["body"]
    assert job["state"] == "succeeded"
    assert job["meta"]["cached"] is True  # op-bank's own first round
    assert job["meta"]["released_by"] == "job_<id>"


def test_ids_are_random_not_sequential(tmp_path: Path) -> None:
    """Request and job ids are uuid4 (122 random bits): no order, no count."""
    server = start_security_server(tmp_path / "home")
    try:
        call = caller(server, OBSERVER)
        request_ids = [call("GET", "/v1/me").headers["x-request-id"] for _ in range(5)]
        job_ids = [
            call("POST", "/v1/jobs", json={"sql": f"{QUERY} LIMIT {n}"}).json()["id"]
            for n in range(1, 4)
        ]
    finally:
        server.live.stop()
        server.transport.close()
    assert all(UUID4_HEX.fullmatch(r) for r in request_ids), request_ids
    assert len(set(request_ids)) == 5
    for job_id in job_ids:
        hex_part = job_id.removeprefix("job_")
        assert len(hex_part) == 24 and hex_part[12] == "4", job_id
