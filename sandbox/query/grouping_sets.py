"""``GROUP BY ROLLUP``, ``CUBE`` and ``GROUPING SETS``: one query per grouping set.

``SELECT district, gender, count(*) FROM t GROUP BY ROLLUP (district, gender)`` is the
rows of three queries stacked: grouped by ``district, gender``, by ``district`` (its
``gender`` NULL: the subtotals), and by nothing (both NULL: the grand total).  Each is
written out here as a plain grouped SELECT, in that order, with every key its set does
not group by replaced by ``NULL`` outside the aggregates (in the outputs and HAVING, as
SQL's rolled-up rows have it).  ``release.prepare`` then prepares each as a query of its
own (the guard checks each; disclosure control applies to each; under a budget each gets
an equal share of ε and δ, as totals do) and stacks the released rows; ORDER BY and
LIMIT apply to the stacked rows, by output name or position only.

Read here (plain keys beside any number of these, as SQL crosses them):
``ROLLUP (a, b, …)``, ``CUBE (a, b, …)`` and ``GROUPING SETS ((a, b), (a), ())``, their
keys written as expressions or output positions.  Refused (``guard.grouping_sets``):
a key written as an output's alias (where the alias and a column could name different
things), more than :data:`MAX_SETS` sets, and ``GROUPING()`` (not on the allowlist).  Pure.
"""

from __future__ import annotations

import itertools
import math

from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.query.nodes import output_name

__all__ = ["GROUPING", "MAX_SETS", "RULE", "grouping_sets", "output_names", "stacked_order"]

RULE = "guard.grouping_sets"
#: Each set is a release of its own with its share of ε: beyond this the shares are thin.
MAX_SETS = 8
#: Keys per construct, per grouping set and terms per GROUP BY (each set's keys are
#: compared pairwise; no table needs more).
MAX_KEYS = 32
#: The constructs read here, only in the released SELECT's GROUP BY.
GROUPING: tuple[type[exp.Expr], ...] = (exp.Rollup, exp.Cube, exp.GroupingSets)


def _refuse(message: str) -> QueryRefused:
    return QueryRefused(message, rule=RULE)


def _resolve(key: exp.Expr, select: exp.Select) -> exp.Expr:
    """A key as the expression it groups: an output position is that output's expression."""
    outputs = select.expressions
    if isinstance(key, exp.Literal) and key.is_int:
        position = int(key.name)
        if not 1 <= position <= len(outputs):
            raise _refuse(f"GROUP BY position {position} is not an output of the query")
        output: exp.Expr = outputs[position - 1].unalias()
        return output.copy()
    if isinstance(key, exp.Column) and not key.table:
        for output in outputs:
            if isinstance(output, exp.Alias) and output.alias.lower() == key.name.lower():
                inner = output.unalias()
                if not (isinstance(inner, exp.Column) and inner.name.lower() == key.name.lower()):
                    raise _refuse(
                        f"{key.name} is an output's alias: in ROLLUP, CUBE or GROUPING SETS "
                        "write the expression it names (or its position)"
                    )
    return key.copy()


def _sets_of(node: exp.Expr, select: exp.Select) -> list[list[exp.Expr]]:
    """The grouping sets one construct stands for, each a list of keys, in SQL's order.

    Refused before anything is enumerated where the construct alone makes more than
    :data:`MAX_SETS` sets (a CUBE of n keys makes 2^n)."""
    if len(node.expressions) > MAX_KEYS:
        raise _refuse(f"a grouping construct takes at most {MAX_KEYS} keys")
    if isinstance(node, exp.Rollup | exp.Cube):
        keys = _unique([_resolve(k, select) for k in node.expressions])
        count = len(keys) + 1 if isinstance(node, exp.Rollup) else 2 ** min(len(keys), 31)
        _at_most(count)
        if isinstance(node, exp.Rollup):
            return [keys[:n] for n in range(len(keys), -1, -1)]
        return [
            [k for k, keep in zip(keys, mask, strict=True) if keep]
            for mask in itertools.product((True, False), repeat=len(keys))
        ]
    if isinstance(node, exp.GroupingSets):
        _at_most(len(node.expressions))
        sets = []
        for element in node.expressions:
            members = element.expressions if isinstance(element, exp.Tuple) else [element]
            if isinstance(element, exp.Paren):
                members = [element.this]
            if len(members) > MAX_KEYS:
                raise _refuse(f"a grouping set takes at most {MAX_KEYS} keys")
            sets.append(_unique([_resolve(k, select) for k in members]))
        return sets
    return [[_resolve(node, select)]]


def _at_most(count: int) -> None:
    if count > MAX_SETS:
        raise _refuse(
            f"the GROUP BY makes more than {MAX_SETS} grouping sets; each is released "
            "on its own with a share of the query's privacy budget: ask for fewer"
        )


def _unique(keys: list[exp.Expr]) -> list[exp.Expr]:
    out: list[exp.Expr] = []
    for key in keys:
        if not any(_same(key, kept) for kept in out):
            out.append(key)
    return out


def _same(node: exp.Expr, key: exp.Expr) -> bool:
    """Whether ``node`` is the key: a column by its name (and table where both name one),
    any other expression by its type and text; an identifier alone never (``c.district``
    is a column, not the key ``district``'s identifier inside it)."""
    if isinstance(node, exp.Column) and isinstance(key, exp.Column):
        tables = {node.table.lower(), key.table.lower()} - {""}
        return node.name.lower() == key.name.lower() and len(tables) <= 1
    if isinstance(key, exp.Column) or type(node) is not type(key):
        return False
    return node.sql() == key.sql()


#: What a dropped key inside these still reads: the rows' values, not the group's.
_ROW_LEVEL = (exp.AggFunc, exp.Filter, exp.Subquery)


def _without(tree: exp.Expr, dropped: list[exp.Expr]) -> exp.Expr:
    """``tree`` with every dropped key outside an aggregate, its FILTER and a subquery as
    NULL (a FILTER's condition reads rows, as the aggregate's argument does).  One pass,
    top down: a replaced node's inside is not visited."""
    if isinstance(tree, _ROW_LEVEL):
        return tree
    if any(_same(tree, key) for key in dropped):
        return exp.Null()

    def visit(node: exp.Expr) -> None:
        for child in list(node.iter_expressions()):
            if isinstance(child, _ROW_LEVEL):
                continue
            if any(_same(child, key) for key in dropped):
                child.replace(exp.Null())
            else:
                visit(child)

    visit(tree)
    return tree


def _grouping(tree: exp.Expr, keys: list[exp.Expr], dropped: list[exp.Expr]) -> exp.Expr:
    """``tree`` with each ``GROUPING(k1, …)`` outside an aggregate as this set's constant:
    a bit per argument, the first the highest, 1 where the key is aggregated away (not
    in this set), as SQL defines it.  An argument that is no key of the GROUP BY is
    refused.  Not data: which keys a set groups by is the query's text."""

    def constant(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Grouping):
            return node
        value = 0
        for arg in node.expressions:
            if any(_same(arg, key) for key in dropped):
                value = value * 2 + 1
            elif any(_same(arg, key) for key in keys):
                value = value * 2
            else:
                raise _refuse("GROUPING() takes keys of the GROUP BY's grouping sets")
        return exp.Literal.number(value)

    if isinstance(tree, _ROW_LEVEL) and not isinstance(tree, exp.Grouping):
        return tree  # sqlglot counts GROUPING() among the aggregates
    return tree.transform(constant, copy=False)


def _part(select: exp.Select, keys: list[exp.Expr], dropped: list[exp.Expr]) -> exp.Select:
    part = select.copy()
    for name in ("order", "limit", "offset"):
        part.set(name, None)
    part.set("group", exp.Group(expressions=[k.copy() for k in keys]) if keys else None)
    outputs = []
    for output in part.expressions:
        inner = output.unalias()
        new = _without(_grouping(inner.copy(), keys, dropped), dropped)
        # Unnamed where it changed (the stacked rows take the query's names, by position:
        # ``output_names``): ``NULL AS district`` would be what ``district`` in a HAVING
        # or FILTER of this SELECT reads, not the column.
        outputs.append(output if new.sql() == inner.sql() else new)
    part.set("expressions", outputs)
    having = part.args.get("having")
    if having is not None:
        having.set("this", _without(_grouping(having.this.copy(), keys, dropped), dropped))
    return part


def grouping_sets(select: exp.Expr) -> tuple[exp.Select, ...]:
    """One plain grouped SELECT per grouping set, in SQL's order; () without any."""
    if not isinstance(select, exp.Select):
        return ()
    group = select.args.get("group")
    if group is None or not any(isinstance(e, GROUPING) for e in group.expressions):
        return ()
    if any(group.args.get(a) for a in group.args if a != "expressions"):
        raise _refuse("GROUP BY ALL or WITH ROLLUP cannot be read beside grouping sets")
    if len(group.expressions) > MAX_KEYS:
        raise _refuse(f"a GROUP BY with grouping sets takes at most {MAX_KEYS} terms")
    choices = [_sets_of(e, select) for e in group.expressions]
    _at_most(math.prod(len(c) for c in choices))
    # SQL's order; a set written twice is released twice, as DuckDB repeats its rows
    sets = [
        _unique([k for chosen in combo for k in chosen]) for combo in itertools.product(*choices)
    ]
    every = _unique([k for keys in sets for k in keys])
    return tuple(
        _part(select, keys, [k for k in every if not any(_same(k, kept) for kept in keys)])
        for keys in sets
    )


def output_names(select: exp.Expr) -> list[str]:
    """The stacked rows' column names: the query's own, as ``rewrite._output_names``
    names a query's outputs (alias, column, or text; a repeated name gets ``_``)."""
    names: list[str] = []
    for output in select.expressions if isinstance(select, exp.Select) else []:
        name = output_name(output)
        while name in names:
            name += "_"
        names.append(name)
    return names


def stacked_order(
    select: exp.Expr, names: list[str], *, rule: str = RULE, message: str | None = None
) -> str:
    """The query's ``ORDER BY``, ``LIMIT`` and ``OFFSET`` over the stacked rows ("" for none).

    Each sort key must be an output: by position, by name, or as the output's own
    expression (``ORDER BY count(*)`` beside ``count(*) AS n``); the rows are then sorted
    by that released column.  Anything else could read a value no output released.
    """
    if not isinstance(select, exp.Select):
        return ""
    outputs = select.expressions
    by_text = {o.unalias().sql(): names[i] for i, o in enumerate(outputs) if i < len(names)}
    by_name = {output_name(o).lower(): names[i] for i, o in enumerate(outputs) if i < len(names)}
    parts = []
    order = select.args.get("order")
    if order is not None:
        items = []
        for ordered in order.expressions:
            key = ordered.this
            name = None
            if isinstance(key, exp.Literal) and key.is_int and 1 <= int(key.name) <= len(names):
                name = names[int(key.name) - 1]
            elif isinstance(key, exp.Column) and not key.table:
                name = by_name.get(key.name.lower())
            if name is None:
                name = by_text.get(key.sql())
            if name is None:
                raise QueryRefused(
                    message
                    or "with ROLLUP, CUBE or GROUPING SETS, ORDER BY names outputs (by name "
                    "or position): the rows of every grouping set are sorted together",
                    rule=rule,
                )
            column = exp.column(name, quoted=True)
            items.append(
                exp.Ordered(
                    this=column,
                    desc=ordered.args.get("desc"),
                    nulls_first=ordered.args.get("nulls_first"),
                )
            )
        parts.append(exp.Order(expressions=items).sql(dialect="duckdb"))
    limit, offset = select.args.get("limit"), select.args.get("offset")
    skip = offset.expression if isinstance(offset, exp.Offset) else None
    if isinstance(limit, exp.Limit):
        skip = limit.args.get("offset") or skip  # normalize.offset_into_limit moved it
        parts.append(f"LIMIT {_whole(limit.expression)}")
    if skip is not None:
        parts.append(f"OFFSET {_whole(skip)}")
    return " ".join(parts)


def _whole(value: exp.Expr | None) -> int:
    """A LIMIT's or OFFSET's whole number (the parse allowlist and normalize.py read no
    other there, but this text is run: it is checked again)."""
    if not (isinstance(value, exp.Literal) and value.is_int and int(value.name) >= 0):
        raise _refuse("LIMIT and OFFSET take whole numbers beside grouping sets")
    return int(value.name)
