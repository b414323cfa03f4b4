# Over 400 lines: one owner-side draw, its audit entries and its storage change together.
"""Contribution bounds for a dataset that declares none: drawn once from its data, with DP.

A classification without ``[contribution]`` (outside the verified one-row case, where a
query over the dataset alone runs at ``C = G = 1`` with no ε: ``sandbox.enclave.entity_rows``)
used to run every query
with a privacy budget at the platform's default, ``C = 2, G = 3``: six times the noise
where each person is one row, the noise a bureau did not choose.  Now, at the first
query with a budget over such a dataset, the platform draws a DP quantile
(:func:`sandbox.query.bounds_quantile.chosen_total`) of its rows per entity, at the
``bounds_percentile`` setting ``p`` (0.95), among the candidates ``1 … top``, ``top``
being the default's ``C·G`` (or its ``T``) and standing for "that or more"; where it
says "``top`` or more" and ``default_bounds_max_rows`` is above ``top``, a second one
(:func:`~sandbox.query.bounds_quantile.chosen_above`) among ``top … ceiling`` (the
setting; "that or more" again), each spending ``default_bounds_epsilon``.  A drawn
``t < top`` gives ``C = t``, ``G = min(G, t)``, ``T = t`` (an entity of ``t`` rows is in
at most ``t`` groups, and one group may hold all ``t``); ``top`` keeps the default;
``t > top`` gives ``C = T = t`` and the default's ``G``.

- **The reach the data has.**  With ``T = t < C·G`` an entity moves any row statistic
  by at most ``t`` rows' worth, fewer than the default's ``C·G``; with ``t > C·G`` by
  ``t``, more, instead of the default dropping every row beyond ``C·G`` of the most
  entities (ratings data with 22 a student at the median: counts 76% low).  Either way
  each release's ε is unchanged (the rewrite enforces the bounds, and the noise follows
  them).  Rows beyond ``t`` are dropped by the rewrite, as for any declared bound: a
  bias on the at most ``1 - p`` of entities with more, never a privacy loss.
- **``C = t``, not ``min(C, t)``.**  Where an entity's rows share one group (a person's
  repeated records grouped by sex) the default ``C = 2`` kept two of them: on OpenDP's
  PUMS_dup (1 to 4 rows per person) a 16% median error against 4% with ``C = t``
  (``docs/disclosure.md``).  Under the binding ``T`` a query's sensitivity is ``T``
  either way; only keys that declare one group per entity run at ``C = t`` (more noise,
  no bias).
- **Private.**  Per-entity row counts change by one entity's when one is added or
  removed (``Δ = 1``); the quantile spends ``default_bounds_epsilon`` (0.2), ε-DP, and
  the bound is a post-processing of it.  The spend is the dataset owner's and is
  **recorded before** anything is read, as ``propose-bounds``'s is (action
  ``dataset.propose_bounds``, rule ``registry.default_bounds``; counted in
  ``owner_epsilon_spent``); the outcome is a second entry (``dataset.default_bounds``).
- **Once per dataset and entity key.**  The drawn bound is kept in the control plane
  (:data:`sandbox.core.db.derived_contribution`) and reused by every later version
  (reusing a DP output spends nothing): a dataset updated daily does not spend daily.
  A new entity key draws again, and so does a kept default drawn under a lower ceiling
  (before draws could raise the bounds).  A declared ``[contribution]`` always wins.
- **Values per entity** of each groupable column that declares none, each drawn at
  ``default_bounds_epsilon`` where the data has enough entities for that to mean
  something (decided with DP first; :meth:`DataBounds._values`): ``G`` is
  the largest (at most ``t``) where ``t`` is drawn, and each query's ``G_q`` the product
  over its keys (:mod:`sandbox.query.key_groups`, ``DatasetAccess.drawn_groups``).
- Only for the DuckDB enclave (the histogram is a query on its file); a dataset held in
  the Spark warehouse keeps the default.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.core.access import budgeted_spec
from sandbox.core.classification import Contribution, DatasetSpec
from sandbox.core.db import derived_contribution
from sandbox.core.errors import SandboxError
from sandbox.core.timeutil import now_rfc3339
from sandbox.enclave.catalog import DatasetRecord
from sandbox.platform import Platform
from sandbox.query.bounds_proposal import (
    ACTION,
    enclave_rows,
    groupable_columns,
    owner_epsilon_spent,
    per_entity_histogram,
    released_form,
)
from sandbox.query.bounds_quantile import (
    chosen_above,
    chosen_count,
    chosen_total,
    enough_entities,
    least_entities,
)
from sandbox.query.noise import ChoiceSource, system_noise

__all__ = [
    "OUTCOME",
    "RULE",
    "DataBounds",
    "DrawnTotal",
    "declared_values",
    "drawn_bounds",
    "store_draw",
    "store_values",
    "stored_draw",
    "top_of",
]

log = logging.getLogger("sandbox.query.default_bounds")

RULE = "registry.default_bounds"
#: The audit action of a draw's outcome (its spend is an ``ACTION`` entry).
OUTCOME = "dataset.default_bounds"
#: The share of ``default_bounds_epsilon`` (its inverse) that decides whether a dataset has
#: enough entities for its values per entity to be drawn (``DataBounds._values``).
GATE_PART = 4
#: Who draws: the platform, on the owner's behalf (as the risk monitor is "monitor").
ACTOR = "platform"


def top_of(default: Contribution) -> int:
    """The least rows per entity that keeps ``default`` as it is: its reach, ``C·G`` or
    its ``T`` where that is less (the rows of one entity any row statistic can see)."""
    reach = default.max_rows_per_entity * default.max_groups_per_entity
    t = default.max_total_rows_per_entity
    return reach if t is None else min(reach, t)


def declared_values(spec: DatasetSpec | None) -> tuple[int, ...]:
    """The ``values_per_entity`` ``spec`` declares of the columns a budgeted query may group by."""
    if spec is None:
        return ()
    declared = (c.values_per_entity for c in groupable_columns(budgeted_spec(spec)))
    return tuple(v for v in declared if v is not None)


def drawn_bounds(
    default: Contribution,
    total: int | None,
    values: tuple[tuple[str, int], ...] | None = None,
    declared: tuple[int, ...] = (),
) -> Contribution | None:
    """``default``'s reach set to an entity of ``total`` rows; None where ``total`` keeps
    the default (None, or ``top_of(default)``).

    Lowered (``total`` below the default's reach): ``C = T = total``, ``G`` at most
    ``total``.  Raised (above it: the data's entities hold more rows than the default
    keeps): ``C = T = total`` and the default's ``G`` (at most ``total``: an entity of
    ``total`` rows is in at most that many groups), so an entity's row statistics see
    ``total`` of its rows instead of ``C·G``.  Either way, where the groupable columns'
    values per entity were drawn (``values``), ``G`` is the largest of them and of those
    the classification declares (``declared``), at most ``total``: a query grouped by one
    column then keeps the groups its entities have (``key_groups``: ``G_q`` is the
    product over its keys, at most ``G``).  (The drawn ones alone set ``G = 1`` beside a
    declared 6, and a count by that column came out 71-91% low: a review.)
    """
    top = top_of(default)
    if total is None or total == top:
        return None
    groups = default.max_groups_per_entity
    if values:
        groups = max([v for _, v in values] + list(declared))
    return Contribution(total, max(1, min(groups, total)), total)


@dataclass(frozen=True)
class DrawnTotal:
    """One dataset's stored draw: ``total`` None where it kept the default; ``top`` the
    largest candidate it chose among ("that or more"; None for a draw not yet stored)."""

    entity_key: str
    total: int | None
    epsilon: float
    version: int
    top: int | None = None
    #: Per groupable column (lower case) without a declared ``values_per_entity``: the
    #: drawn quantile of an entity's distinct values of it; None: not drawn yet.
    values: tuple[tuple[str, int], ...] | None = None

    def bounds(self, default: Contribution, spec: DatasetSpec | None = None) -> Contribution | None:
        """The bounds this draw sets (None: the default); ``spec``'s declared values per
        entity count with the drawn ones towards ``G``."""
        return drawn_bounds(default, self.total, self.values, declared_values(spec))

    def current(self, entity_key: str, ceiling: int) -> bool:
        """Drawn for ``entity_key``, and not a "that or more" under a lower ceiling than
        ``ceiling``: a kept default drawn before raising was possible, or the ceiling
        itself drawn under a smaller ``default_bounds_max_rows`` (drawn again, once)."""
        if self.entity_key != entity_key:
            return False
        if self.top is None or self.top >= ceiling:
            return True
        return self.total is not None and self.total != self.top


class DataBounds:
    """The drawn bounds of datasets that declare none; draws a dataset's on first use.

    One per query service (process); the control plane is the record shared by every
    process, this object only remembers what it read.  Two processes drawing the same
    dataset at once both spend, and both spends are recorded; the first stored draw is
    the one every process uses.
    """

    def __init__(self, platform: Platform, source: ChoiceSource | None = None) -> None:
        self.platform = platform
        self.source = source
        self._known: dict[str, DrawnTotal] = {}
        self._lock = threading.Lock()

    def bounds(self, record: DatasetRecord, default: Contribution) -> Contribution | None:
        """The lowered bounds ``record``'s queries run under, or None (``default`` applies).

        None without a draw: a declared ``[contribution]``, a Spark dataset, a
        ``default_bounds_epsilon`` of 0, or a default that cannot be lowered (``C·G = 1``).
        """
        epsilon = self.platform.settings.default_bounds_epsilon
        if record.spec.contribution is not None or record.engine != "duckdb" or epsilon <= 0:
            return None
        top = top_of(default)
        if top < 2:  # nothing to lower, and one row (C = G = 1) is no default to raise
            return None
        ceiling = max(top, self.platform.settings.default_bounds_max_rows)
        key = record.spec.entity_key.lower()
        drawn = self._known.get(record.id)
        if drawn is None or not drawn.current(key, ceiling) or drawn.values is None:
            with self._lock:
                drawn = self._read(record.id)
                if drawn is None or not drawn.current(key, ceiling):
                    drawn = self._draw(record, epsilon, top, ceiling)
                if drawn.values is None:
                    reach = top if drawn.total is None else drawn.total
                    drawn = self._draw_values(record, drawn, epsilon, reach)
                self._known[record.id] = drawn
        return drawn.bounds(default, record.spec)

    def groups(self, record: DatasetRecord) -> tuple[tuple[str, int], ...]:
        """The drawn values per entity of ``record``'s groupable columns, as the last
        :meth:`bounds` for it found them (empty: none drawn, or no draw applies)."""
        drawn = self._known.get(record.id)
        if drawn is None or record.spec.contribution is not None:
            return ()
        return drawn.values or ()

    def _read(self, dataset: str) -> DrawnTotal | None:
        return stored_draw(self.platform.engine, dataset)

    def _draw(self, record: DatasetRecord, epsilon: float, top: int, ceiling: int) -> DrawnTotal:
        """Record the spend, read the histogram, draw, store (the first stored draw wins)."""
        platform, spec = self.platform, record.spec
        percentile = platform.settings.bounds_percentile

        def record_spend(**extra: Any) -> None:
            self._record(
                record,
                ACTION,
                {
                    "epsilon": epsilon,
                    "percentile": percentile,
                    "quantiles": 1,
                    "automatic": True,
                    "version": record.version,
                    "owner_epsilon_spent": owner_epsilon_spent(platform, record.id) + epsilon,
                    **extra,
                },
            )

        record_spend()
        table = f"{_quoted(spec.domain)}.{_quoted(spec.table)}"
        try:
            rows = per_entity_histogram(
                enclave_rows(platform), table, _quoted(spec.entity_key), "count(*)"
            )
        except SandboxError as exc:
            # The owner's draw must not fail the operator's query: the default applies in
            # this query service (one per process) until it restarts (a retry would spend
            # again; the spend above stays recorded), and nothing is stored.
            log.warning("drawing %s's bounds failed (%s): the default applies", record.id, exc.rule)
            return DrawnTotal(spec.entity_key.lower(), None, epsilon, record.version, values=())
        q, eps, source = Fraction(str(percentile)), Fraction(str(epsilon)), self.source
        chosen = chosen_total(rows, q, eps, source or system_noise(), top)
        if chosen == top and ceiling > top:
            # "top or more": how many more, with a second quantile of its own (its spend
            # recorded before it is drawn; the rows were read once, above).
            record_spend(above=top)
            chosen = chosen_above(rows, q, eps, source or system_noise(), top, ceiling)
        values = self._values(record, epsilon, chosen, entities=sum(rows))
        drawn = DrawnTotal(
            spec.entity_key.lower(),
            None if chosen == top else chosen,
            epsilon,
            record.version,
            values=values,
        )
        stored = store_draw(platform.engine, record.id, drawn, ceiling)
        if stored.values is None and values is not None:  # another process stored T first
            stored = store_values(platform.engine, record.id, stored, values)
        self._record(
            record,
            OUTCOME,
            {
                "version": stored.version,
                "max_total_rows_per_entity": stored.total,
                "default_kept": stored.total is None,
                "values_per_entity": None if stored.values is None else dict(stored.values),
            },
        )
        # Values that failed to draw are not stored (drawn again after a restart); this
        # process keeps G as it is until then, as for a failed draw of T.
        return replace(stored, values=()) if stored.values is None else stored

    def _draw_values(
        self, record: DatasetRecord, drawn: DrawnTotal, epsilon: float, reach: int
    ) -> DrawnTotal:
        """Values per entity for a draw stored before they were drawn: drawn and stored
        now (a failure leaves them to the next process, as :meth:`_draw` does)."""
        values = self._values(record, epsilon, reach)
        if values is None:
            return replace(drawn, values=())
        stored = store_values(self.platform.engine, record.id, drawn, values)
        self._record(
            record,
            OUTCOME,
            {"version": record.version, "values_per_entity": dict(stored.values or ())},
        )
        return stored

    def _record(self, record: DatasetRecord, action: str, details: dict[str, Any]) -> None:
        """An audit entry of the platform's draw for ``record``'s owner."""
        self.platform.record(
            actor=ACTOR,
            role="system",
            action=action,
            target=f"dataset:{record.id}",
            decision="allow",
            rule=RULE,
            dataset=record.id,
            details=details,
        )

    def _values(
        self, record: DatasetRecord, epsilon: float, reach: int, entities: int | None = None
    ) -> tuple[tuple[str, int], ...] | None:
        """Each groupable column's values per entity, drawn (spends recorded first); ``()``
        where none is drawn; None where the enclave failed (the spends stay recorded).

        The columns a query with a budget may group by (dimension, quasi, sensitive;
        never L4) whose classification declares no ``values_per_entity``, each as a
        budgeted release reads it (its binding generalisation applied), each a
        :func:`~sandbox.query.bounds_quantile.chosen_count` of per-entity distinct values
        (``Δ = 1``) at ``default_bounds_epsilon`` among ``1 … reach`` (an entity kept to
        ``reach`` rows has no more values).  Only where the data has enough entities for
        such a quantile to mean something (:func:`~sandbox.query.bounds_quantile.
        least_entities`: 600 at ε 0.2), decided first with a quarter of that ε
        (:func:`~sandbox.query.bounds_quantile.enough_entities`): on 312 patients a
        quantile per column at a share of ε was noise (sex drawn 5, a visit's status 10,
        disease stage 1 for 3), and a count by stage came out 27-45% low.  Nothing is
        spent where no column needs one, or ``reach`` is 1.  ``entities``: their number,
        where the caller read it already (the draw of ``T`` read every entity's rows).
        """
        platform = self.platform
        spec = budgeted_spec(record.spec)
        columns = [c for c in groupable_columns(spec) if c.values_per_entity is None]
        if not columns or reach < 2:
            return ()
        percentile, eps = platform.settings.bounds_percentile, Fraction(str(epsilon))
        q, source = Fraction(str(percentile)), self.source or system_noise()
        least, gate = least_entities(q, eps), eps / GATE_PART
        names = [c.name.lower() for c in columns]
        spend = {"percentile": percentile, "automatic": True, "version": record.version}
        self._record(
            record,
            ACTION,
            {
                **spend,
                "epsilon": float(gate),
                "entities_at_least": least,
                "values_per_entity": names,
                "owner_epsilon_spent": owner_epsilon_spent(platform, record.id) + float(gate),
            },
        )
        table = f"{_quoted(spec.domain)}.{_quoted(spec.table)}"
        entity, run = _quoted(spec.entity_key), enclave_rows(platform)
        try:
            if entities is None:
                entities = sum(per_entity_histogram(run, table, entity, "count(*)"))
            if not enough_entities(entities, least, gate, source):
                return ()
            total = epsilon * len(columns)
            self._record(
                record,
                ACTION,
                {
                    **spend,
                    "epsilon": total,
                    "quantiles": len(columns),
                    "values_per_entity": names,
                    "owner_epsilon_spent": owner_epsilon_spent(platform, record.id) + total,
                },
            )
            candidates = tuple(range(1, reach + 1))
            values = []
            for col in columns:
                expr = f"count(DISTINCT {released_form(col)})"
                rows = per_entity_histogram(run, table, entity, expr)
                values.append((col.name.lower(), chosen_count(rows, q, eps, source, candidates)))
        except SandboxError as exc:
            log.warning("drawing %s's values failed (%s): G is kept", record.id, exc.rule)
            return None
        return tuple(sorted(values))


def stored_draw(engine: Engine, dataset: str) -> DrawnTotal | None:
    """The draw stored for ``dataset``, if one was made (whatever its entity key)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(derived_contribution).where(derived_contribution.c.dataset_id == dataset)
        ).first()
    if row is None:
        return None
    values = row.values_per_entity
    return DrawnTotal(
        row.entity_key,
        row.max_total_rows_per_entity,
        row.epsilon,
        row.version,
        row.top,
        None if values is None else tuple(sorted((str(k), int(v)) for k, v in values.items())),
    )


def store_values(
    engine: Engine, dataset: str, drawn: DrawnTotal, values: tuple[tuple[str, int], ...]
) -> DrawnTotal:
    """Store ``values`` with ``drawn`` (the draw stored for ``dataset``) unless values are
    stored already; the draw as stored.  Two processes: the first stored values win."""
    table = derived_contribution
    with engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.dataset_id == dataset)
            .where(table.c.entity_key == drawn.entity_key)
            .where(table.c.values_per_entity.is_(None))
            .values(values_per_entity=dict(values))
        )
    found = stored_draw(engine, dataset)
    if found is None or found.entity_key != drawn.entity_key or found.values is None:
        return replace(drawn, values=values)  # not stored (a failed draw of T): this process
    return found


def store_draw(engine: Engine, dataset: str, drawn: DrawnTotal, top: int) -> DrawnTotal:
    """Store ``drawn`` unless a current draw for the same entity key is stored; the one
    stored.  ``top``: the largest candidate it chose among.

    A draw for another entity key is replaced, and so is one that kept the default
    under a lower ``top`` (:meth:`DrawnTotal.current`).  Two processes storing at once:
    the first insert wins and the other returns it (the later spend stays recorded,
    unused).
    """
    values = {
        "entity_key": drawn.entity_key,
        "max_total_rows_per_entity": drawn.total,
        "top": top,
        "epsilon": drawn.epsilon,
        "version": drawn.version,
        "derived_at": now_rfc3339(),
        # Drawn for this draw's reach (its T): a replaced draw's are drawn again.
        "values_per_entity": None if drawn.values is None else dict(drawn.values),
    }
    table = derived_contribution
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(table.c.entity_key, table.c.max_total_rows_per_entity, table.c.top)
            .where(table.c.dataset_id == dataset)
            .with_for_update()
        ).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(table).values(dataset_id=dataset, **values))
            except sa.exc.IntegrityError:  # another process stored its draw first
                pass
        elif not DrawnTotal(row.entity_key, row.max_total_rows_per_entity, 0.0, 0, row.top).current(
            drawn.entity_key, top
        ):  # an older entity key, or a lower ceiling
            conn.execute(sa.update(table).where(table.c.dataset_id == dataset).values(**values))
    found = stored_draw(engine, dataset)
    return drawn if found is None else found


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
