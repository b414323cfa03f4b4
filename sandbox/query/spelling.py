"""How a refusal names what the analyst wrote: their function name, their operator.

sqlglot canonicalises while parsing: ``quantile_cont(x, 0.5)`` becomes a
``PercentileCont`` node, ``a // b`` an ``IntDiv``, ``xor(a, b)`` a ``BitwiseXor``.
A message built from the node (``percentile_cont()``, ``INTDIV syntax``) names
something the analyst never typed.  These functions find the spelling in the SQL
text instead: a function by the words the text calls (a word right before ``(``)
that parse to the same node type, an operator by the token the dialect writes for
it.  Pure functions over the operator's own SQL; never a data value.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel
from sqlglot.tokens import TokenType

from sandbox.query.comoments import WRITTEN_AS
from sandbox.query.dialects import respell

__all__ = ["called", "describe", "written_name"]

#: What some node types are called in SQL, where the node has no one-token operator.
_SYNTAX: dict[type[exp.Expr], str] = {
    exp.Array: "list literals `[...]`",
    exp.Struct: "struct literals `{...}`",
    exp.Bracket: "subscripts `x[...]`",
    exp.Lambda: "lambdas `x -> ...`",
    exp.BitwiseNot: "bitwise NOT `~`",
    exp.RegexpLike: "regular-expression matching (`~`, `regexp_matches`)",
    exp.StartsWith: "prefix matching (`^@`, `starts_with`)",
    exp.Any: "ANY / SOME",
    exp.All: "ALL",
    exp.PositionalColumn: "positional columns `#n`",
    exp.Collate: "COLLATE",
    exp.WithinGroup: "WITHIN GROUP",
    exp.GroupingSets: "GROUPING SETS",
    exp.Rollup: "ROLLUP",
    exp.Cube: "CUBE",
    exp.Qualify: "QUALIFY",
    exp.Pivot: "PIVOT",
    exp.TableSample: "TABLESAMPLE / USING SAMPLE",
    exp.Values: "VALUES lists",
    exp.Lateral: "LATERAL",
    exp.Offset: "OFFSET",
    exp.Dot: "field access `x.field`",
    exp.ColumnDef: "type definitions",
    exp.ByteString: "byte-string literals `x'...'`",
}

#: A name for an operator whose token alone says little.
_OPERATORS: dict[type[exp.Expr], str] = {
    exp.IntDiv: "integer division",
    exp.BitwiseAnd: "bitwise AND",
    exp.BitwiseOr: "bitwise OR",
    exp.BitwiseXor: "bitwise XOR",
    exp.BitwiseLeftShift: "left shift",
    exp.BitwiseRightShift: "right shift",
    exp.JSONExtract: "JSON extraction",
    exp.JSONExtractScalar: "JSON extraction",
    exp.Distance: "distance",
    exp.ArrayContainsAll: "list containment",
    exp.ArrayContainedBy: "list containment",
    exp.ArrayOverlaps: "list overlap",
}


def called(sql: str) -> tuple[str, ...]:
    """The words ``sql`` calls as functions, in order, once each, lower case."""
    try:
        tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(sql)
    except Exception:  # a text that does not tokenize names nothing
        return ()
    words = [
        token.text.lower()
        for token, after in pairwise(tokens)
        if after.token_type is TokenType.L_PAREN and token.text.isidentifier()
    ]
    return tuple(dict.fromkeys(words))


@lru_cache(maxsize=4096)
def _call_type(word: str) -> type[exp.Expr] | None:
    """The node type sqlglot makes of ``word(x)`` (``quantile_cont`` -> PercentileCont)."""
    try:
        select = sqlglot.parse_one(
            f"SELECT {word}(x)", read="duckdb", error_level=ErrorLevel.IGNORE
        )
    except Exception:  # a keyword (``IN``, ``AS``), not a function
        return None
    if not isinstance(select, exp.Select) or not select.expressions:
        return None
    respell(select)  # ``std`` is read as MySQL's stddev_pop
    node = select.expressions[0]
    while isinstance(node, exp.IgnoreNulls | exp.RespectNulls):
        node = node.this
    return type(node)


def written_name(node: exp.Expr, calls: Sequence[str]) -> str | None:
    """The function name the analyst wrote for ``node``, or None if none of ``calls`` is it.

    ``calls`` is what :func:`called` found in the query.  Several spellings of one
    function in one query: the canonical one if written, else the first.
    """
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(given := node.meta.get(WRITTEN_AS), str):
        return given  # a part of what the analyst wrote, respelled (comoments: corr's sums)
    own = node.sql_name().lower() if isinstance(node, exp.Func) else None
    if own in calls:  # the common case, no parsing: ``count``, ``sum``
        return own
    names = [word for word in calls if _call_type(word) is type(node)]
    return names[0] if names else None


def _operator(node: exp.Binary) -> str | None:
    """The token the dialect writes between the operands (``//``), if it writes one."""
    try:
        text = type(node)(this=exp.column("a"), expression=exp.column("b")).sql(dialect="duckdb")
    except Exception:  # a node that cannot be rebuilt from two operands
        return None
    if text.startswith("a ") and text.endswith(" b"):
        return text[2:-2]
    return None


def describe(node: exp.Expr, sql: str) -> str:
    """``function quantile_cont()``, ``integer division `//```, ``WITHIN GROUP``: SQL words."""
    written = written_name(node, called(sql))
    if written is not None and (isinstance(node, exp.Func) or type(node) not in _SYNTAX):
        return f"function {written}()"
    if type(node) in _SYNTAX:
        return _SYNTAX[type(node)]
    if isinstance(node, exp.Binary) and (op := _operator(node)) is not None:
        label = _OPERATORS.get(type(node))
        return f"{label} `{op}`" if label else f"the operator `{op}`"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name().lower()}()"
    return f"{node.key.upper()} syntax"
