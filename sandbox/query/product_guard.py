"""The guard's part in data products: at publication, and at every run.

:func:`guard_template` checks a template with the guard for every parameter's sample
values (:func:`sandbox.governance.product_templates.samples`), one parameter varied at a
time, under the product's columns and the dataset's negative list and important items:
a product that any sample makes the guard refuse is refused with the guard's rule.
:func:`check_product_query` is called by the query service for a query under a
product's purpose code: it is accepted only as a binding of that published product's
template with valid values (``product.template``), so a subscription's grant serves
nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Contribution, DatasetSpec, Level
from sandbox.core.data_controls import load_controls
from sandbox.core.errors import QueryRefused
from sandbox.core.product_tables import PRODUCT_PURPOSE_PREFIX, product_purpose, products
from sandbox.governance.product_templates import Template, bind, match_binding, samples
from sandbox.governance.products import product_template
from sandbox.platform import Platform
from sandbox.query.cost import CostLimits, check_cost
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.parse import parse_query
from sandbox.query.release import PROBES, prepare

__all__ = ["check_product_query", "guard_template", "template_guard"]


def guard_template(
    spec: DatasetSpec,
    template: Template,
    columns: tuple[str, ...],
    groupable: tuple[str, ...],
    *,
    access_controls: Any,
    max_sql_length: int,
    default: Contribution,
    cost: Callable[[exp.Expr], object] | None = None,
) -> int:
    """Check every sample binding; return how many were checked (or raise the refusal).

    ``cost``: the query service's cost check (``check_cost`` with the dataset's rows and
    the platform's limits), run on each binding first: a template every run would refuse
    as too costly is refused at publication too.  ``default``: the platform's bounds, for
    a dataset that declares none, under which the budgeted mode is prepared."""
    levels = [spec.column(c).level for c in columns if _has(spec, c)]
    access = {
        spec.id: DatasetAccess(
            spec,
            max(levels, default=Level.L1),
            frozenset(columns),
            frozenset(groupable),
            access_controls,
        )
    }
    base = {p.name: samples(p)[0] for p in template.params}
    bindings = [base]
    for p in template.params:
        bindings += [{**base, p.name: v} for v in samples(p)[1:]]
    # A threshold's query is prepared at its probe values too: bound the checking work
    # one publication (or an operator's proposal) may ask for, before any of it.
    first = parse_query(bind(template, bindings[0]), max_length=max_sql_length)
    subqueries = sum(1 for _ in first.expression.find_all(exp.Subquery))
    work = len(bindings) * (1 + len(PROBES) * subqueries)
    if work > MAX_CHECK_WORK:
        raise QueryRefused(
            f"checking this template for its {len(bindings):,} sample bindings would prepare "
            f"it {work:,} times (more than {MAX_CHECK_WORK:,}): fewer parameters, listed "
            "values or subqueries",
            rule="product.template",
        )
    for values in bindings:
        sql = bind(template, values)
        parsed = parse_query(sql, max_length=max_sql_length)
        if parsed.datasets != (spec.id,) and set(parsed.datasets) != {spec.id}:
            raise QueryRefused(
                f"a product reads its own dataset {spec.id} only", rule="product.datasets"
            )
        if cost is not None:
            cost(parsed.expression)
        # As a run prepares it (per-entity tables, totals, thresholds, windows, grouping
        # sets read as release.prepare reads them; the guard's verdict on each part): a
        # template the guard alone refused was refused at publication although a
        # subscriber's run would answer it (per-entity tables, then totals and thresholds).
        # Under a budget or under review, whichever accepts it: a median is answered
        # only with noise, an extreme only exactly.
        try:
            prepare(parsed, access, _EXACT, max_sql_length=max_sql_length)
        except QueryRefused as exact:
            try:
                prepare(parsed, access, _dp(spec, default), max_sql_length=max_sql_length)
            except QueryRefused:
                raise exact from None
    return len(bindings)


#: The parameters a template is prepared under at publication: the guard's verdict and
#: the rewrite's do not depend on the values (nothing runs).
_EXACT = DisclosureParams(k=1, dominance_p=None)
#: The most preparations one publication's check may take (each about 1-10 ms): a
#: template with 20 parameters of 100 values and 60 thresholds took half an hour.
MAX_CHECK_WORK = 4_000


def _dp(spec: DatasetSpec, default: Contribution) -> DisclosureParams:
    """A budget, under the dataset's declared bounds (else the platform's ``default``)."""
    bounds = spec.contribution or default
    return DisclosureParams(
        k=1,
        epsilon=1.0,
        max_rows_per_entity=bounds.max_rows_per_entity,
        max_groups_per_entity=bounds.max_groups_per_entity,
        dominance_p=None,
    )


def _has(spec: DatasetSpec, name: str) -> bool:
    try:
        spec.column(name)
    except KeyError:
        return False
    return True


def template_guard(platform: Platform) -> Any:
    """The ``guard`` :class:`sandbox.governance.products.Products` takes, for ``platform``."""

    def guard(
        spec: DatasetSpec, template: Template, columns: tuple[str, ...], groupable: tuple[str, ...]
    ) -> None:
        with platform.engine.connect() as conn:
            controls = load_controls(conn, [spec.id])[spec.id]
        settings = platform.settings
        rows = {spec.id: platform.catalog.get(spec.id).row_count}
        limits = CostLimits.of(settings)
        guard_template(
            spec,
            template,
            columns,
            groupable,
            access_controls=controls,
            max_sql_length=settings.max_sql_length,
            cost=lambda expression: check_cost(expression, rows, limits),
            default=Contribution(
                settings.dp_max_rows_per_entity, settings.dp_max_groups_per_entity
            ),
        )

    return guard


def check_product_query(platform: Platform, purpose: str, sql: str) -> None:
    """A query under a product purpose must be a binding of that published product."""
    assert purpose.startswith(PRODUCT_PURPOSE_PREFIX)
    # product_purpose("pd_<hex>") is "product-pd-<hex>": the id is its inverse.
    wanted = purpose[len(PRODUCT_PURPOSE_PREFIX) :].replace("-", "_", 1)
    with platform.engine.connect() as conn:
        row = conn.execute(
            sa.select(products).where(products.c.id == wanted, products.c.state == "published")
        ).first()
    if row is None or product_purpose(row.id) != purpose:
        raise QueryRefused("this purpose names no published data product", rule="product.template")
    match_binding(product_template(row), sql)
