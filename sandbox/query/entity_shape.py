"""Recognising a per-entity table: a SELECT grouped by its dataset's entity key.

What ``entity_table.lift`` reads as a table of one row per entity, and what it refuses
(``guard.per_entity``), from the query's shape alone: the dataset, its entity key, the
other keys (declared one value per entity), the named aggregates and the HAVING over
them.  Pure functions over sqlglot trees; the classification is read, never data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.errors import QueryRefused
from sandbox.query.lineage import dataset_id

__all__ = [
    "RULE",
    "EntityColumn",
    "having_filter",
    "is_source",
    "per_entity",
    "refuse",
    "shape",
    "why_not",
]

RULE = "guard.per_entity"
#: What an inner SELECT grouped by the entity key may compute per entity.
_COUNTS = (exp.Count,)
_VALUES = (exp.Sum, exp.Avg, exp.Min, exp.Max)
_HINT = (
    "a per-entity table groups by the entity key only and names each of its aggregates: "
    "SELECT {key}, count(*) AS n, sum(col) AS total FROM {dataset} GROUP BY {key}"
)


@dataclass(frozen=True)
class EntityColumn:
    """One aggregate of a per-entity table: its name, function and column."""

    name: str
    function: str  # count | count_distinct | count_star | sum | avg | min | max
    source: str | None  # the dataset column, lower case (None for count(*))
    #: ``FILTER (WHERE …)``: the condition as written (checked and run as a WHERE is)
    condition: exp.Expr | None = None

    def same_as(self, other: EntityColumn) -> bool:
        """Computes what ``other`` does (a HAVING's aggregate an output already names)."""
        mine = None if self.condition is None else self.condition.sql(dialect="duckdb")
        theirs = None if other.condition is None else other.condition.sql(dialect="duckdb")
        return (self.function, self.source, mine) == (other.function, other.source, theirs)


def is_source(select: exp.Select) -> bool:
    """A SELECT standing as a FROM or JOIN source, or as a CTE's body."""
    parent = select.parent
    if isinstance(parent, exp.CTE):
        return True
    return isinstance(parent, exp.Subquery) and isinstance(parent.parent, exp.From | exp.Join)


def per_entity(
    select: exp.Select, access: Mapping[str, DatasetAccess]
) -> tuple[str, str, tuple[str, ...]] | None:
    """(dataset, entity key, other keys) where ``select`` groups one dataset by its
    entity key, and by nothing else but columns declared to hold one value per entity
    (``values_per_entity = 1``: a person's district)."""
    table, dataset = _source(select)
    if table is None or dataset is None:
        return None
    grant = access.get(dataset)
    if grant is None or grant.derived_sql is not None:
        return None
    entity = grant.spec.entity_key.lower()
    group = _group_keys(select)
    if not any(_is_column(g, entity, table) for g in group):
        return None
    others: list[str] = []
    for key in group:
        if _is_column(key, entity, table):
            continue
        if not isinstance(key, exp.Column) or key.table.lower() not in (
            "",
            table.alias_or_name.lower(),
        ):
            return None
        name = key.name.lower()
        try:
            declared = grant.spec.column(name).values_per_entity
        except KeyError:
            return None
        if declared != 1 or name in others:
            return None
        others.append(name)
    return dataset, entity, tuple(others)


def why_not(select: exp.Select, access: Mapping[str, DatasetAccess]) -> str | None:
    """Why a SELECT grouped by an entity key (and more) is not a per-entity table; None
    where it is one, or groups by no entity key at all."""
    _table, dataset = _source(select)
    keys = [k for k in _group_keys(select) if isinstance(k, exp.Column)]
    grant = access.get(dataset) if dataset else None
    if grant is None:
        entities = {a.spec.entity_key.lower() for a in access.values()}
        if any(k.name.lower() in entities for k in keys):
            return (
                "a per-entity table reads a dataset directly, not a CTE or derived table: "
                "put their filter in its WHERE"
            )
        return None
    entity = grant.spec.entity_key.lower()
    names = [k.name.lower() for k in keys]
    if entity not in names:
        return None
    if select.args.get("joins"):
        return f"a per-entity table reads {dataset} alone, without a join"
    several = [n for n in names if n != entity and not _one_per_entity(grant, n)]
    if several:
        return (
            f"a per-entity table groups by {entity} and by columns of one value per "
            f"{entity} only (declared values_per_entity = 1), which {several[0]} is not: "
            f"group by {entity} alone, or by {several[0]} in the outer query"
        )
    return None


def _source(select: exp.Select) -> tuple[exp.Table | None, str | None]:
    """The SELECT's FROM table and the dataset it names (None, None for anything else)."""
    from_ = select.args.get("from_")
    table = from_.this if from_ is not None else None
    if not isinstance(table, exp.Table):
        return None, None
    dataset = dataset_id(table)
    return (table, dataset) if dataset is not None else (None, None)


def _one_per_entity(grant: DatasetAccess, column: str) -> bool:
    try:
        return grant.spec.column(column).values_per_entity == 1
    except KeyError:
        return False


def _group_keys(select: exp.Select) -> list[exp.Expr]:
    """A SELECT's GROUP BY keys, ``GROUP BY 1`` and ``GROUP BY ALL`` read as the outputs
    they name (the outputs that are no aggregate, for ALL)."""
    group = select.args["group"]
    outputs = [p.unalias() for p in select.expressions]
    if group.args.get("all"):
        return [o for o in outputs if not o.find(exp.AggFunc)]
    keys = []
    for key in group.expressions:
        if isinstance(key, exp.Literal) and not key.is_string and key.this.isdigit():
            position = int(key.this)
            keys.append(outputs[position - 1] if 0 < position <= len(outputs) else key)
        else:
            keys.append(key)
    return keys


def _is_column(node: exp.Expr, name: str, table: exp.Table) -> bool:
    return (
        isinstance(node, exp.Column)
        and node.name.lower() == name
        and node.table.lower() in ("", table.alias_or_name.lower())
    )


def refuse(message: str) -> QueryRefused:
    return QueryRefused(message, rule=RULE)


def shape(
    select: exp.Select, dataset: str, entity: str, others: tuple[str, ...]
) -> tuple[str, dict[str, str], list[EntityColumn]]:
    """The key's output name, the other keys' (output name: column) and the aggregates
    of a SELECT grouped by ``entity`` and ``others``."""
    hint = _HINT.format(key=entity, dataset=dataset)
    table = select.args["from_"].this
    for arg in ("joins", "laterals", "distinct", "order", "limit", "offset", "qualify", "with_"):
        if select.args.get(arg):
            what = {
                "joins": "a join",
                "laterals": "a lateral join",
                "with_": "a CTE",
                "order": "ORDER BY",
            }.get(arg, arg.upper())
            raise refuse(f"{what} inside a per-entity table is not supported: {hint}")
    key_name: str | None = None
    keys: dict[str, str] = {}
    columns: list[EntityColumn] = []
    for proj in select.expressions:
        body = proj.unalias()
        name = proj.alias_or_name if isinstance(proj, exp.Alias) else None
        if _is_column(body, entity, table):
            key_name = (name or entity).lower()
            continue
        other = next((o for o in others if _is_column(body, o, table)), None)
        if other is not None:
            keys[(name or other).lower()] = other
            continue
        if name is None:
            raise refuse(f"name each aggregate of a per-entity table with AS: {hint}")
        if not isinstance(body, exp.AggFunc | exp.Filter) and body.find(exp.AggFunc):
            raise refuse(
                f"{name}: a per-entity table's columns are single aggregates; compute "
                "over them in the outer query (avg(col) is sum(col) / count(col) per "
                f"entity): {hint}"
            )
        columns.append(EntityColumn(name.lower(), *_aggregate(body, table, hint)))

    if not columns and not select.args.get("having"):
        raise refuse(f"a per-entity table computes at least one aggregate: {hint}")
    names = [c.name for c in columns] + [key_name or entity, *keys]
    if len(set(names)) != len(names):
        raise refuse("the columns of a per-entity table need distinct names")
    return key_name or entity, keys, columns


def _aggregate(
    node: exp.Expr, table: exp.Table, hint: str
) -> tuple[str, str | None, exp.Expr | None]:
    """(function, column, FILTER condition) of one per-entity aggregate; refused unless
    a known form."""
    condition = None
    if isinstance(node, exp.Filter):
        condition = node.expression.this.copy()
        node = node.this
    function, column = _plain_aggregate(node, table, hint)
    return function, column, condition


def _plain_aggregate(node: exp.Expr, table: exp.Table, hint: str) -> tuple[str, str | None]:
    extra = [a for a, v in node.args.items() if v and a not in ("this", "big_int")]
    if extra:  # max(x, 3) is DuckDB's three largest; count(a, b) no count at all
        raise refuse(f"an aggregate of a per-entity table takes its one column: {hint}")
    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Star):
            return "count_star", None
        if isinstance(arg, exp.Distinct) and len(arg.expressions) == 1:
            return "count_distinct", _column_of(arg.expressions[0], table, hint)
        return "count", _column_of(arg, table, hint)
    if isinstance(node, _VALUES):
        return node.key.lower(), _column_of(node.this, table, hint)
    raise refuse(
        "a per-entity table's columns are count(*), count(col), count(DISTINCT col), "
        f"sum(col), avg(col), min(col) or max(col) of a column of its dataset: {hint}"
    )


def _column_of(node: exp.Expr, table: exp.Table, hint: str) -> str:
    if isinstance(node, exp.Column) and node.table.lower() in ("", table.alias_or_name.lower()):
        return node.name.lower()
    raise refuse(f"a per-entity table aggregates columns as they are, not expressions: {hint}")


def having_filter(
    condition: exp.Expr,
    columns: list[EntityColumn],
    table: exp.Table,
    keys: Mapping[str, str] | None = None,
) -> tuple[exp.Expr, list[EntityColumn]]:
    """HAVING over per-entity aggregates, as a filter on the table's columns.

    Each aggregate it compares becomes a column of the table (hidden from the outer
    query unless the SELECT names it); the condition filters the table's rows, where the
    guard checks it as any predicate on them.  A key other than the entity key
    (``keys``: output name to column; ``HAVING district = 'D01'``) is a column of the
    table too, compared as it is.
    """
    by_column = {column: out for out, column in (keys or {}).items()}
    hidden: list[EntityColumn] = []
    condition = condition.copy()
    hint = "HAVING compares the per-entity aggregates (HAVING count(*) >= 3)"
    for found in list(condition.find_all(exp.AggFunc)):
        node = found.parent if isinstance(found.parent, exp.Filter) else found
        this = EntityColumn("", *_aggregate(node, table, hint))
        same = next((c for c in [*columns, *hidden] if c.same_as(this)), None)
        if same is None:
            # named as written (a refusal of the condition then reads as the analyst's
            # words), its constants as "…" (a refusal never repeats one); no output
            # shares the name, and a name with "(" is none written bare
            shown = node.copy()
            for literal in list(shown.find_all(exp.Literal)):
                literal.replace(exp.var("…"))
            written = shown.sql(dialect="duckdb", normalize_functions="lower").lower()
            taken = {c.name for c in [*columns, *hidden]}
            name, n = written, 1
            while name in taken:
                n += 1
                name = f"{written} {n}"
            same = replace(this, name=name)
            hidden.append(same)
        node.replace(exp.column(same.name, quoted=True))
    named = {c.name for c in [*columns, *hidden]}
    for column in list(condition.find_all(exp.Column)):
        name = column.name.lower()
        if name in named:
            continue
        key = by_column.get(name) or (name if name in (keys or {}) else None)
        if key is None:
            raise refuse(f"{hint}, not a column: filter rows with WHERE instead")
        column.replace(exp.column(key, quoted=True))
    return condition, hidden
