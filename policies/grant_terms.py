# Over 400 lines: one dataclass of terms with the pure rules that read every term.
"""The terms of a grant (数据授权) and the pure rules that validate and narrow them.

A bureau grants one operator the use of one of its datasets for one purpose,
within a validity window, up to a column ceiling, with a minimum group size,
a release mode (:class:`ReleaseMode`: noised under a privacy budget, or exact after
the bureau's review; no exact value leaves without a recorded review), daily quotas,
and a tariff.  Nothing here does
I/O: :func:`validate_terms` checks terms against the dataset's classification,
:func:`widenings` lists what a proposed change would widen (a narrowing may
only ever take rights away).
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sandbox.core.classification import DatasetSpec, Level, Role
from sandbox.core.classification_file import MAX_CONTRIBUTION
from sandbox.core.errors import InvalidInput
from sandbox.core.policy_tables import EPSILON_SCALE
from sandbox.core.timeutil import to_rfc3339

__all__ = [
    "Grant",
    "GrantStatus",
    "GrantTerms",
    "ReleaseMode",
    "Tariff",
    "Use",
    "epsilon_from_micro",
    "epsilon_to_micro",
    "legacy_release_mode",
    "terms_to_row",
    "validate_terms",
    "widenings",
    "with_default_budget",
]

PURPOSE_CODE = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
GROUPABLE_ROLES = (Role.QUASI, Role.SENSITIVE)


class Use(enum.StrEnum):
    """有条件无偿使用 (public interest, free) or 政府指导价 (commercial, metered)."""

    PUBLIC_INTEREST = "public_interest"
    COMMERCIAL = "commercial"


class ReleaseMode(enum.StrEnum):
    """How a grant's results leave the enclave; there is no third way.

    ``dp``: every released number is noised under the grant's privacy budget
    (``epsilon_total``, ``epsilon_per_query``).  ``reviewed``: exact values, each release
    held until the owning bureau has reviewed it (output checking as trusted research
    environments practise it).
    """

    DP = "dp"
    REVIEWED = "reviewed"


def legacy_release_mode(*, review_required: bool, epsilon_total: object) -> ReleaseMode:
    """The mode of a grant stored before release modes existed (conservative).

    Review required: ``reviewed``.  A budget: ``dp``.  Neither (exact and unreviewed,
    which no longer exists): ``reviewed``, which keeps its exactness behind a review.
    """
    if review_required or epsilon_total is None:
        return ReleaseMode.REVIEWED
    return ReleaseMode.DP


class GrantStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


def epsilon_to_micro(epsilon: float) -> int:
    """Epsilon in integer micro-units, rounded up (a spend is never under-counted)."""
    if not math.isfinite(epsilon) or epsilon < 0:
        raise InvalidInput("epsilon must be a finite non-negative number", rule="budget.epsilon")
    return math.ceil(round(epsilon * EPSILON_SCALE, 6))


def epsilon_from_micro(micro: int | None) -> float | None:
    return None if micro is None else micro / EPSILON_SCALE


@dataclass(frozen=True, kw_only=True)
class Tariff:
    """Prices in fen (0.01 CNY): per query, and per million rows scanned."""

    use: Use = Use.PUBLIC_INTEREST
    price_per_query: int = 0
    price_per_million_rows: int = 0

    @classmethod
    def free(cls) -> Tariff:
        return cls()

    @classmethod
    def commercial(cls, *, per_query: int, per_million_rows: int) -> Tariff:
        return cls(
            use=Use.COMMERCIAL, price_per_query=per_query, price_per_million_rows=per_million_rows
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "use": self.use.value,
            "price_per_query_fen": self.price_per_query,
            "price_per_million_rows_fen": self.price_per_million_rows,
        }


@dataclass(frozen=True, kw_only=True)
class GrantTerms:
    """What a bureau decides when it issues (or narrows) a grant."""

    purpose_code: str
    purpose_text: str
    valid_from: datetime
    valid_until: datetime
    max_level: Level = Level.L2
    columns: frozenset[str] | None = None
    groupable: frozenset[str] = frozenset()
    k: int = 10
    epsilon_total: float | None = None
    epsilon_per_query: float | None = None
    queries_per_day: int | None = None
    rows_per_day: int | None = None
    #: ``dp`` (the default: noised under the budget) or ``reviewed`` (exact after review).
    release_mode: ReleaseMode = ReleaseMode.DP
    #: Dominance ``(n, p)``: a sum whose ``n`` largest entities hold more than ``p`` of it
    #: is suppressed (``p`` None: off).  Applies to grants without a privacy budget.
    dominance_n: int = 2
    dominance_p: float | None = 0.9
    #: Decimal digits released values are rounded to (negative: tens, hundreds; None: none).
    round_digits: int | None = 2
    tariff: Tariff = field(default_factory=Tariff)
    #: Contribution bounds C and G narrower than the dataset's ``[contribution]`` (None:
    #: the dataset's own); a query under this grant keeps at most these per entity.
    max_rows_per_entity: int | None = None
    max_groups_per_entity: int | None = None

    @property
    def review_required(self) -> bool:
        """Is every release held for the owning bureau's review?"""
        return self.release_mode is ReleaseMode.REVIEWED

    def terms_dict(self) -> dict[str, Any]:
        """JSON form of the terms (grant versions, audit details, API)."""
        return {
            "purpose": {"code": self.purpose_code, "text": self.purpose_text},
            "valid_from": to_rfc3339(self.valid_from),
            "valid_until": to_rfc3339(self.valid_until),
            "max_level": self.max_level.name,
            "columns": None if self.columns is None else sorted(self.columns),
            "groupable": sorted(self.groupable),
            "k": self.k,
            "epsilon_total": self.epsilon_total,
            "epsilon_per_query": self.epsilon_per_query,
            "queries_per_day": self.queries_per_day,
            "rows_per_day": self.rows_per_day,
            "release_mode": self.release_mode.value,
            "review_required": self.review_required,
            "dominance_n": self.dominance_n,
            "dominance_p": self.dominance_p,
            "round_digits": self.round_digits,
            "max_rows_per_entity": self.max_rows_per_entity,
            "max_groups_per_entity": self.max_groups_per_entity,
            "tariff": self.tariff.to_dict(),
        }

    def allows_column(self, name: str, level: Level) -> bool:
        """Within the ceiling (and the explicit column list, if any)?  L4 never is."""
        if level is Level.L4 or level > self.max_level:
            return False
        return self.columns is None or name.lower() in self.columns

    def live_at(self, now: datetime) -> bool:
        return self.valid_from <= now < self.valid_until


@dataclass(frozen=True, kw_only=True)
class Grant(GrantTerms):
    """An issued grant as stored: its terms plus identity, status and version."""

    id: str
    dataset: str
    operator: str
    issued_by: str
    status: GrantStatus = GrantStatus.ACTIVE
    version: int = 1
    created_at: str = ""
    updated_at: str = ""

    @property
    def domain(self) -> str:
        return self.dataset.split(".", 1)[0]

    @property
    def terms(self) -> GrantTerms:
        names = [f.name for f in fields(GrantTerms)]
        return GrantTerms(**{name: getattr(self, name) for name in names})

    @classmethod
    def from_row(cls, row: Any) -> Grant:
        return cls(
            id=row.id,
            dataset=row.dataset_id,
            operator=row.operator,
            issued_by=row.issued_by,
            purpose_code=row.purpose_code,
            purpose_text=row.purpose_text,
            valid_from=datetime.fromisoformat(row.valid_from),
            valid_until=datetime.fromisoformat(row.valid_until),
            max_level=Level(row.max_level),
            columns=None if row.columns is None else frozenset(row.columns),
            groupable=frozenset(row.groupable),
            k=row.k,
            epsilon_total=epsilon_from_micro(row.epsilon_total),
            epsilon_per_query=epsilon_from_micro(row.epsilon_per_query),
            queries_per_day=row.queries_per_day,
            rows_per_day=row.rows_per_day,
            release_mode=_stored_mode(row),
            dominance_n=row.dominance_n,
            dominance_p=row.dominance_p,
            round_digits=row.round_digits,
            max_rows_per_entity=getattr(row, "max_rows_per_entity", None),
            max_groups_per_entity=getattr(row, "max_groups_per_entity", None),
            tariff=Tariff(
                use=Use(row.use),
                price_per_query=row.price_per_query,
                price_per_million_rows=row.price_per_million_rows,
            ),
            status=GrantStatus(row.status),
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset,
            "operator": self.operator,
            "issued_by": self.issued_by,
            "status": self.status.value,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            **self.terms_dict(),
        }


def terms_to_row(terms: GrantTerms) -> dict[str, Any]:
    """Column values of the ``grants`` table for these terms."""
    return {
        "purpose_code": terms.purpose_code,
        "purpose_text": terms.purpose_text,
        "valid_from": to_rfc3339(terms.valid_from),
        "valid_until": to_rfc3339(terms.valid_until),
        "max_level": int(terms.max_level),
        "columns": None if terms.columns is None else sorted(terms.columns),
        "groupable": sorted(terms.groupable),
        "k": terms.k,
        "epsilon_total": _micro_or_none(terms.epsilon_total),
        "epsilon_per_query": _micro_or_none(terms.epsilon_per_query),
        "queries_per_day": terms.queries_per_day,
        "rows_per_day": terms.rows_per_day,
        "release_mode": terms.release_mode.value,
        # Kept for servers of the previous schema that read it: they hold what it holds.
        "review_required": terms.review_required,
        "dominance_n": terms.dominance_n,
        "dominance_p": terms.dominance_p,
        "round_digits": terms.round_digits,
        "max_rows_per_entity": terms.max_rows_per_entity,
        "max_groups_per_entity": terms.max_groups_per_entity,
        "use": terms.tariff.use.value,
        "price_per_query": terms.tariff.price_per_query,
        "price_per_million_rows": terms.tariff.price_per_million_rows,
    }


def _stored_mode(row: Any) -> ReleaseMode:
    """A row's mode; a row written by a server of the previous schema (NULL) is read as
    :func:`legacy_release_mode` would migrate it, so it is never released exact unreviewed."""
    mode = getattr(row, "release_mode", None)
    if mode is None:
        return legacy_release_mode(
            review_required=bool(row.review_required), epsilon_total=row.epsilon_total
        )
    return ReleaseMode(mode)


def with_default_budget(
    terms: GrantTerms, *, epsilon_total: float, epsilon_per_query: float
) -> GrantTerms:
    """A ``dp`` grant issued without a budget gets the platform's default one.

    The per-query default is capped by the grant's own total.  Other modes and grants
    with a budget are returned as they are.
    """
    if terms.release_mode is not ReleaseMode.DP or terms.epsilon_total is not None:
        return terms
    per_query = terms.epsilon_per_query or min(epsilon_per_query, epsilon_total)
    return replace(terms, epsilon_total=epsilon_total, epsilon_per_query=per_query)


def _micro_or_none(value: float | None) -> int | None:
    return None if value is None else epsilon_to_micro(value)


def validate_terms(terms: GrantTerms, spec: DatasetSpec, *, k_floor: int) -> GrantTerms:
    """Check terms against the dataset's classification; every problem is reported at once.

    Returns the terms with column names normalised to lower case.
    """
    problems: list[str] = []
    if not PURPOSE_CODE.match(terms.purpose_code or ""):
        problems.append("purpose code is 2-63 lower-case letters, digits and '-'")
    if not terms.purpose_text.strip():
        problems.append("purpose text is required (the scenario, in words)")
    if terms.valid_from.tzinfo is None or terms.valid_until.tzinfo is None:
        problems.append("validity times need a time zone")
    elif not terms.valid_from < terms.valid_until:
        problems.append("valid_from must be before valid_until")
    if terms.max_level is Level.L4:
        problems.append("the ceiling cannot be L4: L4 columns never leave the enclave")
    declared = {c.name.lower(): c for c in spec.columns}
    columns = None if terms.columns is None else frozenset(c.lower() for c in terms.columns)
    for name in sorted(columns or ()):
        col = declared.get(name)
        if col is None:
            problems.append(f"column '{name}' is not in {spec.id}")
        elif col.level > terms.max_level:
            problems.append(f"column '{name}' is {col.level.name}, above the ceiling")
    groupable = frozenset(c.lower() for c in terms.groupable)
    for name in sorted(groupable):
        col = declared.get(name)
        if col is None:
            problems.append(f"groupable column '{name}' is not in {spec.id}")
        elif col.role not in GROUPABLE_ROLES:
            problems.append(
                f"groupable lists quasi and sensitive columns; '{name}' is {col.role.value}"
            )
        elif col.level > terms.max_level or (columns is not None and name not in columns):
            problems.append(f"groupable column '{name}' is outside the grant's columns")
    if terms.k < k_floor:
        problems.append(f"k must be at least the platform floor {k_floor}")
    _check_budget(terms, problems)
    _check_contribution(terms, spec, problems)
    if not isinstance(terms.release_mode, ReleaseMode):
        problems.append("release_mode is 'dp' or 'reviewed'")
    elif terms.release_mode is ReleaseMode.DP and terms.epsilon_total is None:
        problems.append(
            "a dp grant needs a privacy budget (epsilon_total): every released number is "
            "noised under it; choose release_mode 'reviewed' for exact values after review"
        )
    if terms.dominance_n not in (1, 2):
        problems.append("dominance_n is 1 or 2 (the largest one or two contributors)")
    if terms.dominance_p is not None and not 0 < terms.dominance_p <= 1:
        problems.append("dominance_p is a share in (0, 1], or null to turn the rule off")
    if terms.round_digits is not None and not -9 <= terms.round_digits <= 9:
        problems.append("round_digits is between -9 and 9, or null for no rounding")
    for name in ("queries_per_day", "rows_per_day"):
        value = getattr(terms, name)
        if value is not None and value <= 0:
            problems.append(f"{name} must be positive when set")
    tariff = terms.tariff
    if tariff.price_per_query < 0 or tariff.price_per_million_rows < 0:
        problems.append("prices cannot be negative")
    if tariff.use is Use.PUBLIC_INTEREST and (
        tariff.price_per_query or tariff.price_per_million_rows
    ):
        problems.append("public-interest use is free of charge: prices must be 0")
    if problems:
        raise InvalidInput("grant terms: " + "; ".join(problems), rule="grant.terms")
    return replace(terms, columns=columns, groupable=groupable)


def _check_contribution(terms: GrantTerms, spec: DatasetSpec, problems: list[str]) -> None:
    """A grant's C and G only narrow the dataset's (``docs/classification.md``)."""
    declared = spec.contribution
    for name in ("max_rows_per_entity", "max_groups_per_entity"):
        value = getattr(terms, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} must be a whole number when set")
        elif not 1 <= value <= MAX_CONTRIBUTION:
            problems.append(f"{name} must be between 1 and {MAX_CONTRIBUTION} when set")
        elif declared is not None and value > getattr(declared, name):
            problems.append(
                f"{name} can only narrow the dataset's: {spec.id} declares "
                f"{getattr(declared, name)}"
            )


def _check_budget(terms: GrantTerms, problems: list[str]) -> None:
    total, per_query = terms.epsilon_total, terms.epsilon_per_query
    for name, value in (("epsilon_total", total), ("epsilon_per_query", per_query)):
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"{name} must be a positive number when set")
            return
    if per_query is not None and total is None:
        problems.append("epsilon_per_query needs an epsilon_total")
    elif per_query is not None and total is not None and per_query > total:
        problems.append("epsilon_per_query cannot exceed epsilon_total")


def widenings(old: GrantTerms, new: GrantTerms) -> list[str]:
    """What ``new`` would grant that ``old`` did not (empty: a true narrowing).

    ``old`` is validated (column names lower case); ``new`` need not be yet.
    """
    out: list[str] = []
    if (new.purpose_code, new.purpose_text) != (old.purpose_code, old.purpose_text):
        out.append("purpose cannot change (issue a new grant)")
    if new.tariff != old.tariff:
        out.append("tariff cannot change by narrowing (issue a new grant)")
    if new.valid_from < old.valid_from:
        out.append("valid_from earlier")
    if new.valid_until > old.valid_until:
        out.append("valid_until later")
    if new.max_level > old.max_level:
        out.append("ceiling raised")
    new_columns = None if new.columns is None else {c.lower() for c in new.columns}
    if old.columns is not None and (new_columns is None or not new_columns <= old.columns):
        out.append("columns added")
    if not {c.lower() for c in new.groupable} <= old.groupable:
        out.append("groupable columns added")
    if new.k < old.k:
        out.append("k lowered")
    for name in (
        "epsilon_total",
        "epsilon_per_query",
        "queries_per_day",
        "rows_per_day",
        "max_rows_per_entity",
        "max_groups_per_entity",
    ):
        before, after = getattr(old, name), getattr(new, name)
        if before is not None and (after is None or after > before):
            out.append(f"{name} raised or removed")
    if new.release_mode != old.release_mode:
        out.append("release mode changed (the bureau changes it with `grant release-mode`)")
    if old.dominance_p is not None and (
        new.dominance_p is None or new.dominance_p > old.dominance_p
    ):
        out.append("dominance rule relaxed (p raised or removed)")
    if new.dominance_n < old.dominance_n:
        out.append("dominance rule relaxed (n lowered)")
    if old.round_digits is not None and (
        new.round_digits is None or new.round_digits > old.round_digits
    ):
        out.append("rounding made finer or removed")
    return out
