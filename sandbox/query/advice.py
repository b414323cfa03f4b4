"""Refusals that tell the analyst the accepted way, for shapes no normalisation answers.

Run after ``normalize.py`` (so only shapes it left as written reach here), before the
guard: each raises the rule the guard would raise for the shape (so the verdict is the
same), with a message that says how to get the figure: a UNION ALL of aggregated
SELECTs (``guard.set_operation``), a total as a scalar subquery where a total may not
stand (``guard.subquery_predicate``, naming the condition ``totals.obstacle`` found; a
total where it may is released on its own, ``parts.py``), an aggregate over an
aggregating CTE or derived table that ``rollup.py`` does not read
(``guard.inner_scope``).  Messages name columns, functions and tables as written,
never a constant of the query.  Pure functions.
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.query.totals import TOTAL_OR_THRESHOLD, is_threshold, is_total, obstacle

__all__ = ["advise", "aggregate_of_aggregates", "mean_of_entity_sums"]


def advise(root: exp.Expr) -> None:
    """Raise the guard's refusal with the accepted way, for a shape recognised here."""
    if isinstance(root, exp.Union):
        _stacked_totals(root)
        return
    if not isinstance(root, exp.Select):
        return
    _scalar_total(root)
    _aggregate_of_aggregates(root, per_entity_later=True)


def _text(node: exp.Expr) -> str:
    return node.sql(dialect="duckdb", normalize_functions="lower")


def _branches(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Union) and not node.args.get("distinct"):
        return [*_branches(node.this), *_branches(node.expression)]
    return [node]


def _key_column(select: exp.Select) -> str | None:
    """The column of the one ``column = constant`` conjunct of the WHERE, as written."""
    where = select.args.get("where")
    if where is None:
        return None
    conjuncts = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    found = []
    for c in conjuncts:
        c = c.unnest()
        if isinstance(c, exp.EQ):
            sides = (c.this, c.expression)
            columns = [s for s in sides if isinstance(s, exp.Column)]
            if len(columns) == 1 and any(isinstance(s, exp.Literal) for s in sides):
                found.append(_text(columns[0]))
    return found[0] if len(found) == 1 else None


def _outputs_shape(select: exp.Expr) -> tuple[str, ...]:
    """A branch's outputs, a constant one (its tag, ``'F'``) as ``?``, names left out:
    branches one GROUP BY could give have one shape (``avg(x) FILTER (WHERE age > 30)``
    and ``… > 40`` are not one)."""
    return tuple(
        "?" if isinstance(o.unalias(), exp.Literal) else o.unalias().sql()
        for o in select.expressions
    )


def _stacked_totals(root: exp.Union) -> None:
    """``SELECT 'F', count(*) … WHERE gender = 'F' UNION ALL SELECT 'M', …``."""
    branches = _branches(root)
    if len(branches) < 2 or not all(isinstance(b, exp.Select) for b in branches):
        return
    if any(b.args.get("group") or not b.find(exp.AggFunc) for b in branches):
        return
    keys = {_key_column(b) for b in branches}  # type: ignore[arg-type]
    if len(keys) != 1 or None in keys:
        return
    if len({_outputs_shape(b) for b in branches}) != 1:
        return  # different aggregates (avg(a) above, avg(b) below): not one GROUP BY
    (key,) = keys
    raise QueryRefused(
        "each SELECT of a UNION ALL would be a release of its own: SELECTs that differ only "
        f"in their {key} = … condition are one query with GROUP BY {key} (add WHERE {key} "
        "IN (…) to keep only the values you stacked); otherwise run each SELECT separately",
        rule="guard.set_operation",
    )


def _scalar_total(root: exp.Select) -> None:
    """``sum(x) / (SELECT sum(x) FROM t)``: a total from a subquery outside FROM."""
    for sub in root.find_all(exp.Subquery):
        if isinstance(sub.parent, exp.From | exp.Join) or isinstance(sub.parent, exp.Exists):
            continue
        if is_threshold(sub, root) or is_total(sub, root):
            continue  # released as a part of its own (parts.py): a threshold first
        reason = obstacle(sub, root, TOTAL_OR_THRESHOLD)
        if reason is None:
            continue
        inner = sub.this
        if not isinstance(inner, exp.Select) or inner.args.get("group"):
            continue
        aggregates = [p.unalias() for p in inner.expressions]
        tables = [_text(t) for t in inner.find_all(exp.Table)]
        if len(aggregates) != 1 or len(tables) != 1 or not _plain_aggregate(aggregates[0]):
            continue
        total = f"SELECT {_text(aggregates[0])} FROM {tables[0]}"
        raise QueryRefused(
            f"a total in a subquery ({total}) is released on its own only when it stands "
            "in the SELECT list, HAVING, ORDER BY or WHERE, outside any aggregate, and "
            f"reads no column of the outer query; here {reason} (other subqueries are "
            "allowed only in FROM)",
            rule="guard.subquery_predicate",
        )


def _plain_aggregate(node: exp.Expr) -> bool:
    """``sum(x)``, ``count(*)``: an aggregate of one column or of all rows (nothing quoted)."""
    return (
        isinstance(node, exp.AggFunc)
        and not node.args.get("expressions")
        and isinstance(node.this, exp.Column | exp.Star)
    )


def _aggregating(select: exp.Expr) -> bool:
    return isinstance(select, exp.Select) and bool(
        select.args.get("group") or any(p.find(exp.AggFunc) for p in select.expressions)
    )


def _sources(root: exp.Select) -> dict[str, exp.Select]:
    """The aggregating CTEs and derived tables the outer SELECT reads, by name."""
    ctes = {
        cte.alias_or_name.lower(): cte.this
        for cte in (root.args["with_"].expressions if root.args.get("with_") else [])
    }
    found: dict[str, exp.Select] = {}
    from_ = root.args.get("from_")
    parts = [from_.this] if from_ is not None else []
    parts += [j.this for j in root.args.get("joins") or []]
    for part in parts:
        if isinstance(part, exp.Subquery) and _aggregating(part.this):
            found[part.alias_or_name.lower()] = part.this
        elif isinstance(part, exp.Table) and not part.args.get("db"):
            inner = ctes.get(part.name.lower())
            if inner is not None and _aggregating(inner):
                found[part.alias_or_name.lower()] = inner
    return found


def _per_entity_mean(root: exp.Select, inner: exp.Select) -> str | None:
    """For ``avg(total)`` over per-X sums: ``sum(x) / count(DISTINCT X)`` by the outer keys."""
    outputs = {p.alias_or_name.lower(): p.unalias() for p in inner.expressions}
    group = inner.args.get("group")
    outer_group = root.args.get("group")
    if group is None or outer_group is None:
        return None
    outer_keys = {c.name.lower() for c in outer_group.find_all(exp.Column)}
    extra = [
        k
        for k in group.expressions
        if isinstance(k, exp.Column) and k.name.lower() not in outer_keys
    ]
    if len(extra) != 1:
        return None
    for avg in root.find_all(exp.Avg):
        column = avg.this
        value = outputs.get(column.name.lower()) if isinstance(column, exp.Column) else None
        keys_written = all(isinstance(k, exp.Column) for k in outer_group.expressions)
        if isinstance(value, exp.Sum) and isinstance(value.this, exp.Column) and keys_written:
            keys = ", ".join(_text(k) for k in outer_group.expressions)
            return (
                f"{_text(avg)} is the mean of the per-{_text(extra[0])} sums: that is "
                f"sum({_text(value.this)}) / count(DISTINCT {_text(extra[0])}) with "
                f"GROUP BY {keys}, in one SELECT"
            )
    return None


def aggregate_of_aggregates(root: exp.Select) -> None:
    """Refuse, saying the accepted way, an aggregate over an aggregating CTE or derived
    table that is not a per-entity table (``entity_table.lift`` read none of it)."""
    _aggregate_of_aggregates(root, per_entity_later=False)


def mean_of_entity_sums(root: exp.Select) -> None:
    """Refuse ``avg(total)`` over per-entity sums by another key, saying the one SELECT
    that gives it (``_per_entity_mean``); anything else passes."""
    for inner in _sources(root).values():
        advice = _per_entity_mean(root, inner)
        if advice is not None:
            raise QueryRefused(
                f"aggregates are computed once, over the rows: {advice}",
                rule="guard.inner_scope",
            )


def _per_entity_candidate(select: exp.Select) -> bool:
    """Grouped by columns, as a per-entity table is: whether it is one (grouped by its
    dataset's entity key), or why not, is known only with the classification, after
    parsing (``entity_table.lift``, which gives this advice for those it does not read)."""
    group = select.args.get("group")
    return group is not None and all(
        isinstance(g, exp.Column) or (isinstance(g, exp.Literal) and not g.is_string)
        for g in group.expressions
    )


def _aggregate_of_aggregates(root: exp.Select, *, per_entity_later: bool) -> None:
    """An outer SELECT that aggregates or joins what an aggregating CTE released."""
    sources = {
        name: select
        for name, select in _sources(root).items()
        if not (per_entity_later and _per_entity_candidate(select))
    }
    if not sources:
        return
    totals = [s for s in root.find_all(exp.Subquery) if is_total(s, root)]
    aggregates_outside = any(
        not any(agg.find_ancestor(exp.Subquery) is t for t in totals)
        for p in root.expressions
        for agg in p.find_all(exp.AggFunc)
    )
    if not aggregates_outside and not root.args.get("joins"):
        return  # normalize.py merges what it can; the guard says why not for the rest
    mean_of_entity_sums(root)
    names = ", ".join(sorted(n or "a derived table" for n in sources))
    raise QueryRefused(
        f"an aggregate over what another aggregate released ({names}) is not computed in "
        "the enclave: run the aggregating query on its own and compute totals or shares "
        "from its released rows (a share of a total is its count over the sum of the "
        "counts released with GROUP BY)",
        rule="guard.inner_scope",
    )
