"""The two closure passes over a qualified query: before the rules, and after them.

``check_closed`` runs before any rule: every node must have a kind in the node-kind
table (``nodes.py``), so qualification cannot slip in a node no rule looks at (a
source's alias used as a value becomes a ``TableColumn``, the whole row), and an
accepted aggregate may carry only the argument its rule reads; casts to nested types
(a list constructor in disguise), types and constants that hold an expression and the
empty row ``()`` are refused.  ``check_writable``
runs after the rules, so that a refusal naming a column comes first: a join's
matching method and anything sqlglot would drop when writing the query for DuckDB
are arguments no rule read.  Pure functions; refusals name the analyst's words.
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from sandbox.core.errors import QueryRefused
from sandbox.query.nodes import Kind, closure_refusal, extra_arguments, row_source
from sandbox.query.parse import AGGREGATES, NODE_KINDS
from sandbox.query.spelling import describe

__all__ = ["check_closed", "check_writable"]


def check_closed(root: exp.Expr, sql: str) -> None:
    """Every node of the qualified query has a kind: nothing passes because no rule looked.

    ``sql`` is the analyst's text (refusals name its functions as written).
    """
    for node in root.walk():
        if type(node) not in NODE_KINDS:
            raise closure_refusal(node, root, describe(node, sql))
        if type(node) in AGGREGATES and extra_arguments(node):
            raise QueryRefused(
                f"{describe(node, sql)} takes one column here (forms with more arguments, "
                "such as max(x, n) for the n largest values, are not supported)",
                rule="guard.aggregate_argument",
            )
        if isinstance(node, exp.DataType) and node.this in exp.DataType.NESTED_TYPES:
            raise QueryRefused(
                f"a cast to {_written_type(node)} makes a nested value (a list, struct "
                "or map): cast to a plain type",
                rule="guard.unsupported",
            )
        if NODE_KINDS[type(node)] is Kind.CONSTANT and _holds_expression(node):
            raise QueryRefused(
                f"{describe(node, sql)} with a column or expression inside is not "
                "supported: write it without arguments",
                rule="guard.unsupported",
            )
        if isinstance(node, exp.DataType) and _holds_expression(node):
            raise QueryRefused(
                "an expression where a cast's type goes is not supported: a type's "
                "parameters are numbers, as in DECIMAL(18, 2)",
                rule="guard.unsupported",
            )
        if isinstance(node, exp.Tuple) and not node.expressions:
            raise QueryRefused("() is an empty row value: name a column", rule="guard.row_value")
        if isinstance(node, exp.Column) and isinstance(node.this, exp.Star):
            raise QueryRefused(
                f"{node.table}.* stands for every column of {row_source(root, node.table)}: "
                "name the columns you need (count(*) counts rows)",
                rule="guard.star",
            )


def check_writable(root: exp.Expr) -> None:
    """Last, after the rules that name a column: arguments no rule read.

    A join's matching method (ASOF, POSITIONAL ...), and whatever sqlglot would drop
    when writing the query for DuckDB (the query would run as something else).
    """
    for join in root.find_all(exp.Join):
        if join.args.get("method"):
            raise QueryRefused(f"{join.args['method']} joins are not allowed", rule="guard.join")
    try:
        root.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError:
        raise QueryRefused(
            "part of the query has no DuckDB form as written (an argument would be "
            "dropped): write it as DuckDB documents it",
            rule="guard.unsupported",
        ) from None


#: What a leaf or a constant may hold: types' own parts and literal parameters.  The rules
#: look inside neither (``column_rules.walk``), so a column written where a type parameter
#: goes (``CAST(x AS f(c.id_number))``, a user-defined type) or as a constant's argument
#: (``current_date(c.id_number)``) passed unread.
_TYPE_PARTS = (exp.DataType, exp.DataTypeParam, exp.Literal, exp.Identifier, exp.Var)


def _holds_expression(node: exp.Expr) -> bool:
    return any(not isinstance(part, _TYPE_PARTS) for part in node.walk() if part is not node)


def _written_type(node: exp.Expr) -> str:
    """A type as DuckDB spells it (sqlglot writes VARCHAR as TEXT)."""
    return re.sub(r"\bTEXT\b", "VARCHAR", node.sql(dialect="duckdb"))
