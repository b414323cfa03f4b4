# Over 400 lines: one walk over the scopes; guard v2 (issue 13) splits it into rule modules.
"""The query guard: every column use checked against classification and grant.

An ordered set of small rules over one analysed query (see ``docs/guard.md``):

- scopes: derived tables and CTEs are row-level (no aggregation, DISTINCT,
  ORDER BY or LIMIT); subqueries in predicates are refused; the outermost
  SELECT is the released one and must be aggregated;
- columns: L4 never; above the grant's ceiling or outside its column list never;
  identifiers only as bare renames, in ``count(DISTINCT entity_key)`` and in
  declared join keys; measures only in sum/avg/stddev/variance/count and in
  filters; quasi and sensitive columns only if the grant lists them as
  groupable, quasi columns grouped only as the bureau's generalisation;
- aggregates: an allowlist; record-value aggregates only on dimensions;
- joins: only equalities of declared joinable column pairs.

The result is a :class:`Checked` query the rewrite turns into SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, ScopeType, traverse_scope

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import ColumnSpec, Level, Role
from sandbox.core.errors import QueryRefused
from sandbox.query import bands
from sandbox.query.closure import check_closed, check_writable
from sandbox.query.columns_expr import expand_columns
from sandbox.query.lineage import BaseColumn, ColumnInfo, Lineage
from sandbox.query.nodes import Kind, closure_refusal
from sandbox.query.parse import AGGREGATES, NODE_KINDS, RECORD_VALUE_AGGREGATES, Parsed
from sandbox.query.spelling import describe

__all__ = [
    "Checked",
    "DatasetAccess",
    "check_query",
    "datasets_reached",
    "entity_dataset",
    "first_source",
    "generalized",
    "quantile_of",
]

_VALUE_AGGS = (
    exp.Sum,
    exp.Avg,
    exp.Stddev,
    exp.StddevSamp,
    exp.StddevPop,
    exp.Variance,
    exp.VariancePop,
)


@dataclass
class Checked:
    """A query that passed every rule, qualified, with its generalisations applied."""

    parsed: Parsed
    root: exp.Select
    final_scope: Scope
    lineage: Lineage
    keys: list[exp.Expression]
    primary: str
    touched: set[BaseColumn] = field(default_factory=set)


#: Larger LIMITs mean nothing (results are bounded far below) and overflow DuckDB's integers.
MAX_LIMIT = 1_000_000_000


#: Quantiles of a measure: released under a privacy budget only (docs/disclosure.md).
QUANTILES = (exp.Median, exp.PercentileCont, exp.PercentileDisc, exp.Quantile)
#: The arguments a quantile may carry: the column and the quantile (anything else refused).
_QUANTILE_ARGS = frozenset({"this", "expression", "quantile"})


def quantile_of(agg: exp.Expression) -> float | None:
    """The constant quantile of a quantile aggregate (0.5 for median), None if not one."""
    if isinstance(agg, exp.Median):
        return 0.5
    q = agg.args.get("quantile") if isinstance(agg, exp.Quantile) else agg.args.get("expression")
    negative = isinstance(q, exp.Neg)
    literal = q.this if negative else q
    if not isinstance(literal, exp.Literal) or literal.is_string:
        return None
    try:
        value = -float(literal.name) if negative else float(literal.name)
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None


def _refuse(rule: str, message: str) -> QueryRefused:
    return QueryRefused(message, rule=rule)


def generalized(column: ColumnSpec, expr: exp.Expression) -> exp.Expression:
    """The declared generalisation of ``column`` applied to ``expr`` (see ``bands``)."""
    return bands.generalisation(column, expr)


class _Rules:
    def __init__(self, parsed: Parsed, access: Mapping[str, DatasetAccess]) -> None:
        self.parsed = parsed
        self.access = access
        self.lineage = Lineage()
        self.touched: set[BaseColumn] = set()

    # -- column rules ------------------------------------------------------------------------

    def column(self, base: BaseColumn) -> tuple[DatasetAccess, ColumnSpec]:
        grant = self.access.get(base.dataset)
        if grant is None:
            raise _refuse("grant.missing", f"no live grant covers dataset {base.dataset}")
        try:
            spec = grant.spec.column(base.column)
        except KeyError:
            raise _refuse(
                "guard.unknown_column", f"{base.dataset} has no column '{base.column}'"
            ) from None
        where = f"{base.dataset}.{spec.name}"
        if spec.level is Level.L4:
            raise _refuse("guard.l4_column", f"{where} is level L4 and never leaves the enclave")
        if spec.level > grant.max_level:
            raise _refuse(
                "grant.column_ceiling",
                f"{where} is level {spec.level.name}, above the grant's ceiling "
                f"{grant.max_level.name}",
            )
        if grant.columns is not None and spec.name.lower() not in grant.columns:
            raise _refuse("grant.column_list", f"{where} is not in the grant's column list")
        self.touched.add(base)
        return grant, spec

    def use(self, info: ColumnInfo, context: str, clause: str) -> None:
        """Check every base column of a reference used in ``context`` within ``clause``."""
        for base in info.bases:
            grant, spec = self.column(base)
            where = f"{base.dataset}.{spec.name} in {clause}"
            role = spec.role
            if role is Role.IDENTIFIER:
                if context not in ("passthrough", "count_distinct", "join") or not info.passthrough:
                    raise _refuse(
                        "guard.identifier",
                        f"identifier {where}: identifiers may only be counted, as "
                        f"count(DISTINCT {grant.spec.entity_key}), or used as declared "
                        "join keys",
                    )
            elif context == "record_aggregate" and role is not Role.DIMENSION:
                raise _refuse(
                    "guard.aggregate_record_value",
                    f"{role.value} column {where}: aggregates that return one "
                    "record's value are allowed on dimension columns only",
                )
            elif role is Role.MEASURE:
                if context in ("key", "output"):
                    raise _refuse(
                        "guard.measure",
                        f"measure {where}: measures may only be aggregated "
                        f"(sum, avg, stddev, variance, count: e.g. sum({spec.name})) "
                        "or filtered on",
                    )
            elif role in (Role.QUASI, Role.SENSITIVE):
                groupable = spec.name.lower() in grant.groupable
                if context in ("key", "predicate", "inner_expression") and not groupable:
                    raise _refuse(
                        f"guard.{role.value}",
                        f"{role.value} column {where}: the grant does not allow "
                        "grouping or filtering on it",
                    )
                measured = context == "value_aggregate" and spec.bounds is not None
                if context in ("record_aggregate", "value_aggregate", "output") and not measured:
                    raise _refuse(
                        f"guard.{role.value}",
                        f"{role.value} column {where} may only be grouped or counted "
                        "(its classification declares no measure use)",
                    )
            elif role is Role.DIMENSION and context == "value_aggregate" and spec.bounds is None:
                raise _refuse(
                    "guard.aggregate_argument",
                    f"dimension {where}: sum, avg, stddev and variance take measures",
                )

    # -- expression walking ------------------------------------------------------------------

    def walk(self, node: exp.Expression, scope: Scope, context: str, clause: str) -> None:
        """Check every column under ``node`` by its kind (not descending into nested scopes).

        Closed: a node type without a kind in ``NODE_KINDS`` is refused, never descended.
        """
        kind = NODE_KINDS.get(type(node))
        if kind is Kind.COLUMN:
            assert isinstance(node, exp.Column)
            self.use(self.lineage.resolve(node, scope), context, clause)
        elif kind is Kind.STAR:
            if not isinstance(node.parent, exp.Count):
                raise _refuse("guard.star", f"* is allowed only in count(*) (in {clause})")
        elif isinstance(node, exp.Where):  # a FILTER's condition
            self.walk(node.this, scope, context, clause)
        elif kind is Kind.CLAUSE:
            raise _refuse(
                "guard.subquery_predicate",
                f"subqueries are allowed only in FROM (found in {clause})",
            )
        elif kind is Kind.AGGREGATE:
            raise _refuse(
                "guard.aggregate_placement",
                f"{self.parsed.written(node)}() in {clause}: aggregates are allowed only in "
                "the outermost SELECT list, HAVING and ORDER BY",
            )
        elif isinstance(node, exp.Tuple) and context in ("key", "output", "inner_expression"):
            for part in node.iter_expressions():  # a column's own rule first
                self.walk(part, scope, context, clause)
            raise _refuse("guard.row_value", _TUPLE_MESSAGE)
        elif kind in (Kind.CONSTANT, Kind.LEAF):
            return
        elif kind is None:
            raise closure_refusal(node, scope.expression, describe(node, self.parsed.sql))
        else:
            sub = context
            if kind is Kind.PREDICATE and context in (
                "output",
                "inner_expression",
                "value_aggregate",
                "key",
            ):
                sub = "predicate" if context != "key" else "key"
            for child in node.iter_expressions():
                if isinstance(node, exp.If) and child is node.this and sub != "key":
                    self.walk(child, scope, "predicate", clause)
                else:
                    self.walk(child, scope, sub, clause)

    def aggregate(self, agg: exp.Expression, scope: Scope, clause: str) -> None:
        if isinstance(agg, exp.Filter):
            self.walk(agg.expression, scope, "predicate", f"{clause} FILTER")
            agg = agg.this
        name = self.parsed.written(agg)
        if type(agg) in QUANTILES:  # exactly these (approx_quantile stays refused)
            self._quantile(agg, scope, name, clause)
            return
        if type(agg) not in AGGREGATES:
            args = list(agg.find_all(exp.Column))
            infos = [self.lineage.resolve(c, scope) for c in args]
            for info in infos:
                self.use(info, "record_aggregate", f"{name}()")
            raise _refuse(
                "guard.aggregate_unsupported",
                f"{name}() is not supported; use count, sum, avg, stddev, variance, min or max",
            )
        for inner in agg.iter_expressions():
            if inner.find(*AGGREGATES, *RECORD_VALUE_AGGREGATES):
                raise _refuse("guard.nested_aggregate", f"aggregates cannot be nested ({name})")
        arg = agg.this
        if isinstance(agg, exp.Count):
            if isinstance(arg, exp.Star):
                return
            if isinstance(arg, exp.Distinct):
                if len(arg.expressions) != 1 or not isinstance(arg.expressions[0], exp.Column):
                    raise _refuse(
                        "guard.count_distinct",
                        "count(DISTINCT ...) takes one column: the entity key",
                    )
                info = self.lineage.resolve(arg.expressions[0], scope)
                base = info.single
                spec = self.access[base.dataset].spec if base else None
                if base is None or spec is None or base.column != spec.entity_key.lower():
                    for b in info.bases:
                        self.column(b)
                    raise _refuse(
                        "guard.count_distinct",
                        "count(DISTINCT ...) is allowed only on a dataset's entity key",
                    )
                self.use(info, "count_distinct", clause)
                return
            self._bare_argument(arg, scope, name, "count_argument", clause)
            return
        if isinstance(agg, exp.Min | exp.Max):
            self._bare_argument(arg, scope, name, "record_aggregate", clause)
            return
        self._bare_argument(arg, scope, name, "value_aggregate", clause)

    def _quantile(self, agg: exp.Expression, scope: Scope, name: str, clause: str) -> None:
        """``median(x)``, ``quantile_cont(x, q)``, ``quantile_disc(x, q)``, ``quantile(x, q)``.

        A measure column and one constant ``q`` in [0, 1]; released only under a
        privacy budget, by the exponential mechanism (the rewrite refuses it without:
        ``guard.quantile_needs_budget``).
        """
        q = quantile_of(agg)
        extra = {k for k, v in agg.args.items() if v is not None} - _QUANTILE_ARGS
        if q is None or extra:
            raise _refuse(
                "guard.aggregate_argument",
                f"{name}() takes a measure column and one constant quantile from 0 to 1, "
                f"e.g. {name}(x, 0.9)",
            )
        self._bare_argument(agg.this, scope, name, "value_aggregate", clause)

    def _bare_argument(
        self, arg: exp.Expression, scope: Scope, name: str, context: str, clause: str
    ) -> None:
        if not isinstance(arg, exp.Column):
            # Check the columns first so the refusal names the most specific rule.
            for col in arg.find_all(exp.Column):
                self.use(self.lineage.resolve(col, scope), context, f"{name}()")
            raise _refuse(
                "guard.aggregate_argument",
                f"{name}() takes a column directly; use FILTER (WHERE ...) for conditions",
            )
        info = self.lineage.resolve(arg, scope)
        self.use(info, context, f"{name}() in {clause}")
        if context == "value_aggregate" and not info.passthrough:
            raise _refuse("guard.aggregate_argument", f"{name}() takes a measure column")
        if context == "record_aggregate":
            for base in info.bases:
                _, spec = self.column(base)
                if spec.role is not Role.DIMENSION or not info.passthrough:
                    raise _refuse(
                        "guard.aggregate_record_value",
                        f"{name}() returns one record's value: allowed on dimension "
                        f"columns only, not {base.dataset}.{spec.name}",
                    )


def _spec_of(access: Mapping[str, DatasetAccess], base: BaseColumn) -> ColumnSpec | None:
    grant = access.get(base.dataset)
    try:
        return None if grant is None else grant.spec.column(base.column)
    except KeyError:
        return None


def _schema(access: Mapping[str, DatasetAccess]) -> dict[str, dict[str, dict[str, str]]]:
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for dataset_id, grant in access.items():
        domain, table = dataset_id.split(".", 1)
        schema.setdefault(domain, {})[table] = {
            c.name.lower(): (c.type or "VARCHAR") for c in grant.spec.columns
        }
    return schema


def check_query(parsed: Parsed, access: Mapping[str, DatasetAccess]) -> Checked:
    """Apply every rule; return the checked, qualified query or raise QueryRefused."""
    missing = [d for d in parsed.datasets if d not in access]
    if missing:
        raise _refuse("grant.missing", f"no live grant covers dataset {missing[0]}")
    schema = _schema(access)
    try:
        root: exp.Expr = qualify(
            parsed.expression.copy(),
            schema=cast("dict[str, object]", schema),
            dialect="duckdb",
            validate_qualify_columns=True,
            quote_identifiers=True,
            identify=True,
        )
    except OptimizeError as exc:
        raise _refuse("guard.resolve", f"the query's columns cannot be resolved: {exc}") from None
    # A failing CAST would quote the value it could not convert: make every cast safe.
    root = root.transform(
        lambda n: exp.TryCast(this=n.this, to=n.args["to"]) if type(n) is exp.Cast else n
    )
    if not isinstance(root, exp.Select):
        raise _refuse(
            "guard.set_operation",
            "the released SELECT cannot be a set operation (each aggregated SELECT is its "
            "own release: run them separately); UNION ALL is allowed inside a CTE or "
            "derived table",
        )
    rules = _Rules(parsed, access)
    banded = bands.Tracker(partial(_spec_of, access), parsed.written)
    scopes = list(traverse_scope(root))
    if expand_columns(scopes[-1], schema):
        scopes = list(traverse_scope(root))
    check_closed(root, parsed.sql)
    final = scopes[-1]
    for scope in scopes:
        if scope.scope_type in (ScopeType.SUBQUERY,):
            raise _refuse("guard.subquery_predicate", "subqueries are allowed only in FROM")
        if scope.scope_type is ScopeType.UDTF:
            raise _refuse("guard.table_function", "table functions are not allowed")
        if isinstance(scope.expression, exp.SetOperation):
            _check_set_operation(scope)
            rules.lineage.record_set_outputs(scope)
            banded.record_set(scope)
            continue
        _check_joins(rules, scope)
        if scope is final:
            keys = _check_final(rules, scope)
        else:
            _check_inner(rules, scope)
            rules.lineage.record_outputs(scope)
        banded.check(scope, final=scope is final)
    check_writable(root)
    primary = entity_dataset(final)
    return Checked(parsed, root, final, rules.lineage, keys, primary, rules.touched)


def _check_set_operation(scope: Scope) -> None:
    """Only ``UNION ALL`` of row-level branches: it keeps every row, so entities stay countable.

    ``UNION``, ``EXCEPT`` and ``INTERSECT`` compare whole rows (a DISTINCT in disguise,
    refused in derived tables like DISTINCT itself), and ``BY NAME`` matches columns by
    a name the lineage would have to guess.
    """
    op = scope.expression
    if not isinstance(op, exp.Union) or op.args.get("distinct"):
        kind = "UNION" if isinstance(op, exp.Union) else op.key.upper()
        raise _refuse(
            "guard.set_operation",
            f"{kind} compares whole rows (like DISTINCT): only UNION ALL is allowed",
        )
    if op.args.get("by_name"):
        raise _refuse("guard.set_operation", "UNION ALL BY NAME is not allowed; list the columns")
    for arg in ("order", "limit", "offset"):
        if op.args.get(arg):
            raise _refuse(
                "guard.inner_scope", f"{arg.upper()} is allowed only in the outermost SELECT"
            )


def _check_inner(rules: _Rules, scope: Scope) -> None:
    select = scope.expression
    for arg in ("group", "having", "order", "limit", "offset", "qualify", "distinct"):
        if select.args.get(arg):
            raise _refuse(
                "guard.inner_scope", f"{arg.upper()} is allowed only in the outermost SELECT"
            )
    for proj in select.expressions:
        if proj.find(*AGGREGATES, *RECORD_VALUE_AGGREGATES, exp.AggFunc):
            raise _refuse(
                "guard.inner_scope", "aggregates are allowed only in the outermost SELECT"
            )
        inner = proj.unalias()
        if isinstance(inner, exp.Column):
            rules.use(rules.lineage.resolve(inner, scope), "passthrough", "a derived table")
        else:
            rules.walk(inner, scope, "inner_expression", "a derived table")
    if select.args.get("where"):
        rules.walk(select.args["where"].this, scope, "predicate", "WHERE")


#: Set on a Join node the guard accepted: an inner join on both sides' entity keys.
ENTITY_JOIN = "sbx.entity_join"


def _declares(spec: ColumnSpec, dataset: str, other: ColumnSpec) -> bool:
    return f"{dataset}.{other.name}".lower() in {t.lower() for t in spec.joinable}


def _check_consent(lb: BaseColumn, lspec: ColumnSpec, rb: BaseColumn, rspec: ColumnSpec) -> None:
    """Two bureaus' columns join only if both classifications declare the pair.

    One bureau (one domain) consents for its own datasets with one declaration; across
    bureaus one side alone would make another bureau's data joinable without its consent.
    """
    left, right = f"{lb.dataset}.{lspec.name}", f"{rb.dataset}.{rspec.name}"
    to_right, to_left = _declares(lspec, rb.dataset, rspec), _declares(rspec, lb.dataset, lspec)
    if lb.dataset.split(".")[0] == rb.dataset.split(".")[0]:
        if to_right or to_left:
            return
    elif to_right and to_left:
        return
    if to_right or to_left:
        declared, missing = (left, right) if to_right else (right, left)
        raise _refuse(
            "guard.join",
            f"{left} and {right} join across two bureaus: {declared} declares the pair but "
            f"{missing.rsplit('.', 1)[0]}'s classification does not; both must declare it",
        )
    raise _refuse("guard.join", f"{left} and {right} are not declared joinable")


def _check_join_filter(rules: _Rules, scope: Scope, cond: exp.Expression) -> None:
    """Besides key equalities, ``ON`` may filter one side (``AND s.month = '2025-01'``).

    Such a condition is a predicate like WHERE's, on the columns of one source only
    (an outer join keeps the other side's rows, so it cannot move to WHERE); one that
    relates two sources (``OR``, a function of both keys, an inequality) is refused.
    """
    sources = {column.table for column in cond.find_all(exp.Column)}
    if len(sources) != 1:
        raise _refuse(
            "guard.join",
            "join conditions must be equalities of declared join keys, and may filter one "
            "side (AND s.month = '2025-01'); this one relates both sides or neither",
        )
    rules.walk(cond, scope, "predicate", "JOIN ON")


def _is_entity_key(rules: _Rules, base: BaseColumn) -> bool:
    return base.column == rules.access[base.dataset].spec.entity_key.lower()


def _check_joins(rules: _Rules, scope: Scope) -> None:
    for join in scope.expression.args.get("joins") or []:
        on = join.args.get("on")
        if on is None:
            raise _refuse("guard.join", "joins need an ON condition on declared join keys")
        if join.args.get("kind") and str(join.args["kind"]).upper() not in ("INNER", "OUTER"):
            raise _refuse("guard.join", f"{join.args['kind']} joins are not allowed")
        conditions = list(on.flatten()) if isinstance(on, exp.And) else [on]
        on_entities = False
        pairs = 0
        for cond in conditions:
            if not (
                isinstance(cond, exp.EQ)
                and isinstance(cond.this, exp.Column)
                and isinstance(cond.expression, exp.Column)
            ):
                _check_join_filter(rules, scope, cond)
                continue
            pairs += 1
            left = rules.lineage.resolve(cond.this, scope)
            right = rules.lineage.resolve(cond.expression, scope)
            lb, rb = left.single, right.single
            if lb is None or rb is None:
                raise _refuse("guard.join", "join keys must be dataset columns, not expressions")
            _, lspec = rules.column(lb)
            _, rspec = rules.column(rb)
            _check_consent(lb, lspec, rb, rspec)
            rules.use(left, "join", "JOIN")
            rules.use(right, "join", "JOIN")
            on_entities |= _is_entity_key(rules, lb) and _is_entity_key(rules, rb)
        if not pairs:
            raise _refuse("guard.join", "joins need an equality of declared join keys in ON")
        inner = (
            join.args.get("side") is None
            and str(join.args.get("kind") or "INNER").upper() == "INNER"
        )
        join.meta[ENTITY_JOIN] = inner and on_entities
    if scope.expression.args.get("joins"):
        _check_joined_once(scope)


def datasets_reached(source: exp.Table | Scope) -> set[str]:
    """The datasets a FROM or JOIN source reads, through derived tables, CTEs and unions."""
    if isinstance(source, exp.Table):
        return {f"{source.args['db'].name.lower()}.{source.name.lower()}"}
    reached: set[str] = set()
    for branch in source.set_operation_scopes:
        reached |= datasets_reached(branch)
    for _, inner in source.selected_sources.values():
        if isinstance(inner, exp.Table | Scope):
            reached |= datasets_reached(inner)
    return reached


def _check_joined_once(scope: Scope) -> None:
    """A dataset on two sides of a join, even on declared keys, multiplies its own rows."""
    seen: set[str] = set()
    for _, source in scope.selected_sources.values():
        reached = datasets_reached(source) if isinstance(source, exp.Table | Scope) else set()
        again = sorted(reached & seen)
        if again:
            raise _refuse(
                "guard.join",
                f"{again[0]} is joined more than once: a dataset joined to itself multiplies "
                "its rows per key",
            )
        seen |= reached


def _check_final(rules: _Rules, scope: Scope) -> list[exp.Expression]:
    select = scope.expression
    for arg in ("qualify", "offset"):
        if select.args.get(arg):
            raise _refuse("guard.final_scope", f"{arg.upper()} is not allowed")
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise _refuse("guard.final_scope", "DISTINCT ON is not allowed")
    group = select.args.get("group")
    projections = [p.unalias() for p in select.expressions]
    if group is not None and group.args.get("all"):
        keys = [p for p in projections if not p.find(*AGGREGATES, exp.AggFunc)]
    else:
        keys = list(group.expressions) if group is not None else []
    has_agg = any(p.find(*AGGREGATES, exp.AggFunc) for p in projections)
    if not keys and not has_agg:
        raise _refuse(
            "guard.not_aggregated",
            "the result must be aggregated: every output column an aggregate or a GROUP BY key",
        )
    keys = [_check_key(rules, scope, key) for key in keys]
    key_sql = {k.sql() for k in keys}
    for proj in select.expressions:
        _check_output(rules, scope, proj.unalias(), key_sql, "SELECT")
    if select.args.get("where"):
        rules.walk(select.args["where"].this, scope, "predicate", "WHERE")
    if select.args.get("having"):
        _check_output(rules, scope, select.args["having"].this, key_sql, "HAVING")
    if select.args.get("order"):
        outputs = frozenset(p.alias_or_name for p in select.expressions)
        for ordered in select.args["order"].expressions:
            _check_output(rules, scope, ordered.this, key_sql, "ORDER BY", outputs)
    limit = select.args.get("limit")
    if limit is not None and not (
        isinstance(limit.expression, exp.Literal)
        and limit.expression.is_int
        and 0 <= int(limit.expression.name) <= MAX_LIMIT
    ):
        raise _refuse("guard.limit", f"LIMIT takes a whole number from 0 to {MAX_LIMIT:,}")
    return keys


def _check_key(rules: _Rules, scope: Scope, key: exp.Expression) -> exp.Expression:
    """Check a GROUP BY key; rewrite a bare generalised quasi column to its generalisation."""
    if key.find(*AGGREGATES, exp.AggFunc):
        raise _refuse("guard.group_key", "GROUP BY keys cannot contain aggregates")
    info = rules.lineage.of_expression(key, scope)
    for base in info.bases:
        _, spec = rules.column(base)
        if spec.generalize is not None and info.passthrough:
            rewritten = generalized(spec, key)
            _replace_everywhere(scope.expression, key, rewritten)
            rules.use(info, "key", "GROUP BY")
            return rewritten
    # Any other key over a generalised column is judged with every other use of it, by
    # bands.Tracker after the scope's rules: a function of the declared form passes.
    rules.walk(key, scope, "key", "GROUP BY")
    return key


def _replace_everywhere(select: exp.Expr, old: exp.Expression, new: exp.Expression) -> None:
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


_TUPLE_MESSAGE = (
    "(a, b) makes one row value (a STRUCT): list the columns as separate outputs or keys"
)


def _check_output(
    rules: _Rules,
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
        raise _refuse(
            "guard.not_aggregated",
            f"column '{node.name}' in {clause} is neither aggregated nor a GROUP BY key: "
            "group by it, or aggregate it (count, sum, avg ...)",
        )
    elif kind is Kind.CLAUSE:
        raise _refuse("guard.subquery_predicate", f"subqueries are not allowed in {clause}")
    elif kind is Kind.STAR:
        raise _refuse("guard.star", f"* is allowed only in count(*) (in {clause})")
    elif isinstance(node, exp.Tuple):
        for part in node.iter_expressions():  # a column's own rule first
            _check_output(rules, scope, part, keys, clause, outputs)
        raise _refuse("guard.row_value", _TUPLE_MESSAGE)
    else:
        for child in node.iter_expressions():
            _check_output(rules, scope, child, keys, clause, outputs)


def first_source(scope: Scope) -> tuple[str, exp.Table | Scope]:
    """A SELECT scope's first FROM source (its alias and the table or derived scope)."""
    from_ = scope.expression.args.get("from_")
    alias = from_.this.alias_or_name if from_ else ""
    source = scope.sources.get(alias) if from_ else None
    if not isinstance(source, exp.Table | Scope):
        raise _refuse("guard.lineage", "the query's first FROM source is not a dataset")
    return alias, source


def entity_dataset(scope: Scope) -> str:
    """The dataset whose entities are counted: follow the first FROM source down.

    Through a ``UNION ALL`` every branch must lead to the same dataset, so one entity
    key identifies a contributor whichever branch its rows came from.
    """
    if isinstance(scope.expression, exp.SetOperation):
        found = {entity_dataset(branch) for branch in scope.set_operation_scopes}
        if len(found) != 1:
            raise _refuse(
                "guard.set_operation",
                "every branch of a UNION ALL must read the same dataset first "
                "(its entities are the ones counted)",
            )
        return found.pop()
    _, source = first_source(scope)
    if isinstance(source, exp.Table):
        return f"{source.args['db'].name.lower()}.{source.name.lower()}"
    return entity_dataset(source)
