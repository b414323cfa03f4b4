"""Column lineage: every column reference resolved to the dataset columns it depends on.

Works on a query qualified by sqlglot (every column carries its source alias,
stars expanded, ``USING`` turned into ``ON``), scope by scope from the
innermost out, so a renamed identifier (through an alias, a CTE or a derived
table) keeps its lineage and cannot be hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.core.errors import QueryRefused
from sandbox.query.nodes import comparison_operands

__all__ = ["BaseColumn", "ColumnInfo", "Lineage", "dataset_id"]


@dataclass(frozen=True)
class BaseColumn:
    dataset: str  # domain.table
    column: str  # lower-case column name


@dataclass(frozen=True)
class ColumnInfo:
    """What a column reference depends on; ``passthrough`` = a bare rename of one base column.

    ``filtered``: the bases that reach the column only through predicates (a comparison's
    operands, a CASE condition), so its value is a function of truth values about them
    and never of their values: ``CASE WHEN income < 20000 THEN 'low' ELSE 'high' END`` in
    a CTE depends on ``income`` only so.  The guard checks such a base, used as a key or
    an output, as it checks a predicate (as if the CASE were written in place).
    """

    bases: frozenset[BaseColumn]
    passthrough: bool
    filtered: frozenset[BaseColumn] = frozenset()

    @property
    def single(self) -> BaseColumn | None:
        return next(iter(self.bases)) if self.passthrough and len(self.bases) == 1 else None


class Lineage:
    """Resolves columns scope by scope; ``outputs`` holds each derived scope's columns in order.

    Names are unique per scope (``record_outputs`` refuses duplicates), so a dict keeps
    both the lookup by name and, in insertion order, the positions set operations need.
    """

    def __init__(self) -> None:
        self.outputs: dict[int, dict[str, ColumnInfo]] = {}

    def source_dataset(self, table: exp.Table) -> str:
        return f"{table.args['db'].name.lower()}.{table.name.lower()}"

    def resolve(self, column: exp.Column, scope: Scope) -> ColumnInfo:
        alias = column.table
        if not alias and column.name in scope.sources:
            # A source's alias as a value: in DuckDB the whole row, as a STRUCT.
            raise QueryRefused(
                f"{column.name} stands for the whole row of "
                f"{self._describe(scope.sources[column.name])}: name the columns you need",
                rule="guard.row_value",
            )
        source = scope.sources.get(alias)
        name = column.name.lower()
        if isinstance(source, exp.Table):
            return ColumnInfo(frozenset({BaseColumn(self.source_dataset(source), name)}), True)
        if isinstance(source, Scope):
            outputs = self.outputs.get(id(source), {})
            if name not in outputs:
                raise QueryRefused(
                    f"column '{column.name}' cannot be traced to a dataset column",
                    rule="guard.lineage",
                )
            return outputs[name]
        raise QueryRefused(
            f"column '{'.'.join(p for p in (column.table, column.name) if p)}' cannot be "
            "traced to a dataset column",
            rule="guard.lineage",
        )

    def _describe(self, source: object) -> str:
        if isinstance(source, exp.Table):
            return self.source_dataset(source)
        return "a derived table or CTE"

    def of_expression(self, node: exp.Expression, scope: Scope) -> ColumnInfo:
        """Lineage of any expression: the union of its columns; passthrough only if bare.

        A base is ``filtered`` when every column that carries it is an operand of a
        comparison that filters (:meth:`filters`) or carries it filtered already.
        """
        inner = node.unalias() if isinstance(node, exp.Alias) else node
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Column):
            return self.resolve(inner, scope)
        compared = self.filtered_positions(inner, scope)
        bases: set[BaseColumn] = set()
        valued: set[BaseColumn] = set()  # reaching the value somewhere
        for col in inner.find_all(exp.Column):
            info = self.resolve(col, scope)
            bases |= info.bases
            if id(col) not in compared:
                valued |= info.bases - info.filtered
        return ColumnInfo(frozenset(bases), False, frozenset(bases - valued))

    def filters(self, comparison: exp.Expr, scope: Scope) -> bool:
        """Whether ``comparison`` filters on its operands in a group key or an output.

        It must compare columns with constants, each column directly or through
        order-keeping steps (``nodes.comparison_operands``), and each column must hold a
        dataset column's own values (a bare rename) or only truth values about its bases
        (``filtered``): a CTE column computed as ``floor(x / 2) % 2`` is a column in the
        outer query, and comparing it with 1 is a bit of ``x``.
        """
        columns = comparison_operands(comparison)
        if columns is None:
            return False
        for col in columns:
            info = self.resolve(col, scope)
            if not (info.passthrough or info.bases <= info.filtered):
                return False
        return True

    def filtered_positions(self, root: exp.Expr, scope: Scope) -> set[int]:
        """The ids of the column nodes under ``root`` that a filtering comparison compares."""
        out: set[int] = set()
        for node in root.walk():
            if isinstance(node, exp.Expr) and self.filters(node, scope):
                out.update(id(col) for col in comparison_operands(node) or ())
        return out

    def record_outputs(self, scope: Scope) -> None:
        """Remember the lineage of each output column of a derived SELECT scope.

        Two outputs of one name are refused: DuckDB binds a reference to the first, a
        name-keyed lineage would follow another, and the guard would check the wrong one.
        """
        names = [proj.alias_or_name.lower() for proj in scope.expression.expressions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise QueryRefused(
                f"a derived table or CTE names two columns '{twice[0]}': name each column once",
                rule="guard.duplicate_column",
            )
        self.outputs[id(scope)] = {
            name: self.of_expression(proj, scope)
            for name, proj in zip(names, scope.expression.expressions, strict=True)
        }

    def record_set_outputs(self, scope: Scope) -> None:
        """A set operation's column i depends on column i of every branch (named as the first).

        Branches are recorded before the operation (``traverse_scope`` yields inner
        scopes first), so nested operations compose.
        """
        branches = [self.outputs.get(id(b)) for b in scope.set_operation_scopes]
        if not branches or any(b is None for b in branches):
            raise QueryRefused(
                "a set operation's columns cannot be traced to dataset columns",
                rule="guard.lineage",
            )
        columns = [list(b.values()) for b in branches if b is not None]
        if len({len(b) for b in columns}) != 1:
            raise QueryRefused(
                "every branch of a set operation must have the same number of columns",
                rule="guard.set_operation",
            )
        first = next(b for b in branches if b is not None)
        self.outputs[id(scope)] = {
            name: _union([b[i] for b in columns]) for i, name in enumerate(first)
        }


def _union(infos: list[ColumnInfo]) -> ColumnInfo:
    """One column of several branches: every base of any; filtered where no branch values it."""
    bases: frozenset[BaseColumn] = frozenset().union(*(i.bases for i in infos))
    valued: frozenset[BaseColumn] = frozenset().union(*(i.bases - i.filtered for i in infos))
    return ColumnInfo(bases, all(i.passthrough for i in infos), bases - valued)


def dataset_id(table: exp.Table) -> str | None:
    """``domain.table`` of a table named with its domain; None for a bare name (a CTE)."""
    db = table.args.get("db")
    return None if db is None else f"{db.name.lower()}.{table.name.lower()}"
