"""Scope rules: derived tables row-level, set operations UNION ALL only, and the
released SELECT aggregated (its keys, outputs, HAVING, ORDER BY and LIMIT)."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.core.classification import ColumnSpec
from sandbox.query.column_rules import TUPLE_MESSAGE, ColumnRules, refuse
from sandbox.query.nodes import Kind, closure_refusal
from sandbox.query.parse import AGGREGATES, NODE_KINDS, RECORD_VALUE_AGGREGATES
from sandbox.query.spelling import describe

#: Larger LIMITs mean nothing (results are bounded far below) and overflow DuckDB's integers.
MAX_LIMIT = 1_000_000_000


def check_set_operation(scope: Scope) -> None:
    """Only ``UNION ALL`` of row-level branches: it keeps every row, so entities stay countable.

    ``UNION``, ``EXCEPT`` and ``INTERSECT`` compare whole rows (a DISTINCT in disguise,
    refused in derived tables like DISTINCT itself), and ``BY NAME`` matches columns by
    a name the lineage would have to guess.
    """
    op = scope.expression
    if not isinstance(op, exp.Union) or op.args.get("distinct"):
        kind = "UNION" if isinstance(op, exp.Union) else op.key.upper()
        raise refuse(
            "guard.set_operation",
            f"{kind} compares whole rows (like DISTINCT): only UNION ALL is allowed",
        )
    if op.args.get("by_name"):
        raise refuse("guard.set_operation", "UNION ALL BY NAME is not allowed; list the columns")
    for arg in ("order", "limit", "offset"):
        if op.args.get(arg):
            raise refuse("guard.inner_scope", inner_clause_message(arg))


_CLAUSES = {
    "group": "GROUP BY",
    "having": "HAVING",
    "order": "ORDER BY",
    "limit": "LIMIT",
    "offset": "OFFSET",
    "qualify": "QUALIFY",
    "distinct": "DISTINCT",
}
_WHY = {
    "group": (
        ": aggregate once, in the released SELECT, or aggregate each entity's rows in a "
        "per-entity table (GROUP BY the dataset's entity key alone, each aggregate named)"
    ),
    "order": " (inside, with LIMIT, it would pick single rows): order the released result instead",
}


def inner_clause_message(arg: str) -> str:
    """Why a clause is refused inside a derived table, CTE or UNION ALL branch, by its keyword."""
    return f"{_CLAUSES[arg]} is allowed only in the outermost SELECT{_WHY.get(arg, '')}"


def check_inner(rules: ColumnRules, scope: Scope) -> None:
    select = scope.expression
    for arg in ("group", "having", "order", "limit", "offset", "qualify", "distinct"):
        if select.args.get(arg):
            raise refuse("guard.inner_scope", inner_clause_message(arg))
    for proj in select.expressions:
        if proj.find(*AGGREGATES, *RECORD_VALUE_AGGREGATES, exp.AggFunc):
            raise refuse("guard.inner_scope", "aggregates are allowed only in the outermost SELECT")
        inner = proj.unalias()
        if isinstance(inner, exp.Column):
            rules.use(rules.lineage.resolve(inner, scope), "passthrough", "a derived table")
        else:
            rules.walk(inner, scope, "inner_expression", "a derived table")
    if select.args.get("where"):
        rules.walk(select.args["where"].this, scope, "predicate", "WHERE")


def check_final(
    rules: ColumnRules, scope: Scope, generalise: list[tuple[exp.Expression, ColumnSpec]]
) -> list[exp.Expression]:
    select = scope.expression
    for arg in ("qualify", "offset"):
        if select.args.get(arg):
            raise refuse("guard.final_scope", f"{arg.upper()} is not allowed")
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise refuse("guard.final_scope", "DISTINCT ON is not allowed")
    group = select.args.get("group")
    projections = [p.unalias() for p in select.expressions]
    if group is not None and group.args.get("all"):
        keys = [p for p in projections if not p.find(*AGGREGATES, exp.AggFunc)]
    else:
        keys = list(group.expressions) if group is not None else []
    has_agg = any(p.find(*AGGREGATES, exp.AggFunc) for p in projections)
    if not keys and not has_agg:
        raise refuse(
            "guard.not_aggregated",
            "the result must be aggregated: every output column an aggregate or a GROUP BY key",
        )
    for key in keys:
        _check_key(rules, scope, key, generalise)
    key_sql = {k.sql() for k in keys}
    for proj in select.expressions:
        check_output(rules, scope, proj.unalias(), key_sql, "SELECT")
    if select.args.get("where"):
        rules.walk(select.args["where"].this, scope, "predicate", "WHERE")
    if select.args.get("having"):
        check_output(rules, scope, select.args["having"].this, key_sql, "HAVING")
    if select.args.get("order"):
        outputs = frozenset(p.alias_or_name for p in select.expressions)
        for ordered in select.args["order"].expressions:
            check_output(rules, scope, ordered.this, key_sql, "ORDER BY", outputs)
    limit = select.args.get("limit")
    if limit is not None and not (
        isinstance(limit.expression, exp.Literal)
        and limit.expression.is_int
        and 0 <= int(limit.expression.name) <= MAX_LIMIT
    ):
        raise refuse("guard.limit", f"LIMIT takes a whole number from 0 to {MAX_LIMIT:,}")
    return keys


def _check_key(
    rules: ColumnRules,
    scope: Scope,
    key: exp.Expression,
    generalise: list[tuple[exp.Expression, ColumnSpec]],
) -> None:
    """Check a GROUP BY key; a bare generalised quasi column is noted for ``generalise_keys``."""
    if key.find(*AGGREGATES, exp.AggFunc):
        raise refuse("guard.group_key", "GROUP BY keys cannot contain aggregates")
    info = rules.lineage.of_expression(key, scope)
    for base in info.bases:
        _, spec = rules.column(base)
        if spec.generalize is not None and info.passthrough:
            generalise.append((key, spec))
            rules.use(info, "key", "GROUP BY")
            return
    # Any other key over a generalised column is judged with every other use of it, by
    # bands.Tracker after the scope's rules: a function of the declared form passes.
    rules.walk(key, scope, "key", "GROUP BY")


def replace_everywhere(select: exp.Expr, old: exp.Expression, new: exp.Expression) -> None:
    target = old.sql()
    for clause in ("expressions", "group", "having", "order"):
        value = select.args.get(clause)
        nodes = value if isinstance(value, list) else [value] if value is not None else []
        for node in nodes:
            for sub in list(node.walk()):
                if isinstance(sub, exp.Expression) and sub.sql() == target and sub is not new:
                    if sub.parent is not None and not _inside_aggregate(sub):
                        sub.replace(new.copy())


def _inside_aggregate(node: exp.Expression) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.AggFunc | exp.Filter):
            return True
        parent = parent.parent
    return False


def check_output(
    rules: ColumnRules,
    scope: Scope,
    node: exp.Expression,
    keys: set[str],
    clause: str,
    outputs: frozenset[str] = frozenset(),
) -> None:
    """An output expression: group keys, aggregates, constants, and any expression over them.

    ``outputs``: in ORDER BY, the released columns' names, which it may refer to.
    """
    kind = NODE_KINDS.get(type(node))
    if kind is None:
        raise closure_refusal(node, scope.expression, describe(node, rules.parsed.sql))
    if node.sql() in keys:
        return
    if kind is Kind.AGGREGATE:
        rules.aggregate(node, scope, clause)
    elif kind is Kind.COLUMN:
        assert isinstance(node, exp.Column)
        if not node.table and node.name in outputs:
            return  # a released output, named in ORDER BY
        rules.use(rules.lineage.resolve(node, scope), "output", clause)
        raise refuse(
            "guard.not_aggregated",
            f"column '{node.name}' in {clause} is neither aggregated nor a GROUP BY key: "
            "group by it, or aggregate it (count, sum, avg ...)",
        )
    elif kind is Kind.CLAUSE:
        raise refuse("guard.subquery_predicate", f"subqueries are not allowed in {clause}")
    elif kind is Kind.STAR:
        raise refuse("guard.star", f"* is allowed only in count(*) (in {clause})")
    elif isinstance(node, exp.Tuple):
        for part in node.iter_expressions():  # a column's own rule first
            check_output(rules, scope, part, keys, clause, outputs)
        raise refuse("guard.row_value", TUPLE_MESSAGE)
    else:
        for child in node.iter_expressions():
            check_output(rules, scope, child, keys, clause, outputs)
