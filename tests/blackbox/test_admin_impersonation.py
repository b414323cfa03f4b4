"""The admin cannot obtain a token of another account, or act as one (管运分离), black box.

Against ``sandbox serve`` as its own process and the installed command, with only the
demo admin's token: every path by which the admin could come to hold a token of
another account (bureau, operator, a new account with data rights, an admin of its
own to approve for it) or act as one is tried, and each is refused with its rule and
recorded in the trail.  The one way a token for another account comes about, a
holder-made token approved by a second administrator, is shown to work.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from tests.blackbox.conftest import DemoHome, Server, call, sandbox

UNTIL = "2030-01-01T00:00:00Z"


def made_token() -> tuple[str, str]:
    """A token as a holder makes one (``sbx_`` + 32 random bytes) and its SHA-256."""
    token = "sbx_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


def refused(answer: tuple[int, Any], status: int, rule: str, what: str) -> None:
    got, body = answer
    assert (got, (body or {}).get("rule")) == (status, rule), (what, answer)


def test_no_path_gives_the_admin_a_token_of_another_account(server: Server, demo: DemoHome) -> None:
    admin = demo.tokens["admin"]
    # 1. Asking for another account's token, over the API and the command line.
    for account in ("op-bank", "bureau-health", "auditor"):
        answer = call(server, "POST", f"/v1/admin/accounts/{account}/tokens", admin, {"days": 1})
        refused(answer, 403, "token.not_own", f"token for {account}")
    own = call(server, "POST", "/v1/me/tokens", admin, {"days": 1})
    assert own[0] == 201 and own[1]["account"] == "admin", own  # its own, nobody else's
    cli = demo.run("token", "issue", "op-bank", "--days", "1", "--token", admin)
    assert cli.code == 2 and "token.not_own" in cli.err and "sbx_" not in cli.out, str(cli)

    # 2. Its own enrolment codes, for an existing bureau and operator, a new account with
    #    data rights (a second bureau of the health domain) and an admin of its own.
    created = call(
        server,
        "POST",
        "/v1/admin/accounts",
        admin,
        {"name": "bureau-health-two", "role": "bureau", "organisation": "X", "domains": ["health"]},
    )
    assert created[0] == 201, created
    sock = {"name": "admin-sock", "role": "admin", "organisation": "X"}
    assert call(server, "POST", "/v1/admin/accounts", admin, sock)[0] == 201
    for account in ("bureau-health", "op-bank", "bureau-health-two", "admin-sock"):
        issued = call(server, "POST", f"/v1/admin/accounts/{account}/enrolments", admin, {})
        assert issued[0] == 201 and issued[1]["needs_approval"], issued
        code = issued[1]["code"]
        # A token the server would make and hand to whoever holds the code: refused, and
        # the code is not spent by asking.
        refused(
            call(server, "POST", "/v1/enrol", None, {"code": code}),
            401,
            "enrolment.holder_token",
            f"server-made token for {account}",
        )
        # The admin redeems its own code with a token it made: only a pending request.
        token, digest = made_token()
        pending = call(server, "POST", "/v1/enrol", None, {"code": code, "token_sha256": digest})
        assert pending[0] == 202 and pending[1]["status"] == "pending", pending
        assert pending[1]["token"] is None and pending[1]["id"] is None
        refused(call(server, "GET", "/v1/me", token), 401, "auth.token_unknown", "pending token")
        # It may not approve its own code, even with the right fingerprint ...
        approve = f"/v1/admin/enrolments/{pending[1]['enrolment']}/approve"
        fingerprint = pending[1]["fingerprint"]
        refused(
            call(server, "POST", approve, admin, {"fingerprint": fingerprint}),
            403,
            "enrolment.same_admin",
            f"approving its own code for {account}",
        )
        # ... with the token it just gave itself ...
        refused(
            call(server, "POST", approve, own[1]["token"], {"fingerprint": fingerprint}),
            403,
            "enrolment.same_admin",
            f"approving with another token of its own for {account}",
        )
        # ... or with the command line, so the token it made never works.
        approved = demo.run(
            "token", "approve", pending[1]["enrolment"], "--fingerprint", fingerprint,
            "--token", admin,
        )  # fmt: skip
        assert approved.code == 2 and "enrolment.same_admin" in approved.err, str(approved)
        refused(call(server, "GET", "/v1/me", token), 401, "auth.token_unknown", "never live")
        # The pending token cannot be used for the account's data rights either.
        refused(call(server, "GET", "/v1/grants", token), 401, "auth.token_unknown", "grants as it")

    # 3. Acting as another account with its own token: refused by role.
    grant = {
        "dataset": "health.claims",
        "operator": "op-bank",
        "purpose_code": "admin-self",
        "purpose_text": "the admin granting",
        "valid_until": UNTIL,
    }
    refused(call(server, "POST", "/v1/grants", admin, grant), 403, "role.not_permitted", "grant")
    job = {"sql": "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"}
    refused(call(server, "POST", "/v1/jobs", admin, job), 403, "role.not_permitted", "query")

    # 4. Every refusal is in the trail, under the admin's name.
    status, entries = call(
        server,
        "GET",
        "/v1/audit/entries?actor=admin&decision=deny&limit=1000",
        demo.tokens["auditor"],
    )
    assert status == 200, entries
    recorded = {(e["action"], e["rule"]) for e in entries["entries"]}
    for pair in (
        ("token.issue", "token.not_own"),
        ("enrolment.approve", "enrolment.same_admin"),
        ("grant.issue", "role.not_permitted"),
        ("dataset.query", "role.not_permitted"),
    ):
        assert pair in recorded, pair


def test_a_second_administrator_approves_the_holders_own_token(
    server: Server, demo: DemoHome
) -> None:
    admin = demo.tokens["admin"]
    created = call(
        server,
        "POST",
        "/v1/admin/accounts",
        admin,
        {
            "name": "op-holder",
            "role": "operator",
            "organisation": "Holder",
            "licence": {"number": "HOLD-1", "valid_until": UNTIL},
        },
    )
    assert created[0] == 201, created
    issued = call(server, "POST", "/v1/admin/accounts/op-holder/enrolments", admin, {})
    code = issued[1]["code"]
    # The holder redeems on its own machine: the token is made there, only its hash sent.
    redeemed = sandbox("token", "redeem", code, "--url", server.url)
    assert redeemed.code == 0, str(redeemed)
    lines = redeemed.out.splitlines()
    enrolment = lines[0].split()[1]
    fingerprint = lines[1].rsplit(" ", 1)[1]
    token = lines[-1]
    assert token.startswith("sbx_") and "waits for a second administrator" in lines[0]
    refused(call(server, "GET", "/v1/me", token), 401, "auth.token_unknown", "before approval")
    # A wrong fingerprint read out is refused; the right one, by the host console, works.
    wrong = demo.run("token", "approve", enrolment, "--fingerprint", "AAAA-BBBB-CCCC-DDDD")
    assert wrong.code == 2 and "enrolment.fingerprint" in wrong.err, str(wrong)
    approved = demo.run("token", "approve", enrolment, "--fingerprint", fingerprint)
    assert approved.code == 0 and token not in approved.out, str(approved)
    status, me = call(server, "GET", "/v1/me", token)
    assert status == 200 and me["name"] == "op-holder", me
    again = demo.run("token", "approve", enrolment, "--fingerprint", fingerprint)
    assert again.code == 2 and "enrolment.not_pending" in again.err, str(again)
