"""Joins in the rewrite: every dataset of a join counts its own entities.

Every dataset has an entity key, so each dataset a released SELECT reads is personal:
its entity key is carried up to the released scope (through derived tables, CTEs and
``UNION ALL`` branches, NULL where a branch does not read it) and the rewrite counts
its entities and contributions per group (``docs/disclosure.md``, "Joins").  Under a
budget only inner joins on entity keys are allowed: then every joined row carries one
entity value, and the contribution bounds hold across the datasets.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.core.errors import QueryRefused
from sandbox.query.guard import ENTITY_JOIN, Checked, datasets_reached

__all__ = ["check_budget_joins", "entity_in", "joined_datasets"]


def _column(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _table_id(table: exp.Table) -> str:
    return f"{table.args['db'].name.lower()}.{table.name.lower()}"


def joined_datasets(checked: Checked) -> list[str]:
    """The datasets the released SELECT reads besides the primary one, in a stable order.

    Every dataset has an entity key (the classification format requires one), so each
    of them is personal: its entities are counted too (``docs/disclosure.md``, joins).
    """
    reached: set[str] = set()
    for _, source in checked.final_scope.selected_sources.values():
        if isinstance(source, exp.Table | Scope):
            reached |= datasets_reached(source)
    return sorted(reached - {checked.primary})


def entity_in(
    scope: Scope, dataset: str, key: str, name: str, carried: set[tuple[int, str]]
) -> exp.Expression:
    """``dataset``'s entity key as a value of a SELECT scope (NULL where no source reads it).

    A source that is the dataset's table gives its column; a derived source that reads
    it carries the key up as ``name``.
    """
    for alias, (_, source) in scope.selected_sources.items():
        if isinstance(source, exp.Table) and _table_id(source) == dataset:
            return _column(key, alias)
        if isinstance(source, Scope) and dataset in datasets_reached(source):
            _carry_as(source, dataset, key, name, carried)
            return _column(name, alias)
    return exp.Null()


def _carry_as(
    scope: Scope, dataset: str, key: str, name: str, carried: set[tuple[int, str]]
) -> None:
    """Add ``name`` (``dataset``'s entity key) to a derived scope's outputs, once."""
    if (id(scope.expression), name) in carried:
        return
    carried.add((id(scope.expression), name))
    if isinstance(scope.expression, exp.SetOperation):
        for branch in scope.set_operation_scopes:
            _carry_as(branch, dataset, key, name, carried)
        return
    entity = entity_in(scope, dataset, key, name, carried)
    scope.expression.append("expressions", exp.alias_(entity, name, quoted=True))


def check_budget_joins(checked: Checked) -> None:
    """Under a budget, datasets are joined only on their entity keys, inner joins only.

    Then every joined row carries one entity value across all the datasets, and the
    contribution bounds C and G, applied per (group, entity), bound what any one
    entity of any of them changes (``docs/disclosure.md``, joins under a budget).
    """
    for join in checked.root.find_all(exp.Join):
        if not join.meta.get(ENTITY_JOIN):
            raise QueryRefused(
                "under a privacy budget datasets are joined only on their entity keys "
                "(an inner join, e.g. ON a.credit_code = b.credit_code): a join on "
                "another key lets one entity's rows reach an unbounded number of others'",
                rule="guard.join_budget",
            )
