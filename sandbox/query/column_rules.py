"""Column-use rules: each column reference checked by its role where it stands.

``ColumnRules.use`` consults the role-by-clause table (``sandbox/query/uses.py``);
the walks dispatch on the node-kind table (``sandbox/query/nodes.py``) and refuse a
node without a kind; the aggregate rules check each aggregate and its argument.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import ColumnSpec, Level, Role
from sandbox.core.errors import QueryRefused
from sandbox.query.cohorts import COHORT_CHECKED
from sandbox.query.comoments import PAIR_AGGREGATES, product_factors
from sandbox.query.lineage import BaseColumn, ColumnInfo, Lineage
from sandbox.query.nodes import QUANTILES, Kind, closure_refusal
from sandbox.query.parse import AGGREGATES, NODE_KINDS, RECORD_VALUE_AGGREGATES, Parsed
from sandbox.query.rollup import stage_note
from sandbox.query.spelling import describe
from sandbox.query.uses import USES, Context, Needs

#: Quantiles of a measure: released under a privacy budget only (docs/disclosure.md).
#: The arguments a quantile may carry: the column and the quantile (anything else refused).
_QUANTILE_ARGS = frozenset({"this", "expression", "quantile"})


def quantile_of(agg: exp.Expression) -> float | None:
    """The constant quantile of a quantile aggregate (0.5 for median), None if not one."""
    if isinstance(agg, exp.Median):
        return 0.5
    q = agg.args.get("quantile") if isinstance(agg, exp.Quantile) else agg.args.get("expression")
    negative = isinstance(q, exp.Neg)
    literal = q.this if isinstance(q, exp.Neg) else q
    if not isinstance(literal, exp.Literal) or literal.is_string:
        return None
    try:
        value = -float(literal.name) if negative else float(literal.name)
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None


def refuse(rule: str, message: str) -> QueryRefused:
    return QueryRefused(message, rule=rule)


#: Contexts whose comparisons filter on their operands (a predicate stays a predicate).
_FILTERED_WITHIN = frozenset({"output", "inner_expression", "value_aggregate", "key"})


def is_entity_key(info: ColumnInfo, access: Mapping[str, DatasetAccess]) -> bool:
    """Whether a reference is a dataset's entity key as it is (``count(DISTINCT key)``
    counts entities; ``count(DISTINCT x)`` of any other column counts values)."""
    base = info.single
    grant = access.get(base.dataset) if base is not None else None
    return base is not None and grant is not None and base.column == grant.spec.entity_key.lower()


class ColumnRules:
    """The column-use rules over one query; holds its lineage and the columns touched."""

    def __init__(self, parsed: Parsed, access: Mapping[str, DatasetAccess]) -> None:
        self.parsed = parsed
        self.access = access
        self.lineage = Lineage()
        self.touched: set[BaseColumn] = set()

    # -- column rules ------------------------------------------------------------------------

    def column(self, base: BaseColumn) -> tuple[DatasetAccess, ColumnSpec]:
        grant = self.access.get(base.dataset)
        if grant is None:
            raise refuse("grant.missing", f"no live grant covers dataset {base.dataset}")
        try:
            spec = grant.spec.column(base.column)
        except KeyError:
            raise refuse(
                "guard.unknown_column", f"{base.dataset} has no column '{base.column}'"
            ) from None
        where = f"{base.dataset}.{spec.name}"
        if spec.level is Level.L4:
            raise refuse("guard.l4_column", f"{where} is level L4 and never leaves the enclave")
        if spec.level > grant.max_level:
            raise refuse(
                "grant.column_ceiling",
                f"{where} is level {spec.level.name}, above the grant's ceiling "
                f"{grant.max_level.name}",
            )
        if grant.columns is not None and spec.name.lower() not in grant.columns:
            raise refuse("grant.column_list", f"{where} is not in the grant's column list")
        self.touched.add(base)
        return grant, spec

    def use(self, info: ColumnInfo, context: str, clause: str) -> None:
        """Check every base column of a reference used in ``context`` within ``clause``.

        The decision is the role-by-context table of ``sandbox.query.uses``.  A base that
        reaches the reference only through predicates (``ColumnInfo.filtered``: a bucket
        made in a CTE) is checked as a predicate where a predicate in place would be.
        """
        for base in info.bases:
            grant, spec = self.column(base)
            filtered = base in info.filtered and context in _FILTERED_WITHIN
            cell = USES[(spec.role, Context("predicate" if filtered else context))]
            if cell.needs is Needs.NOTHING:
                continue
            met = {
                Needs.BARE: info.passthrough,
                Needs.GROUPABLE: spec.name.lower() in grant.groupable,
                Needs.MEASURE_USE: spec.bounds is not None,
                Needs.NEVER: False,
            }[cell.needs]
            if not met:
                raise refuse(
                    cell.rule,
                    cell.message.format(
                        where=f"{base.dataset}.{spec.name} in {clause}",
                        role=spec.role.value,
                        name=spec.name,
                        entity_key=grant.spec.entity_key,
                    ),
                )

    # -- expression walking ------------------------------------------------------------------

    def walk(self, node: exp.Expression, scope: Scope, context: str, clause: str) -> None:
        """Check every column under ``node`` by its kind (not descending into nested scopes).

        Closed: a node type without a kind in ``NODE_KINDS`` is refused, never descended.
        """
        kind = NODE_KINDS.get(type(node))
        if node.meta.get(COHORT_CHECKED) and context == "predicate" and clause == "WHERE":
            return  # a WHERE's cohort, its keys checked by guard.cohorts, its scope as its own
        if kind is Kind.COLUMN:
            assert isinstance(node, exp.Column)
            self.use(self.lineage.resolve(node, scope), context, clause)
        elif kind is Kind.STAR:
            if not isinstance(node.parent, exp.Count):
                raise refuse("guard.star", f"* is allowed only in count(*) (in {clause})")
        elif isinstance(node, exp.Where):  # a FILTER's condition
            self.walk(node.this, scope, context, clause)
        elif kind is Kind.CLAUSE:
            raise refuse(
                "guard.subquery_predicate",
                f"subqueries are allowed only in FROM (found in {clause})",
            )
        elif kind is Kind.AGGREGATE:
            raise refuse(
                "guard.aggregate_placement",
                f"{self.parsed.written(node)}() in {clause}: aggregates are allowed only in "
                "the outermost SELECT list, HAVING and ORDER BY",
            )
        elif isinstance(node, exp.Tuple) and context in ("key", "output", "inner_expression"):
            for part in node.iter_expressions():  # a column's own rule first
                self.walk(part, scope, context, clause)
            raise refuse("guard.row_value", TUPLE_MESSAGE)
        elif kind in (Kind.CONSTANT, Kind.LEAF):
            return
        elif kind is None:
            raise closure_refusal(node, scope.expression, describe(node, self.parsed.sql))
        else:
            # In a key or an output, a comparison of a column's own values (or of an
            # order-keeping step of them) with constants filters on its operands: the key's
            # value is its truth value, never theirs.  Any other comparison, and a CASE
            # condition as a whole, keep the key's own rule, so a measure inside arithmetic,
            # here or in a CTE, is refused there (Lineage.filters).
            filtered = context in _FILTERED_WITHIN and self.lineage.filters(node, scope)
            sub = "predicate" if filtered else context
            for child in node.iter_expressions():
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
            pair = isinstance(agg, PAIR_AGGREGATES)  # left as written: not two bare columns
            for info in infos:
                self.use(info, "value_aggregate" if pair else "record_aggregate", f"{name}()")
            if pair:
                raise refuse(
                    "guard.aggregate_argument",
                    f"{name}() takes two measure columns as they are, e.g. "
                    f"{name}(x, y); to scale or shift one, do it to the result",
                )
            raise refuse(
                "guard.aggregate_unsupported",
                f"{name}() is not supported; use count, sum, avg, stddev, variance, min or max",
            )
        for inner in agg.iter_expressions():
            if inner.find(*AGGREGATES, *RECORD_VALUE_AGGREGATES):
                raise refuse("guard.nested_aggregate", f"aggregates cannot be nested ({name})")
        arg = agg.this
        if isinstance(agg, exp.Count):
            if isinstance(arg, exp.Star):
                return
            if isinstance(arg, exp.Distinct):
                if len(arg.expressions) != 1 or not isinstance(arg.expressions[0], exp.Column):
                    raise refuse(
                        "guard.count_distinct",
                        "count(DISTINCT ...) takes one column",
                    )
                info = self.lineage.resolve(arg.expressions[0], scope)
                if is_entity_key(info, self.access):
                    self.use(info, "count_distinct", clause)
                    return
                if not info.bases:
                    raise refuse(
                        "guard.count_distinct",
                        f"{stage_note(agg)}count(DISTINCT ...) takes a column of a dataset",
                    )
                try:
                    self.use(info, "distinct_values", f"count(DISTINCT) in {clause}")
                except QueryRefused as exc:  # say why a query as written counts c
                    note = stage_note(agg)
                    if note:
                        raise refuse(exc.rule or "", note + exc.message) from None
                    raise
                return
            if isinstance(arg, exp.Column):
                info = self.lineage.resolve(arg, scope)
                if is_entity_key(info, self.access):
                    # count(pid): the rows that have an entity, a row count (SmartNoise's
                    # tests write it so); the key itself is not read out
                    self.use(info, "count_distinct", clause)
                    return
            self._bare_argument(arg, scope, name, "count_argument", clause)
            return
        if isinstance(agg, exp.Min | exp.Max):
            try:
                self._bare_argument(arg, scope, name, "record_aggregate", clause)
            except QueryRefused as exc:
                raise self._extreme_hint(exc, arg, scope) from None
            return
        factors = product_factors(arg)
        if isinstance(agg, exp.Sum | exp.Avg) and factors is not None:
            # sum(x * y) of two measures: each factor clamped to its bounds, the product
            # within theirs (comoments.product_bounds); what corr and covar_* read
            for factor in factors:
                self._bare_argument(factor, scope, name, "value_aggregate", clause)
            return
        self._bare_argument(arg, scope, name, "value_aggregate", clause)

    def _extreme_hint(self, exc: QueryRefused, arg: exp.Expression, scope: Scope) -> QueryRefused:
        """``min(age)`` of a quasi column with a declared measure use: its refusal says a
        quantile is answered instead under a budget, as a measure's does."""
        if exc.rule != "guard.aggregate_record_value" or not isinstance(arg, exp.Column):
            return exc
        base = self.lineage.resolve(arg, scope).single
        if base is None or "quantile_cont" in exc.message:
            return exc
        _, spec = self.column(base)
        if spec.bounds is None or spec.role is Role.DIMENSION:
            return exc
        hint = (
            f"; under a privacy budget a high or low quantile is answered instead: "
            f"quantile_cont({arg.name}, 0.99), quantile_cont({arg.name}, 0.01)"
        )
        return refuse(exc.rule, exc.message + hint)

    def _quantile(self, agg: exp.Expression, scope: Scope, name: str, clause: str) -> None:
        """``median(x)``, ``quantile_cont(x, q)``, ``quantile_disc(x, q)``, ``quantile(x, q)``.

        A measure column and one constant ``q`` in [0, 1]; released only under a
        privacy budget, by the exponential mechanism (the rewrite refuses it without:
        ``guard.quantile_needs_budget``).
        """
        q = quantile_of(agg)
        extra = {k for k, v in agg.args.items() if v is not None} - _QUANTILE_ARGS
        if q is None or extra:
            raise refuse(
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
            conditional = arg.find(exp.Case, exp.If) is not None
            if len({c.sql() for c in arg.find_all(exp.Column)}) > 1 and not conditional:
                ratio = isinstance(arg.unnest(), exp.Div | exp.Mul)
                raise refuse(
                    "guard.aggregate_argument",
                    f"{name}() takes one column: of several it reads sums and differences of "
                    f"measures ({name}(a - b)) and sum(a * b)"
                    + (
                        "; a row-by-row ratio or product has no declared bounds, so aggregate "
                        "each column (sum(a) / sum(b))"
                        if ratio
                        else ""
                    ),
                )
            function = next(
                (f for f in arg.walk() if isinstance(f, exp.Func) and not isinstance(f, exp.Cast)),
                None,
            )
            if function is not None and not isinstance(function, exp.Case | exp.If):
                called = function.sql_name().lower()
                raise refuse(
                    "guard.aggregate_argument",
                    f"{name}() takes a measure as it is (times or over a number, plus or minus "
                    f"a number, or added to other measures); {called}() of it has no declared "
                    "bounds to noise it by: aggregate the column itself, or ask the bureau to "
                    "register the transformed values as a measure with their own bounds",
                )
            raise refuse(
                "guard.aggregate_argument",
                f"{name}() takes a column directly; use FILTER (WHERE ...) for conditions",
            )
        info = self.lineage.resolve(arg, scope)
        self.use(info, context, f"{name}() in {clause}")
        if context == "value_aggregate" and not info.passthrough:
            raise refuse(
                "guard.aggregate_argument",
                f"{name}() takes a measure column, not one computed from others; to count "
                "the rows that meet a condition, use count(*) FILTER (WHERE …)",
            )
        if context == "record_aggregate":
            for base in info.bases:
                _, spec = self.column(base)
                if spec.role is not Role.DIMENSION or not info.passthrough:
                    raise refuse(
                        "guard.aggregate_record_value",
                        f"{name}() returns one record's value: allowed on dimension "
                        f"columns only, not {base.dataset}.{spec.name}",
                    )


TUPLE_MESSAGE = (
    "(a, b) makes one row value (a STRUCT): list the columns as separate outputs or keys"
)
