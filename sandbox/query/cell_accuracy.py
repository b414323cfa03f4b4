# Over 400 lines: one reading of the release SELECT; each kind of output beside the others.
"""Each released output's 95% interval, from the noise plan alone (before any ε is spent).

For every output column of the operator's query: an output that is one noised
statistic (a count, a sum) gets that statistic's 95% half-width
(:attr:`NoisePlan.half_width`, the same for every released cell); an average
(``sum / count``) gets the two 97.5% half-widths its conservative ratio bound needs
(:func:`sandbox.query.accuracy.ratio_half_width`: ``(h_S + |avg - c|·h_N) / (N̂ - h_N)``
for a cell whose noisy count is ``N̂``, ``c`` the centre its sum was noised around, or 0);
a sum noised centred (``disclosure._centres``) gets ``h_S + |c|·h_N`` at 97.5% each;
one of those statistics times or over a constant, its half-width scaled so, or plus or
minus one, its half-width kept (``_scaled``); a combination of them (``measure_terms``:
``sum(a - b)``, ``avg(a - b)``) a union bound over its noise draws (``_combination``);
other outputs (variances, quantiles, expressions) say so with ``half_width: None``.
Nothing here reads data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
from sqlglot import exp

from sandbox.core.errors import EnclaveError
from sandbox.query.accuracy import gaussian_half_width, laplace_half_width, ratio_half_width
from sandbox.query.disclosure import (
    ENTITIES,
    QUANTILE_BINS,
    NoisePlan,
    StatColumn,
    noise_plan,
    selection_threshold,
)
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
    if stat is not None and stat.kind == "count":
        counting = "rows with a value"  # count(x) selects (disclosure._gate)
    elif stat is not None and (stat.filtered or stat.cell is not None):
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
    columns = {c.name: c for c in prepared.columns}
    out: dict[str, dict[str, Any]] = {}
    expressions = select.expressions if isinstance(select, exp.Select) else []
    for name, node in zip(prepared.plan.output_names, expressions, strict=False):
        inner = node.this if isinstance(node, exp.Alias) else node
        while isinstance(inner, exp.Try | exp.Paren):
            inner = inner.this
        inner = _within_bounds(inner)
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
            elif not scaled:
                entry.update(_rank_accuracy(plan, columns[inner.name]))
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
        elif not scaled and len(set(used)) > 1:
            entry.update(_combination(inner, plans, kinds))
        if not entry.get("key") and (clamped := _clamped_to(prepared.columns, used)):
            entry["clamped_to"] = clamped
        out[name] = entry
    return out


def _rank_accuracy(plan: NoisePlan, column: StatColumn) -> dict[str, Any]:
    """A quantile's 95% statement, in rows of rank: the released bin's rows lie within
    ``rank_half_width`` of the target rank ``q·n`` (``n`` the group's rows as counted,
    each entity's capped).  Permute-and-flip keeps a candidate ``g`` rows from it only
    if that candidate's coin, ``exp(-g / T)``, falls so: over ``B`` bins the chance
    that any with ``g ≥ T·(ln B + ln 20)`` is chosen is at most ``B·exp(-g / T) = 5%``.
    A group whose rows are fewer than the half-width either side learns nothing of it."""
    bins = column.bins or QUANTILE_BINS
    width = float(plan.scale) * (math.log(bins) + math.log(20))
    return {
        "kind": "quantile",
        "mechanism": "permute_and_flip",
        "rank_half_width": math.ceil(width),
        "bins": bins,
    }


def _within_bounds(node: exp.Expr) -> exp.Expr:
    """The mean a ``CASE WHEN m < lo THEN lo WHEN m > hi THEN hi ELSE m END`` brings into
    its measure's bounds (``rewrite._within``), or ``node``: the interval is the mean's
    (bringing it into bounds, which hold the truth, only moves it closer)."""
    default = node.args.get("default") if isinstance(node, exp.Case) else None
    ifs = (node.args.get("ifs") or []) if default is not None else []
    if not ifs or node.this is not None:
        return node
    for when in ifs:
        test, then = when.this, when.args.get("true")
        if not (isinstance(test, exp.LT | exp.GT) and test.this == default):
            return node
        if literal_number(then) is None:
            return node
    return default if isinstance(default, exp.Expr) else node


def _clamped_to(columns: Sequence[StatColumn], used: Sequence[str]) -> list[list[float]]:
    """The bounds each value an output sums (or ranks) was clamped to, one ``[lower,
    upper]`` per distinct pair (a product's: its factors' product bounds).  The interval
    is the noise alone; values beyond these count as the bound (a bias it leaves out)."""
    pairs = {
        (float(c.lower), float(c.upper))
        for c in columns
        if c.name in used
        and c.kind in ("sum", "sumsq", "quantile")
        and c.lower is not None
        and c.upper is not None
    }
    return [list(p) for p in sorted(pairs)]


def _linear(node: exp.Expr) -> dict[str, float] | None:
    """Each statistic's coefficient in ``node``, a sum of statistics each times or over a
    number (``__s1 - __s2 * 2 + 5 * __r3``: ``measure_terms``' combinations); None if
    ``node`` is anything else.  A number alone adds no noise: no coefficient."""
    while isinstance(node, exp.Try | exp.Paren):
        node = node.this
    if isinstance(node, exp.Column):
        return {node.name: 1.0} if node.name.startswith("__") else None
    if literal_number(node) is not None:
        return {}
    if isinstance(node, exp.Neg):
        inner = _linear(node.this)
        return None if inner is None else {k: -v for k, v in inner.items()}
    if isinstance(node, exp.Add | exp.Sub):
        left, right = _linear(node.this), _linear(node.expression)
        if left is None or right is None:
            return None
        sign = -1.0 if isinstance(node, exp.Sub) else 1.0
        out = dict(left)
        for k, v in right.items():
            out[k] = out.get(k, 0.0) + sign * v
        return out
    if isinstance(node, exp.Mul | exp.Div):
        for value, number in ((node.this, node.expression), (node.expression, node.this)):
            c = literal_number(number)
            if not c or (isinstance(node, exp.Div) and number is node.this):
                continue
            inner = _linear(value)
            factor = c if isinstance(node, exp.Mul) else 1 / c
            return None if inner is None else {k: v * factor for k, v in inner.items()}
    return None


def _noises(
    coefficients: dict[str, float], plans: dict[str, NoisePlan], kinds: Mapping[str, str]
) -> dict[str, float]:
    """The coefficients on each independent noise draw: a copy is its source's draw, a
    centred sum carries its count's noise times its centre.  Empty if a statistic is not
    one noised as a plain sum or count (a centred sum of squares, a quantile, whose
    scale is a temperature, or one not noised)."""
    out: dict[str, float] = {}

    def add(name: str, weight: float) -> bool:
        plan = plans.get(name)
        if plan is None or plan.squares_of is not None or kinds.get(name) == "quantile":
            return False
        if plan.copy_of is not None:
            return add(plan.copy_of, weight)
        out[plan.column] = out.get(plan.column, 0.0) + weight
        return plan.centred_on is None or add(plan.centred_on, weight * float(plan.centre))

    if not all(add(name, weight) for name, weight in coefficients.items()):
        return {}
    return {k: v for k, v in out.items() if v}


def _combination(
    node: exp.Expr, plans: dict[str, NoisePlan], kinds: Mapping[str, str]
) -> dict[str, Any]:
    """The interval of a combination of noised statistics (``measure_terms``' ``sum(a -
    b)`` and ``avg(a - b)``), by a union bound over its k independent noise draws, each
    within its own half-width at level ``1 - 0.05/k``: a sum's ``Σ |coefficient| ·
    half-width``; a mean (that over a noisy count, ``nullif`` or not) the ratio bound of
    an average whose "sum" is the numerator, its count's coefficient in the numerator
    the centre.  Empty where ``node`` is no such combination."""
    if isinstance(node, exp.Div):
        below = node.expression
        if isinstance(below, exp.Nullif) and literal_number(below.expression) == 0:
            below = below.this
        numerator = _linear(node.this)
        if not isinstance(below, exp.Column) or kinds.get(below.name) not in _COUNTED:
            return {}
        noises = _noises(numerator or {}, plans, kinds)
        counted = _noises({below.name: 1.0}, plans, kinds)
        if not noises or len(counted) != 1:
            return {}
        ((count, _),) = counted.items()
        centre = noises.pop(count, 0.0)
        level = 1 - 0.05 / (len(noises) + 1)
        return {
            "kind": "average",
            "sum": node.this.sql(dialect="duckdb"),
            "count": below.name,
            "mechanism": plans[count].mechanism,
            "sum_half_width": math.fsum(abs(w) * _half(plans[n], level) for n, w in noises.items()),
            "count_half_width": _half(plans[count], level),
            "bound": "(sum_half_width + |avg - centre| * count_half_width) / "
            "(noisy count - count_half_width)",
            "centre": centre,
            "each_level": level,
        }
    noises = _noises(_linear(node) or {}, plans, kinds)
    if not noises:
        return {}
    level = 1 - 0.05 / len(noises)
    half = math.fsum(abs(w) * _half(plans[n], level) for n, w in noises.items())
    mechanism = next(iter({plans[n].mechanism for n in noises}))
    return {"mechanism": mechanism, "half_width": half}


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
        numerator = exp.maybe_parse(entry["sum"], dialect="duckdb")  # a statistic, or a
        # combination of them (measure_terms)
        select = select.select(
            exp.alias_(numerator, f"__acc_s{i}", quoted=True),
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
