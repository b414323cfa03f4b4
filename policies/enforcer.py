"""Casbin role permissions, stored in the control-plane DB through the SQLAlchemy adapter.

``model.conf`` is the model; ``policy.csv`` is the default policy, seeded into
the ``casbin_rule`` table the first time a deployment opens it.  From then on
the database copy is authoritative, so every API server enforces the same
lines.  Accounts become ``g`` lines (role links) written in the same
transaction as the account row.  Every load re-checks separation of duties
(管运分离), so a hand-edited policy that lets an admin grant data is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import casbin
import sqlalchemy as sa
from casbin.util import key_match
from sqlalchemy import orm
from sqlalchemy.engine import Connection, Engine
from sqlalchemy_adapter import Adapter

from sandbox.core.db import metadata
from sandbox.core.errors import InvalidInput
from sandbox.core.policy_tables import bump_policy_version, casbin_rule

from .actors import Account, Role

__all__ = [
    "MODEL_PATH",
    "POLICY_PATH",
    "RoleEnforcer",
    "check_separation",
    "ensure_policy",
    "read_policy_file",
    "role_links",
    "write_role_links",
]

MODEL_PATH = Path(__file__).with_name("model.conf")
POLICY_PATH = Path(__file__).with_name("policy.csv")

Line = tuple[str, ...]

FORBIDDEN: dict[str, frozenset[str]] = {
    Role.ADMIN.value: frozenset(
        {"dataset.query", "result.read", "job.read", "job.review", "dataset.register"}
        | {"dataset.classify", "grant.issue", "grant.narrow", "grant.resume"}
        | {"grant.suspend", "grant.revoke", "grant.release_mode"}
    ),
    Role.BUREAU.value: frozenset(
        {"dataset.query", "result.read", "account.create", "account.disable", "enrolment.issue"}
        | {"audit.export", "operator.freeze", "key.rotate", "enrolment.approve"}
        | {"registration.decide"}  # a bureau never accepts or certifies its own registration
    ),
    Role.OPERATOR.value: frozenset(
        {"grant.issue", "grant.narrow", "grant.suspend", "grant.resume", "grant.revoke"}
        | {"grant.release_mode"}
        | {"dataset.register", "dataset.classify", "dataset.freeze", "dataset.unfreeze"}
        | {"account.create", "account.disable", "account.licence", "enrolment.issue"}
        | {"operator.freeze", "operator.unfreeze", "audit.read", "audit.export", "job.review"}
        | {"enrolment.approve", "registration.decide", "audit.cosign"}
    ),
}
"""Separation of duties: actions a role may never hold, whatever the policy says."""
# A witness's cosignature attests what it observed and changes nothing in the log.
AUDITOR_VERBS = frozenset({"read", "export", "verify", "cosign"})
FIRST_RELEASE_ACTIONS = frozenset(
    tuple(action.split("."))
    for action in (
        "account.create account.disable account.licence account.list audit.export audit.read "
        "audit.verify budget.read catalog.read dataset.classify dataset.freeze dataset.query "
        "dataset.register dataset.unfreeze grant.issue grant.narrow grant.read grant.resume "
        "grant.revoke grant.suspend job.read job.review key.rotate operator.freeze "
        "operator.unfreeze receipt.read result.read statement.read token.issue token.revoke "
        "usage.read"
    ).split()
)
"""The (object, action) pairs the first release's default policy named.  Every other action
of the default policy file was added later: :func:`ensure_policy` gives a policy table that
names none of its lines the default ones, so a new action never arrives unusable."""


def added_actions(lines: Iterable[Line]) -> frozenset[tuple[str, ...]]:
    """The (object, action) pairs of ``lines`` that the first release did not have."""
    return frozenset(
        line[3:5] for line in lines if line[0] == "p" and line[3:5] not in FIRST_RELEASE_ACTIONS
    )


class CasbinRuleRow:
    """ORM view of ``casbin_rule`` for the adapter (its own class would use another metadata)."""

    metadata = metadata
    ptype: str
    v0: str | None
    v1: str | None
    v2: str | None
    v3: str | None
    v4: str | None
    v5: str | None

    def __str__(self) -> str:
        values = (self.v0, self.v1, self.v2, self.v3, self.v4, self.v5)
        return ", ".join([self.ptype, *(v for v in values if v is not None)])


orm.registry(metadata=metadata).map_imperatively(CasbinRuleRow, casbin_rule)


def read_policy_file(path: Path = POLICY_PATH) -> list[Line]:
    """Lines of a Casbin CSV policy (comments and blank lines skipped)."""
    out = []
    for raw in path.read_text("utf-8").splitlines():
        text = raw.strip()
        if text and not text.startswith("#"):
            out.append(tuple(part.strip() for part in text.split(",")))
    return out


def check_separation(lines: Iterable[Line]) -> None:
    """Refuse a policy that breaks separation of duties (管运分离)."""
    problems: list[str] = []
    roles_of: dict[str, set[str]] = {}
    for line in lines:
        if line[0] == "p" and len(line) >= 5:
            role, action = line[1], f"{line[3]}.{line[4]}"
            if action in FORBIDDEN.get(role, frozenset()):
                problems.append(f"{role} may never {action}")
            if role == Role.AUDITOR.value and line[4] not in AUDITOR_VERBS:
                problems.append(f"auditor may only read, export, verify or cosign, not {action}")
        elif line[0] == "g" and len(line) >= 3:
            roles_of.setdefault(line[1], set()).add(line[2])
    for subject, roles in sorted(roles_of.items()):
        if len(roles) > 1:
            problems.append(f"'{subject}' holds several roles {sorted(roles)}")
    if problems:
        raise InvalidInput(
            "policy breaks separation of duties: " + "; ".join(problems),
            rule="policy.separation_of_duties",
        )


def _row(line: Line) -> dict[str, str | None]:
    values = list(line[1:]) + [None] * (6 - len(line[1:]))
    return {"ptype": line[0], **{f"v{i}": value for i, value in enumerate(values)}}


def ensure_policy(engine: Engine, path: Path = POLICY_PATH) -> bool:
    """Seed the default policy into an empty ``casbin_rule`` table; True if it changed it.

    A table seeded by an older release gets the default lines of every action added since
    the first release (:func:`added_actions`) that no line of it names yet; every other
    action stays as the deployment configured it.
    """
    lines = read_policy_file(path)
    check_separation(lines)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # two servers starting at once seed once
            conn.execute(sa.text("LOCK TABLE casbin_rule IN SHARE ROW EXCLUSIVE MODE"))
        named = {
            (row.v2, row.v3)
            for row in conn.execute(
                sa.select(casbin_rule.c.v2, casbin_rule.c.v3).where(casbin_rule.c.ptype == "p")
            )
        }
        added = added_actions(lines)
        missing = [
            line for line in lines if not named or (line[3:5] in added and line[3:5] not in named)
        ]
        if not missing:
            return False
        conn.execute(sa.insert(casbin_rule), [_row(line) for line in missing])
        bump_policy_version(conn, rules=True)
    return True


def role_links(account: Account) -> list[Line]:
    """The ``g`` lines of an account: a bureau per domain, every other role in ``*``."""
    if account.role is Role.BUREAU:
        return [("g", account.name, Role.BUREAU.value, d) for d in account.domains]
    return [("g", account.name, account.role.value, "*")]


def write_role_links(conn: Connection, name: str, lines: Sequence[Line]) -> None:
    """Replace an account's role links inside the caller's transaction.

    The caller bumps the policy version with ``rules=True`` in the same transaction.
    """
    conn.execute(sa.delete(casbin_rule).where(casbin_rule.c.ptype == "g", casbin_rule.c.v0 == name))
    if lines:
        conn.execute(sa.insert(casbin_rule), [_row(line) for line in lines])


class RoleEnforcer:
    """One process's Casbin enforcer over the shared ``casbin_rule`` table, memoised."""

    def __init__(self, engine: Engine) -> None:
        self._adapter = Adapter(engine, db_class=CasbinRuleRow, create_table=False)
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, str, str, str], tuple[bool, str | None]] = {}
        self._generation = 0
        """Moves at every reload: a lookup made before one is not memoised after it."""
        self._enforcer = casbin.Enforcer(str(MODEL_PATH), self._adapter)
        self._enforcer.add_named_domain_matching_func("g", key_match)
        self.reload()

    def reload(self) -> None:
        """Re-read every line from the database (after the policy version moved)."""
        with self._lock:
            self._enforcer.load_policy()
            model = self._enforcer.get_model()
            lines: list[Line] = []
            for sec in ("p", "g"):
                for ptype, assertion in model.model.get(sec, {}).items():
                    lines.extend((ptype, *rule) for rule in assertion.policy)
            self._memo = {}
            self._generation += 1
            try:
                check_separation(lines)
            except InvalidInput:
                self._enforcer.clear_policy()  # fail closed: nothing is allowed
                raise

    def permit(self, sub: str, dom: str, obj: str, act: str) -> tuple[bool, str | None]:
        key = (sub, dom, obj, act)
        found = self._memo.get(key)
        if found is None:
            with self._lock:
                generation = self._generation
                allowed, explain = self._enforcer.enforce_ex(sub, dom, obj, act)
            line = ", ".join(["p", *explain]) if allowed and explain else None
            found = (bool(allowed), line)
            with self._lock:
                if self._generation == generation:  # else the lines it used were replaced
                    self._memo[key] = found
        return found

    @property
    def casbin(self) -> casbin.Enforcer:
        """The underlying pycasbin enforcer (benchmarks, diagnostics)."""
        return self._enforcer

    def lines(self) -> list[Line]:
        with self._lock:
            model = self._enforcer.get_model()
            return [
                (ptype, *rule)
                for sec in ("p", "g")
                for ptype, assertion in model.model.get(sec, {}).items()
                for rule in assertion.policy
            ]
