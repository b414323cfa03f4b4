"""The one read every decision makes: policy state, today's usage, budget spent.

The policy state is ``(policy version, sum of dataset versions, rules version)``;
each only grows, and the policy version moves with the rules version, so a larger
tuple is a newer state.  When the cached outcome of a query
uses grants with quotas or a budget, their counters come back in the same
round trip (a ``UNION ALL``), so a cached decision costs one statement
whatever the grant says.  The connection is held in autocommit mode, so each
read sees the latest committed data and holds no snapshot between decisions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandbox.core.db import datasets
from sandbox.core.policy_tables import grant_budgets, policy_state, usage_daily

from .decision import DailyUsage

__all__ = ["Probe", "Prober", "State"]

State = tuple[int, int, int]
"""(policy version, sum of dataset versions, Casbin rules version): each only grows."""


def _statement(n_usage: int, n_budget: int) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    dataset_sum = sa.select(
        sa.func.coalesce(sa.func.sum(datasets.c.version), sa.literal_column("0"))
    ).scalar_subquery()
    parts: list[sa.Select[Any]] = [
        sa.select(
            sa.literal_column("'v'").label("kind"),
            policy_state.c.version.label("a"),
            dataset_sum.label("b"),
            sa.cast(policy_state.c.id, sa.String(24)).label("id"),
        )
    ]
    if n_usage:
        parts.append(
            sa.select(
                sa.literal_column("'u'"),
                usage_daily.c.queries,
                usage_daily.c.rows_scanned,
                usage_daily.c.grant_id,
            ).where(
                usage_daily.c.day == sa.bindparam("day"),
                usage_daily.c.grant_id.in_([sa.bindparam(f"u{i}") for i in range(n_usage)]),
            )
        )
    if n_budget:
        parts.append(
            sa.select(
                sa.literal_column("'b'"),
                grant_budgets.c.spent,
                sa.literal_column("0"),
                grant_budgets.c.grant_id,
            ).where(grant_budgets.c.grant_id.in_([sa.bindparam(f"b{i}") for i in range(n_budget)]))
        )
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


@dataclass(frozen=True)
class Probe:
    state: State
    usage: dict[str, DailyUsage] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)


class Prober:
    """Runs the per-decision read on held autocommit connections (thread-safe).

    Up to ``connections`` reads run at once, each on its own connection, so on
    PostgreSQL concurrent decisions overlap their round trips.  The statement is
    compiled once per shape (number of grants) for the engine's dialect and run
    on the driver's cursor: SQLAlchemy's per-execution overhead would otherwise
    be most of a cached decision's cost.
    """

    def __init__(self, engine: Engine, *, connections: int = 4) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(connections)
        self._idle: list[Connection] = []
        self._compiled: dict[tuple[int, int], tuple[str, tuple[str, ...] | None]] = {}
        self._errors: type[Exception] = engine.dialect.loaded_dbapi.Error

    def _sql(self, n_usage: int, n_budget: int) -> tuple[str, tuple[str, ...] | None]:
        found = self._compiled.get((n_usage, n_budget))
        if found is None:
            compiled = _statement(n_usage, n_budget).compile(dialect=self._engine.dialect)
            order = compiled.positiontup
            found = (compiled.string, tuple(order) if order is not None else None)
            self._compiled[(n_usage, n_budget)] = found
        return found

    def read(
        self, usage_ids: Sequence[str] = (), budget_ids: Sequence[str] = (), day: str = ""
    ) -> Probe:
        sql, order = self._sql(len(usage_ids), len(budget_ids))
        values: dict[str, Any] = {"day": day}
        values.update((f"u{i}", g) for i, g in enumerate(usage_ids))
        values.update((f"b{i}", g) for i, g in enumerate(budget_ids))
        params: Any = [values[name] for name in order] if order is not None else values
        with self._slots:
            rows = self._execute(sql, params)
        versions = {"1": 0, "2": 0}
        datasets_sum = 0
        usage: dict[str, DailyUsage] = {}
        spent: dict[str, int] = {}
        for kind, a, b, ident in rows:
            if kind == "v":
                versions[str(ident)] = int(a)
                datasets_sum = int(b)
            elif kind == "u":
                usage[ident] = DailyUsage(queries=int(a), rows_scanned=int(b))
            else:
                spent[ident] = int(a)
        return Probe((versions["1"], datasets_sum, versions["2"]), usage, spent)

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            raw = conn.connection.dbapi_connection
            assert raw is not None
            try:
                cursor = raw.cursor()
                try:
                    cursor.execute(sql, params)
                    rows = list(cursor.fetchall())
                finally:
                    cursor.close()
            except self._errors:
                conn.invalidate()
                conn.close()
                if attempt == 2:
                    raise
                continue
            with self._lock:
                self._idle.append(conn)
            return rows
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
