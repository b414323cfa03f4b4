"""The guard's rules for cohorts (``cohorts.py``): run per scope by ``guard.cohorts``.

On the cohort's own subquery (innermost first, before its WHERE is read as a predicate
on its dataset): uncorrelated, its key an entity key, no generalised column in its
condition.  On the scope it filters: both keys entity keys of one entity (one dataset
or a declared joinable pair of one type, with consent), each used as a join key is.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.query.cohorts import COHORT, COHORT_CHECKED, cohort_select
from sandbox.query.column_rules import ColumnRules, refuse
from sandbox.query.join_rules import check_entity_pair, cohort_key, datasets_reached

__all__ = ["check_cohorts"]


def _subquery(rules: ColumnRules, scope: Scope) -> None:
    """A cohort's subquery: uncorrelated, its key an entity key, no generalised column read.

    A declared generalisation says how a column's values leave; a cohort combines
    conditions on *different rows of one entity* (its subquery's rows, the outer query's
    rows, another cohort's), which no other clause can: persons with a claim at 30-39
    and one at 40-49 are those who turned 40 in the period, a year of age from two bands
    (outside review, December 2026).  So a cohort's condition reads no generalised column
    (a person's age band, filtered in the outer query, keeps its rows either way).
    """
    select = scope.expression
    if scope.external_columns:
        names = ", ".join(sorted({f"{c.table}.{c.name}" for c in scope.external_columns}))
        raise refuse(
            "guard.subquery_predicate",
            f"a cohort subquery reads its own dataset only, but it reads {names} from the "
            "query around it (a name that is not a column of "
            f"{', '.join(sorted(datasets_reached(scope)))} is looked up there)",
        )
    cohort_key(rules, rules.lineage.resolve(select.expressions[0].unalias(), scope))
    where = select.args.get("where")
    for column in where.find_all(exp.Column) if where is not None else ():
        for base in rules.lineage.resolve(column, scope).bases:
            _, spec = rules.column(base)
            if spec.generalize is not None:
                raise refuse(
                    "guard.generalisation",
                    f"{base.dataset}.{spec.name} has a declared generalisation: a cohort "
                    "subquery's condition cannot read it (with the outer query it would "
                    "combine bands of one entity's different rows); filter or group the "
                    "outer query on it instead",
                )


def check_cohorts(rules: ColumnRules, scope: Scope) -> None:
    """A scope's cohorts (``cohorts.py``): entity keys of one entity, uncorrelated.

    The subquery's own scope was checked before this one (innermost first) as a derived
    table is: its key a passthrough, its WHERE a predicate on its dataset.
    """
    if scope.expression.meta.get(COHORT):  # the subquery itself, before its WHERE is read
        _subquery(rules, scope)
    where = scope.expression.args.get("where")
    if isinstance(scope.expression, exp.SetOperation) or where is None:
        return
    inner_scopes = {id(s.expression): s for s in scope.subquery_scopes}
    for node in where.find_all(exp.In):
        select = cohort_select(node)
        if select is None or node.find_ancestor(exp.Select) is not scope.expression:
            continue
        inner = inner_scopes.get(id(select))  # uncorrelated: _subquery checked it first
        if inner is None:
            raise refuse(
                "guard.subquery_predicate",
                "a cohort's subquery reads its own dataset only (it cannot refer to the "
                "query around it)",
            )
        left = rules.lineage.resolve(node.this, scope)
        right = rules.lineage.resolve(select.expressions[0].unalias(), inner)
        check_entity_pair(rules, left, right, "WHERE … IN (SELECT …)")
        node.meta[COHORT_CHECKED] = True
