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

from sandbox.errors import QueryRefused

__all__ = ["BaseColumn", "ColumnInfo", "Lineage"]


@dataclass(frozen=True)
class BaseColumn:
    dataset: str  # domain.table
    column: str  # lower-case column name


@dataclass(frozen=True)
class ColumnInfo:
    """What a column reference depends on; ``passthrough`` = a bare rename of one base column."""

    bases: frozenset[BaseColumn]
    passthrough: bool

    @property
    def single(self) -> BaseColumn | None:
        return next(iter(self.bases)) if self.passthrough and len(self.bases) == 1 else None


class Lineage:
    """Resolves columns scope by scope; ``outputs`` caches each derived scope's columns."""

    def __init__(self) -> None:
        self.outputs: dict[int, dict[str, ColumnInfo]] = {}

    def source_dataset(self, table: exp.Table) -> str:
        return f"{table.args['db'].name.lower()}.{table.name.lower()}"

    def resolve(self, column: exp.Column, scope: Scope) -> ColumnInfo:
        alias = column.table
        source = scope.sources.get(alias)
        name = column.name.lower()
        if isinstance(source, exp.Table):
            return ColumnInfo(frozenset({BaseColumn(self.source_dataset(source), name)}), True)
        if isinstance(source, Scope):
            outputs = self.outputs.get(id(source))
            if outputs is None or name not in outputs:
                raise QueryRefused(
                    f"column '{column.name}' cannot be traced to a dataset column",
                    rule="guard.lineage",
                )
            return outputs[name]
        raise QueryRefused(
            f"column '{column.sql()}' cannot be traced to a dataset column", rule="guard.lineage"
        )

    def of_expression(self, node: exp.Expression, scope: Scope) -> ColumnInfo:
        """Lineage of any expression: the union of its columns; passthrough only if bare."""
        inner = node.unalias() if isinstance(node, exp.Alias) else node
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Column):
            return self.resolve(inner, scope)
        bases: set[BaseColumn] = set()
        for col in inner.find_all(exp.Column):
            bases |= self.resolve(col, scope).bases
        return ColumnInfo(frozenset(bases), False)

    def record_outputs(self, scope: Scope) -> None:
        """Remember the lineage of each output column of a derived scope."""
        select = scope.expression
        if not isinstance(select, exp.Select):
            raise QueryRefused(
                "set operations are allowed only at the top of a query", rule="guard.set_operation"
            )
        self.outputs[id(scope)] = {
            proj.alias_or_name.lower(): self.of_expression(proj, scope)
            for proj in select.expressions
        }
