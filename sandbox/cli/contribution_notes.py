"""What the command line says of a dataset's contribution bounds when it declares none.

At registration (``dataset register``) and in ``dataset show``: the platform default
``C``, ``G`` a query under a budget runs at, a DP draw of the data's own rows per entity
if one was made, and for a dataset of one row per entity (declared, or a generated key)
that a query over it alone runs at ``C = G = 1``.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.core.classification import DatasetSpec
    from sandbox.enclave.catalog import DatasetRecord
    from sandbox.platform import Platform

__all__ = ["drawn_bounds", "registration_note", "undeclared_bounds"]


def _one_row(spec: "DatasetSpec", words: str) -> str:
    """One row per entity: C = G = 1 over it alone, the default only in a join."""
    joins = any(c.joinable for c in spec.columns)
    tail = f"; in a join with another dataset, the platform default {words}" if joins else ""
    return f"C = G = 1 (one row per entity{tail})"


def registration_note(
    platform: "Platform", spec: "DatasetSpec", record: "DatasetRecord"
) -> list[str]:
    """The note ``dataset register`` prints for a classification without [contribution]."""
    settings = platform.settings
    words = f"C = {settings.dp_max_rows_per_entity}, G = {settings.dp_max_groups_per_entity}"
    if spec.one_row_per_entity:
        return [
            f"note: no [contribution] needed: queries with a privacy budget run at "
            f"{_one_row(spec, words)}"
        ]
    drawn = settings.default_bounds_epsilon > 0 and record.engine == "duckdb"
    reach = settings.dp_max_rows_per_entity * settings.dp_max_groups_per_entity
    lines = [
        "note: no [contribution] in the classification: queries with a privacy budget "
        f"run at the platform default {words}{',' if drawn else ''}"
    ]
    if drawn:
        lines.append(
            "      set to the data's rows per entity by DP draws at the first one "
            f"(up to {max(settings.default_bounds_max_rows, reach)}; owner-side ε "
            f"{settings.default_bounds_epsilon:g} each, audited);"
        )
    lines.append(
        "      declare the data's own (docs/classification.md), or ask for a proposal: "
        f"sandbox dataset propose-bounds {record.id}"
    )
    return lines


def drawn_bounds(platform: "Platform", rec: "DatasetRecord") -> dict[str, object] | None:
    """The ``--json`` form of a draw for ``rec`` (None: none drawn for its entity key)."""
    from sandbox.core.classification import Contribution
    from sandbox.query.bounds_proposal import owner_epsilon_spent
    from sandbox.query.default_bounds import stored_draw

    drawn = stored_draw(platform.engine, rec.id)
    if drawn is None or drawn.entity_key != rec.entity_key.lower():
        return None
    settings = platform.settings
    default = Contribution(settings.dp_max_rows_per_entity, settings.dp_max_groups_per_entity)
    bounds = drawn.bounds(default, rec.spec)
    return {
        "bounds": None if bounds is None else bounds.to_dict(),  # None: the default is kept
        "epsilon": drawn.epsilon,  # each quantile's
        "owner_epsilon_spent": owner_epsilon_spent(platform, rec.id),  # all the owner's draws
        "drawn_from_version": drawn.version,
        # each undeclared groupable column's values per entity (None: not drawn yet)
        "values_per_entity": None if drawn.values is None else dict(drawn.values),
    }


def undeclared_bounds(platform: "Platform", rec: "DatasetRecord") -> str:
    """The ``contribution:`` line of a dataset without ``[contribution]``."""
    from sandbox.core.classification import Contribution
    from sandbox.query.bounds_proposal import owner_epsilon_spent
    from sandbox.query.default_bounds import stored_draw

    settings = platform.settings
    default = Contribution(settings.dp_max_rows_per_entity, settings.dp_max_groups_per_entity)
    words = f"C = {default.max_rows_per_entity}, G = {default.max_groups_per_entity}"
    if rec.spec.one_row_per_entity:
        return f"contribution: {_one_row(rec.spec, words)}"
    drawn = stored_draw(platform.engine, rec.id)
    if drawn is None or drawn.entity_key != rec.entity_key.lower():
        return f"contribution: platform default {words} (no [contribution]; none drawn yet)"
    spent = owner_epsilon_spent(platform, rec.id)
    how = (
        f"drawn from v{drawn.version}'s rows per entity, DP, ε {drawn.epsilon:g} a quantile, "
        f"owner-side ε {spent:g} in all"
    )
    bounds = drawn.bounds(default, rec.spec)
    values = ""
    if drawn.values:
        listed = ", ".join(f"{name} {n}" for name, n in drawn.values)
        values = f"; values per entity drawn: {listed}"
    if bounds is None:
        return f"contribution: platform default {words} (no [contribution]; {how}{values})"
    return (
        f"contribution: C = {bounds.max_rows_per_entity}, G = {bounds.max_groups_per_entity}, "
        f"T = {bounds.max_total_rows_per_entity} (no [contribution]; {how}{values})"
    )
