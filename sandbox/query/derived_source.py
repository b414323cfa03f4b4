"""Tables a query defines itself, put back as SELECTs into the SQL the enclave runs.

A per-entity table (``sandbox.query.entity_table``) is checked and rewritten as a
dataset of its own; the stats query then names it as a table.  Here each such name
becomes the SELECT that computes it (``DatasetAccess.derived_sql``), under the alias
it had, so the engine reads only registered datasets.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot
from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.errors import EnclaveError
from sandbox.query.lineage import dataset_id

__all__ = ["with_derived_tables"]


def with_derived_tables(stats_sql: str, access: Mapping[str, DatasetAccess]) -> str:
    """``stats_sql`` with each derived table it reads replaced by its SELECT."""
    derived = {d: a.derived_sql for d, a in access.items() if a.derived_sql is not None}
    if not derived:
        return stats_sql
    tree = sqlglot.parse_one(stats_sql, read="duckdb")
    for table in list(tree.find_all(exp.Table)):
        dataset = dataset_id(table)
        if dataset is None or dataset not in derived:
            continue
        alias = table.args.get("alias")
        if alias is None:
            alias = exp.TableAlias(this=exp.to_identifier(table.name, quoted=True))
        select = sqlglot.parse_one(derived[dataset], read="duckdb")
        _check_shape(select, access[dataset])
        table.replace(exp.Subquery(this=select, alias=alias.copy()))
    return tree.sql(dialect="duckdb")


def _check_shape(select: exp.Expr, access: DatasetAccess) -> None:
    """The SELECT reads back as the table it computes: one grouped SELECT whose outputs
    are the table's columns, in order (a second check beside building it as a tree)."""
    names = [c.name for c in access.spec.columns]
    if (
        not isinstance(select, exp.Select)
        or [p.alias_or_name for p in select.expressions] != names
        or any(select.args.get(a) for a in ("joins", "order", "limit", "offset", "with_"))
    ):
        raise EnclaveError(
            "a per-entity table's SELECT does not read as the table it computes",
            rule="rewrite.derived_table",
        )
