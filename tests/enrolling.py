"""Enrolling an account on a live server the way a deployment must: two administrators.

The demo's ``admin`` account issues a code over HTTP; the account's holder makes its own
token and redeems the code with only its SHA-256 (a pending request); the host console
(the second administrator) approves it with the fingerprint.  Tests that need a token
for an account they create call :func:`enrol`.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.client import SandboxClient


def enrol(url: str, admin_token: str, home: Path, account: str, *, days: float = 1) -> str:
    """A live token for ``account``: issued by the admin, approved by the host console."""
    from policies import Actor, Administration
    from policies.bearer import new_secret
    from policies.tokens import TOKEN_PREFIX, hash_token
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    with SandboxClient(url, admin_token, timeout=60) as admin:
        code = admin.enrol(account, days=days)["code"]
    token = new_secret(TOKEN_PREFIX)
    digest = hash_token(token)
    assert digest is not None
    pending = SandboxClient.redeem(url, code, token_sha256=digest)
    assert pending["status"] == "pending" and pending["token"] is None, pending
    platform = Platform(Settings(home=home))
    try:
        second = Administration(platform.authority)
        second.approve_enrolment(Actor.host("tests"), pending["enrolment"], pending["fingerprint"])
    finally:
        platform.close()
    return token
