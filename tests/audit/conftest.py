"""Audit fixtures: a key ring, a store URL (SQLite file and real PostgreSQL), an open trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit import AuditTrail, KeyRing, Receipt, query_details

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    ring = KeyRing(tmp_path / "keys")
    ring.ensure()
    return ring


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def trail(db_url: str, keyring: KeyRing) -> Iterator[AuditTrail]:
    with AuditTrail.open(db_url, keyring, sign_every_n=4, sign_every_s=3600) as opened:
        yield opened


def record(trail: AuditTrail, i: int, **overrides: Any) -> Receipt:
    """Append a typical query entry; ``i`` varies actor, dataset and decision."""
    fields: dict[str, Any] = {
        "actor": f"operator-{i % 3}",
        "role": "operator",
        "action": "query",
        "target": f"job:j-{i}",
        "dataset": f"health.claims_{i % 2}",
        "decision": "deny" if i % 4 == 3 else "allow",
        "rule": "grant.live" if i % 4 != 3 else "guard.aggregate_only",
        "request_id": f"req-{i}",
        "client": "127.0.0.1",
        "details": query_details(
            sql=f"SELECT district, count(*) FROM claims GROUP BY district -- {i}",
            result_digest=f"{i:064x}",
            rows_released=i,
            groups_suppressed=1,
            duration_ms=7,
            budget_spent=0.125,
        ),
    }
    fields.update(overrides)
    return trail.append(**fields)


def fill(trail: AuditTrail, n: int) -> list[Receipt]:
    return [record(trail, i) for i in range(n)]
