"""Windows that cannot be computed on their outputs' types, refused before the charge.

A query's windows run over its released rows, after the run was charged
(``release.release``).  What the released table's columns are (names and types) follows
from the plan alone: the stats query's types, which binding it reads off the catalog
without a row, then disclosure and the release query, neither of which types a column
by its values.  So a window that cannot even bind on those types (``sum`` of a VARCHAR)
is known to fail before anything runs, whatever the data: :func:`check_window_types`
releases a stats table *without a row* of the stats query's schema (its noise drawn
from a throwaway source: nothing of it is ever released) and runs the windows over one
row of NULLs of what that releases (a default a window casts only on a row).  A
failure to bind or cast is ``guard.window``, naming the window as written and what its
inputs are released as (type names only, never a value).

What fails only on values (an overflow) is the run's, as before: held under review,
``disclosure.arithmetic`` (``held_failure``).  Where the dry run cannot be had (the
stats query does not bind, a type the release database does not know), nothing is
refused here and the run decides as it always did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import duckdb
import pyarrow as pa
from duckdb.sqltypes import DuckDBPyType

from sandbox.core.errors import EnclaveError, QueryRefused, SandboxError
from sandbox.query.noise import seeded_noise
from sandbox.query.release import (
    Prepared,
    PreparedWithSets,
    PreparedWithThresholds,
    PreparedWithTotals,
    PreparedWithWindows,
    Released,
    WithSets,
    release,
)
from sandbox.query.rewrite import STATS_TABLE
from sandbox.query.totals import WithTotals
from sandbox.query.windows import RULE

__all__ = [
    "BIND_ERRORS",
    "OUTPUT_TYPES",
    "Unchecked",
    "check_output_types",
    "check_threshold_types",
    "check_window_types",
    "empty_stats",
    "stats_types",
]

#: DuckDB's errors while binding a query: a property of its text and its inputs' types.
BIND_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.TypeMismatchException,
)

#: (column name, DuckDB type) of a stats query's result.
Types = Sequence[tuple[str, DuckDBPyType]]


class Unchecked(Exception):
    """The dry run could not be had: nothing is refused, the run decides."""


def stats_types(cursor: duckdb.DuckDBPyConnection, sql: str) -> Types:
    """The columns of ``sql``'s result as binding it gives them (no row is read: a
    relation runs only when fetched)."""
    try:
        relation = cursor.sql(sql)
    except duckdb.Error:
        raise Unchecked from None
    if relation is None:
        raise Unchecked
    return list(zip(relation.columns, relation.types, strict=True))


def _empty(types: Types, database: duckdb.DuckDBPyConnection) -> pa.Table:
    """A table of ``types`` without a row, as DuckDB hands such a result to Arrow."""
    columns = ", ".join(f"CAST(NULL AS {kind}) AS {_quoted(name)}" for name, kind in types)
    cursor = database.cursor()
    try:
        return cursor.sql(f"SELECT {columns} LIMIT 0").to_arrow_table()
    except duckdb.Error:
        raise Unchecked from None  # a type the release database cannot name
    finally:
        cursor.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def empty_stats(
    prepared: Prepared,
    types: Callable[[str], Types],
    database: duckdb.DuckDBPyConnection,
) -> pa.Table | WithTotals | WithSets:
    """What ``release.execute`` returns for ``prepared``, without a row: each stats
    query's table of the types ``types`` gives its SQL."""
    if isinstance(prepared, PreparedWithWindows):
        return empty_stats(prepared.inner, types, database)
    if isinstance(prepared, PreparedWithSets):
        return WithSets(tuple(empty_stats(p, types, database) for p in prepared.sets))
    table = _empty(types(prepared.plan.stats_sql), database)
    if not isinstance(prepared, PreparedWithTotals):
        return table
    return WithTotals(table, tuple(empty_stats(p, types, database) for p in prepared.parts))


#: The rule of an output that cannot be computed over its statistics' released types.
OUTPUT_TYPES = "guard.output_types"


def _released(
    stats: pa.Table | WithTotals | WithSets, prepared: Prepared, database: duckdb.DuckDBPyConnection
) -> Released:
    """``release`` of a stats table without a row (its noise from a throwaway source).

    The release query's expressions run under ``TRY`` (``rewrite``): what fails there on
    no row is its binding, a property of the types alone, refused as
    :data:`OUTPUT_TYPES`.  Any other failure is not judged here (:class:`Unchecked`).
    """
    try:
        return release(stats, prepared, noise=seeded_noise(0), database=database)
    except EnclaveError as exc:
        if exc.rule != "release.outputs":
            raise Unchecked from None
        raise QueryRefused(
            "an output cannot be computed over the types its statistics are released as "
            "(coalesce of a text and a number, say): check the types each output combines",
            rule=OUTPUT_TYPES,
        ) from None
    except SandboxError:
        raise Unchecked from None


def check_output_types(
    prepared: Prepared,
    types: Callable[[str], Types],
    database: duckdb.DuckDBPyConnection,
) -> None:
    """Refuse (:data:`OUTPUT_TYPES`) outputs that cannot bind on their statistics' types,
    and windows that cannot be computed over the released outputs (``guard.window``);
    a query's thresholds (:func:`check_threshold_types`) too."""
    if isinstance(prepared, PreparedWithThresholds):
        check_threshold_types(prepared, types, database)  # first: its stats must bind
    if isinstance(prepared, PreparedWithWindows):
        check_window_types(prepared, types, database)
    else:
        _released(empty_stats(prepared, types, database), prepared, database)


def check_threshold_types(
    prepared: PreparedWithThresholds,
    types: Callable[[str], Types],
    database: duckdb.DuckDBPyConnection,
) -> None:
    """Refuse, before the charge, a threshold that is no number (``(SELECT min(district)
    …)``: ``guard.subquery_predicate``) and a query that cannot bind with a number where
    its threshold stands (``claim_date > (SELECT count(*) …)``: :data:`OUTPUT_TYPES`).
    Both follow from the types alone: at run time the one would fail at any released
    value and not where it was withheld, the other alike (``parts.bind_thresholds``)."""
    for part in prepared.parts:
        schema = _released(empty_stats(part, types, database), part, database).table.schema
        kind = schema.field(0).type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
        ):
            raise QueryRefused(
                "a subquery compared in WHERE or a group key gives a number (an average, a "
                f"sum, a count): this one gives {kind}",
                rule="guard.subquery_predicate",
            )
    try:
        types(prepared.plan.stats_sql)  # the query with a number in the threshold's place
    except Unchecked:
        raise QueryRefused(
            "the query does not bind with a number where its subquery stands: compare the "
            "subquery with a numeric column or expression",
            rule=OUTPUT_TYPES,
        ) from None


def check_window_types(
    prepared: PreparedWithWindows,
    types: Callable[[str], Types],
    database: duckdb.DuckDBPyConnection,
) -> None:
    """Refuse (``guard.window``) windows that cannot bind on the released outputs' types.

    ``types``: a stats query's result columns, bound without reading a row
    (:func:`stats_types` on an enclave cursor).  Raises :class:`Unchecked` where the dry
    run cannot be had.
    """
    released = _released(empty_stats(prepared, types, database), prepared.inner, database)
    cursor = database.cursor()
    try:
        cursor.register(STATS_TABLE, _null_row(released.table.schema))
        try:
            cursor.sql(prepared.outer_sql).fetchall()
            return
        except BIND_ERRORS:
            pass
        except duckdb.Error:
            raise Unchecked from None
        released_as = dict(zip(released.table.column_names, _type_names(cursor), strict=True))
        for window in prepared.windows:
            try:
                cursor.sql(window.sql).fetchall()
            except BIND_ERRORS:
                reads = "; ".join(
                    f"{text}, released as {released_as[name]}"
                    for name, text in window.inputs
                    if name in released_as
                )
                named = "" if window.output == window.written else f' (output "{window.output}")'
                raise QueryRefused(
                    f"the window {window.written}{named} cannot be computed over the "
                    "released outputs' types"
                    + (f" (it reads {reads})" if reads else "")
                    # a type's kind, never a value: _type_names
                    + ": check its arguments' types",
                    rule=RULE,
                ) from None
            except duckdb.Error:
                raise Unchecked from None
        outputs = zip(prepared.names, prepared.sources, strict=True)
        around = ", ".join(f'"{name}"' for name, source in outputs if source is None)
        raise QueryRefused(
            f"an output computed with a window ({around}) cannot be computed over the "
            "released outputs' types: check the types of what it computes with the "
            "window's value",
            rule=RULE,
        )
    finally:
        cursor.close()


def _null_row(schema: pa.Schema) -> pa.Table:
    """One row of NULLs of the released types: no data, but a row for the windows to
    run over, so a default ``lag`` casts only when a row needs it (``lag(n, 1, 'abc')``
    binds on no row and fails on any) fails here too (outside review, December 2026)."""
    return pa.table([pa.nulls(1, type=field.type) for field in schema], schema=schema)


def _type_names(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    """The released columns' DuckDB type names, by kind only (an ENUM's type would
    list its members: values)."""
    relation = cursor.sql(f"SELECT * FROM {STATS_TABLE}")
    return [str(kind.id).upper() for kind in relation.types]
