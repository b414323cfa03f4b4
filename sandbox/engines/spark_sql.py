"""The checked stats query in Spark SQL, closed: what is not known to mean the same is refused.

Pure.  :func:`to_spark` walks the rewritten query (a DuckDB-dialect sqlglot AST)
against an explicit allowlist of node types and functions whose semantics Spark
shares with DuckDB (with ``spark.sql.ansi.enabled=false``, see
:mod:`sandbox.engines.spark`), renders the few DuckDB constructs the rewrite emits in
Spark's words, and only then calls sqlglot's Spark generator.  Anything else is
refused, ``engine.unsupported``, naming the construct as the analyst would (never a
data value):

- ``TRY(x)``: dropped: with ANSI off Spark gives NULL where DuckDB's TRY would
  (division by zero is refused below; ``+ - *`` become ``try_add`` ... so an integer
  overflow is NULL, not a wrapped value);
- ``max(x, n)`` / ``min(x, n)`` (the top-2 contributions, the k-th extreme):
  ``slice(sort_array(collect_list(x)), 1, n)``, NULL over no value as DuckDB gives;
  ``list_extract(l, k)``: ``try_element_at(l, k)``;
- ``QUALIFY``: sqlglot's subquery form; ``epoch_us``: ``unix_micros``; ``dayofweek``:
  Spark's minus one (Sunday is 0 in DuckDB); ``monthname``: the full name;
- a division only by ``NULLIF(..., 0)`` or a non-zero number (``x / 0`` is infinity in
  DuckDB, NULL in Spark); ``//`` of whole numbers only; casts only between types whose
  conversion agrees (a float to an integer only if integral, ``floor(x) * 10``: DuckDB
  rounds, Spark truncates; text only of integers, text, dates, booleans; dates and
  timestamps from ISO literals); ``LIKE``/``ILIKE`` with a plain ASCII pattern (Spark
  escapes with ``\\`` by default, DuckDB not); ``left``/``substr`` by whole literals;
  ``concat`` of text only (numbers print differently); ``strftime`` with ``%Y %m %d %H
  %M``; DuckDB's ``hash()``, quantile histograms and every other function: refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import sqlglot
import sqlglot.errors
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from sandbox.core.errors import QueryRefused

__all__ = ["to_spark"]

RULE = "engine.unsupported"

#: Node types that mean the same in both engines (structure, predicates, plain operators).
ALLOWED: tuple[type[exp.Expr], ...] = (
    exp.Select,
    exp.With,
    exp.CTE,
    exp.From,
    exp.Join,
    exp.Where,
    exp.Group,
    exp.Having,
    exp.Order,
    exp.Ordered,
    exp.Subquery,
    exp.Union,
    exp.Table,
    exp.TableAlias,
    exp.Column,
    exp.Identifier,
    exp.Star,
    exp.Alias,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.And,
    exp.Or,
    exp.Not,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.Neg,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Case,
    exp.If,
    exp.Coalesce,
    exp.Nullif,
    exp.Cast,
    exp.DataType,
    exp.Try,
    exp.Count,
    exp.Sum,
    exp.Min,
    exp.Max,
    exp.Filter,
    exp.Distinct,
    exp.Window,
    exp.Lag,
    exp.RowNumber,
    exp.Qualify,
    exp.Greatest,
    exp.Least,
    exp.Abs,
    exp.MD5,
    exp.Length,
    exp.DPipe,
    exp.Upper,
    exp.Lower,
    exp.DateTrunc,
    exp.TimestampTrunc,
    exp.Extract,
    exp.Var,
    exp.Year,
    exp.Month,
    exp.Day,
    exp.Hour,
    exp.Quarter,
    exp.DayOfWeek,
    exp.Monthname,
    exp.Floor,
    exp.Ceil,
    exp.IntDiv,
    exp.Like,
    exp.ILike,
    exp.StartsWith,
    exp.Left,
    exp.Substring,
    exp.Concat,
    exp.TimeToStr,
    exp.Anonymous,
)
#: Functions sqlglot does not know by class, by their DuckDB name.
ANONYMOUS = frozenset({"list_extract", "epoch_us"})
#: Units of date_trunc and extract that both engines count alike (DuckDB's week and
#: Spark's both start on Monday; no day-of-week: Sunday is 0 in one and 1 in the other).
UNITS = frozenset({"year", "quarter", "month", "week", "day", "hour", "minute"})
INTEGERS = frozenset({"TINYINT", "SMALLINT", "INT", "BIGINT"})
NUMBERS = INTEGERS | {"FLOAT", "DOUBLE", "DECIMAL"}
TEXT = frozenset({"VARCHAR", "TEXT"})
TIMES = frozenset({"DATE", "TIMESTAMP", "DATETIME"})
#: A date or timestamp literal both engines read alike (ISO 8601, as DuckDB prints them).
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?")
#: strftime formats whose Spark pattern (sqlglot's translation) prints the same text.
STRFTIME = re.compile(r"(%[YmdHM]|[-:/ 0-9])*")
#: Target type -> the source types whose conversion both engines agree on.
CASTS: dict[str, frozenset[str]] = {
    "DOUBLE": NUMBERS | {"BOOLEAN"},
    "BIGINT": INTEGERS | {"BOOLEAN"},
    "INT": INTEGERS | {"BOOLEAN"},
    "VARCHAR": INTEGERS | TEXT | {"DATE", "BOOLEAN"},
    "TEXT": INTEGERS | TEXT | {"DATE", "BOOLEAN"},
    "DATE": TIMES,
    "TIMESTAMP": TIMES,
}


def _refuse(what: str) -> QueryRefused:
    return QueryRefused(
        f"{what} is not computed alike on the Spark engine; run it on a DuckDB dataset or "
        "write it without",
        rule=RULE,
    )


def _type_name(node: exp.Expr) -> str:
    dtype = node.type
    if dtype is None or dtype.this == exp.DataType.Type.UNKNOWN:
        return ""
    return dtype.sql(dialect="duckdb").upper().split("(")[0]


def _name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return f"{node.name.lower()}()"
    if isinstance(node, exp.Func):
        return f"{node.sql_name().lower()}()"
    return node.key.upper()


def _unit(node: exp.Expr) -> str:
    unit = node.args.get("unit") if not isinstance(node, exp.Extract) else node.this
    if isinstance(node, exp.DateTrunc | exp.TimestampTrunc) and unit is None:
        unit = node.this
    return unit.name.lower() if isinstance(unit, exp.Expr) else str(unit or "").lower()


def _check(node: exp.Expr) -> None:
    """Refuse one node unless it is known to mean the same on Spark."""
    if isinstance(node, exp.WindowSpec):  # a frame: only the running total's, of rows
        window = node.parent
        whole = node.args.get("start") == "UNBOUNDED" and node.args.get("end") == "CURRENT ROW"
        if isinstance(window, exp.Window) and _running_cell_rows(window) and whole:
            if node.args.get("kind") == "ROWS":
                return
        raise _refuse("a window frame")
    if not isinstance(node, ALLOWED):
        raise _refuse(_name(node))
    if isinstance(node, exp.Anonymous) and node.name.lower() not in ANONYMOUS:
        raise _refuse(_name(node))
    if isinstance(node, exp.DateTrunc | exp.TimestampTrunc | exp.Extract):
        if _unit(node) not in UNITS:
            raise _refuse(f"{_name(node)} by {_unit(node) or 'this unit'}")
    if isinstance(node, exp.Div):
        divisor = node.expression.unnest()
        nonzero = (
            isinstance(divisor, exp.Literal) and divisor.is_number and float(divisor.name) != 0
        )
        if not (nonzero or isinstance(divisor, exp.Nullif)):
            raise _refuse("a division by a value that may be zero (infinity in DuckDB)")
    if isinstance(node, exp.Cast):
        target = node.to.sql(dialect="duckdb").upper().split("(")[0]
        source = _type_name(node.this)
        if source == target or source in CASTS.get(target, frozenset()):
            return
        literal = node.this.unnest()
        if target in TIMES and _string(literal) and ISO_TIME.fullmatch(literal.name):
            return  # DATE '2025-07-01'
        if target in INTEGERS and _integral(literal):
            return  # floor(age / 10) * 10 AS INT: an integral value, converted exactly
        if target in TEXT and node.find_ancestor(exp.MD5) is not None:
            # The rewrite's portable cap hash (no operator may call md5): it vetted each
            # value's type (rewrite._portable_kinds) and casts only integers, text, dates,
            # booleans and epoch microseconds to text.
            return
        raise _refuse(f"a conversion of {source.lower() or 'a derived value'} to {target.lower()}")
    if isinstance(node, exp.Window) and not isinstance(node.this, exp.Lag | exp.RowNumber):
        if not _running_cell_rows(node):
            raise _refuse(f"the window function {_name(node.this)}")
    _check_function(node)


#: The per-cell row count the rewrite's total cap adds up (``entity_caps.CELL_ROWS``; a
#: window the guard never lets an operator write: it refuses every window function).
_CELL_ROWS = "__sbx_r"


def _running_cell_rows(node: exp.Window) -> bool:
    """The total cap's running total: ``sum`` of the whole-number per-cell row counts, a
    sum of integers both engines compute exactly over the same ordered rows."""
    arg = node.this.this if isinstance(node.this, exp.Sum) else None
    return isinstance(arg, exp.Column) and arg.name == _CELL_ROWS and not arg.table


def _string(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def _whole(node: exp.Expr | None, least: int) -> bool:
    """A whole-number literal of at least ``least``."""
    return isinstance(node, exp.Literal) and node.is_int and int(node.name) >= least


def _integral(node: exp.Expr) -> bool:
    """``floor(x)``, ``ceil(x)``, or one times a whole number: an integral double."""
    node = node.unnest()
    if isinstance(node, exp.Floor | exp.Ceil):
        return node.args.get("decimals") is None
    if isinstance(node, exp.Mul):
        a, b = node.this.unnest(), node.expression.unnest()
        return (_integral(a) and _whole(b, 0)) or (_whole(a, 0) and _integral(b))
    return False


def _check_function(node: exp.Expr) -> None:
    """The functions allowed only with arguments on which the engines agree."""
    if isinstance(node, exp.Floor | exp.Ceil) and node.args.get("decimals") is not None:
        raise _refuse(f"{_name(node)} to decimals")
    if isinstance(node, exp.IntDiv):
        types = {_type_name(node.this), _type_name(node.expression)}
        if not types <= INTEGERS:
            raise _refuse("// of a value that is not a whole number")
    if isinstance(node, exp.Like | exp.ILike):
        pattern = node.expression.unnest()
        if not _string(pattern) or "\\" in pattern.name or not pattern.name.isascii():
            raise _refuse(f"{node.key.upper()} but with a plain ASCII pattern (no escape)")
    if isinstance(node, exp.Left) and not _whole(node.expression, 0):
        raise _refuse("left() but by a whole number of characters")
    if isinstance(node, exp.Substring):
        length = node.args.get("length")
        if not _whole(node.args.get("start"), 1) or (length is not None and not _whole(length, 0)):
            raise _refuse("substr() but from a position of 1 or more, by a whole length")
    if isinstance(node, exp.Concat):
        if any(_type_name(arg) not in TEXT for arg in node.expressions):
            raise _refuse("concat() of a value that is not text (numbers print differently)")
    if isinstance(node, exp.TimeToStr):
        form = node.args.get("format")
        if form is None or not _string(form) or not STRFTIME.fullmatch(form.name):
            raise _refuse("strftime() but with %Y, %m, %d, %H and %M only")


def _top(agg: exp.Min | exp.Max, condition: exp.Expr | None) -> exp.Expr:
    """DuckDB's ``max(x, n)`` (``min``): the n largest (smallest) non-NULL values, NULL if none."""
    where = "" if condition is None else f" FILTER (WHERE {condition.sql(dialect='spark')})"
    value = agg.this.sql(dialect="spark")
    n = agg.args["count"].sql(dialect="spark")
    order = "FALSE" if isinstance(agg, exp.Max) else "TRUE"
    return sqlglot.parse_one(
        f"IF(COUNT({value}){where} = 0, NULL, "
        f"SLICE(SORT_ARRAY(COLLECT_LIST({value}){where}, {order}), 1, {n}))",
        read="spark",
    )


ARITHMETIC: dict[type[exp.Expr], str] = {
    exp.Add: "try_add",
    exp.Sub: "try_subtract",
    exp.Mul: "try_multiply",
}
RENAMED = {"list_extract": "try_element_at", "epoch_us": "unix_micros"}


def _spark_forms(tree: exp.Expr) -> exp.Expr:
    """The DuckDB constructs of the rewrite in Spark's words (every node checked before).

    Each replacement keeps its operands as they are, so one pass over a list of the
    nodes taken first rewrites nested ones too."""
    for agg in list(tree.find_all(exp.Min, exp.Max)):
        if not isinstance(agg, exp.Min | exp.Max) or agg.args.get("count") is None:
            continue
        if isinstance(agg.parent, exp.Filter):
            agg.parent.replace(_top(agg, agg.parent.expression.this))
        else:
            agg.replace(_top(agg, None))
    for day in list(tree.find_all(exp.DayOfWeek, exp.Monthname)):
        if isinstance(day, exp.DayOfWeek):  # Sunday is 0 in DuckDB, 1 in Spark
            spark_day = exp.Anonymous(this="dayofweek", expressions=[day.this])
            replaced: exp.Expr = exp.Paren(
                this=exp.Sub(this=spark_day, expression=exp.Literal.number(1))
            )
        else:  # DuckDB's monthname is the full English name; Spark's, three letters
            replaced = exp.Anonymous(
                this="date_format", expressions=[day.this, exp.Literal.string("MMMM")]
            )
        day.replace(replaced)
    for node in list(tree.find_all(exp.Try, exp.Add, exp.Sub, exp.Mul, exp.Anonymous)):
        if isinstance(node, exp.Try):
            replacement: exp.Expr = node.this
        elif isinstance(node, exp.Anonymous):
            name = RENAMED.get(node.name.lower())
            if name is None:
                continue
            replacement = exp.Anonymous(this=name, expressions=list(node.expressions))
        else:
            replacement = exp.Anonymous(
                this=ARITHMETIC[type(node)], expressions=[node.this, node.expression]
            )
        if node is tree:
            tree = replacement
        else:
            node.replace(replacement)
    return tree


def to_spark(
    query: exp.Expr,
    views: Mapping[str, str],
    schema: Mapping[str, Mapping[str, str]],
) -> str:
    """Spark SQL for the checked stats ``query``, or :class:`QueryRefused` (``engine.unsupported``).

    ``views``: each dataset id (``domain.table``) to the Spark view that holds it;
    ``schema``: each dataset's column DuckDB types (to check conversions).  ``query`` is
    not changed.
    """
    if not isinstance(query, exp.Select):
        raise _refuse(f"a {query.key.upper()} statement (only a SELECT runs)")
    nested: dict[str, object] = {}
    for dataset, columns in schema.items():
        domain, _, name = dataset.partition(".")
        tables = nested.setdefault(domain, {})
        assert isinstance(tables, dict)
        tables[name] = dict(columns)
    tree: exp.Expr = annotate_types(query.copy(), schema=nested, dialect="duckdb")
    for node in tree.walk():
        _check(node)
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        assert isinstance(table, exp.Table)
        if not table.db and table.name.lower() in ctes:
            continue  # a CTE of the query itself
        dataset = f"{table.db}.{table.name}".lower()
        if dataset not in views:
            raise _refuse(f"a table that is no dataset of this query ({table.name})")
        alias = table.alias or table.name
        table.replace(exp.to_table(views[dataset], alias=exp.to_identifier(alias, quoted=True)))
    tree = _spark_forms(tree)
    try:
        return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.UnsupportedError:
        raise _refuse("a construct of this query") from None
