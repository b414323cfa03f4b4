"""The role-by-clause table: where a column of each role may be used, and the rule if not.

One declaration, consulted by the guard for every column use (``ColumnRules.use``
in ``column_rules.py``) and printed into ``docs/guard.md`` by
``python -m sandbox.query.guard_doc``, so the
documented table is the behaviour. The table is total: every (role, context) pair
has a cell, and a context the walks do not name is a programming error (ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from sandbox.core.classification import Role

__all__ = ["USES", "Context", "Needs", "Use", "markdown"]


class Context(StrEnum):
    """Where a column reference stands, as the guard's walks name it (value: the name)."""

    OUTPUT = "output"
    KEY = "key"
    PREDICATE = "predicate"
    JOIN = "join"
    PASSTHROUGH = "passthrough"
    INNER_EXPRESSION = "inner_expression"
    COUNT_DISTINCT = "count_distinct"
    DISTINCT_VALUES = "distinct_values"
    COUNT_ARGUMENT = "count_argument"
    VALUE_AGGREGATE = "value_aggregate"
    RECORD_AGGREGATE = "record_aggregate"


#: The clause each context stands for, in the analyst's words (the doc table's rows).
CLAUSES: dict[Context, str] = {
    Context.OUTPUT: "SELECT output, HAVING, ORDER BY (outside an aggregate, not a group key)",
    Context.KEY: "GROUP BY key (outside a predicate)",
    Context.PREDICATE: (
        "WHERE, FILTER (WHERE …), a JOIN ON filter; in an output or a GROUP BY key (a CASE "
        "condition included), a comparison of a column's own values, or an order-keeping "
        "step of them, with constants (`x >= 1000`, `x / 1000 BETWEEN a AND b`, `x IN (…)`, "
        "`x IS NULL`)"
    ),
    Context.JOIN: "JOIN ON key equality (after the declared-pair check)",
    Context.PASSTHROUGH: "derived table or CTE: a bare column (rename)",
    Context.INNER_EXPRESSION: "derived table or CTE: an expression of the column",
    Context.COUNT_DISTINCT: "`count(DISTINCT key)` or `count(key)` of a dataset's entity key",
    Context.DISTINCT_VALUES: "`count(DISTINCT x)` of any other column: how many values",
    Context.COUNT_ARGUMENT: "`count(x)`",
    Context.VALUE_AGGREGATE: "`sum`, `avg`, `stddev`, `variance`, quantiles: argument",
    Context.RECORD_AGGREGATE: "`min`, `max` and record-value aggregates: argument",
}


class Needs(Enum):
    """What a use requires of the column (beyond the grant's level and column list)."""

    NOTHING = "allowed"
    BARE = "a bare column only"
    GROUPABLE = "if the grant lists it as groupable"
    MEASURE_USE = "if its classification declares a measure use"
    NEVER = "refused"


@dataclass(frozen=True)
class Use:
    """One cell: what the use needs, and the rule and message when it is not met.

    ``message`` is formatted with ``where`` (``domain.table.column in <clause>``),
    ``role``, ``name`` (the column) and ``entity_key`` (its dataset's).
    """

    needs: Needs
    rule: str = ""
    message: str = ""


_IDENTIFIER = Use(
    Needs.NEVER,
    "guard.identifier",
    "identifier {where}: identifiers may only be counted, as count(DISTINCT {entity_key}) "
    "(entities) or count({entity_key}) (their rows), or used as declared join keys",
)
_RECORD = Use(
    Needs.NEVER,
    "guard.aggregate_record_value",
    "{role} column {where}: aggregates that return one record's value are allowed on "
    "dimension columns only",
)
#: A measure's min or max is one person's value; a quantile is the nearest thing it has.
_RECORD_MEASURE = Use(
    Needs.NEVER,
    _RECORD.rule,
    _RECORD.message + "; under a privacy budget a high or low quantile is answered "
    "instead: quantile_cont({name}, 0.99), quantile_cont({name}, 0.01)",
)
_MEASURE = Use(
    Needs.NEVER,
    "guard.measure",
    "measure {where}: measures may only be aggregated (sum, avg, stddev, variance, count: "
    "e.g. sum({name})) or filtered on; in a group key or an output, cut the column itself "
    "at constants you choose (e.g. CASE WHEN {name} < c1 THEN 'low' WHEN {name} < c2 "
    "THEN 'middle' ELSE 'high' END)",
)
_DIMENSION_VALUE = Use(
    Needs.MEASURE_USE,
    "guard.aggregate_argument",
    "dimension {where}: sum, avg, stddev, variance, corr and covar take measures",
)
_OK = Use(Needs.NOTHING)


def _grouped(role: Role) -> Use:
    return Use(
        Needs.GROUPABLE,
        f"guard.{role.value}",
        "{role} column {where}: the grant does not allow grouping or filtering on it",
    )


def _counted(role: Role, needs: Needs) -> Use:
    return Use(
        needs,
        f"guard.{role.value}",
        "{role} column {where} may only be grouped or counted "
        "(its classification declares no measure use)",
    )


def _identifier(context: Context) -> Use:
    bare = context in (Context.PASSTHROUGH, Context.COUNT_DISTINCT, Context.JOIN)
    return Use(Needs.BARE, _IDENTIFIER.rule, _IDENTIFIER.message) if bare else _IDENTIFIER


def _quasi(role: Role, context: Context) -> Use:
    # How many distinct values a group holds is a statement about them, as grouping is.
    grouping = (Context.KEY, Context.PREDICATE, Context.INNER_EXPRESSION, Context.DISTINCT_VALUES)
    if context in grouping:
        return _grouped(role)
    if context is Context.VALUE_AGGREGATE:
        return _counted(role, Needs.MEASURE_USE)
    if context is Context.OUTPUT:
        return _counted(role, Needs.NEVER)
    return _RECORD if context is Context.RECORD_AGGREGATE else _OK


def _cell(role: Role, context: Context) -> Use:
    if role is Role.IDENTIFIER:
        return _identifier(context)
    if role in (Role.QUASI, Role.SENSITIVE):
        return _quasi(role, context)
    if role is Role.MEASURE:
        if context is Context.RECORD_AGGREGATE:
            return _RECORD_MEASURE
        return _MEASURE if context in (Context.KEY, Context.OUTPUT) else _OK
    if context is Context.VALUE_AGGREGATE:  # a dimension
        return _DIMENSION_VALUE
    return _OK


#: Every (role, context) pair: what it needs and the rule that refuses it.
USES: dict[tuple[Role, Context], Use] = {
    (role, context): _cell(role, context) for role in Role for context in Context
}


def _text(use: Use) -> str:
    if use.needs is Needs.NOTHING:
        return "✓"
    if use.needs is Needs.NEVER:
        return f"✗ `{use.rule}`"
    return f"{use.needs.value}, else `{use.rule}`"


def markdown() -> str:
    """The table as docs/guard.md holds it (one row per clause, one column per role)."""
    roles = list(Role)
    lines = [
        "| clause | " + " | ".join(role.value for role in roles) + " |",
        "|---" * (len(roles) + 1) + "|",
    ]
    for context in Context:
        cells = [_text(USES[(role, context)]) for role in roles]
        lines.append(f"| {CLAUSES[context]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
