"""Guard rules of the negative list (负面清单) and the important-data catalog (重要数据目录).

Closed by construction: the rules do not look for the clauses a prohibited column could
hide in.  After qualification every column of every scope (CTEs, derived tables, UNION
ALL branches, totals, JOIN ON, WHERE, GROUP BY, HAVING, ORDER BY, and ``*`` expanded to
the columns it stands for) names its source; every column whose source is a dataset is
checked, wherever it stands and whether or not the released SELECT uses it.  A query
reading a prohibited dataset is refused even for ``count(*)``.  ``touched_controls``
checks again, after the other rules, every base column they resolved.

- ``negative.prohibited``: a prohibited dataset or column, anywhere in the query;
- ``negative.limited``: a strictly limited item the grant in use was not approved for
  by both the admin and the owning bureau (and, for a column, does not list by name);
- ``important.cross_domain``: important data with a dataset of another domain.

:func:`important_release` is the release side of important data, for the query service:
a reviewed grant is refused (``important.dp_only``), and the release is held for the
owning bureau's review.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from policies import Decision
from sandbox.core.access import DatasetAccess
from sandbox.core.data_controls import WHOLE
from sandbox.core.errors import QueryRefused
from sandbox.query.lineage import BaseColumn

__all__ = [
    "base_columns",
    "check_controls",
    "important_datasets",
    "important_release",
    "wrote_star",
]

PROHIBITED = (
    "{item} is on the negative list (prohibited): it is never granted or released, not "
    "even in aggregate{star}"
)


def base_columns(scopes: Iterable[Scope]) -> set[BaseColumn]:
    """Every dataset column any of ``scopes`` reads (qualified: each column names its source)."""
    found: set[BaseColumn] = set()
    for scope in scopes:
        for column in scope.columns:
            source = scope.sources.get(column.table)
            if isinstance(source, exp.Table) and source.args.get("db") is not None:
                dataset = f"{source.args['db'].name.lower()}.{source.name.lower()}"
                found.add(BaseColumn(dataset, column.name.lower()))
    return found


def check_controls(
    datasets: Iterable[str],
    columns: Iterable[BaseColumn],
    access: Mapping[str, DatasetAccess],
    *,
    star: bool = False,
) -> None:
    """Refuse a query reading prohibited, unapproved limited, or cross-domain important data.

    ``star``: the query wrote ``*`` somewhere (named in the message, as the column may not
    be written in it).
    """
    datasets = sorted(set(datasets))
    columns = sorted(columns, key=lambda b: (b.dataset, b.column))
    for dataset in datasets:
        controls = access[dataset].controls if dataset in access else None
        if controls is not None and controls.is_prohibited():
            raise QueryRefused(PROHIBITED.format(item=dataset, star=""), rule="negative.prohibited")
    for base in columns:
        grant = access.get(base.dataset)
        if grant is not None and grant.controls.is_prohibited(base.column):
            note = " (also through *: name the columns you need)" if star else ""
            raise QueryRefused(
                PROHIBITED.format(item=f"{base.dataset}.{base.column}", star=note),
                rule="negative.prohibited",
            )
    for dataset in datasets:
        grant = access.get(dataset)
        if (
            grant is not None
            and grant.controls.is_limited()
            and not grant.controls.is_approved(WHOLE)
        ):
            raise QueryRefused(_limited(dataset), rule="negative.limited")
    for base in columns:
        grant = access.get(base.dataset)
        if grant is None or not grant.controls.is_limited(base.column):
            continue
        listed = grant.columns is not None and base.column in grant.columns
        if not (listed and grant.controls.is_approved(base.column)):
            raise QueryRefused(_limited(f"{base.dataset}.{base.column}"), rule="negative.limited")
    important = important_datasets(datasets, columns, access)
    domains = {d.split(".", 1)[0] for d in datasets}
    if important and len(domains) > 1:
        first = sorted(important)[0]
        others = sorted(d for d in datasets if d.split(".", 1)[0] != first.split(".", 1)[0])
        raise QueryRefused(
            f"{first} is important data (重要数据): it is not combined with another domain's "
            f"data ({others[0]}) in one query",
            rule="important.cross_domain",
        )


def _limited(item: str) -> str:
    return (
        f"{item} is strictly limited (negative list): only a grant that names it and that "
        "both the admin and the owning bureau approved reaches it (apply with sandbox grant "
        "apply; the admin co-approves)"
    )


def important_datasets(
    datasets: Iterable[str], columns: Iterable[BaseColumn], access: Mapping[str, DatasetAccess]
) -> set[str]:
    """The datasets whose important data the query reads: the dataset, or a column of it."""
    out = {d for d in datasets if d in access and access[d].controls.is_important()}
    out |= {
        b.dataset
        for b in columns
        if b.dataset in access and access[b.dataset].controls.is_important(b.column)
    }
    return out


def important_release(
    decision: Decision, important: set[str], *, epsilon: float | None
) -> Decision:
    """The decision a query reading ``important`` datasets runs under.

    Every grant on important data must release noised values (``important.dp_only``: a
    ``reviewed`` grant's exact values are not released, even after review); every release
    is then held for the owning bureau's review (``Decision.held_for``).
    """
    if not important:
        return decision
    for grant in decision.grants:
        if grant.dataset in important and grant.review_required:
            raise QueryRefused(
                f"{grant.dataset} is important data (重要数据): released only noised under a "
                f"privacy budget, and grant {grant.id} releases exact values; the bureau may "
                "change its release mode to dp",
                rule="important.dp_only",
            )
    if not epsilon or epsilon <= 0:
        raise QueryRefused(
            f"{sorted(important)[0]} is important data (重要数据): released only noised under "
            "a privacy budget, and this query would release exact values",
            rule="important.dp_only",
        )
    return replace(decision, held_for=tuple(sorted(important)))


def wrote_star(expression: exp.Expr) -> bool:
    """Did the query write ``*`` outside ``count(*)`` (qualification expanded it)?"""
    return any(not isinstance(s.parent, exp.Count) for s in expression.find_all(exp.Star))
