"""Cohort filters: the rows of the entities that meet a condition somewhere in their rows.

``WHERE c.person_id IN (SELECT person_id FROM health.claims WHERE diagnosis_code = 'J45')``
keeps every claim of each person with an asthma claim: the cohort analysis analysts of
claims, benefits and registers write every day (a semi-join on the entity).

Accepted in exactly one form, and refused in every other (``guard.subquery_predicate``,
saying which condition failed):

- ``<column> IN (SELECT <column> FROM <dataset> [AS a] [WHERE <condition>])``,
- as a conjunct of a ``WHERE`` (under ``AND`` and parentheses only: never ``NOT IN``,
  ``OR`` or a ``CASE``: a row is kept only where the condition is true, so a NULL drops
  it, as an unmatched key does);
- the subquery reads one dataset's table straight (no CTE, join, derived table,
  grouping, ``DISTINCT``, ordering, ``LIMIT``, window or subquery of its own), and is
  not correlated (its condition reads its own dataset only);
- both columns are their datasets' entity keys, of one dataset or a pair both
  classifications declare joinable, of one type (the join rules' consent and type
  checks, ``join_rules.check_entity_pair``).

The subquery's ``WHERE`` is a predicate on its dataset, checked by every rule a ``WHERE``
there is (roles and grants, declared generalisations, the negative list); its selected
key is checked as a join key is.

Why this cannot weaken the guarantee: whether an entity is in the cohort depends on its
own rows only (the keys are entity keys), so adding or removing one entity changes no
other entity's rows in the outer query: the per-entity caps, and the sensitivity they
give, hold as for any ``WHERE``.  In the enclave the condition inside runs under
``TRY`` as every predicate does, and the membership test itself compares keys of one
type, which cannot fail on a value (``rewrite.contain_errors``).
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.core.errors import QueryRefused

#: Set on an ``IN (SELECT …)`` node the shape check accepted, and on its subquery SELECT.
COHORT = "sbx.cohort"
#: Set on the ``IN`` node once the guard checked its keys (``guard.cohorts``).
COHORT_CHECKED = "sbx.cohort_checked"

FORM = (
    "a cohort subquery is written <entity key> IN (SELECT <entity key> FROM <dataset> "
    "WHERE …), "
    "e.g. person_id IN (SELECT person_id FROM health.claims WHERE diagnosis_code = 'J45')"
)
#: The subquery SELECT's arguments the form allows (everything else is refused).
_SELECT_ARGS = frozenset({"expressions", "from_", "where"})


def _refuse(reason: str) -> QueryRefused:
    return QueryRefused(f"{reason}: {FORM}", rule="guard.subquery_predicate")


def _conjunct_of_where(node: exp.Expression) -> bool:
    """Whether ``node`` is a conjunct of a WHERE: only AND and parentheses above it."""
    parent = node.parent
    while isinstance(parent, exp.And | exp.Paren):
        parent = parent.parent
    return isinstance(parent, exp.Where) and isinstance(parent.parent, exp.Select)


def _shape(node: exp.In) -> exp.Select:
    """The cohort's SELECT, or the refusal naming what departs from the form."""
    if node.expressions or node.args.get("unnest") or node.args.get("field"):
        raise _refuse("IN takes either a list of constants or one subquery")
    if not _conjunct_of_where(node):
        raise _refuse(
            "a subquery stands in WHERE only, as a condition every kept row meets (not "
            "under NOT, OR or CASE, and not in SELECT, HAVING or ON)"
        )
    around = node.find_ancestor(exp.Select)
    if around is not None and around.meta.get(COHORT):
        raise _refuse("a cohort's own condition cannot hold another cohort")
    if not isinstance(node.this, exp.Column):
        raise _refuse("the left of IN (SELECT …) is a column, the entity key")
    query = node.args.get("query")
    select = query.this if isinstance(query, exp.Subquery) else query
    if not isinstance(select, exp.Select):
        raise _refuse("the subquery is one SELECT (no UNION or VALUES)")
    distinct = select.args.get("distinct")
    if isinstance(distinct, exp.Distinct) and not distinct.args.get("on"):
        select.set("distinct", None)  # IN (SELECT DISTINCT k …) is IN (SELECT k …)
    extra = sorted(k for k, v in select.args.items() if v and k not in _SELECT_ARGS)
    if extra:
        raise _refuse(f"the subquery has {extra[0].rstrip('_').upper()}, which a cohort cannot")
    if isinstance(query, exp.Subquery) and any(
        v for k, v in query.args.items() if k != "this" and v
    ):
        raise _refuse("the subquery takes no alias, ORDER BY or LIMIT of its own")
    if len(select.expressions) != 1 or not isinstance(select.expressions[0].unalias(), exp.Column):
        raise _refuse("the subquery selects one column, its dataset's entity key")
    source = select.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table) or not source.this.args.get("db"):
        raise _refuse("the subquery reads one dataset's table straight (no CTE or derived table)")
    return select


def _depth(node: exp.Expression) -> int:
    depth, parent = 0, node.parent
    while parent is not None:
        depth, parent = depth + 1, parent.parent
    return depth


def mark_cohorts(root: exp.Expression) -> None:
    """Check the shape of every ``IN (SELECT …)`` of ``root`` (qualified) and mark it.

    Marked nodes are still refused unless the guard checks their keys (``COHORT_CHECKED``,
    set by ``guard.cohorts``); a subquery elsewhere keeps its own refusal.
    """
    found = [n for n in root.find_all(exp.In) if n.args.get("query") is not None]
    # Outermost first: a cohort inside a cohort's condition is refused by its parent's mark.
    found.sort(key=_depth)
    for node in found:
        select = _shape(node)
        node.meta[COHORT] = True
        select.meta[COHORT] = True


def cohort_select(node: exp.Expression) -> exp.Select | None:
    """The subquery SELECT of a marked cohort ``IN`` node, else None."""
    if not (isinstance(node, exp.In) and node.meta.get(COHORT)):
        return None
    query = node.args["query"]
    select = query.this if isinstance(query, exp.Subquery) else query
    return select if isinstance(select, exp.Select) and select.meta.get(COHORT) else None
