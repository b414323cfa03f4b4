"""Authorization: accounts and tokens, Casbin role policy, grants, decisions, metering.

The public API (see ``docs/policy.md``)::

    authority = Authority(engine, recorder=audit_trail)       # one per process
    actor = authority.authenticate(bearer_token)             # -> Actor, or 401
    decision = authority.decide(actor, "dataset.query", datasets=[...], columns={...})
    decision.allowed, decision.rule, decision.reason, decision.grants
    authority.record_usage(decision, cpu_ms=...)              # after the query ran
    spend_budget(conn, grant_id, epsilon, now=...)            # atomic, or BudgetExhausted

    admin = Administration(authority, k_floor=settings.k_floor)
    admin.issue_grant(bureau_actor, "health.claims", "op-bank", GrantTerms(...))
"""

from .actors import Account, AccountStatus, Actor, Licence, LicenceStatus, Role
from .admin import Administration
from .authority import Authority
from .decision import (
    ACTIONS,
    RULES,
    BudgetState,
    DailyUsage,
    Decision,
    Target,
    TargetKind,
)
from .grant_terms import Grant, GrantStatus, GrantTerms, ReleaseMode, Tariff, Use
from .metering import Charge, UsagePart, record_usage, spend_budget
from .pricing import PartCharge, PricedPart, apportion, price_query
from .recorder import AUDIT_ACTIONS, MemoryRecorder, NullRecorder, Recorder
from .statements import UsageRow
from .tokens import IssuedToken, TokenRecord

__all__ = [
    "ACTIONS",
    "AUDIT_ACTIONS",
    "RULES",
    "Account",
    "AccountStatus",
    "Actor",
    "Administration",
    "Authority",
    "BudgetState",
    "Charge",
    "DailyUsage",
    "Decision",
    "Grant",
    "GrantStatus",
    "GrantTerms",
    "IssuedToken",
    "Licence",
    "LicenceStatus",
    "MemoryRecorder",
    "NullRecorder",
    "PartCharge",
    "PricedPart",
    "Recorder",
    "ReleaseMode",
    "Role",
    "Target",
    "TargetKind",
    "Tariff",
    "TokenRecord",
    "UsagePart",
    "UsageRow",
    "Use",
    "apportion",
    "price_query",
    "record_usage",
    "spend_budget",
]
