"""Who adds to and removes from the negative list and the important-data catalog.

The admin names items of any dataset; a bureau names items of its own domains' datasets
(管运分离 holds: adding an item only ever takes use away).  Removing an item gives use
back, so only the admin removes, with a reason.  Every account reads both lists: an
operator must know what it may never ask for, and which releases wait for a review.
Every act, allowed or refused, is an audit entry (``negative_list.add``,
``negative_list.remove``, ``important_data.mark``, ``important_data.unmark``, and the
reads ``negative_list.read`` / ``important_data.read``); a change and its entry commit in
one transaction, with a policy-version bump so every server meets the new list at once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from policies import Actor, Role
from sandbox.core.data_controls import WHOLE, ItemKind, data_controls, item_name
from sandbox.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.core.policy_tables import bump_policy_version
from sandbox.core.timeutil import to_rfc3339
from sandbox.platform import Platform

from .acts import Clock, audited, audited_read, new_id, record_allow, system_clock

__all__ = ["ACTIONS", "DataLists", "parse_item"]

#: (add, remove) audit actions of each list.
ACTIONS = {
    "negative": ("negative_list.add", "negative_list.remove"),
    "important": ("important_data.mark", "important_data.unmark"),
}
MAX_REASON = 2000


def parse_item(item: str) -> tuple[str, str]:
    """``domain.table`` or ``domain.table.column`` as (dataset, column or :data:`WHOLE`)."""
    parts = item.strip().lower().split(".")
    if len(parts) not in (2, 3) or not all(p.isidentifier() for p in parts):
        raise InvalidInput(
            "an item is a dataset (domain.table) or a column (domain.table.column)",
            rule="data_list.item",
        )
    return ".".join(parts[:2]), parts[2] if len(parts) == 3 else WHOLE


class DataLists:
    """The two lists over the control plane; ``clock`` is injected."""

    def __init__(self, platform: Platform, *, clock: Clock = system_clock) -> None:
        self.platform = platform
        self.clock = clock

    # -- changes ---------------------------------------------------------------------------

    def add(self, actor: Actor, kind: ItemKind, item: str, *, reason: str) -> dict[str, Any]:
        """Put ``item`` on the list of ``kind`` (prohibited, limited: negative; important)."""
        action = ACTIONS[kind.list_name][0]
        with audited(self.platform, actor, action, f"item:{item[:300]}"):
            dataset, column = parse_item(item)
            self._may_add(actor, dataset)
            if not reason.strip():
                raise InvalidInput("say why, in words the operators read", rule="data_list.reason")
            if len(reason) > MAX_REASON:
                raise InvalidInput(
                    f"a reason is at most {MAX_REASON} characters", rule="data_list.reason"
                )
            self._check_column(dataset, column)
            now = to_rfc3339(self.clock())
            row_id = new_id("dl")
            with self.platform.engine.begin() as conn:
                present = conn.execute(
                    sa.select(data_controls.c.id).where(
                        data_controls.c.kind == kind.value,
                        data_controls.c.dataset == dataset,
                        data_controls.c.column_name == column,
                        data_controls.c.removed_at.is_(None),
                    )
                ).first()
                if present is not None:
                    raise Conflict(
                        f"{item_name(dataset, column)} is already {kind.value} ({present.id})",
                        rule="data_list.duplicate",
                    )
                conn.execute(
                    sa.insert(data_controls).values(
                        id=row_id,
                        kind=kind.value,
                        dataset=dataset,
                        column_name=column,
                        domain=dataset.split(".", 1)[0],
                        reason=reason,
                        added_by=actor.name,
                        added_role=actor.role.value,
                        added_at=now,
                    )
                )
                bump_policy_version(conn)
                record_allow(
                    self.platform,
                    actor,
                    action,
                    f"item:{item_name(dataset, column)}",
                    "allow.role",
                    dataset=dataset,
                    details={"id": row_id, "kind": kind.value, "reason": reason},
                )
                return _out(_row(conn, row_id))

    def remove(self, actor: Actor, row_id: str, *, reason: str) -> dict[str, Any]:
        """Take an item off its list (admin only, with a reason)."""
        with self.platform.engine.connect() as conn:
            found = conn.execute(sa.select(data_controls).where(data_controls.c.id == row_id))
            row = found.first()
        list_name = "negative" if row is None else ItemKind(row.kind).list_name
        action = ACTIONS[list_name][1]
        with audited(self.platform, actor, action, f"item:{row_id}"):
            if actor.role is not Role.ADMIN:
                raise Forbidden(
                    "only the admin takes an item off a list (it gives use back)",
                    rule="data_list.role",
                )
            if row is None or row.removed_at is not None:
                raise NotFound(f"no item {row_id} on the lists", rule="data_list.unknown")
            if not reason.strip():
                raise InvalidInput("say why, in words the bureau reads", rule="data_list.reason")
            now = to_rfc3339(self.clock())
            with self.platform.engine.begin() as conn:
                done = conn.execute(
                    sa.update(data_controls)
                    .where(data_controls.c.id == row_id, data_controls.c.removed_at.is_(None))
                    .values(removed_by=actor.name, removed_at=now, removed_reason=reason)
                )
                if done.rowcount != 1:
                    raise NotFound(f"no item {row_id} on the lists", rule="data_list.unknown")
                bump_policy_version(conn)
                record_allow(
                    self.platform,
                    actor,
                    action,
                    f"item:{item_name(row.dataset, row.column_name)}",
                    "allow.role",
                    dataset=row.dataset,
                    details={"id": row_id, "kind": row.kind, "reason": reason},
                )
                return _out(_row(conn, row_id))

    def _may_add(self, actor: Actor, dataset: str) -> None:
        if actor.role is Role.ADMIN:
            return
        if actor.role is not Role.BUREAU:
            raise Forbidden(
                "only the admin, or the bureau owning the dataset, adds to the lists",
                rule="data_list.role",
            )
        if dataset.split(".", 1)[0] not in actor.domains:
            raise Forbidden(
                f"{dataset} belongs to another bureau: only it or the admin lists its items",
                rule="data_list.domain",
            )

    def _check_column(self, dataset: str, column: str) -> None:
        if not self.platform.catalog.exists(dataset):
            raise NotFound(f"dataset {dataset} is not registered", rule="dataset.unknown")
        if column == WHOLE:
            return
        spec = self.platform.catalog.get(dataset).spec
        try:
            spec.column(column)
        except KeyError:
            raise InvalidInput(
                f"{dataset} has no column '{column}'", rule="data_list.column"
            ) from None

    # -- reading ---------------------------------------------------------------------------

    def read(
        self, actor: Actor, list_name: str, *, dataset: str | None = None, removed: bool = False
    ) -> list[dict[str, Any]]:
        """A list as every account reads it (``removed``: with the items taken off), the
        read recorded as ``negative_list.read`` or ``important_data.read``."""
        kind = "negative_list" if list_name == "negative" else "important_data"
        return audited_read(
            self.platform,
            actor,
            kind,
            None,
            lambda: self.items(list_name, dataset=dataset, removed=removed),
            lambda _one: {},
        )

    def items(
        self, list_name: str, *, dataset: str | None = None, removed: bool = False
    ) -> list[dict[str, Any]]:
        kinds = [k.value for k in ItemKind if k.list_name == list_name]
        query = (
            sa.select(data_controls)
            .where(data_controls.c.kind.in_(kinds))
            .order_by(data_controls.c.added_at, data_controls.c.id)
        )
        if dataset is not None:
            query = query.where(data_controls.c.dataset == dataset.lower())
        if not removed:
            query = query.where(data_controls.c.removed_at.is_(None))
        with self.platform.engine.connect() as conn:
            return [_out(r) for r in conn.execute(query)]


def _row(conn: sa.Connection, row_id: str) -> Any:
    return conn.execute(sa.select(data_controls).where(data_controls.c.id == row_id)).one()


def _out(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "item": item_name(row.dataset, row.column_name),
        "dataset": row.dataset,
        "column": None if row.column_name == WHOLE else row.column_name,
        "kind": row.kind,
        "reason": row.reason,
        "added_by": row.added_by,
        "added_role": row.added_role,
        "added_at": row.added_at,
        "removed": None
        if row.removed_at is None
        else {"by": row.removed_by, "at": row.removed_at, "reason": row.removed_reason},
    }
