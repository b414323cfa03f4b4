"""Each released output's 95% interval, from the noise plan alone (before any ε is spent).

For every output column of the operator's query: an output that is one noised
statistic (a count, a sum) gets that statistic's 95% half-width
(:attr:`NoisePlan.half_width`, the same for every released cell); an average
(``sum / count``) gets the two 97.5% half-widths its conservative ratio bound needs
(:func:`sandbox.query.accuracy.ratio_half_width`: ``(h_S + |avg - c|·h_N) / (N̂ - h_N)``
for a cell whose noisy count is ``N̂``, ``c`` the centre its sum was noised around, or 0);
a sum noised centred (``disclosure._centres``) gets ``h_S + |c|·h_N`` at 97.5% each;
one of those statistics times or over a constant, its half-width scaled so, or plus or
minus one, its half-width kept (``_scaled``);
other outputs (variances, quantiles, expressions) say so with ``half_width: None``.
Nothing here reads data.
"""

from __future__ import annotations

from typing import Any

import duckdb
from sqlglot import exp

from sandbox.core.errors import EnclaveError
from sandbox.query.accuracy import gaussian_half_width, laplace_half_width, ratio_half_width
from sandbox.query.disclosure import ENTITIES, NoisePlan, noise_plan, selection_threshold
from sandbox.query.nodes import literal_number
from sandbox.query.release import (
    Prepared,
    PreparedWithSets,
    PreparedWithWindows,
    Released,
    over_released,
)

__all__ = ["output_accuracy", "result_accuracy"]


def _half(plan: NoisePlan, level: float) -> float:
    if plan.mechanism == "gaussian":
        return float(gaussian_half_width(plan.scale, level) * plan.resolution)
    return float(laplace_half_width(plan.scale, level) * plan.resolution)


#: Noisy counts a released mean may divide by.
_COUNTED = ("count", "rows", "distinct")


def _stats_in(node: exp.Expr) -> list[str]:
    return [c.name for c in node.find_all(exp.Column) if c.name.startswith("__")]


def output_accuracy(prepared: Prepared) -> dict[str, dict[str, Any]] | None:
    """Per output name: mechanism and 95% half-width, or the ratio's parts (None: no ε).

    With grouping sets, per output the widest of the sets' (each set is noised on its
    own, and their rows are stacked: the widest covers every row)."""
    if isinstance(prepared, PreparedWithWindows):
        return _windowed(prepared, output_accuracy(prepared.inner))
    if isinstance(prepared, PreparedWithSets):
        return _widest([output_accuracy(part) for part in prepared.sets])
    return _output_accuracy(prepared, _release_select(prepared))


def _windowed(
    prepared: PreparedWithWindows, inner: dict[str, dict[str, Any]] | None
) -> dict[str, dict[str, Any]] | None:
    """Per output of a query with windows: an output it passes on keeps the inner
    query's accuracy; a window's is computed from released values (no interval of its
    own: it combines noisy values, or ranks them)."""
    if inner is None:
        return None
    out: dict[str, dict[str, Any]] = {}
    for name, source in zip(prepared.names, prepared.sources, strict=True):
        if source is not None:
            out[name] = inner.get(source, {"half_width": None, "level": 0.95})
        else:
            out[name] = {"half_width": None, "level": 0.95, "window": True}
    return out


def _width(entry: dict[str, Any]) -> float:
    parts = ("half_width", "sum_half_width", "count_half_width")
    return sum(float(entry.get(p) or 0) for p in parts)


def _widest(
    accuracies: list[dict[str, dict[str, Any]] | None],
) -> dict[str, dict[str, Any]] | None:
    known = [a for a in accuracies if a is not None]
    if not known:
        return None
    out: dict[str, dict[str, Any]] = {}
    for name in known[0]:
        entries = [a[name] for a in known if name in a]
        keys = [e for e in entries if e.get("key")]
        out[name] = keys[0] if keys else max(entries, key=_width)
    return out


def _scaled(node: exp.Expr) -> tuple[exp.Expr, float]:
    """``c * x``, ``x * c`` or ``x / c`` (a nonzero number ``c``) as ``x`` and ``|c|`` or
    ``1/|c|``: a released value scaled by a constant has its interval scaled so
    (``sum(claim_amount) / 10000``, ``count(*) * 100.0``); ``x ± c`` and ``c ± x`` as
    ``x`` (a shifted value's interval is as wide); else ``node`` and 1."""
    while isinstance(node, exp.Try | exp.Paren):
        node = node.this
    if isinstance(node, exp.Mul):
        for value, other in ((node.this, node.expression), (node.expression, node.this)):
            c = literal_number(value)
            if c:
                inner, factor = _scaled(other)
                return inner, factor * abs(c)
    if isinstance(node, exp.Div):
        c = literal_number(node.expression)
        if c:
            inner, factor = _scaled(node.this)
            return inner, factor / abs(c)
    if isinstance(node, exp.Add | exp.Sub):
        # a value shifted by a constant (avg(x) - 100, 2026 - avg(age)): the same width
        for value, other in ((node.this, node.expression), (node.expression, node.this)):
            if literal_number(value) is not None:
                return _scaled(other)
    return node, 1.0


def _selection(plans: dict[str, NoisePlan], prepared: Prepared) -> dict[str, Any]:
    """What a group needs to be released: its noisy count of entities (or of rows, where a
    row count selects: ``disclosure._gate``) at least ``released_from`` (the threshold of
    the plan alone, ``selection_threshold``; the k floor included).  An empty result then
    reads as groups below it, not as no data (an outside analyst read "0 suppressed"
    beside an empty table as nothing there)."""
    gate = next((p for p in plans.values() if p.selects), None)
    if gate is None:
        return {}
    stat = next((c for c in prepared.columns if c.name == gate.column), None)
    counting = "entities" if gate.column == ENTITIES else "rows"
    if stat is not None and stat.cell is not None:
        counting = "rows under the FILTER"  # a FILTERed row count selects (_filter_gate)
    return {"released_from": selection_threshold(gate, prepared.params), "counting": counting}


def _release_select(prepared: Prepared) -> exp.Expr:
    return exp.maybe_parse(prepared.plan.release_sql, dialect="duckdb")


def _output_accuracy(prepared: Prepared, select: exp.Expr) -> dict[str, dict[str, Any]] | None:
    """:func:`output_accuracy` of the release SELECT ``select`` (read, not changed)."""
    if not prepared.params.epsilon:
        return None
    plans = {
        p.column: p
        for p in noise_plan(prepared.columns, prepared.params, grouped=bool(prepared.plan.keys))
    }
    kinds = {c.name: c.kind for c in prepared.columns}
    out: dict[str, dict[str, Any]] = {}
    expressions = select.expressions if isinstance(select, exp.Select) else []
    for name, node in zip(prepared.plan.output_names, expressions, strict=False):
        inner = node.this if isinstance(node, exp.Alias) else node
        while isinstance(inner, exp.Try | exp.Paren):
            inner = inner.this
        used = _stats_in(inner)
        entry: dict[str, Any] = {"half_width": None, "level": 0.95}
        stripped, factor = _scaled(inner)
        # only a statistic itself keeps an interval, scaled or shifted: a key or a mean
        # so computed says none (a mean's per-cell width reads the released mean itself)
        scaled, inner = stripped is not inner, stripped
        if isinstance(inner, exp.Column) and inner.name in plans:
            plan = plans[inner.name]
            if plan.centred_on is not None:
                # Released as (S - c·N)~ + c·N~: both within their 97.5% half-widths
                # with probability at least 95% (union bound).
                count = plans[plan.centred_on]
                half = _half(plan, 0.975) + abs(float(plan.centre)) * _half(count, 0.975)
                entry.update(mechanism=plan.mechanism, half_width=half)
            elif kinds.get(inner.name) != "quantile":
                entry.update(mechanism=plan.mechanism, half_width=_half(plan, 0.95))
            if entry["half_width"] is not None:
                entry["half_width"] *= factor
        elif isinstance(inner, exp.Column) and inner.name.startswith("__k") and not scaled:
            entry = {"key": True, **_selection(plans, prepared)}
        elif isinstance(inner, exp.Div) and len(set(used)) == 2 and not scaled:
            # A mean: a noisy sum (or count: a share of rows, avg(CASE WHEN c THEN 1
            # ELSE 0 END)) over a noisy count (of x, of rows, of a per-value stage's rows).
            above, below = set(_stats_in(inner.this)), set(_stats_in(inner.expression))
            sums = [u for u in above if kinds.get(u) in ("sum", *_COUNTED)]
            counts = [u for u in below if kinds.get(u) in _COUNTED]
            if (
                len(above) == len(below) == 1
                and sums
                and counts
                and sums[0] in plans
                and counts[0] in plans
            ):
                s, n = plans[sums[0]], plans[counts[0]]
                sum_half, centre = _half(s, 0.975), 0.0
                if s.centred_on == counts[0]:
                    centre = float(s.centre)
                elif s.centred_on is not None:  # another count's noise is in the sum too
                    sum_half += abs(float(s.centre)) * _half(plans[s.centred_on], 0.975)
                entry.update(
                    kind="average",
                    sum=sums[0],
                    count=counts[0],
                    mechanism=s.mechanism,
                    sum_half_width=sum_half,
                    count_half_width=_half(n, 0.975),
                    bound="(sum_half_width + |avg - centre| * count_half_width) / "
                    "(noisy count - count_half_width)",
                    centre=centre,
                )
        out[name] = entry
    return out


def result_accuracy(
    prepared: Prepared,
    released: Released,
    database: duckdb.DuckDBPyConnection | None = None,
) -> dict[str, dict[str, Any]] | None:
    """:func:`output_accuracy`, and for each average the half-width of every released cell.

    Computed from released (noisy) values only: the release SQL run again over the
    released statistics with each average's noisy sum and count beside it, so the rows
    line up with the released ones (same filter, order and limit); then
    :func:`ratio_half_width` per row (``None`` where the count is within its own noise).

    ``database``: the release database to run it in (a cursor of it), as the release
    itself does; None opens one for this call (about 16 ms: a service passes its own).
    """
    if isinstance(prepared, PreparedWithSets | PreparedWithWindows):  # no per-cell widths
        return output_accuracy(prepared)
    select = _release_select(prepared)
    accuracy = _output_accuracy(prepared, select)
    averages = {n: a for n, a in (accuracy or {}).items() if a.get("kind") == "average"}
    if not averages or released.stats is None:
        return accuracy
    if not isinstance(select, exp.Select) or select.args.get("distinct"):
        return accuracy  # extra columns would change which rows are distinct
    extra: list[tuple[str, str, str]] = []
    for i, (name, entry) in enumerate(averages.items()):
        select = select.select(
            exp.alias_(exp.column(entry["sum"], quoted=True), f"__acc_s{i}", quoted=True),
            exp.alias_(exp.column(entry["count"], quoted=True), f"__acc_n{i}", quoted=True),
            copy=False,
        )
        extra.append((name, f"__acc_s{i}", f"__acc_n{i}"))
    try:
        sql = select.sql(dialect="duckdb", copy=False)
        rows = over_released(released.stats, sql, database).to_pylist()
    except EnclaveError:
        return accuracy  # no per-cell figures rather than a failed release
    for name, s, n in extra:
        entry = averages[name]
        entry["half_widths"] = [
            None
            if row[s] is None or row[n] is None
            else ratio_half_width(
                float(row[s]),
                float(row[n]),
                entry["sum_half_width"],
                entry["count_half_width"],
                entry["centre"],
            )
            for row in rows
        ]
    return accuracy
