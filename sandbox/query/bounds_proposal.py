"""``sandbox dataset propose-bounds``: C, G and clamping bounds from DP quantiles.

The bureau that owns a dataset asks what to declare in its classification's
``[contribution]`` section and ``bounds``.  Reading the true maximum would release a
value of one entity (the busiest person's claim count, the largest amount), so every
bound is a DP quantile (:mod:`sandbox.query.bounds_quantile`), at the
``bounds_percentile`` setting ``p`` (0.95 by default) for counts and at
``bounds_value_percentile`` ``v`` (0.99) for values, spending an owner-side ε:

1. **C**: the ``p``-quantile of per-entity row counts, candidates ``1 … MAX_CONTRIBUTION``
   (one entity is one item: ``Δ = 1``);
2. **G**: the ``p``-quantile of each entity's largest number of distinct values in any
   one groupable column (dimension, quasi, sensitive; never L4), each column as it is
   released (its declared generalisation applied), ``Δ = 1``: every one-column grouping
   keeps at least the share ``p`` of its entities whole.  One quantile, not one per
   column with their largest proposed: that spent ``ε`` on ``1 + k`` count quantiles and
   took the maximum of ``k`` noisy draws, which on 1,000 persons of one row each
   proposed ``G`` of 5 to 13 (sex: 7, of two values) where every entity has 1;
3. **clamping bounds** of each measure and measure use: the ``1 - v`` and ``v`` quantiles
   of the values, drawn only for a bound that can lower ``max(|lower|, |upper|)``, which
   every sensitivity scales with (a declared lower bound at or above 0 is kept, as is an
   upper bound at or below 0: raising a lower bound of 0 would only bias, a summed
   ``CASE … ELSE 0`` counting each 0 as the raised bound); one row per entity (the row
   whose hash of its value is smallest: a choice from the entity's own rows, so
   ``Δ = 1`` whatever C comes out), among the geometric grid of candidates
   :func:`~sandbox.query.bounds_quantile.value_edges` of the *declared* bounds (public):
   a proposal only ever narrows them.  One row per entity rather than C: the margin a
   quantile has, ``(1 - v)`` of the items, grows with C no faster than the temperature
   ``2C/ε`` does, and a C drawn far too large no longer flattens the value quantiles.

ε is split among the quantiles (basic composition): half among the count quantiles
(C and each G), half among the value quantiles (one or two per measure), or all to the
counts of a dataset without value quantiles.  Equal shares per quantile starved the value quantiles
(then of sensitivity ``C`` over 1,001 equal bins, a margin of only ``(1 - v)`` of the rows: claim
amounts' upper bound came out 4 to 13 times the true 99th percentile at ε = 0.1);
five times a count's share starved the counts of a dataset with one grouping and two
measures (C = 642 for 12 rows per employer, once in five).  The proposal is ε-DP for
adding or removing one entity's rows.  The spend is **recorded before** anything is
read: an audit entry (``dataset.propose_bounds``, rule ``registry.propose_bounds``)
with ``epsilon`` and the dataset's cumulative owner-side spend
(``owner_epsilon_spent``), which auditors read; a repeated proposal spends again (no
cache: each draws fresh noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from audit.queries import EntryFilter
from policies import Actor, Target
from sandbox.core.classification import ColumnSpec, Contribution, DatasetSpec, Level, Role
from sandbox.core.classification_file import MAX_CONTRIBUTION
from sandbox.core.errors import InvalidInput, QueryRefused
from sandbox.platform import Platform
from sandbox.query.bounds_quantile import chosen_count, chosen_edge, value_edges
from sandbox.query.noise import ChoiceSource, system_noise

__all__ = [
    "ACTION",
    "VALUE_PART",
    "BoundsProposal",
    "enclave_rows",
    "groupable_columns",
    "owner_epsilon_spent",
    "per_entity_histogram",
    "propose_bounds",
    "released_form",
]

ACTION = "dataset.propose_bounds"
RULE = "registry.propose_bounds"
GROUPABLE = (Role.DIMENSION, Role.QUASI, Role.SENSITIVE)
#: The part of ε the value quantiles share (when the dataset has measures).
VALUE_PART = Fraction(1, 2)


@dataclass(frozen=True)
class BoundsProposal:
    """What ``propose-bounds`` suggests for one dataset (every number a DP output)."""

    dataset: str
    epsilon: float
    percentile: float
    value_percentile: float
    contribution: Contribution
    groupings: tuple[str, ...]  # the columns G's quantile reads (no value of its own)
    bounds: dict[str, tuple[float, float]]
    owner_epsilon_spent: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "epsilon": self.epsilon,
            "percentile": self.percentile,
            "value_percentile": self.value_percentile,
            "contribution": self.contribution.to_dict(),
            "groupings": list(self.groupings),
            "bounds": {name: list(pair) for name, pair in self.bounds.items()},
            "owner_epsilon_spent": self.owner_epsilon_spent,
            "toml": self.toml(),
        }

    def toml(self) -> str:
        """A snippet to paste into the classification (replacing what it names)."""
        lines = [
            f"# Proposed by `sandbox dataset propose-bounds` (DP, ε = {self.epsilon:g}): "
            f"C, G and T keep about {self.percentile:.0%} of entities whole, clamping bounds "
            f"the {1 - self.value_percentile:.0%} and {self.value_percentile:.0%} quantiles.",
            "[contribution]",
            f"max_rows_per_entity = {self.contribution.max_rows_per_entity}",
            f"max_groups_per_entity = {self.contribution.max_groups_per_entity}",
            f"max_total_rows_per_entity = {self.contribution.max_total_rows_per_entity}",
        ]
        if self.groupings:
            lines.append(
                "# G: each entity's most distinct values in any one of " + ", ".join(self.groupings)
            )
        for name, (low, high) in self.bounds.items():
            lines += ["", f"# [columns.{name}]: bounds = [{_number(low)}, {_number(high)}]"]
        return "\n".join(lines) + "\n"

    def apply_to(self, spec: DatasetSpec) -> DatasetSpec:
        """``spec`` with the proposed contribution and clamping bounds."""
        columns = tuple(
            replace(col, bounds=self.bounds[col.name]) if col.name in self.bounds else col
            for col in spec.columns
        )
        return replace(spec, columns=columns, contribution=self.contribution)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def owner_epsilon_spent(platform: Platform, dataset: str) -> float:
    """The ε the dataset's owner has spent on proposals, from the audit trail."""
    total = 0.0
    offset, page = 0, 1000
    filters = EntryFilter(action=ACTION, dataset=dataset, decision="allow")
    while True:
        entries = platform.audit.entries(filters, offset=offset, limit=page)
        total += sum(float(e.details.get("epsilon", 0.0)) for e in entries)
        if len(entries) < page:
            return total
        offset += page


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def released_form(col: ColumnSpec) -> str:
    """The column as a grouping may release it (its declared generalisation applied)."""
    name, gen = _quoted(col.name), col.generalize
    if gen is None:
        return name
    if gen.kind == "band":
        return f"floor({name} / {gen.width!r}) * {gen.width!r}"
    if gen.kind == "truncate":
        return f"date_trunc('{gen.unit}', {name})"
    return f"left({name}, {int(gen.length or 1)})"


def groupable_columns(spec: DatasetSpec) -> list[ColumnSpec]:
    """The columns of ``spec`` a query may group by: dimension, quasi, sensitive; never L4."""
    return [c for c in spec.columns if c.role in GROUPABLE and c.level is not Level.L4]


def enclave_rows(platform: Platform) -> Callable[[str, list[Any]], list[tuple[Any, ...]]]:
    """``run(sql, params)``: the enclave's rows of one owner-side histogram query, as tuples."""

    def run(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in platform.enclave.query(sql, params).to_pylist()]

    return run


def per_entity_histogram(
    run: Callable[[str, list[Any]], list[tuple[Any, ...]]], table: str, entity: str, expr: str
) -> list[int]:
    """Entities by per-entity ``expr`` (an integer, clipped to ``1 … MAX_CONTRIBUTION``)."""
    rows = run(
        f"SELECT least(greatest(n, 1), {MAX_CONTRIBUTION}) AS v, count(*) AS c "
        f"FROM (SELECT {expr} AS n FROM {table} GROUP BY {entity}) GROUP BY 1",
        [],
    )
    counts = [0] * MAX_CONTRIBUTION  # bin j: value j + 1
    for value, count in rows:
        counts[int(value) - 1] += int(count)
    return counts


def _value_histogram(
    run: Callable[[str, list[Any]], list[tuple[Any, ...]]],
    table: str,
    entity: str,
    col: ColumnSpec,
    edges: tuple[float, ...],
) -> list[int]:
    """One value of ``col`` per entity, clamped to its declared bounds, counted in the bins
    ``[edges[i], edges[i + 1])`` (the declared upper bound in the last bin)."""
    assert col.bounds is not None
    name = _quoted(col.name)
    bins = len(edges) - 1
    rows = run(
        "WITH e AS (SELECT v, row_number() OVER (ORDER BY v) - 1 AS i "
        "FROM (SELECT unnest(?::DOUBLE[]) AS v)), "
        # The entity's row whose hash of its value is smallest: chosen from its own rows
        # only (never by scan order, which other entities' rows could move), so Δ = 1.
        f"s AS (SELECT least(greatest(arg_min({name}::DOUBLE, hash({name})), ?), ?) AS x "
        f"FROM {table} WHERE {name} IS NOT NULL GROUP BY {entity}) "
        f"SELECT least(e.i, {bins - 1}) AS bin, count(*) AS c "
        "FROM s ASOF JOIN e ON s.x >= e.v GROUP BY 1",
        [list(edges), *col.bounds],
    )
    counts = [0] * bins
    for bin_, count in rows:
        counts[int(bin_)] += int(count)
    return counts


def _drawn(col: ColumnSpec) -> tuple[bool, bool]:
    """Which of a measure's bounds a quantile is drawn for: only one that can lower
    ``max(|lower|, |upper|)``, the bound every sensitivity scales with.  A declared lower
    bound at or above 0 stays (raising it would only bias: a ``CASE … ELSE 0`` summed
    would count each 0 as the raised bound), and so does an upper bound at or below 0."""
    assert col.bounds is not None
    return col.bounds[0] < 0, col.bounds[1] > 0


def _shares(epsilon: Fraction, counts: int, values: int) -> tuple[Fraction, Fraction]:
    """ε of one count quantile and of one value quantile (basic composition: they sum to ε)."""
    if not values:
        return epsilon / counts, Fraction(0)
    return epsilon * (1 - VALUE_PART) / counts, epsilon * VALUE_PART / values


def _check(epsilon: float, *percentiles: float) -> None:
    if not (math.isfinite(epsilon) and 0 < epsilon <= 10):
        raise InvalidInput("epsilon must be a number in (0, 10]", rule="bounds.epsilon")
    if not all(math.isfinite(p) and 0.5 < p < 1 for p in percentiles):
        raise InvalidInput("a percentile must be a number in (0.5, 1)", rule="bounds.percentile")


def propose_bounds(
    platform: Platform,
    dataset: str,
    actor: Actor,
    *,
    epsilon: float | None = None,
    percentile: float | None = None,
    value_percentile: float | None = None,
    source: ChoiceSource | None = None,
    request_id: str | None = None,
    client: str | None = None,
) -> BoundsProposal:
    """Spend ``epsilon`` (recorded first) and propose C, G and clamping bounds for ``dataset``.

    Only who may reclassify the dataset (its owning bureau; never an admin, the host
    console included: separation of duties, ``policies/enforcer.py``) may ask: the
    decision is ``dataset.classify`` on it.  Every refusal is audited with its rule; a
    failure after the spend is recorded keeps the spend.
    """
    eps = platform.settings.bounds_epsilon if epsilon is None else epsilon
    p = platform.settings.bounds_percentile if percentile is None else percentile
    v = platform.settings.bounds_value_percentile if value_percentile is None else value_percentile
    entry = {
        "actor": actor.name,
        "role": actor.role.value,
        "action": ACTION,
        "target": f"dataset:{dataset}",
        "dataset": dataset,
        "request_id": request_id,
        "client": client,
    }
    decision = platform.authority.decide(
        actor, "dataset.classify", Target.dataset(dataset), audit=False
    )
    if not decision.allowed:
        platform.authority.record_decision(actor, decision, request_id=request_id, client=client)
        raise decision.error()
    with platform.refusal_recorded(actor, entry):
        _check(eps, p, v)
        record = platform.catalog.get(dataset)
        if record.engine != "duckdb":
            # Nothing is spent: the histograms are DuckDB queries on the enclave file.
            raise QueryRefused(
                f"bounds are proposed from the enclave, and {dataset} is held in the "
                f"{record.engine} warehouse: declare [contribution] and the bounds in its "
                "classification file, or propose them on a DuckDB registration first",
                rule="engine.unsupported",
            )
        spec = record.spec
        groupable = groupable_columns(spec)
        measured = [c for c in spec.columns if c.bounds is not None]
        sides = sum(map(sum, map(_drawn, measured)))
        count_quantiles = 1 + bool(groupable)  # C's quantile, and G's if anything can be grouped
        spent = owner_epsilon_spent(platform, dataset) + eps
        platform.record(
            **entry,
            decision="allow",
            rule=RULE,
            details={
                "epsilon": eps,
                "percentile": p,
                "value_percentile": v,
                "quantiles": count_quantiles + sides,
                "value_part": float(VALUE_PART) if sides else 0.0,
                "owner_epsilon_spent": spent,
                **actor.audit_details(),
            },
        )
    chooser = source or system_noise()
    share, value_share = _shares(Fraction(eps), count_quantiles, sides)
    q, qv = Fraction(str(p)), Fraction(str(v))
    table = f"{_quoted(spec.domain)}.{_quoted(spec.table)}"
    entity = _quoted(spec.entity_key)
    run = enclave_rows(platform)
    rows = per_entity_histogram(run, table, entity, "count(*)")
    c = chosen_count(rows, q, share, chooser)
    g = 1  # no groupable column: one group per query (its total), and nothing drawn
    if groupable:
        distinct = [f"count(DISTINCT {released_form(col)})" for col in groupable]
        most = distinct[0] if len(distinct) == 1 else f"greatest({', '.join(distinct)})"
        g = chosen_count(per_entity_histogram(run, table, entity, most), q, share, chooser)
    bounds = {}
    for col in measured:
        assert col.bounds is not None
        edges = value_edges(*col.bounds)
        low_edge, high_edge = 0, len(edges) - 1
        draw_low, draw_high = _drawn(col)
        if draw_low or draw_high:
            counts = _value_histogram(run, table, entity, col, edges)
            if draw_low:
                low_edge = chosen_edge(counts, 1 - qv, value_share, 1, chooser)
            if draw_high:
                high_edge = chosen_edge(counts, qv, value_share, 1, chooser)
        if high_edge <= low_edge:  # a bound pair needs low < high: widen by one edge
            high_edge = min(low_edge + 1, len(edges) - 1)
            low_edge = high_edge - 1
        bounds[col.name] = (edges[low_edge], edges[high_edge])
    return BoundsProposal(
        dataset=dataset,
        epsilon=eps,
        percentile=p,
        value_percentile=v,
        # C's quantile is of each entity's rows in all: it is T as well (a cell holds no more).
        contribution=Contribution(c, g, c),
        groupings=tuple(col.name for col in groupable),
        bounds=bounds,
        owner_epsilon_spent=spent,
    )
