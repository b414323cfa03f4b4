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
- Only for the DuckDB enclave (the histogram is a query on its file); a dataset held in
  the Spark warehouse keeps the default.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.core.classification import Contribution
from sandbox.core.db import derived_contribution
from sandbox.core.errors import SandboxError
from sandbox.core.timeutil import now_rfc3339
from sandbox.enclave.catalog import DatasetRecord
from sandbox.platform import Platform
from sandbox.query.bounds_proposal import ACTION, owner_epsilon_spent, per_entity_histogram
from sandbox.query.bounds_quantile import chosen_above, chosen_total
from sandbox.query.noise import ChoiceSource, system_noise

__all__ = [
    "OUTCOME",
    "RULE",
    "DataBounds",
    "DrawnTotal",
    "drawn_bounds",
    "store_draw",
    "stored_draw",
    "top_of",
]

log = logging.getLogger("sandbox.query.default_bounds")

RULE = "registry.default_bounds"
#: The audit action of a draw's outcome (its spend is an ``ACTION`` entry).
OUTCOME = "dataset.default_bounds"
#: Who draws: the platform, on the owner's behalf (as the risk monitor is "monitor").
ACTOR = "platform"


def top_of(default: Contribution) -> int:
    """The least rows per entity that keeps ``default`` as it is: its reach, ``C·G`` or
    its ``T`` where that is less (the rows of one entity any row statistic can see)."""
    reach = default.max_rows_per_entity * default.max_groups_per_entity
    t = default.max_total_rows_per_entity
    return reach if t is None else min(reach, t)


def drawn_bounds(default: Contribution, total: int | None) -> Contribution | None:
    """``default``'s reach set to an entity of ``total`` rows; None where ``total`` keeps
    the default (None, or ``top_of(default)``).

    Lowered (``total`` below the default's reach): ``C = T = total``, ``G`` at most
    ``total``.  Raised (above it: the data's entities hold more rows than the default
    keeps): ``C = T = total`` and the default's ``G``, so an entity's row statistics see
    ``total`` of its rows instead of ``C·G``, and its entity counts stay in ``G`` groups.
    """
    top = top_of(default)
    if total is None or total == top:
        return None
    if total < top:
        return Contribution(total, min(default.max_groups_per_entity, total), total)
    return Contribution(total, default.max_groups_per_entity, total)


@dataclass(frozen=True)
class DrawnTotal:
    """One dataset's stored draw: ``total`` None where it kept the default; ``top`` the
    largest candidate it chose among ("that or more"; None for a draw not yet stored)."""

    entity_key: str
    total: int | None
    epsilon: float
    version: int
    top: int | None = None

    def bounds(self, default: Contribution) -> Contribution | None:
        return drawn_bounds(default, self.total)

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
        if drawn is None or not drawn.current(key, ceiling):
            with self._lock:
                drawn = self._read(record.id)
                if drawn is None or not drawn.current(key, ceiling):
                    drawn = self._draw(record, epsilon, top, ceiling)
                self._known[record.id] = drawn
        return drawn.bounds(default)

    def _read(self, dataset: str) -> DrawnTotal | None:
        return stored_draw(self.platform.engine, dataset)

    def _draw(self, record: DatasetRecord, epsilon: float, top: int, ceiling: int) -> DrawnTotal:
        """Record the spend, read the histogram, draw, store (the first stored draw wins)."""
        platform, spec = self.platform, record.spec
        percentile = platform.settings.bounds_percentile

        def record_act(action: str, details: dict[str, Any]) -> None:
            platform.record(
                actor=ACTOR,
                role="system",
                action=action,
                target=f"dataset:{record.id}",
                decision="allow",
                rule=RULE,
                dataset=record.id,
                details=details,
            )

        def record_spend(**extra: Any) -> None:
            record_act(
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

        def run(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            return [tuple(r.values()) for r in platform.enclave.query(sql, params).to_pylist()]

        try:
            rows = per_entity_histogram(run, table, _quoted(spec.entity_key), "count(*)")
        except SandboxError as exc:
            # The owner's draw must not fail the operator's query: the default applies in
            # this query service (one per process) until it restarts (a retry would spend
            # again; the spend above stays recorded), and nothing is stored.
            log.warning("drawing %s's bounds failed (%s): the default applies", record.id, exc.rule)
            return DrawnTotal(spec.entity_key.lower(), None, epsilon, record.version)
        q, eps, source = Fraction(str(percentile)), Fraction(str(epsilon)), self.source
        chosen = chosen_total(rows, q, eps, source or system_noise(), top)
        if chosen == top and ceiling > top:
            # "top or more": how many more, with a second quantile of its own (its spend
            # recorded before it is drawn; the rows were read once, above).
            record_spend(above=top)
            chosen = chosen_above(rows, q, eps, source or system_noise(), top, ceiling)
        drawn = DrawnTotal(
            spec.entity_key.lower(), None if chosen == top else chosen, epsilon, record.version
        )
        drawn = store_draw(platform.engine, record.id, drawn, ceiling)
        record_act(
            OUTCOME,
            {
                "version": drawn.version,
                "max_total_rows_per_entity": drawn.total,
                "default_kept": drawn.total is None,
            },
        )
        return drawn


def stored_draw(engine: Engine, dataset: str) -> DrawnTotal | None:
    """The draw stored for ``dataset``, if one was made (whatever its entity key)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(derived_contribution).where(derived_contribution.c.dataset_id == dataset)
        ).first()
    if row is None:
        return None
    return DrawnTotal(
        row.entity_key, row.max_total_rows_per_entity, row.epsilon, row.version, row.top
    )


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
