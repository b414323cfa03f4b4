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
  key or an output only where it compares bare columns and constants: ``bare_comparison``);
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
    "bare_comparison",
    "closure_refusal",
    "extra_arguments",
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


def _bare_operand(node: exp.Expr) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return isinstance(node, exp.Column) or node.find(exp.Column) is None


def bare_comparison(node: exp.Expr) -> bool:
    """A comparison of bare columns and constants (``income > 50000``, ``x BETWEEN 1 AND 9``,
    ``x IN (1, 2)``, ``x IS NULL``): where its operands are filtered on in a group key or
    an output, as in WHERE.

    Each such comparison cuts one column's range at its constants, so a key made of m of
    them splits a measure into at most 2m + 1 intervals (bounded by the query's length).
    A comparison of an expression of the column (``floor(x / 2^k) % 2 = 1``) is one truth
    value too, but m of them spell the value out bit by bit, so there the column keeps
    the key's (or output's) own rule.
    """
    if not isinstance(node, _COMPARISONS):
        return False
    return all(_bare_operand(child) for child in node.iter_expressions())


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
