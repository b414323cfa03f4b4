"""docs/audit.md against the entries a demo deployment really writes, and its receipt format.

One session drives a served demo deployment through every role (and the host
console), then reads the whole trail.  Every member, action, target form and query
detail the document names must occur, and everything that occurs must be documented;
a release receipt is verified with only what section 5.1 says (cryptography and
rfc8785 directly, not the project's verify function).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditTrail, EntryFilter, KeyRing
from audit.cosignature import witness_verifier
from tests.api.conftest import LiveServer, served

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "audit.md").read_text("utf-8")
EXAMPLES = ROOT / "examples"
SAFE = 2**53 - 1

NOT_EXERCISED = {
    "api.internal_error": "needs a bug (tests/api/test_internal_errors.py injects one)",
    "token.issue": "depends on how the demo gives accounts their tokens (tests/policies)",
    "enrolment.issue": "depends on how the demo gives accounts their tokens (tests/policies)",
    "enrolment.redeem": "depends on how the demo gives accounts their tokens (tests/policies)",
    "enrolment.approve": "dual control (tests/policies/test_enrolment.py, tests/blackbox)",
    "keys.rotate": "host console key management (tests/blackbox/test_encryption.py)",
    "keys.reencrypt": "host console key management (tests/blackbox/test_encryption.py)",
    **{
        f"alert.{act}": "risk alerts (tests/blackbox/test_monitoring.py)"
        for act in ("open", "escalate", "respond", "read", "acknowledge", "resolve", "policy")
    },
}
"""Documented actions this session does not produce, and where they are tested."""

DETAILS_NOT_EXERCISED = {"job": "a job interrupted by a crash (tests/security/test_faults.py)"}


def section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n#", start + len(title))
    return DOC[start : end if end > 0 else len(DOC)]


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]  # not the |---| line
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_members() -> set[str]:
    return {ticked(row[0])[0] for row in table_rows(section("## 1. Entries"))}


def documented_actions() -> dict[str, list[re.Pattern[str]]]:
    actions: dict[str, list[re.Pattern[str]]] = {}
    for row in table_rows(section("### 1.1 Actions")):
        forms = [
            re.compile(re.sub(r"<[^>]+>", ".+", re.escape(form).replace(r"\<", "<")))
            for form in ticked(row[1])
        ]
        for action in ticked(row[0]):
            actions[action] = forms
    return actions


def documented_query_details() -> tuple[set[str], set[str]]:
    text = section("### 1.2 Query details")
    table = {ticked(row[0])[0] for row in table_rows(text)}
    optional = set(ticked(text.split("may also carry", 1)[1]))
    return table, optional


@dataclass
class Session:
    live: LiveServer
    client: httpx.Client
    receipts: list[dict[str, Any]] = field(default_factory=list)

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        token = self.live.tokens.get(who, who)
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def ok(self, who: str, method: str, path: str, **kw: Any) -> Any:
        answer = self.call(who, method, path, **kw)
        assert answer.status_code < 300, (path, answer.status_code, answer.text)
        return answer.json() if "json" in answer.headers.get("content-type", "") else None

    def job(self, who: str, sql: str) -> dict[str, Any]:
        return self.call(who, "POST", "/v1/jobs?wait=true", json={"sql": sql}).json()  # type: ignore[no-any-return]


def host(home: Path, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def drive(s: Session, home: Path) -> None:
    """Every role's acts, allowed and refused, over HTTP and from the host console."""
    by_district = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"
    # The host console registers before the server has opened the enclave for a query.
    host(home, "dataset", "register", str(EXAMPLES / "visits.toml"),
         "--source", str(EXAMPLES / "visits.csv"))  # fmt: skip
    # operator
    s.ok("op-bank", "GET", "/v1/me")
    grants = s.ok("op-bank", "GET", "/v1/grants")
    s.ok("op-bank", "GET", f"/v1/grants/{grants[0]['id']}")
    s.ok("op-bank", "GET", "/v1/datasets")
    s.ok("op-bank", "POST", "/v1/explain", json={"sql": by_district})
    s.ok("op-bank", "POST", "/v1/explain", json={"sql": "SELECT * FROM health.claims"})
    job = s.job("op-bank", by_district)  # op-bank's grants are reviewed: held, then approved
    assert job["state"] == "awaiting_review", job
    s.ok("bureau-health", "POST", f"/v1/reviews/{job['id']}",
         json={"verdict": "approve", "reason": "district counts"})  # fmt: skip
    assert s.job("op-bank", by_district)["meta"]["cached"]
    assert s.job("op-bank", "SELEC district FRM x")["rule"] == "guard.syntax"  # refused at once
    assert s.call("op-bank", "GET", "/metrics").json()["rule"] == "metrics.not_permitted"
    signed_in = {"Cookie": f"sbx_console={s.live.tokens['op-bank']}"}  # a console session
    assert s.client.get("/console/admin", headers=signed_in).status_code == 403  # console.page
    assert s.call("op-bank", "POST", "/v1/jobs", json={"sql": "SELECT name FROM x.y"}).is_error
    s.ok("op-bank", "GET", f"/v1/jobs/{job['id']}")
    s.ok("op-bank", "GET", "/v1/jobs")
    assert s.call("op-bank", "GET", f"/v1/jobs/{job['id']}/result").status_code == 200
    s.receipts.append(s.ok("op-bank", "GET", f"/v1/jobs/{job['id']}/receipt"))
    s.call("op-bank", "POST", f"/v1/jobs/{job['id']}/cancel")  # over: refused, recorded
    s.ok("op-bank", "GET", "/v1/usage")
    assert s.call("op-bank", "GET", f"/v1/statements/{datetime.now(UTC):%Y-%m}").status_code == 200
    budgeted = s.job("op-insurer", "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1")
    assert budgeted["state"] == "succeeded", budgeted
    above = s.job(  # a threshold: its released value is recorded (`thresholds`)
        "op-insurer",
        "SELECT count(*) AS n FROM health.claims "
        "WHERE claim_amount > (SELECT avg(claim_amount) FROM health.claims)",
    )
    assert above["state"] == "succeeded", above
    # bureau: upload, register, classify, grants, review
    upload = s.ok(
        "bureau-health",
        "POST",
        "/v1/uploads?domain=health&filename=visits.csv",
        content=(EXAMPLES / "visits.csv").read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    toml = (EXAMPLES / "visits.toml").read_text()
    body = {"classification": toml, "source": {"upload_id": upload["upload_id"]}}
    # Direct registration over HTTP is closed (the procedure is the bureau's path).
    closed = s.call("bureau-health", "POST", "/v1/datasets", json=body)
    assert closed.json()["rule"] == "registration.procedure", closed.text
    s.call("bureau-health", "PUT", "/v1/datasets/health.visits/classification",
           json={"classification": toml})  # fmt: skip
    grant = s.ok(
        "bureau-health",
        "POST",
        "/v1/grants",
        json={
            "dataset": "health.visits",
            "operator": "op-planner",
            "purpose_code": "clinic-planning",
            "purpose_text": "outpatient load per district",
            "valid_until": "2027-12-31T00:00:00Z",
            "max_level": "L2",
            "release_mode": "reviewed",
            "reason": "pilot",
        },
    )
    s.ok("bureau-health", "POST", f"/v1/grants/{grant['id']}/narrow", json={"k": 12})
    held = s.job("op-planner", "SELECT district, sum(cost) AS cost FROM health.visits GROUP BY 1")
    assert held["state"] == "awaiting_review", held
    s.ok("bureau-health", "GET", "/v1/reviews")
    s.ok("bureau-health", "POST", f"/v1/reviews/{held['id']}",
         json={"verdict": "approve", "reason": "fine"})  # fmt: skip
    s.ok("bureau-health", "POST", f"/v1/grants/{grant['id']}/release-mode",
         json={"mode": "dp", "reason": "pilot over"})  # fmt: skip
    for change in ("suspend", "resume", "revoke"):
        s.ok("bureau-health", "POST", f"/v1/grants/{grant['id']}/{change}", json={"reason": "x"})
    # auditor
    s.ok("auditor", "GET", "/v1/audit/entries?limit=3")
    s.ok("auditor", "GET", "/v1/audit/counts?by=action")
    s.ok("auditor", "POST", "/v1/audit/verify")
    assert s.call("auditor", "GET", "/v1/audit/export").status_code == 200  # signs a head
    s.ok("auditor", "GET", "/v1/audit/tree-head")
    s.ok("auditor", "GET", "/v1/audit/proofs/inclusion?seq=2")
    s.ok("auditor", "GET", "/v1/audit/proofs/consistency?size1=2")
    s.ok("auditor", "GET", "/v1/audit/checkpoint/proof?old=0&size=0")  # audit.cosign
    # admin
    s.ok("admin", "GET", "/v1/admin/accounts")
    s.ok(
        "admin",
        "POST",
        "/v1/admin/accounts",
        json={
            "name": "op-lab",
            "role": "operator",
            "organisation": "University lab",
            "licence": {"number": "SZ-OP-LAB-2026", "valid_until": "2027-12-31T00:00:00Z"},
        },
    )
    s.ok("admin", "PUT", "/v1/admin/accounts/op-lab/licence",
         json={"number": "SZ-OP-LAB-2027", "valid_until": "2028-12-31T00:00:00Z"})  # fmt: skip
    s.ok("admin", "POST", "/v1/admin/accounts/op-lab/disable", json={"reason": "left"})
    for verb in ("freeze", "unfreeze"):
        s.ok(
            "admin", "POST", f"/v1/admin/{verb}", json={"dataset": "transport.trips", "reason": "x"}
        )
        s.ok("admin", "POST", f"/v1/admin/{verb}", json={"operator": "op-planner", "reason": "x"})
    s.ok("admin", "POST", "/v1/admin/keys/rotate", json={"reason": "yearly"})
    witness = witness_verifier("auditor.test/witness", Ed25519PrivateKey.generate()).vkey()
    s.ok("admin", "PUT", "/v1/admin/witnesses/auditor", json={"vkey": witness})
    assert s.call("admin", "GET", "/v1/jobs").status_code == 403
    me = s.ok("op-insurer", "GET", "/v1/me")
    s.ok("admin", "POST", f"/v1/admin/tokens/{me['token_id']}/revoke", json={"reason": "x"})
    assert s.call("op-insurer", "GET", "/v1/me").status_code == 401  # a revoked token
    s.ok("admin", "PUT", "/v1/admin/settings", json={"rate_limit_per_minute": 3})
    limited = [s.call("op-bank", "GET", "/v1/me").status_code for _ in range(12)]
    assert 429 in limited, limited
    # the host console
    for args in (("export", "--out", str(home.parent / "export")), ("sign",), ("head",),
                 ("proof", "--seq", "1"), ("entries", "--limit", "1"), ("counts",)):  # fmt: skip
        host(home, "audit", *args)


@dataclass(frozen=True)
class Recorded:
    entries: list[dict[str, Any]]
    receipt: dict[str, Any]
    home: Path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    root = tmp_path_factory.mktemp("auditdoc")
    with served(root, {"SANDBOX_JOB_WORKERS": "2"}) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            session = Session(live, client)
            drive(session, live.home)
    with AuditTrail.open(f"sqlite:///{live.home / 'audit.db'}", KeyRing(live.home / "keys")) as t:
        entries = [e.to_dict() for e in t.entries(EntryFilter(), limit=10_000)]
    yield Recorded(entries, session.receipts[0], live.home)


def test_every_entry_has_exactly_the_documented_members(recorded: Recorded) -> None:
    members = documented_members()
    assert members >= {"seq", "prev", "details", "v"}
    for entry in recorded.entries:
        assert set(entry) == members, entry["seq"]


def test_every_action_is_documented_with_its_target_form(recorded: Recorded) -> None:
    actions = documented_actions()
    for entry in recorded.entries:
        forms = actions.get(entry["action"])
        assert forms is not None, f"undocumented action {entry['action']}"
        assert any(f.fullmatch(entry["target"]) for f in forms), (
            f"{entry['action']}: target {entry['target']!r} is not a documented form"
        )


def test_every_documented_action_occurs(recorded: Recorded) -> None:
    seen = {e["action"] for e in recorded.entries}
    missing = set(documented_actions()) - seen - set(NOT_EXERCISED)
    assert not missing, f"documented but never recorded: {sorted(missing)}"
    assert set(NOT_EXERCISED) <= set(documented_actions())


def test_host_commands_are_recorded_as_documented(recorded: Recorded) -> None:
    by_host = [e for e in recorded.entries if e["actor"] == f"host:{getpass.getuser()}"]
    commands = {(e["action"], e["details"].get("command")) for e in by_host}
    assert {("audit.export", "export"), ("audit.sign", "sign"), ("audit.read", "head")} <= commands
    assert ("dataset.register", None) in commands


def test_query_details_are_documented_and_occur(recorded: Recorded) -> None:
    table, optional = documented_query_details()
    queries = [e for e in recorded.entries if e["action"] == "dataset.query"]
    seen = set().union(*(set(e["details"]) for e in queries))
    assert not seen - table - optional, f"undocumented: {sorted(seen - table - optional)}"
    assert not table - seen - set(DETAILS_NOT_EXERCISED), sorted(table - seen)
    for entry in queries:
        details = entry["details"]
        assert ("normalized_sql" in details) != ("sql" in details), entry["seq"]
        text = details.get("normalized_sql", details.get("sql"))
        if "normalized_sql" in details:
            assert details["query_sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_every_number_is_in_the_documented_range(recorded: Recorded) -> None:
    assert "±(2^53\N{MINUS SIGN}1)" in DOC

    def numbers(value: Any) -> Iterator[float]:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from numbers(item)
        elif isinstance(value, list):
            for item in value:
                yield from numbers(item)

    assert all(-SAFE <= n <= SAFE for e in recorded.entries for n in numbers(e))


def _doc_receipt_checker() -> Any:
    text = section("### 5.1 Release receipts")
    code = text[text.index("```python") + len("```python") : text.rindex("```")]
    namespace: dict[str, Any] = {"__name__": "doc_receipt_checker"}
    exec(compile(code, "docs/audit.md", "exec"), namespace)
    return namespace["check_release_receipt"]


def test_a_real_receipt_verifies_with_only_what_the_doc_says(recorded: Recorded) -> None:
    check = _doc_receipt_checker()
    doc = recorded.receipt
    body = check(doc, recorded.home / "keys")
    # The body has exactly the documented members.
    documented = set(re.findall(r"`(\w+)`", section("### 5.1").split("The body (`receipt`)")[1]
                                .split("**The signed bytes")[0]))  # fmt: skip
    assert set(body) <= documented and {"type", "audit", "result_sha256"} <= set(body)
    # It pins its audit entry by hash only (a seq would count other accounts' activity):
    # the export's line whose target is query:<request_id> hashes to audit.entry_hash.
    assert set(body["audit"]) == {"entry_hash"} and "policy_version" not in body
    lines = (recorded.home.parent / "export" / "entries.jsonl").read_bytes().split(b"\n")
    target = f"query:{body['request_id']}"
    (line,) = [
        raw
        for raw in lines
        if raw
        and json.loads(raw)["target"] == target
        and hashlib.sha256(bytes.fromhex(json.loads(raw)["prev"]) + raw).hexdigest()
        == body["audit"]["entry_hash"]
    ]
    entry = json.loads(line)
    assert entry["details"]["result_sha256"] == body["result_sha256"]
    assert entry["details"]["query_sha256"] == body["query_sha256"]
    # A changed body, or a signature under another key id, fails.
    tampered = json.loads(json.dumps(doc))
    tampered["receipt"]["rows"] += 1
    with pytest.raises(InvalidSignature):
        check(tampered, recorded.home / "keys")
    forged = {**doc, "signature": base64.b64encode(b"\x00" * 64).decode()}
    with pytest.raises(InvalidSignature):
        check(forged, recorded.home / "keys")
