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

from typing import Any

import sqlalchemy as sa

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import DatasetSpec, Level
from sandbox.core.data_controls import load_controls
from sandbox.core.errors import QueryRefused
from sandbox.core.product_tables import PRODUCT_PURPOSE_PREFIX, product_purpose, products
from sandbox.governance.product_templates import Template, bind, match_binding, samples
from sandbox.governance.products import product_template
from sandbox.platform import Platform
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.parse import parse_query
from sandbox.query.release import prepare

__all__ = ["check_product_query", "guard_template", "template_guard"]


def guard_template(
    spec: DatasetSpec,
    template: Template,
    columns: tuple[str, ...],
    groupable: tuple[str, ...],
    *,
    access_controls: Any,
    max_sql_length: int,
) -> int:
    """Check every sample binding; return how many were checked (or raise the refusal)."""
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
    for values in bindings:
        sql = bind(template, values)
        parsed = parse_query(sql, max_length=max_sql_length)
        if parsed.datasets != (spec.id,) and set(parsed.datasets) != {spec.id}:
            raise QueryRefused(
                f"a product reads its own dataset {spec.id} only", rule="product.datasets"
            )
        # As a run prepares it (per-entity tables, totals, thresholds, windows, grouping
        # sets read as release.prepare reads them; the guard's verdict on each part): a
        # template the guard alone refused was refused at publication although a
        # subscriber's run would answer it (per-entity tables, then totals and thresholds).
        prepare(parsed, access, _EXACT, max_sql_length=max_sql_length)
    return len(bindings)


#: The parameters a template is prepared under at publication: the guard's verdict and
#: the rewrite's do not depend on them (no budget, nothing run).
_EXACT = DisclosureParams(k=1, dominance_p=None)


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
        guard_template(
            spec,
            template,
            columns,
            groupable,
            access_controls=controls,
            max_sql_length=platform.settings.max_sql_length,
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
