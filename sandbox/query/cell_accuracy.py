"""Each released output's 95% interval, from the noise plan alone (before any ε is spent).

For every output column of the operator's query: an output that is one noised
statistic (a count, a sum) gets that statistic's 95% half-width
(:attr:`NoisePlan.half_width`, the same for every released cell); an average
(``sum / count``) gets the two 97.5% half-widths its conservative ratio bound needs
(:func:`sandbox.query.accuracy.ratio_half_width`: ``(h_S + |avg|·h_N) / (N̂ - h_N)``
for a cell whose noisy count is ``N̂``); other outputs (variances, quantiles,
expressions) say so with ``half_width: None``.  Nothing here reads data.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from sandbox.query.accuracy import gaussian_half_width, laplace_half_width
from sandbox.query.disclosure import NoisePlan, noise_plan
from sandbox.query.release import Prepared

__all__ = ["output_accuracy"]


def _half(plan: NoisePlan, level: float) -> float:
    if plan.mechanism == "gaussian":
        return float(gaussian_half_width(plan.scale, level) * plan.resolution)
    return float(laplace_half_width(plan.scale, level) * plan.resolution)


def _stats_in(node: exp.Expr) -> list[str]:
    return [c.name for c in node.find_all(exp.Column) if c.name.startswith("__")]


def output_accuracy(prepared: Prepared) -> dict[str, dict[str, Any]] | None:
    """Per output name: mechanism and 95% half-width, or the ratio's parts (None: no ε)."""
    if not prepared.params.epsilon:
        return None
    plans = {
        p.column: p
        for p in noise_plan(prepared.columns, prepared.params, grouped=bool(prepared.plan.keys))
    }
    kinds = {c.name: c.kind for c in prepared.columns}
    select: exp.Expr = exp.maybe_parse(prepared.plan.release_sql, dialect="duckdb")
    out: dict[str, dict[str, Any]] = {}
    expressions = select.expressions if isinstance(select, exp.Select) else []
    for name, node in zip(prepared.plan.output_names, expressions, strict=False):
        inner = node.this if isinstance(node, exp.Alias) else node
        while isinstance(inner, exp.Try | exp.Paren):
            inner = inner.this
        used = _stats_in(inner)
        entry: dict[str, Any] = {"half_width": None, "level": 0.95}
        if isinstance(inner, exp.Column) and inner.name in plans:
            plan = plans[inner.name]
            if kinds.get(inner.name) != "quantile":
                entry.update(mechanism=plan.mechanism, half_width=_half(plan, 0.95))
        elif isinstance(inner, exp.Column) and inner.name.startswith("__k"):
            entry = {"key": True}
        elif isinstance(inner, exp.Div) and len(set(used)) == 2:
            sums = [u for u in used if kinds.get(u) == "sum"]
            counts = [u for u in used if kinds.get(u) == "count"]
            if sums and counts and sums[0] in plans and counts[0] in plans:
                s, n = plans[sums[0]], plans[counts[0]]
                entry.update(
                    kind="average",
                    mechanism=s.mechanism,
                    sum_half_width=_half(s, 0.975),
                    count_half_width=_half(n, 0.975),
                    bound="(sum_half_width + |avg| * count_half_width) / "
                    "(noisy count - count_half_width)",
                )
        out[name] = entry
    return out
