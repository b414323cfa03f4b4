"""The negative list (负面清单) and the important-data catalog (重要数据目录): tables and view.

An item is a dataset (column ``*``) or one of its columns.  The negative list holds
*prohibited* items (never granted, never released, even in aggregate) and *strictly
limited* ones (a grant needs the admin's and the owning bureau's approval both); the
important-data catalog holds *important* items (releases noised only, each held for the
bureau's review, no joins with another domain's data).  Items are rows of one table,
never deleted: removing one stamps it removed, with who and why.  A grant's co-approvals
of limited items are rows of ``grant_co_approvals``, written with the grant.

Every change bumps the policy version (``policy_tables.bump_policy_version``), so every
server drops its cached decisions and the next query meets the new list.
:class:`DatasetControls` is what the guard and the grant rules read of one dataset (and,
for a query, of the grant used on it); :func:`load_controls` is the one loader.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.db import metadata

__all__ = [
    "NO_CONTROLS",
    "WHOLE",
    "DatasetControls",
    "ItemKind",
    "data_controls",
    "grant_co_approvals",
    "item_name",
    "load_controls",
]

_TS = 40

WHOLE = "*"
"""The column of an item that is the whole dataset."""


class ItemKind(enum.StrEnum):
    PROHIBITED = "prohibited"  # 禁止类: never granted, never released
    LIMITED = "limited"  # 严格限制类: the admin's and the bureau's approval both
    IMPORTANT = "important"  # 重要数据: dp only, every release reviewed, no cross-domain join

    @property
    def list_name(self) -> str:
        return "important" if self is ItemKind.IMPORTANT else "negative"


data_controls = sa.Table(
    "data_controls",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("dataset", sa.String(130), nullable=False, index=True),
    sa.Column("column_name", sa.String(130), nullable=False),  # WHOLE: the dataset
    sa.Column("domain", sa.String(63), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("added_by", sa.String(255), nullable=False),
    sa.Column("added_role", sa.String(16), nullable=False),
    sa.Column("added_at", sa.String(_TS), nullable=False),
    sa.Column("removed_by", sa.String(255)),
    sa.Column("removed_at", sa.String(_TS)),
    sa.Column("removed_reason", sa.Text),
)

grant_co_approvals = sa.Table(
    "grant_co_approvals",
    metadata,
    sa.Column("grant_id", sa.String(24), nullable=False, index=True),
    sa.Column("dataset", sa.String(130), nullable=False),
    sa.Column("column_name", sa.String(130), nullable=False),
    sa.Column("admin", sa.String(255), nullable=False),
    sa.Column("bureau", sa.String(255), nullable=False),
    sa.Column("application", sa.String(24), nullable=False),
    sa.Column("approved_at", sa.String(_TS), nullable=False),
)


def item_name(dataset: str, column: str) -> str:
    """``health.claims`` for the dataset, ``health.claims.name`` for a column."""
    return dataset if column == WHOLE else f"{dataset}.{column}"


@dataclass(frozen=True)
class DatasetControls:
    """What the lists say of one dataset: lower-case column names, :data:`WHOLE` for the
    dataset itself.  ``approved``: the limited items the grant in use was co-approved for
    (filled for a query's grant; empty elsewhere)."""

    prohibited: frozenset[str] = frozenset()
    limited: frozenset[str] = frozenset()
    important: frozenset[str] = frozenset()
    approved: frozenset[str] = frozenset()

    def is_prohibited(self, column: str = WHOLE) -> bool:
        return WHOLE in self.prohibited or column.lower() in self.prohibited

    def is_limited(self, column: str = WHOLE) -> bool:
        return WHOLE in self.limited or column.lower() in self.limited

    def is_important(self, column: str = WHOLE) -> bool:
        return WHOLE in self.important or column.lower() in self.important

    def is_approved(self, column: str) -> bool:
        """Is a limited ``column`` (or :data:`WHOLE`) covered by the grant's co-approval?"""
        needed = {c for c in (WHOLE, column.lower()) if c in self.limited}
        return needed <= self.approved

    def with_approved(self, items: Iterable[str]) -> DatasetControls:
        return replace(self, approved=frozenset(c.lower() for c in items))

    @property
    def empty(self) -> bool:
        return not (self.prohibited or self.limited or self.important)


NO_CONTROLS = DatasetControls()


def load_controls(
    conn: Connection,
    datasets: Iterable[str],
    grants: Mapping[str, str] | None = None,
) -> dict[str, DatasetControls]:
    """The lists in force for ``datasets`` (every one present, empty when none applies).

    ``grants``: dataset -> the id of the grant a query uses on it, whose co-approvals
    are loaded into ``approved``.
    """
    wanted = sorted(set(datasets))
    found: dict[str, dict[ItemKind, set[str]]] = {d: {k: set() for k in ItemKind} for d in wanted}
    if wanted:
        rows = conn.execute(
            sa.select(
                data_controls.c.dataset, data_controls.c.kind, data_controls.c.column_name
            ).where(data_controls.c.dataset.in_(wanted), data_controls.c.removed_at.is_(None))
        )
        for row in rows:
            found[row.dataset][ItemKind(row.kind)].add(row.column_name.lower())
    approved: dict[str, set[str]] = {d: set() for d in wanted}
    by_grant = {g: d for d, g in (grants or {}).items() if d in approved}
    if by_grant:
        rows = conn.execute(
            sa.select(grant_co_approvals).where(grant_co_approvals.c.grant_id.in_(list(by_grant)))
        )
        for row in rows:
            if row.dataset == by_grant[row.grant_id]:
                approved[row.dataset].add(row.column_name.lower())
    return {
        d: DatasetControls(
            prohibited=frozenset(found[d][ItemKind.PROHIBITED]),
            limited=frozenset(found[d][ItemKind.LIMITED]),
            important=frozenset(found[d][ItemKind.IMPORTANT]),
            approved=frozenset(approved[d]),
        )
        for d in wanted
    }
