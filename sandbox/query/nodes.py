"""The node-kind table: every expression type the guard understands, and what it is.

The guard is closed by construction: a node type is either in this table, with
the rule that handles it, or refused (``guard.unsupported``).  Nothing is let
through because a rule did not think to look for it.  The kinds:

- ``COLUMN``: a column reference, traced by the lineage to dataset columns and
  checked by their role in the clause where it is used;
- ``AGGREGATE``: checked by the aggregate rules (parse.py lists which);
- ``SCALAR``: a function or operator of its arguments; its result keeps their
  lineage and role (``CAST(age AS VARCHAR)`` is ``age``, never a bare rename);
- ``PREDICATE``: a comparison or connective; its operands are filtered on (in a group
  key or an output only where it compares one column with constants:
  ``comparison_operands``);
- ``CONSTANT``: holds no column (a literal, ``pi()``, ``current_date``);
- ``LEAF``: syntax that holds no value (a type name, a date part, a name);
- ``WRAPPER``: parentheses, aliases, ordering, tuples, DISTINCT: what they wrap;
- ``STAR``: ``*``, only inside ``count(*)`` (stars elsewhere are expanded by
  sqlglot's qualification before the rules run);
- ``CLAUSE``: statement structure (FROM, WHERE, a derived table ...), checked by
  the scope rules; never a value.

Functions that can grow data (``repeat``, ``lpad``, ``string_agg``, list
functions), struct, list and map constructors and accessors, lambdas, UNNEST,
PIVOT, window frames are absent, so refused.  A source's alias used as a value
(``CAST(c AS VARCHAR)``) is the whole row in DuckDB: ``guard.row_value``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from sqlglot import exp

from sandbox.core.errors import QueryRefused

__all__ = [
    "AGGREGATES",
    "AGGREGATE_ARGUMENTS",
    "CLAUSES",
    "EXPRESSION_KINDS",
    "QUANTILES",
    "VALUE_AGGREGATES",
    "Kind",
    "closure_refusal",
    "comparison_operands",
    "extra_arguments",
    "monotone_column",
    "output_name",
    "row_source",
]


#: Aggregates of a measure's values: sums and the moments built from them.
VALUE_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Sum,
    exp.Avg,
    exp.Stddev,
    exp.StddevSamp,
    exp.StddevPop,
    exp.Variance,
    exp.VariancePop,
)
#: Aggregates the disclosure rewrite can decompose per entity.
AGGREGATES: tuple[type[exp.Expr], ...] = (exp.Count, *VALUE_AGGREGATES, exp.Min, exp.Max)
#: The quantiles answered under a privacy budget (exactly these: approx_quantile is not).
QUANTILES: tuple[type[exp.Expr], ...] = (
    exp.Median,
    exp.PercentileCont,
    exp.PercentileDisc,
    exp.Quantile,
)


class Kind(Enum):
    COLUMN = "column"
    AGGREGATE = "aggregate"
    SCALAR = "scalar"
    PREDICATE = "predicate"
    CONSTANT = "constant"
    LEAF = "leaf"
    WRAPPER = "wrapper"
    STAR = "star"
    CLAUSE = "clause"


def _all(kind: Kind, *types: type[exp.Expr]) -> dict[type[exp.Expr], Kind]:
    return dict.fromkeys(types, kind)


#: Statement structure: handled by the scope rules, never walked as a value.
CLAUSES: frozenset[type[exp.Expr]] = frozenset(
    {
        exp.Select,
        exp.Union,
        exp.Except,
        exp.Intersect,
        exp.From,
        exp.Join,
        exp.Where,
        exp.Group,
        exp.Having,
        exp.Order,
        exp.Limit,
        exp.With,
        exp.CTE,
        exp.Subquery,
        exp.TableAlias,
        exp.Table,
    }
)

#: Every non-aggregate expression type the guard handles (parse.py adds the aggregates).
EXPRESSION_KINDS: Mapping[type[exp.Expr], Kind] = {
    **_all(Kind.CLAUSE, *CLAUSES),
    exp.Column: Kind.COLUMN,
    exp.Star: Kind.STAR,
    **_all(
        Kind.CONSTANT,
        exp.Literal,
        exp.Boolean,
        exp.Null,
        exp.Pi,
        exp.CurrentDate,
        exp.CurrentTimestamp,
    ),
    **_all(Kind.LEAF, exp.Identifier, exp.Var, exp.DataType, exp.DataTypeParam),
    **_all(Kind.WRAPPER, exp.Paren, exp.Alias, exp.Ordered, exp.Tuple, exp.Distinct),
    **_all(
        Kind.PREDICATE,
        exp.And,
        exp.Or,
        exp.Not,
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.Between,
        exp.In,
        exp.Is,
        exp.Like,
        exp.ILike,
        exp.NullSafeEQ,
        exp.NullSafeNEQ,
        exp.StartsWith,  # starts_with(x, 'C'), like x LIKE 'C%'
    ),
    **_all(
        Kind.SCALAR,
        # arithmetic
        exp.Add,
        exp.Sub,
        exp.Mul,
        exp.Div,
        exp.IntDiv,  # `//`: banding, sandbox/query/bands.py
        exp.Mod,
        exp.Neg,
        exp.Abs,
        exp.Round,
        exp.Floor,
        exp.Ceil,
        exp.Sign,
        exp.Sqrt,
        exp.Pow,
        exp.Ln,
        exp.Log,
        exp.Exp,
        exp.Cbrt,
        exp.Trunc,
        exp.Greatest,
        exp.Least,
        # conditionals
        exp.Coalesce,
        exp.Nullif,
        exp.If,
        exp.Case,
        # strings: results no longer than their inputs (no repeat, no padding)
        exp.Upper,
        exp.Lower,
        exp.Length,
        exp.Substring,
        exp.Left,
        exp.Right,
        exp.Concat,
        exp.DPipe,
        exp.Trim,
        # dates
        exp.TimestampTrunc,
        exp.DateTrunc,
        exp.Extract,
        exp.Year,
        exp.Month,
        exp.Day,
        exp.Hour,
        exp.Quarter,
        exp.DayOfWeek,
        exp.DayOfYear,
        exp.DayOfWeekIso,
        exp.Week,
        exp.Dayname,
        exp.Monthname,
        exp.DateDiff,
        exp.TimeToStr,
        exp.Interval,
        # conversions: the value's lineage, whatever the target type
        exp.Cast,
        exp.TryCast,
    ),
}


#: The arguments the aggregate rules understand, per aggregate they accept (the rules
#: read ``this`` only): ``max(x, n)`` (the n largest values, a list) or ``count(a, b)``
#: must not pass as ``max(x)`` and ``count(a)``.  ``big_int`` is a flag sqlglot sets.
AGGREGATE_ARGUMENTS: frozenset[str] = frozenset({"this", "big_int"})


#: Comparisons whose result is one truth value about their operands' order or equality.
#: Not LIKE, ILIKE or starts_with: a pattern per digit spells a number out.
_COMPARISONS: tuple[type[exp.Expr], ...] = (
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.Between,
    exp.In,
    exp.Is,
)


#: Numeric types a cast to keeps order (a bit string does not compare as a number).
_ORDERED_NUMBERS = frozenset(exp.DataType.NUMERIC_TYPES) - {exp.DataType.Type.BIT}


def _column_free(node: exp.Expr) -> bool:
    return node.find(exp.Column) is None


def _only_this(node: exp.Expr, *allowed: str) -> bool:
    """Whether ``node`` sets no argument but ``this``, ``allowed`` and sqlglot's flags."""
    return all(
        key in ("this", *allowed) or value in (None, False, []) or isinstance(value, bool)
        for key, value in node.args.items()
    )


def monotone_column(node: exp.Expr) -> exp.Column | None:
    """The column ``node`` is a monotone function of, through order-keeping steps only;
    None if it is not one.

    The steps, each with column-free other arguments: parentheses, a cast to a numeric
    type, ``+``/``-`` a constant, ``*`` a constant, ``/`` by a constant (the column the
    dividend), negation, ``round``/``floor``/``ceil``, ``coalesce(x, constants)``.  Each
    keeps ``{x: f(x) >= c}`` one interval (and NULLs) for every ``c``, so a comparison of
    ``f(x)`` with a constant cuts ``x`` once, as ``x >= c'`` would.  Not ``%``, ``abs``,
    string casts or functions: a comparison of ``floor(x / 2^k) % 2`` is a bit of ``x``.
    """
    while True:
        if isinstance(node, exp.Column):
            return node
        if isinstance(node, exp.Paren | exp.Neg):
            node = node.this
        elif isinstance(node, exp.Cast | exp.TryCast):
            if node.to.this not in _ORDERED_NUMBERS or not _only_this(node, "to"):
                return None  # a DEFAULT … ON CONVERSION ERROR or a FORMAT holds more
            node = node.this
        elif isinstance(node, exp.Add | exp.Sub | exp.Mul):
            left, right = node.this, node.expression
            if _column_free(right):
                node = left
            elif _column_free(left):
                node = right
            else:
                return None
        elif isinstance(node, exp.Div):
            if not _column_free(node.expression):
                return None
            node = node.this
        elif isinstance(node, exp.Round | exp.Floor | exp.Ceil | exp.Coalesce):
            others = [v for k, v in node.args.items() if k != "this" and v is not None]
            flat = [x for v in others for x in (v if isinstance(v, list) else [v])]
            if not all(isinstance(x, exp.Expr) and _column_free(x) for x in flat):
                return None
            node = node.this
        else:
            return None


def comparison_operands(node: exp.Expr) -> list[exp.Column] | None:
    """The columns a comparison compares, each directly or through order-keeping steps
    (:func:`monotone_column`), the other operands constants; None if it is not one.

    Such a comparison (``income > 50000``, ``income / 1000 BETWEEN 10 AND 20``,
    ``x IN (1, 2)``, ``x IS NULL``; never ``x > y``) cuts the column's range once: where the
    columns hold a dataset column's own values (``Lineage.filters``), its operands are
    filtered on in a group key or an output, as in WHERE.  Not LIKE, ILIKE or
    starts_with: a pattern per digit spells a number out.
    """
    if not isinstance(node, _COMPARISONS):
        return None
    columns = []
    for child in node.iter_expressions():
        if _column_free(child):
            continue
        column = monotone_column(child)
        if column is None:
            return None
        columns.append(column)
    # One operand with a column, the rest constants: two order-keeping steps of one
    # column compared with each other repeat along its range (``floor(x / 2) * 2 <>
    # floor(x)`` is its parity: a third attack pass spelled values out to the cent).
    return columns if len(columns) <= 1 else None


def extra_arguments(node: exp.Expr) -> list[str]:
    """The arguments of ``node`` that are set but not understood (for aggregates)."""
    return sorted(
        key
        for key, value in node.args.items()
        if value not in (None, False, []) and key not in AGGREGATE_ARGUMENTS
    )


def row_source(root: exp.Expr, alias: str) -> str:
    """What a source alias stands for, in the analyst's terms (``health.claims``)."""
    for table in root.find_all(exp.Table):
        if table.alias_or_name == alias and table.args.get("db") is not None:
            return f"{table.args['db'].name}.{table.name}"
    if any(cte.alias_or_name == alias for cte in root.find_all(exp.CTE)):
        return f"the CTE {alias}"
    return f"the derived table {alias}"


def closure_refusal(node: exp.Expr, root: exp.Expr, describe: str) -> QueryRefused:
    """The refusal of a node the table does not hold (``describe`` names it as written)."""
    if isinstance(node, exp.TableColumn):
        name = node.name
        return QueryRefused(
            f"{name} stands for the whole row of {row_source(root, name)}: "
            "name the columns you need",
            rule="guard.row_value",
        )
    return QueryRefused(f"{describe} is not supported by the guard", rule="guard.unsupported")


def output_name(projection: exp.Expr) -> str:
    """The name an output is released under, as the operator wrote it: its alias, its
    column, or its SQL text."""
    if isinstance(projection, exp.Alias):
        return projection.alias
    if isinstance(projection, exp.Column):
        return projection.name
    return projection.sql(dialect="duckdb")


def literal_number(node: exp.Expr) -> float | None:
    """The value of a number written as a literal (a sign allowed), else None."""
    if isinstance(node, exp.Neg):
        inner = literal_number(node.this)
        return None if inner is None else -inner
    if not (isinstance(node, exp.Literal) and not node.is_string):
        return None
    try:
        return float(node.name)
    except ValueError:
        return None


def in_window(agg: exp.Expr) -> bool:
    """Is ``agg`` a window's function (``agg OVER (…)``, or ``agg FILTER (…) OVER (…)``)?

    Computed over released rows, as written: the normalisations of aggregates leave it.
    """
    parent = agg.parent
    if isinstance(parent, exp.Filter):
        parent = parent.parent
    return isinstance(parent, exp.Window)


def own_filter(agg: exp.Expr) -> tuple[exp.Where | None, exp.Expr]:
    """An aggregate's own ``FILTER (WHERE …)`` (None: none), and the node a rewrite of the
    aggregate replaces: that FILTER around it, or the aggregate itself."""
    outer = agg.parent
    if isinstance(outer, exp.Filter) and isinstance(outer.expression, exp.Where):
        return outer.expression, outer
    return None, agg


def with_filter(new: exp.Expr, where: exp.Where | None) -> exp.Expr:
    """``new FILTER (WHERE …)`` with a copy of ``where``; ``new`` itself without one."""
    return new if where is None else exp.Filter(this=new, expression=where.copy())
