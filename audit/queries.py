"""Auditor queries: which entries, by time range, actor, action, dataset, decision.

Filters run on copies of those fields kept in indexed columns; the entries
returned are always parsed from their canonical bytes, and the live check
(:mod:`audit.livecheck`) proves the columns agree with those bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from audit.entry import DECISIONS, format_time
from audit.errors import InvalidQuery
from audit.schema import FILTER_COLUMNS, entries

__all__ = ["GROUPABLE", "EntryFilter", "parse_time"]

GROUPABLE = FILTER_COLUMNS


def parse_time(value: datetime | str) -> str:
    """An RFC 3339 instant in the entries' fixed-width form, so text comparison is time order."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidQuery(f"not an RFC 3339 time: {value!r}") from None
    if value.tzinfo is None:
        raise InvalidQuery("times must carry a UTC offset (e.g. 2026-01-02T00:00:00Z)")
    return format_time(value.astimezone(UTC))


@dataclass(frozen=True, kw_only=True)
class EntryFilter:
    """Conjunction of optional conditions; ``since`` is inclusive, ``until`` exclusive."""

    since: datetime | str | None = None
    until: datetime | str | None = None
    actor: str | None = None
    role: str | None = None
    action: str | None = None
    target: str | None = None
    dataset: str | None = None
    decision: str | None = None

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise InvalidQuery(f"decision must be one of {DECISIONS}")

    def conditions(self) -> list[Any]:
        out: list[Any] = []
        if self.since is not None:
            out.append(entries.c.time >= parse_time(self.since))
        if self.until is not None:
            out.append(entries.c.time < parse_time(self.until))
        for spec in fields(self):
            if spec.name in FILTER_COLUMNS:
                value = getattr(self, spec.name)
                if value is not None:
                    out.append(entries.c[spec.name] == value)
        return out

    @staticmethod
    def group_by(by: Sequence[str]) -> tuple[str, ...]:
        if isinstance(by, str):
            by = (by,)
        unknown = [name for name in by if name not in GROUPABLE]
        if not by or unknown:
            raise InvalidQuery(f"can count by {GROUPABLE}, not {unknown or 'nothing'}")
        return tuple(by)
