"""The terms of a grant application: what an operator asks, what the bureau decides, and
the grant they make together (pure functions; ``applications`` does the I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policies import GrantTerms, ReleaseMode, Tariff, Use
from sandbox.core.classification import DatasetSpec, Level

__all__ = ["AMENDABLE", "Asked", "Decided", "amendments_of", "grant_terms_for"]


@dataclass(frozen=True, kw_only=True)
class Asked:
    """What an operator asks for."""

    dataset: str
    purpose_code: str
    purpose_text: str
    columns: tuple[str, ...]
    duration_days: int
    use: Use
    groupable: tuple[str, ...] = ()
    release_mode: ReleaseMode | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose_code": self.purpose_code,
            "purpose_text": self.purpose_text,
            "columns": sorted(c.lower() for c in self.columns),
            "groupable": sorted(c.lower() for c in self.groupable),
            "duration_days": self.duration_days,
            "use": self.use.value,
            "release_mode": None if self.release_mode is None else self.release_mode.value,
            "note": self.note,
        }


@dataclass(frozen=True, kw_only=True)
class Decided:
    """What the bureau sets on approval: amendments of the asked terms, and its own terms.

    ``columns``, ``groupable``, ``duration_days``, ``use`` and ``release_mode`` amend what
    was asked (None: as asked); the rest are the bureau's terms of any grant."""

    columns: tuple[str, ...] | None = None
    groupable: tuple[str, ...] | None = None
    duration_days: int | None = None
    use: Use | None = None
    release_mode: ReleaseMode | None = None
    k: int | None = None
    epsilon_total: float | None = None
    epsilon_per_query: float | None = None
    queries_per_day: int | None = None
    rows_per_day: int | None = None
    price_per_query: int = 0
    price_per_million_rows: int = 0


AMENDABLE = ("columns", "groupable", "duration_days", "use", "release_mode")


def grant_terms_for(
    asked: dict[str, Any], decided: Decided, now: datetime, spec: DatasetSpec, *, k_floor: int
) -> GrantTerms:
    """The grant the asked terms and the bureau's decision make, valid from ``now``.

    The ceiling is the highest level among the columns; what the bureau leaves unset is
    as asked (the release mode ``dp`` when neither chose); prices apply to commercial use
    only.  Validation is the grant rules' (``policies.grant_terms.validate_terms``).
    """
    columns = decided.columns if decided.columns is not None else asked["columns"]
    groupable = decided.groupable if decided.groupable is not None else asked["groupable"]
    days = decided.duration_days or asked["duration_days"]
    use = decided.use or Use(asked["use"])
    mode = decided.release_mode or (
        ReleaseMode(asked["release_mode"]) if asked["release_mode"] else ReleaseMode.DP
    )
    levels = {c.name.lower(): c.level for c in spec.columns}
    ceiling = max((levels.get(c.lower(), Level.L1) for c in columns), default=Level.L1)
    return GrantTerms(
        purpose_code=asked["purpose_code"],
        purpose_text=asked["purpose_text"],
        valid_from=now,
        valid_until=now + timedelta(days=days),
        max_level=ceiling,
        columns=frozenset(c.lower() for c in columns),
        groupable=frozenset(c.lower() for c in groupable),
        k=decided.k if decided.k is not None else k_floor,
        epsilon_total=decided.epsilon_total,
        epsilon_per_query=decided.epsilon_per_query,
        queries_per_day=decided.queries_per_day,
        rows_per_day=decided.rows_per_day,
        release_mode=mode,
        tariff=Tariff(
            use=use,
            price_per_query=decided.price_per_query if use is Use.COMMERCIAL else 0,
            price_per_million_rows=decided.price_per_million_rows if use is Use.COMMERCIAL else 0,
        ),
    )


def amendments_of(asked: dict[str, Any], decided: Decided) -> dict[str, Any]:
    """Each asked term the bureau changes: ``{term: {"asked": …, "granted": …}}``."""
    out: dict[str, Any] = {}
    for name in AMENDABLE:
        value = getattr(decided, name)
        if value is None:
            continue
        if name in ("columns", "groupable"):
            value = sorted(str(c).lower() for c in value)
        elif name in ("use", "release_mode"):
            value = value.value
        if name == "release_mode" and asked.get(name) is None:
            continue  # left to the bureau: its choice is no amendment
        if value != asked.get(name):
            out[name] = {"asked": asked.get(name), "granted": value}
    return out
