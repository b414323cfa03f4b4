"""The one read every decision makes: policy state, today's usage, budget spent.

The policy state is ``(policy version, sum of dataset versions, rules version)``;
each only grows, and the policy version moves with the rules version, so a larger
tuple is a newer state.  When the cached outcome of a query
uses grants with quotas or a budget, their counters come back in the same
round trip (a ``UNION ALL``), so a cached decision costs one statement
whatever the grant says.  The connection is held in autocommit mode, so each
read sees the latest committed data and holds no snapshot between decisions.

On a SQLite file the read is first asked whether it is needed at all: ``PRAGMA
data_version`` on a connection changes whenever any *other* connection, in any
process, has committed since it was last asked.  The prober's connections are
its own and only read, so while the number stands still, the rows (version row
included) are byte for byte those it read last on that connection, and the
answer it read then is still the answer; the moment anything commits, the rows
are read again.  This costs no staleness window: it is the same check as
reading the row, made by the database engine.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandbox.core.db import datasets
from sandbox.core.policy_tables import grant_budgets, policy_state, usage_daily

from .decision import DailyUsage

__all__ = ["Probe", "Prober", "State", "watches_commits"]

State = tuple[int, int, int]
"""(policy version, sum of dataset versions, Casbin rules version): each only grows."""

_DATA_VERSION = "PRAGMA data_version"
_REMEMBERED = 20_000
"""Counters one connection remembers between commits (then it starts over)."""


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


def watches_commits(engine: Engine) -> bool:
    """Whether ``PRAGMA data_version`` tells this engine's prober of every commit.

    Only on a SQLite file whose pool hands each connection to one holder at a time:
    a commit made on the prober's own connection would not move its number, so a pool
    that shares one connection (``StaticPool``, ``SingletonThreadPool``: in-memory
    databases) or a shared cache (``file:`` URIs) reads the rows every time.  It assumes,
    as ``open_control_db`` builds it, that each pooled connection is its own driver
    connection: an engine whose ``creator`` hands out one shared ``sqlite3`` connection
    would hide the writers' commits from the prober (not supported).
    """
    if engine.dialect.name != "sqlite":
        return False
    database = engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or "uri" in engine.url.query:
        return False
    return isinstance(engine.pool, sa.pool.QueuePool | sa.pool.NullPool)


@dataclass(frozen=True)
class Probe:
    state: State
    usage: dict[str, DailyUsage] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)


class _Slot:
    """One held connection and, when commits are watched, what it read since the last one."""

    __slots__ = ("conn", "cursor", "seen", "spent", "state", "usage")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.cursor: Any = None
        self.forget(None)

    def forget(self, seen: int | None) -> None:
        self.seen = seen
        self.state: State | None = None
        self.usage: dict[tuple[str, str], DailyUsage | None] = {}  # (day, grant): None = no row
        self.spent: dict[str, int | None] = {}

    def recall(self, usage_ids: Sequence[str], budget_ids: Sequence[str], day: str) -> Probe | None:
        """The answer read on this connection since its last commit, if it read every part."""
        if self.state is None:
            return None
        usage: dict[str, DailyUsage] = {}
        spent: dict[str, int] = {}
        for grant in usage_ids:
            used = self.usage.get((day, grant), _UNREAD)
            if used is _UNREAD:
                return None
            if used is not None:
                usage[grant] = used
        for grant in budget_ids:
            amount = self.spent.get(grant, _UNREAD)
            if amount is _UNREAD:
                return None
            if amount is not None:
                spent[grant] = amount
        return Probe(self.state, usage, spent)

    def remember(
        self, probe: Probe, usage_ids: Sequence[str], budget_ids: Sequence[str], day: str
    ) -> None:
        if len(self.usage) + len(self.spent) >= _REMEMBERED:
            self.usage, self.spent = {}, {}
        self.state = probe.state
        for grant in usage_ids:
            self.usage[(day, grant)] = probe.usage.get(grant)
        for grant in budget_ids:
            self.spent[grant] = probe.spent.get(grant)


_UNREAD: Any = object()


class Prober:
    """Runs the per-decision read on held autocommit connections (thread-safe).

    Up to ``connections`` reads run at once, each on its own connection, so on
    PostgreSQL concurrent decisions overlap their round trips.  The statement is
    compiled once per shape (number of grants) for the engine's dialect and run
    on the driver's cursor: SQLAlchemy's per-execution overhead would otherwise
    be most of a cached decision's cost.  On a SQLite file each connection first
    asks ``PRAGMA data_version`` (:func:`watches_commits`) and reads the rows only
    if something committed since it last read them.
    """

    def __init__(self, engine: Engine, *, connections: int = 4) -> None:
        self._engine = engine
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for _ in range(connections):
            self._free.put(_Slot())
        self._compiled: dict[tuple[int, int], tuple[str, tuple[str, ...] | None]] = {}
        self._errors: type[Exception] = engine.dialect.loaded_dbapi.Error
        self.watching = watches_commits(engine)
        """Whether reads are skipped while nothing committed (SQLite files)."""

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
        slot = self._free.get()  # blocks while every connection is in use
        try:
            return self._read(slot, usage_ids, budget_ids, day)
        finally:
            self._free.put(slot)

    def _read(
        self, slot: _Slot, usage_ids: Sequence[str], budget_ids: Sequence[str], day: str
    ) -> Probe:
        sql, order = self._sql(len(usage_ids), len(budget_ids))
        for attempt in (1, 2):
            try:
                cursor = self._cursor(slot)
                if self.watching:
                    # Asked before the rows are read: a commit landing between the two
                    # moves the number the next read sees, so what is kept is never stale.
                    cursor.execute(_DATA_VERSION)
                    seen = cursor.fetchall()[0][0]  # to the end: no statement left open
                    if seen != slot.seen:
                        slot.forget(seen)
                    else:
                        kept = slot.recall(usage_ids, budget_ids, day)
                        if kept is not None:
                            return kept
                values: dict[str, Any] = {"day": day}
                values.update((f"u{i}", g) for i, g in enumerate(usage_ids))
                values.update((f"b{i}", g) for i, g in enumerate(budget_ids))
                params: Any = [values[name] for name in order] if order is not None else values
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            except self._errors:
                self._drop(slot)
                if attempt == 2:
                    raise
                continue
            probe = _probe(rows)
            if self.watching:
                slot.remember(probe, usage_ids, budget_ids, day)
            return probe
        raise AssertionError("unreachable")

    def _cursor(self, slot: _Slot) -> Any:
        if slot.cursor is None:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            raw = conn.connection.dbapi_connection
            assert raw is not None
            slot.conn, slot.cursor = conn, raw.cursor()
            slot.forget(None)
        return slot.cursor

    def _drop(self, slot: _Slot, *, failed: bool = True) -> None:
        """Give a slot's connection back (discarded by the pool if it ``failed``) and
        forget what it read."""
        conn, cursor = slot.conn, slot.cursor
        slot.conn, slot.cursor = None, None
        slot.forget(None)
        if cursor is not None and not failed:
            cursor.close()
        if conn is not None:
            if failed:
                conn.invalidate()
            conn.close()

    def close(self) -> None:
        """Return the idle connections to the pool (one in use is kept until its read ends)."""
        idle: list[_Slot] = []
        while True:
            try:
                idle.append(self._free.get_nowait())
            except queue.Empty:
                break
        for slot in idle:
            self._drop(slot, failed=False)
            self._free.put(slot)


def _probe(rows: Sequence[tuple[Any, ...]]) -> Probe:
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
