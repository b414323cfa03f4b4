"""The demo's accounts, grants and tokens, created through the audited administrative API.

The host console creates the accounts and issues each an enrolment code; the
demo, standing in for each account's holder on the host, redeems the code for
that account's token (the admin never issues a token of another account).  This is
a bootstrap for a demonstration: only the host console's codes give a token without
a second administrator's approval (``policies/enrolments.py``), and a deployment
enrols its real accounts with dual control (``docs/deployment.md``).  Each
bureau then issues its own grants with its token, so the demo's audit trail
reads exactly as a real deployment's would.  op-bank's grants are ``reviewed`` (bank
analysts get exact figures after the bureau's check); op-insurer's and op-planner's are
``dp`` (the default: noised under a budget; op-planner's is the platform default).
Running it again creates only what is missing and enrols fresh tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sandbox.core.classification import Level

from . import accounts as acc
from . import grants as grant_store
from .actors import Actor, Licence, Role
from .admin import Administration
from .grant_terms import GrantStatus, GrantTerms, ReleaseMode, Tariff

__all__ = ["DEMO_ACCOUNTS", "DEMO_GRANTS", "DemoGrant", "create_demo", "write_tokens"]

DEMO_ACCOUNTS: Mapping[str, tuple[Role, str, tuple[str, ...]]] = {
    "op-bank": (Role.OPERATOR, "Demo Rural Commercial Bank (普惠金融)", ()),
    "op-insurer": (Role.OPERATOR, "Demo Health Insurer", ()),
    "op-planner": (Role.OPERATOR, "Demo Urban Planning Institute", ()),
    "bureau-health": (Role.BUREAU, "Healthcare Security Bureau (医保局)", ("health",)),
    "bureau-market": (Role.BUREAU, "Market Regulation Bureau (市场监管局)", ("market",)),
    "bureau-hrss": (Role.BUREAU, "Human Resources and Social Security Bureau (人社局)", ("hrss",)),
    "bureau-transport": (Role.BUREAU, "Transport Bureau (交通运输局)", ("transport",)),
    "auditor": (Role.AUDITOR, "Demo Third-Party Audit Firm", ()),
    "admin": (Role.ADMIN, "Public Data Operations Centre (管理方)", ()),
}

HEALTH_GROUPABLE = frozenset({"age", "gender", "diagnosis_code"})
INCLUSIVE_FINANCE = ("inclusive-finance", "普惠金融: credit assessment of small enterprises")


@dataclass(frozen=True)
class DemoGrant:
    operator: str
    dataset: str
    bureau: str
    purpose: tuple[str, str]
    groupable: frozenset[str] = frozenset()
    release_mode: ReleaseMode = ReleaseMode.DP
    epsilon_total: float | None = None
    epsilon_per_query: float | None = None
    queries_per_day: int | None = None
    tariff: Tariff = field(default_factory=Tariff)


DEMO_GRANTS: tuple[DemoGrant, ...] = (
    DemoGrant(
        "op-bank",
        "market.enterprises",
        "bureau-market",
        INCLUSIVE_FINANCE,
        release_mode=ReleaseMode.REVIEWED,
        tariff=Tariff.commercial(per_query=200, per_million_rows=1_000),
    ),
    DemoGrant(
        "op-bank",
        "hrss.social_insurance",
        "bureau-hrss",
        INCLUSIVE_FINANCE,
        release_mode=ReleaseMode.REVIEWED,
        tariff=Tariff.commercial(per_query=300, per_million_rows=1_500),
    ),
    DemoGrant(
        "op-bank",
        "health.claims",
        "bureau-health",
        INCLUSIVE_FINANCE,
        groupable=HEALTH_GROUPABLE,
        release_mode=ReleaseMode.REVIEWED,
        queries_per_day=1_000,
        tariff=Tariff.commercial(per_query=500, per_million_rows=2_000),
    ),
    DemoGrant(
        "op-insurer",
        "health.claims",
        "bureau-health",
        (
            "insurance-product-design",
            "商业健康险产品设计: claim patterns by age band and diagnosis",
        ),
        groupable=HEALTH_GROUPABLE,
        epsilon_total=10.0,
        epsilon_per_query=1.0,
        tariff=Tariff.commercial(per_query=500, per_million_rows=2_000),
    ),
    DemoGrant(
        "op-planner",
        "transport.trips",
        "bureau-transport",
        ("urban-planning", "城市规划: public-transport flows between stations (public interest)"),
        groupable=frozenset({"board_time"}),
    ),
)


def create_demo(
    admin: Administration, host: Actor, *, now: datetime, days: int = 365
) -> dict[str, str]:
    """Create missing demo accounts and grants; return a fresh token per account (enrolled)."""
    engine = admin.authority.engine
    with engine.connect() as conn:
        existing = {a.name for a in acc.list_accounts(conn)}
    for name, (role, organisation, domains) in DEMO_ACCOUNTS.items():
        if name in existing:
            continue
        licence = None
        if role is Role.OPERATOR:
            licence = Licence(
                number=f"SZ-OP-{name.upper()}-2026", valid_until=now + timedelta(days=days)
            )
        admin.create_account(
            host, name, role=role, organisation=organisation, domains=domains, licence=licence
        )
    tokens = {}
    for name in DEMO_ACCOUNTS:
        enrolment = admin.issue_enrolment(
            host, name, ttl=timedelta(minutes=5), token_ttl=timedelta(days=90), label="demo"
        )
        tokens[name] = admin.redeem_enrolment(enrolment.code).token
    for spec in DEMO_GRANTS:
        with engine.connect() as conn:
            held = grant_store.grants_for(conn, spec.operator, [spec.dataset]).get(spec.dataset, [])
        if any(g.purpose_code == spec.purpose[0] and g.status is GrantStatus.ACTIVE for g in held):
            continue
        terms = GrantTerms(
            purpose_code=spec.purpose[0],
            purpose_text=spec.purpose[1],
            valid_from=now - timedelta(minutes=1),
            valid_until=now + timedelta(days=days),
            max_level=Level.L3,
            groupable=spec.groupable,
            k=max(10, admin.k_floor),
            release_mode=spec.release_mode,
            epsilon_total=spec.epsilon_total,
            epsilon_per_query=spec.epsilon_per_query,
            queries_per_day=spec.queries_per_day,
            tariff=spec.tariff,
        )
        bureau = admin.authority.authenticate(tokens[spec.bureau])
        admin.issue_grant(bureau, spec.dataset, spec.operator, terms, reason="demo deployment")
    return tokens


def write_tokens(path: Path, tokens: Mapping[str, str]) -> None:
    """Write ``{account: token}`` as JSON readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(dict(tokens), out, indent=2, ensure_ascii=False)
        out.write("\n")
