"""The admin manages accounts but never acts as one (管运分离), over a real server.

Every path by which the admin could obtain data or grant rights is tried and refused
with its rule (and audited with it): another account's token over the API and the
command line, grants, queries, jobs, results, receipts, reviews, registrations.
What the admin may do to another account is create, disable, revoke its tokens,
freeze it and issue it an enrolment code; and every audit entry names the acting
token and who issued it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from policies.bearer import new_secret
from policies.tokens import TOKEN_PREFIX, hash_token
from sandbox.client import SandboxClient
from sandbox.core.errors import AuthenticationError, SandboxError
from tests.api.conftest import LAB_EVENTS

DEMO = Path(__file__).resolve().parents[2] / "sandbox" / "enclave" / "demo"
BY_DISTRICT = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"
UNTIL = (datetime.now(UTC) + timedelta(days=30)).isoformat()


def _refused(call: Any) -> SandboxError:
    with pytest.raises(SandboxError) as raised:
        call()
    return raised.value


def test_every_way_to_data_or_rights_is_refused_to_the_admin(server) -> None:  # type: ignore[no-untyped-def]
    with server.client("op-bank") as bank:
        job = bank.submit(BY_DISTRICT, wait=True)  # reviewed: held until the bureau approves
    with server.client("bureau-health") as bureau:
        job = bureau.approve(job["id"], "district counts")
        assert job["state"] == "succeeded"
    with server.client("op-bank") as bank:
        grant_id = next(g["id"] for g in bank.grants() if g["dataset"] == "health.claims")
    claims_toml = (DEMO / "health.claims.toml").read_text("utf-8")
    grant = {
        "dataset": "health.claims",
        "operator": "op-bank",
        "purpose_code": "admin-self-grant",
        "purpose_text": "the admin granting data",
        "valid_until": UNTIL,
    }
    with server.client("admin") as admin:
        attempts: list[tuple[str, Any, int, str]] = [
            (
                "token for another account (API)",
                lambda: admin.issue_token("op-bank", days=1),
                403,
                "token.not_own",
            ),
            (
                "token for a bureau (API)",
                lambda: admin.issue_token("bureau-health", days=1),
                403,
                "token.not_own",
            ),
            ("grant issue", lambda: admin.issue_grant(**grant), 403, "role.not_permitted"),
            (
                "grant narrow",
                lambda: admin.narrow_grant(grant_id, queries_per_day=1),
                403,
                "role.not_permitted",
            ),
            (
                "grant release-mode",
                lambda: admin.set_release_mode(grant_id, "dp", reason="admin tries"),
                403,
                "role.not_permitted",
            ),
            (
                "grant resume",
                lambda: admin.grant_status(grant_id, "resume"),
                403,
                "role.not_permitted",
            ),
            ("grant list", lambda: admin.grants(), 403, "role.not_permitted"),
            ("job submit", lambda: admin.submit(BY_DISTRICT), 403, "role.not_permitted"),
            ("job list", lambda: admin.jobs(), 403, "role.not_permitted"),
            ("job status", lambda: admin.job(job["id"]), 403, "role.not_permitted"),
            ("result fetch", lambda: admin.result(job["id"]), 403, "role.not_permitted"),
            ("receipt fetch", lambda: admin.receipt(job["id"]), 403, "role.not_permitted"),
            ("review queue", lambda: admin.reviews(), 403, "role.not_permitted"),
            ("review show", lambda: admin.review(job["id"]), 403, "role.not_permitted"),
            (
                "review approve",
                lambda: admin.approve(job["id"], "the admin approving"),
                403,
                "role.not_permitted",
            ),
            (
                "dataset register",
                lambda: admin.register(LAB_EVENTS, path="events.parquet"),
                403,
                "registration.procedure",
            ),
            (
                "upload",
                lambda: admin.request(
                    "POST",
                    "/v1/uploads",
                    params={"domain": "health", "filename": "x.csv"},
                    content=b"a,b\n1,2\n",
                ),
                403,
                "role.not_permitted",
            ),
            (
                "reclassify",
                lambda: admin.classify("health.claims", claims_toml),
                403,
                "role.not_permitted",
            ),
            ("audit trail", lambda: admin.audit_entries(), 403, "role.not_permitted"),
        ]
        for what, call, status, rule in attempts:
            error = _refused(call)
            assert (error.status, error.rule) == (status, rule), what
        # A query the admin asks to explain is refused by the same rule (nothing runs).
        verdict = admin.explain(BY_DISTRICT)
        assert (verdict["accepted"], verdict["rule"]) == (False, "role.not_permitted")
        # What the admin may do: its own token, and codes and ids (never tokens) of others.
        own = admin.issue_own_token(days=1, label="admin laptop")
        assert own["account"] == "admin"
        listed = admin.request("GET", "/v1/admin/accounts/op-bank/tokens").text
        assert "tk_" in listed and "sbx_" not in listed
    with server.client("auditor") as auditor:
        denials = auditor.audit_entries(actor="admin", decision="deny", limit=1000)
    recorded = {(e["action"], e["rule"]) for e in denials}
    for action, rule in (
        ("token.issue", "token.not_own"),
        ("grant.issue", "role.not_permitted"),
        ("grant.narrow", "role.not_permitted"),
        ("grant.release_mode", "role.not_permitted"),
        ("dataset.query", "role.not_permitted"),
        ("job.read", "role.not_permitted"),  # the result route reads the job first
        ("receipt.read", "role.not_permitted"),
        ("job.review", "role.not_permitted"),
        ("dataset.register", "role.not_permitted"),
        ("dataset.classify", "role.not_permitted"),
    ):
        assert (action, rule) in recorded, (action, rule)


def test_the_host_console_issues_no_token_of_another_account(server) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, SANDBOX_HOME=str(server.home))
    for extra in ([], ["--token", server.tokens["admin"]]):
        run = subprocess.run(
            [sys.executable, "-m", "sandbox.cli", "token", "issue", "op-bank", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2, run.stderr
        assert "token.not_own" in run.stderr and "sbx_" not in run.stdout


def test_enrolment_gives_the_holder_a_token_the_admin_never_sees(server) -> None:  # type: ignore[no-untyped-def]
    with server.client("admin") as admin:
        admin.create_account(
            name="op-enrolled",
            role="operator",
            organisation="Enrolled",
            licence={"number": "EN-1", "valid_until": UNTIL},
        )
        enrolment = admin.enrol("op-enrolled", hours=1, days=2, label="first")
        response = admin.request(
            "POST",
            "/v1/admin/accounts/op-enrolled/enrolments",
            json={"hours": 1, "days": 2},
        )
        assert response.headers["cache-control"] == "no-store"
        newer = response.json()
    assert set(enrolment) == {
        "id",
        "account",
        "code",
        "expires_at",
        "token_days",
        "needs_approval",
    }
    assert enrolment["needs_approval"] and newer["needs_approval"]
    # The newer code voided the first; the holder redeems the newer one, once, with the
    # SHA-256 of a token it made; a second administrator (the host console) approves.
    token = new_secret(TOKEN_PREFIX)
    digest = hash_token(token) or ""
    with pytest.raises(AuthenticationError) as raised:
        SandboxClient.redeem(server.url, enrolment["code"], token_sha256=digest)
    assert raised.value.rule == "enrolment.used"
    with pytest.raises(AuthenticationError) as raised:  # a server-made token: never
        SandboxClient.redeem(server.url, newer["code"])
    assert raised.value.rule == "enrolment.holder_token"
    pending = SandboxClient.redeem(server.url, newer["code"], token_sha256=digest)
    assert (pending["status"], pending["token"], pending["id"]) == ("pending", None, None)
    with pytest.raises(AuthenticationError) as raised:
        SandboxClient.redeem(server.url, newer["code"], token_sha256=digest)
    assert raised.value.rule == "enrolment.used"
    with server.client("admin") as admin, pytest.raises(SandboxError) as refused:
        admin.approve_enrolment(pending["enrolment"], pending["fingerprint"])
    assert refused.value.rule == "enrolment.same_admin"
    approve = [sys.executable, "-m", "sandbox.cli", "token", "approve", pending["enrolment"]]
    run = subprocess.run(
        [*approve, "--fingerprint", pending["fingerprint"]],
        env=dict(os.environ, SANDBOX_HOME=str(server.home)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "sbx_" not in run.stdout, run.stderr
    issued = {"id": run.stdout.split("token id ")[1].split()[0], "token": token}
    with SandboxClient(server.url, issued["token"]) as holder:
        me = holder.me()
        assert (me["name"], me["token_id"]) == ("op-enrolled", issued["id"])
        rotated = holder.issue_own_token(days=1, replace_current=True)
        with pytest.raises(SandboxError) as refused:
            holder.issue_own_token(days=1)
        assert refused.value.rule == "auth.token_revoked"
    with server.client("auditor") as auditor:
        approved = auditor.audit_entries(action="enrolment.approve", decision="allow")
        mine = [e for e in approved if e["details"]["new_token_id"] == issued["id"]]
        assert mine and mine[0]["details"]["enrolment_issued_by"] == "admin"
        assert mine[0]["actor"].startswith("host:")  # the second administrator
        redeemed = auditor.audit_entries(action="enrolment.redeem", decision="allow")
        assert any(e["details"]["enrolment"] == pending["enrolment"] for e in redeemed)
        asked = auditor.audit_entries(action="token.issue", actor="op-enrolled")
        (entry,) = [e for e in asked if e["details"]["new_token_id"] == rotated["id"]]
        assert (entry["details"]["token_id"], entry["details"]["token_issued_by"]) == (
            issued["id"],
            "admin",
        )
        assert entry["details"]["revoked"] == issued["id"]


def test_every_entry_of_an_account_names_its_token_and_issuer(server) -> None:  # type: ignore[no-untyped-def]
    with server.client("op-planner") as planner:
        planner.submit(
            "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1", wait=True
        )
        planner.explain("SELECT board_station FROM transport.trips")
        planner.datasets()
        me = planner.me()
    with server.client("bureau-transport") as bureau:
        bureau.grants()
    with server.client("auditor") as auditor:
        entries = auditor.audit_entries(limit=10_000)
    accounts = {
        "op-bank",
        "op-insurer",
        "op-planner",
        "bureau-health",
        "bureau-market",
        "bureau-hrss",
        "bureau-transport",
        "auditor",
        "admin",
    }
    by_accounts = [e for e in entries if e["actor"] in accounts]
    assert len(by_accounts) > 20
    for entry in by_accounts:
        details = entry["details"]
        if entry["action"] == "enrolment.redeem":  # the code acted, not a token
            assert details["enrolment_issued_by"]
            continue
        assert details.get("token_id"), entry
        assert details.get("token_issued_by"), entry
    planner_query = [
        e for e in by_accounts if e["actor"] == "op-planner" and e["action"] == "dataset.query"
    ]
    assert planner_query and all(e["details"]["token_id"] == me["token_id"] for e in planner_query)
    # The demo's tokens were enrolled by the host console: that is who issued them.
    assert all(e["details"]["token_issued_by"] == "host:tests" for e in planner_query)
