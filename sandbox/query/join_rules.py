"""Join rules: equalities of declared joinable pairs (with both bureaus' consent), one
side filtered at most, each dataset joined once."""

from __future__ import annotations

from typing import cast

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.core.classification import INTEGER_TYPES, ColumnSpec
from sandbox.query.column_rules import ColumnRules, refuse
from sandbox.query.lineage import BaseColumn, ColumnInfo

#: Set on a Join node the guard accepted: an inner join on both sides' entity keys.
ENTITY_JOIN = "sbx.entity_join"


def _declares(spec: ColumnSpec, dataset: str, other: ColumnSpec) -> bool:
    return f"{dataset}.{other.name}".lower() in {t.lower() for t in spec.joinable}


def _check_consent(lb: BaseColumn, lspec: ColumnSpec, rb: BaseColumn, rspec: ColumnSpec) -> None:
    """Two bureaus' columns join only if both classifications declare the pair.

    One bureau (one domain) consents for its own datasets with one declaration; across
    bureaus one side alone would make another bureau's data joinable without its consent.
    """
    left, right = f"{lb.dataset}.{lspec.name}", f"{rb.dataset}.{rspec.name}"
    if lb.dataset == rb.dataset:
        # No declaration makes a self-join answerable (_check_joined_once): say so, not
        # "not declared joinable", which sent an analyst to declare it in vain.
        raise refuse(
            "guard.join",
            f"{left} and {right} join {lb.dataset} to itself: a dataset joined to itself "
            "multiplies its rows per key, so no declaration allows it; compare one entity's "
            "rows in one scan instead (a derived table grouped by the entity key)",
        )
    to_right, to_left = _declares(lspec, rb.dataset, rspec), _declares(rspec, lb.dataset, lspec)
    if lb.dataset.split(".")[0] == rb.dataset.split(".")[0]:
        if to_right or to_left:
            return
    elif to_right and to_left:
        return
    if to_right or to_left:
        declared, missing = (left, right) if to_right else (right, left)
        raise refuse(
            "guard.join",
            f"{left} and {right} join across two bureaus: {declared} declares the pair but "
            f"{missing.rsplit('.', 1)[0]}'s classification does not; both must declare it",
        )
    raise refuse("guard.join", f"{left} and {right} are not declared joinable")


def _check_key_types(lb: BaseColumn, lspec: ColumnSpec, rb: BaseColumn, rspec: ColumnSpec) -> None:
    """A declared pair joins only if DuckDB compares its keys without converting either.

    The key equality runs bare (``rewrite.contain_errors``: key columns cannot fail on
    a value), which holds only for keys of one type, or two integer types; a text key
    against a number would be converted value by value, and one value that does not
    convert would fail the run: a bit about the rows.  The catalog's types are the
    data's own (checked at registration); a key whose type is not known (a spec that
    did not come from the catalog) is not judged here.
    """
    lt, rt = (lspec.type or "").upper(), (rspec.type or "").upper()
    if not lt or not rt or lt == rt:
        return
    if INTEGER_TYPES.fullmatch(lt) and INTEGER_TYPES.fullmatch(rt) and "UHUGEINT" not in (lt, rt):
        return  # UHUGEINT against a signed key compares as HUGEINT: 2^127 and up fail
    raise refuse(
        "guard.join",
        f"{lb.dataset}.{lspec.name} ({lt}) and {rb.dataset}.{rspec.name} ({rt}) are declared "
        "joinable but have different types: a join would convert every value of one of "
        "them; the bureaus should declare keys of one type",
    )


def _check_join_filter(rules: ColumnRules, scope: Scope, cond: exp.Expression) -> None:
    """Besides key equalities, ``ON`` may filter one side (``AND s.month = '2025-01'``).

    Such a condition is a predicate like WHERE's, on the columns of one source only
    (an outer join keeps the other side's rows, so it cannot move to WHERE); one that
    relates two sources (``OR``, a function of both keys, an inequality) is refused.
    """
    sources = {column.table for column in cond.find_all(exp.Column)}
    if len(sources) != 1:
        raise refuse(
            "guard.join",
            "join conditions must be equalities of declared join keys, and may filter one "
            "side (AND s.month = '2025-01'); this one relates both sides or neither",
        )
    rules.walk(cond, scope, "predicate", "JOIN ON")


def _is_entity_key(rules: ColumnRules, base: BaseColumn) -> bool:
    return base.column == rules.access[base.dataset].spec.entity_key.lower()


def cohort_key(rules: ColumnRules, info: ColumnInfo) -> BaseColumn:
    """One side of a cohort (``cohorts.py``): its dataset's entity key, as it is."""
    base = info.single
    if base is None:
        raise refuse(
            "guard.subquery_predicate",
            "a cohort subquery's keys are dataset columns as they are, not expressions: "
            "person_id IN (SELECT person_id FROM …)",
        )
    if not _is_entity_key(rules, base):
        raise refuse(
            "guard.subquery_predicate",
            f"{base.dataset}.{base.column} is not {base.dataset}'s entity key: a cohort "
            "subquery keeps the rows of entities, so both sides of IN (SELECT …) are entity keys "
            f"({base.dataset}.{rules.access[base.dataset].spec.entity_key})",
        )
    return base


def check_entity_pair(rules: ColumnRules, left: ColumnInfo, right: ColumnInfo, clause: str) -> None:
    """A cohort's two keys: entity keys, of one dataset or a declared joinable pair of one
    type (with both bureaus' consent), each used as a join key is."""
    lb, rb = cohort_key(rules, left), cohort_key(rules, right)
    if lb.dataset != rb.dataset:
        _, lspec = rules.column(lb)
        _, rspec = rules.column(rb)
        _check_consent(lb, lspec, rb, rspec)
        _check_key_types(lb, lspec, rb, rspec)
    rules.use(left, "join", clause)
    rules.use(right, "join", clause)


def check_joins(rules: ColumnRules, scope: Scope) -> None:
    for join in scope.expression.args.get("joins") or []:
        on = join.args.get("on")
        if on is None:
            raise refuse("guard.join", "joins need an ON condition on declared join keys")
        if join.args.get("kind") and str(join.args["kind"]).upper() not in ("INNER", "OUTER"):
            raise refuse("guard.join", f"{join.args['kind']} joins are not allowed")
        flat = list(on.flatten()) if isinstance(on, exp.And) else [on]
        conditions = cast("list[exp.Expression]", flat)
        on_entities = False
        pairs = 0
        for cond in conditions:
            if not (
                isinstance(cond, exp.EQ)
                and isinstance(cond.this, exp.Column)
                and isinstance(cond.expression, exp.Column)
            ):
                _check_join_filter(rules, scope, cond)
                continue
            pairs += 1
            left = rules.lineage.resolve(cond.this, scope)
            right = rules.lineage.resolve(cond.expression, scope)
            lb, rb = left.single, right.single
            if lb is None or rb is None:
                raise refuse("guard.join", "join keys must be dataset columns, not expressions")
            _, lspec = rules.column(lb)
            _, rspec = rules.column(rb)
            _check_consent(lb, lspec, rb, rspec)
            _check_key_types(lb, lspec, rb, rspec)
            rules.use(left, "join", "JOIN")
            rules.use(right, "join", "JOIN")
            on_entities |= _is_entity_key(rules, lb) and _is_entity_key(rules, rb)
        if not pairs:
            raise refuse("guard.join", "joins need an equality of declared join keys in ON")
        inner = (
            join.args.get("side") is None
            and str(join.args.get("kind") or "INNER").upper() == "INNER"
        )
        join.meta[ENTITY_JOIN] = inner and on_entities
    if scope.expression.args.get("joins"):
        _check_joined_once(scope)


def datasets_reached(source: exp.Table | Scope) -> set[str]:
    """The datasets a FROM or JOIN source reads, through derived tables, CTEs and unions."""
    if isinstance(source, exp.Table):
        return {f"{source.args['db'].name.lower()}.{source.name.lower()}"}
    reached: set[str] = set()
    for branch in source.set_operation_scopes:
        reached |= datasets_reached(branch)
    for _, inner in source.selected_sources.values():
        if isinstance(inner, exp.Table | Scope):
            reached |= datasets_reached(inner)
    return reached


def _check_joined_once(scope: Scope) -> None:
    """A dataset on two sides of a join, even on declared keys, multiplies its own rows."""
    seen: set[str] = set()
    for _, source in scope.selected_sources.values():
        reached = datasets_reached(source) if isinstance(source, exp.Table | Scope) else set()
        again = sorted(reached & seen)
        if again:
            raise refuse(
                "guard.join",
                f"{again[0]} is joined more than once: a dataset joined to itself multiplies "
                "its rows per key",
            )
        seen |= reached
