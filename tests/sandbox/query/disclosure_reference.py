"""The row-wise disclosure of main at 4d5f1ef, frozen: the reference the column-wise one
must match bit for bit (``test_disclosure_vector.py``).

Copied verbatim from ``sandbox/query/disclosure.py`` (``_disclose`` and the per-row helpers
it called); the plan, validation and noise pieces it shares with the current module are
imported from there, so a change to the plan (``sensitivity``, ``noise_plan``) changes both
sides alike.  Only the entry point is renamed (``reference_disclose``).  Since the row count can
select the groups instead of the entity count (``disclosure._gate``), the reference
selects on whichever plan ``selects``, row by row, releases that column's draws, and
releases an entity count without a plan as NULL.  A NULL in the selecting count is
refused (``disclosure.stats``), as ``disclose`` refuses it since 5653e0f.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sandbox.core.errors import EnclaveError
from sandbox.query.disclosure import (
    _COUNTS,
    _KEY,
    _NOISED,
    _UNRELEASED,
    ENTITIES,
    GROUPS,
    Disclosed,
    DisclosureParams,
    NoisePlan,
    StatColumn,
    _cells,
    _centred,
    _counted_by,
    _counted_cells,
    _dead_cells,
    _draw,
    _finite,
    _joined,
    _noisy_groups,
    _quantile,
    _stat_columns,
    _suppressed_bound,
    _validate,
    epsilon_cost,
    noise_plan,
    selection_threshold,
)
from sandbox.query.noise import NoiseSource, system_noise


def reference_disclose(
    stats: pa.Table,
    columns: list[StatColumn],
    params: DisclosureParams,
    *,
    noise: NoiseSource | None = None,
) -> Disclosed:
    """``disclose`` as it was: the same refusal for the same arithmetic."""
    try:
        return _disclose(stats, columns, params, noise)
    except (ArithmeticError, ValueError) as exc:
        raise EnclaveError(
            f"disclosure could not compute the release ({type(exc).__name__}); nothing is released",
            rule="disclosure.arithmetic",
        ) from exc


def _disclose(
    stats: pa.Table,
    columns: Sequence[StatColumn],
    params: DisclosureParams,
    noise: NoiseSource | None,
) -> Disclosed:
    by_name = _stat_columns(columns)
    _validate(stats, by_name)
    rows = stats.select([n for n in stats.column_names if not _KEY.match(n)]).to_pylist()
    keys = [n for n in stats.column_names if _KEY.match(n)]
    plans = {p.column: p for p in noise_plan(columns, params, grouped=bool(keys))}
    source = (noise or system_noise()) if plans else None
    if plans and _joined(by_name, ENTITIES):
        # Exact counts of other datasets' entities have no noise plan (the rewrite joins
        # on entity keys under a budget and makes none): never release one with ε.
        raise EnclaveError("joined entity counts under a budget", rule="disclosure.stats")
    noisy_gate: list[int] | None = None
    gate = next((p for p in plans.values() if p.selects), None)
    suppressed_count: int | None = None
    if source is None:
        keep = _kept(rows, by_name, params)
    else:
        if gate is None:
            raise EnclaveError("no noised count selects the groups", rule="disclosure.stats")
        keep, noisy_gate = _selected(rows, gate, params, source, 1, grouped=bool(keys))
        if keys:
            noisy_groups = _noisy_groups(len(rows), plans[GROUPS], source)
            suppressed_count = _suppressed_bound(noisy_groups, sum(keep), plans[GROUPS])
        else:  # one group, known to exist: what was held back is what the table lacks
            suppressed_count = 1 - sum(keep)
    suppressed = [r for r, ok in zip(rows, keep, strict=True) if not ok]
    extra = None
    if params.fold_remainder and suppressed and keys and source is None:
        extra = _remainder(suppressed, by_name, params)
    mask = pa.array(keep, pa.bool_())
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name in stats.column_names:
        stat = by_name.get(name)
        if stat is not None and stat.kind in _UNRELEASED:
            continue
        if stat is None or stat.kind in ("min", "max"):  # keys and dimension extremes
            kept = stats[name].filter(mask).combine_chunks()
            array = kept if extra is None else pa.concat_arrays([kept, pa.nulls(1, kept.type)])
        elif stat.kind == "quantile":
            plan = plans.get(name)
            if plan is None or source is None:
                raise EnclaveError("a quantile without a budget", rule="disclosure.stats")
            values = [r[name] for r, ok in zip(rows, keep, strict=True) if ok]
            array = pa.array([_quantile(v, stat, plan, source) for v in values], pa.float64())
        elif gate is not None and noisy_gate is not None and name == gate.column:
            # Already noised for the selection: release those same draws (no second spend).
            values = [n for n, ok in zip(noisy_gate, keep, strict=True) if ok]
            array = _release(values, stat, None, None)
        elif source is not None and name in _counted_cells(by_name):
            # Not noised: its cell test reads the noisy count of the same values instead.
            array = pa.nulls(sum(keep), pa.int64())
        elif source is not None and name not in plans and stat.kind in _NOISED:
            array = pa.nulls(sum(keep), pa.int64())  # an entity count a row count replaced
        elif (plan := plans.get(name)) is not None and plan.copy_of is not None:
            array = pa.nulls(sum(keep), pa.int64())  # its source's values, below
        elif plan is not None and plan.centred_on is not None:
            # sum - c·count, true values inside the boundary; c·(noisy count) added below.
            values = [
                Fraction(r[name] or 0) - plan.centre * int(r[plan.centred_on] or 0)
                for r, ok in zip(rows, keep, strict=True)
                if ok
            ]
            array = _release(values, _centred(stat, plan.centre), plan, source)
        else:
            values = [r[name] for r, ok in zip(rows, keep, strict=True) if ok]
            if extra is not None:
                values.append(extra[name])
            array = _release(values, stat, plans.get(name), source)
        names.append(name)
        arrays.append(array)
    position = {name: i for i, name in enumerate(names)}
    for name, plan in plans.items():
        if plan.copy_of is not None:
            arrays[position[name]] = arrays[position[plan.copy_of]]
        elif plan.centred_on is not None:
            arrays[position[name]] = _uncentred(
                arrays[position[name]], arrays[position[plan.centred_on]], by_name[name], plan
            )
    true_kept = {
        name: [_least(r, counted) for r, ok in zip(rows, keep, strict=True) if ok]
        + ([extra[name]] if extra is not None else [])
        for name in _cells(by_name)
        for counted in [_counted_by(by_name, name)]
    }
    arrays = _suppress_cells(names, arrays, by_name, true_kept, plans, params, extra is not None)
    for name, array in zip(names, arrays, strict=True):
        if name in by_name and pa.types.is_floating(array.type) and not _finite(array):
            raise ValueError("a released statistic is not finite")  # with or without ε
    # Rounding is post-processing, after every decision made on the unrounded values.
    digits = params.round_digits
    arrays = [_rounded(a, by_name.get(n), digits) for n, a in zip(names, arrays, strict=True)]
    table = pa.table(arrays, names=names)
    return Disclosed(table, suppressed_count, epsilon_cost(columns, params, grouped=bool(keys)))


def _uncentred(centred: pa.Array, count: pa.Array, column: StatColumn, plan: NoisePlan) -> pa.Array:
    """The released sum: the noisy centred sum plus the centre times the released noisy count.

    Post-processing of two noised columns; clamped at 0 as any noisy sum of a measure
    whose bounds are on one side of 0.
    """
    out = []
    for s, n in zip(centred.to_pylist(), count.to_pylist(), strict=True):
        value = Fraction(s or 0) + plan.centre * int(n or 0)
        if (column.lower or 0) >= 0:
            value = max(Fraction(0), value)
        elif (column.upper or 0) <= 0:
            value = min(Fraction(0), value)
        out.append(float(value))
    return pa.array(out, pa.float64())


def _least(row: dict[str, Any], counted: tuple[str, ...]) -> int:
    """An entities count as the k filter sees it: the smallest over every joined dataset
    (``counted``: :func:`_counted_by`, found once per column, not once per row).

    A join's group is released only if each personal dataset in it has ``k`` entities
    there: one person's claim joined to twelve reference rows is still one person.
    """
    if len(counted) == 1:
        c = row[counted[0]]
        return -1 if c is None else int(c)
    return min(-1 if row[n] is None else int(row[n]) for n in counted)


def _suppress_cells(
    names: list[str],
    arrays: list[pa.Array],
    by_name: dict[str, StatColumn],
    true: dict[str, list[Any]],
    plans: dict[str, NoisePlan],
    params: DisclosureParams,
    remainder: bool = False,
) -> list[pa.Array]:
    """NULL every FILTERed cell whose own entities fail the low-count filter.

    ``count(*) FILTER (WHERE ...)`` in a group of a thousand people can count one: the
    filter makes a finer group, so its cells pass the same test as groups do: true
    count at least ``k``; with a budget, the released noisy count against ``k`` (rows:
    ``(k - 1)·C + 1``) instead (τ until the rehearsal of stop 44; changed on both sides).
    That is post-processing and takes no share of δ: the cell's count is noised in every
    released group, empty or not (only a *group's* existence is data no noise covers).
    A measure's presence cell (entities with a value of ``x``) is
    not noised under a budget when a ``count(x)`` of the same cell is: that noisy count
    decides (``_counted_cells``), so ``sum(x)`` and ``avg(x)`` pay for no extra column.
    A remainder row's cells are never released: its cell counts add up entity-group
    pairs across the folded groups, which overcounts the distinct entities.
    """
    position = {name: i for i, name in enumerate(names)}
    cells = _cells(by_name)
    counted = _counted_cells(by_name)
    masks: dict[str, pa.Array] = {}
    dead = _dead_cells(by_name) if plans else set()
    for cell in cells:
        if cell in dead:
            continue  # no column reads it, and it is not noised: released NULL
        if plans:  # under a budget: the noisy count decides, as a group's would
            source = counted.get(cell, cell)
            released = arrays[position[source]].to_pylist()
            tau = params.k
            if source != cell:  # a count: up to C rows an entity, k entities as rows
                c = params.max_rows_per_entity
                tau = (params.k - 1) * c + 1
            ok = [v is not None and v >= tau for v in released]
        else:
            ok = [t is not None and t >= params.k for t in true[cell]]
        if remainder and ok:
            ok[-1] = False
        masks[cell] = pa.array(ok, pa.bool_())
    out = list(arrays)
    for name, i in position.items():
        column = by_name.get(name)
        own = name if name in masks else (column.cell if column is not None else None)
        if own is not None:
            out[i] = pc.if_else(masks[own], out[i], pa.nulls(len(out[i]), out[i].type))
    return out


def _selected(
    rows: list[dict[str, Any]],
    plan: NoisePlan,
    params: DisclosureParams,
    noise: NoiseSource,
    selections: int,
    *,
    grouped: bool = True,
) -> tuple[list[bool], list[int]]:
    """With ε: which groups' noisy entity count reaches ``max(k, τ)``.

    Without group keys (``grouped`` False) there is one group, whose existence is not
    data (the stats query returns its row even over no entity): no partition selection
    is needed, so its noisy count is held against ``k`` alone (post-processing).

    The dominance rule is not applied under a budget: its decision is a comparison
    on true values (a channel ε does not cover), and the noise on every sum already
    exceeds the largest contribution any one entity can make, which is what the rule
    protects (``docs/disclosure.md``).
    """
    if any(r[plan.column] is None for r in rows):  # refused since 5653e0f, as disclose does
        raise EnclaveError("the selecting count has no value", rule="disclosure.stats")
    true = [int(r[plan.column]) for r in rows]
    draws = _draw(noise, plan, len(true))
    noisy = [max(0, t + z) for t, z in zip(true, draws, strict=True)]
    tau = selection_threshold(plan, params, selections) if grouped else params.k
    return [n >= tau for n in noisy], noisy


def _remainder(
    rows: list[dict[str, Any]], by_name: dict[str, StatColumn], params: DisclosureParams
) -> dict[str, Any] | None:
    """True totals of the suppressed groups, if that row passes both rules itself.

    An entity may sit in several suppressed groups, so Σ entities overcounts the
    distinct ones: their number is at least the largest group's and, where the
    rewrite caps G, at least ⌈Σ / G⌉.  Likewise the top ``n`` entities can hold
    at most ``n·G`` of the per-group top contributions (all of them uncapped).
    """
    g = params.max_groups_per_entity
    for name in (ENTITIES, *_joined(by_name, ENTITIES)):
        entities = [int(r[name] or 0) for r in rows]
        distinct = max(max(entities), -(-sum(entities) // g) if params.capped else 0)
        if distinct < params.k:
            return None
    totals: dict[str, Any] = {}
    for name, column in by_name.items():
        if column.kind in _NOISED:
            present = [Fraction(r[name]) for r in rows if r[name] is not None]
            totals[name] = sum(present, Fraction(0)) if present or column.kind in _COUNTS else None
    if params.dominance_p:
        n = params.dominance_n
        for column in by_name.values():
            if column.kind == "top2":
                tops = [x for r in rows for x in _largest(r[column.name])[:n]]
                limit = n * g if params.capped else len(tops)
                assert column.of is not None
                if _dominant(tops, totals[column.of], params, limit):
                    return None
    return totals


def _release(
    values: list[Any],
    column: StatColumn,
    plan: NoisePlan | None,
    noise: NoiseSource | None,
) -> pa.Array:
    """One released statistic column: exact without ε, else true units + discrete Laplace."""
    counts = column.kind in _COUNTS or column.kind == "joined"
    if plan is not None and noise is not None:
        units = [round(Fraction(v or 0) / plan.resolution) for v in values]
        draws = _draw(noise, plan, len(units))
        noisy = [u + z for u, z in zip(units, draws, strict=True)]
        if counts or column.kind == "sumsq" or (column.lower or 0) >= 0:
            noisy = [max(0, u) for u in noisy]  # post-processing: cannot be negative
        elif (column.upper or 0) <= 0:
            noisy = [min(0, u) for u in noisy]
        out: list[Any] = noisy if counts else [float(u * plan.resolution) for u in noisy]
    elif counts:
        out = [None if v is None else int(v) for v in values]
    else:
        out = [None if v is None else float(v) for v in values]
    return pa.array(out, pa.int64() if counts else pa.float64())


def _rounded(array: pa.Array, column: StatColumn | None, digits: int | None) -> pa.Array:
    """Released statistics rounded as the grant says (keys and extremes untouched)."""
    if digits is None or column is None or column.kind in ("min", "max"):
        return array
    counts = column.kind in _COUNTS or column.kind == "joined"
    if counts and digits >= 0:
        return array
    values = [v if v is None else round(v, digits) for v in array.to_pylist()]
    return pa.array(values, pa.int64() if counts else pa.float64())


def _kept(
    rows: list[dict[str, Any]], by_name: dict[str, StatColumn], params: DisclosureParams
) -> list[bool]:
    """Which groups pass the low-count filter and the dominance rule (true values)."""
    counted = _counted_by(by_name, ENTITIES)
    keep = [_least(r, counted) >= params.k for r in rows]
    if params.dominance_p:
        for top in by_name.values():
            if top.kind != "top2" or top.of is None:
                continue
            for i, row in enumerate(rows):
                if keep[i] and _dominant(row[top.name], row[top.of], params, params.dominance_n):
                    keep[i] = False
    return keep


def _largest(top: list[Any] | None) -> list[float]:
    """Absolute contributions, largest first."""
    return sorted((abs(float(x)) for x in top or () if x is not None), reverse=True)


def _dominant(top: list[Any] | None, total: Any, params: DisclosureParams, limit: int) -> bool:
    """Do the ``limit`` largest contributions exceed ``p`` of the total (absolute values)?

    Absolute values, so a huge negative contribution counts as much as a
    positive one, and ``|total|`` (≤ Σ|x|) as the base, which errs on suppressing.
    """
    share = math.fsum(_largest(top)[:limit])
    return share > (params.dominance_p or 0) * abs(float(total or 0))
