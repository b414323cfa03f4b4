"""Failed sign-ins are throttled per address and per credential without locking out valid
tokens; X-Forwarded-For counts only from configured proxies; a flood of made-up tokens
is one audit entry per address and window, its count written when the window closes."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit import AuditTrail, EntryFilter, KeyRing
from sandbox.core.settings import Settings
from sandbox.ratelimit import FailureTally
from tests.api.conftest import LiveServer, deployment

LIMIT = 5


def bogus() -> str:
    return "sbx_" + secrets.token_urlsafe(32)


def me(server: LiveServer, token: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v1/me", headers={"Authorization": f"Bearer {token}", **headers}, timeout=30
    )


def trail(home: Path) -> AuditTrail:
    settings = Settings(home=home)
    return AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = tmp_path_factory.mktemp("signin") / "home"
    return home, deployment(home)


def test_a_flood_of_bad_tokens_does_not_lock_out_a_valid_one(
    home: tuple[Path, dict[str, str]],
) -> None:
    path, tokens = home
    env = {
        "SANDBOX_SIGN_IN_FAILURES_PER_MINUTE": str(LIMIT),
        "SANDBOX_FAILURE_AUDIT_WINDOW_S": "3600",
    }
    server = LiveServer(path, tokens, env=env).start()
    flood = 60
    try:
        statuses = []
        for n in range(flood):
            # The flooder rotates X-Forwarded-For: with no trusted proxy it is ignored.
            statuses.append(me(server, bogus(), **{"X-Forwarded-For": f"10.9.{n}.1"}).status_code)
            # Another client behind the same address, with a valid token, keeps working.
            ok = me(server, tokens["op-bank"])
            assert ok.status_code == 200, (n, ok.text)
        assert statuses[:LIMIT] == [401] * LIMIT
        # The bucket refills one failure per 60/LIMIT s: a slow run may see one more 401.
        assert statuses.count(429) >= flood - LIMIT - 1
        throttled = me(server, bogus())
        assert throttled.status_code == 429 and throttled.json()["rule"] == "api.rate_limit"
        assert int(throttled.headers["Retry-After"]) >= 1
        # While the window is open the flood is one entry per address, not one per token.
        with httpx.Client(timeout=30) as client:
            entries = client.get(
                f"{server.url}/v1/audit/entries",
                params={"action": "auth.authenticate", "limit": 1000},
                headers={"Authorization": f"Bearer {tokens['auditor']}"},
            ).json()["entries"]
        unknown = [e for e in entries if e["rule"] == "auth.token_unknown"]
        assert len(unknown) == 1 and unknown[0]["details"]["tally"] == "first of its window"
    finally:
        server.stop()  # closes the window: its count is written at shutdown
    with trail(path) as opened:
        recorded = opened.entries(EntryFilter(action="auth.authenticate"), limit=10_000)
    unknown = [e for e in recorded if e.rule == "auth.token_unknown"]
    assert [e.details["tally"] for e in unknown] == [
        "first of its window",
        "the rest of its window",
    ]
    # Every refusal of a made-up token that was answered is counted: the flood, the probe.
    assert 1 + unknown[1].details["count"] == flood + 1
    assert {e.client for e in unknown} == {"127.0.0.1"}


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
    home: tuple[Path, dict[str, str]],
) -> None:
    path, tokens = home
    env = {
        "SANDBOX_SIGN_IN_FAILURES_PER_MINUTE": str(LIMIT),
        "SANDBOX_TRUSTED_PROXIES": "127.0.0.1, ::1",
    }
    server = LiveServer(path, tokens, env=env).start()
    try:
        # Behind the trusted proxy the address is the rightmost hop it appended; what a
        # client wrote to the left of it is never read.
        for n in range(LIMIT + 3):
            spoofed = {"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.7"}
            last = me(server, bogus(), **spoofed)
        assert last.status_code == 429
        other = me(server, bogus(), **{"X-Forwarded-For": "203.0.113.8"})
        assert other.status_code == 401  # another client of the proxy, its own bucket
        assert (
            me(server, tokens["op-bank"], **{"X-Forwarded-For": "203.0.113.7"}).status_code == 200
        )
        # One bad credential tried from ever new addresses is held back by its own bucket.
        repeated = bogus()
        answers = [
            me(server, repeated, **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code
            for n in range(LIMIT + 2)
        ]
        assert answers[:LIMIT] == [401] * LIMIT and answers[-1] == 429
    finally:
        server.stop()
    with trail(path) as opened:
        clients = {
            e.client for e in opened.entries(EntryFilter(action="auth.authenticate"), limit=10_000)
        }
    assert {"203.0.113.7", "203.0.113.8"} <= clients
    assert not any(c and c.startswith("198.51.100.") for c in clients)


class Recorder:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail = False

    def __call__(self, **fields: Any) -> None:
        if self.fail:
            raise OSError("disk full")
        self.entries.append(fields)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refusal(client: str, rid: str) -> dict[str, Any]:
    return {
        "actor": "anonymous",
        "role": "-",
        "action": "auth.authenticate",
        "target": "token",
        "decision": "deny",
        "rule": "auth.token_unknown",
        "details": {"reason": "authentication failed: unknown token"},
        "request_id": rid,
        "client": client,
    }


def test_the_tally_records_the_first_at_once_and_keeps_every_count() -> None:
    record, clock = Recorder(), Clock()
    tally = FailureTally(record, window_s=lambda: 60.0, clock=clock)
    for n in range(10):
        tally.add(refusal("10.0.0.1", f"r{n}"))
    tally.add(refusal("10.0.0.2", "x"))
    assert [e["client"] for e in record.entries] == ["10.0.0.1", "10.0.0.2"]
    assert tally.flush() == 0  # the windows are still open
    clock.now = 61.0
    record.fail = True  # the trail is down: the counts are kept, not lost
    assert tally.flush() == 0
    record.fail = False
    assert tally.flush() == 1
    summary = record.entries[-1]
    assert summary["details"]["count"] == 9 and summary["request_id"] == "r9"
    assert summary["details"]["tally"] == "the rest of its window"
    # A new window opens with a first entry of its own; close() writes what remains.
    tally.add(refusal("10.0.0.1", "a"))
    tally.add(refusal("10.0.0.1", "b"))
    assert record.entries[-1]["request_id"] == "a"
    tally.flush(everything=True)
    assert record.entries[-1]["details"]["count"] == 1
