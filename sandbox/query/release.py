# Over 400 lines: prepare, execute and release recurse through totals and grouping sets;
# one module keeps that recursion in one place.
"""Prepare, execute and release one query: the pure steps of a job's path.

``prepare`` (pure): parse, check against the grants, rewrite; also what the
query would cost in ε.  ``execute``: the stats query on its engine (the locked
DuckDB enclave, or Spark over the warehouse: ``sandbox.engines``), as an AST.
``release``: disclosure control on the stats table, then the operator's output
expressions, HAVING, ORDER BY and LIMIT computed over the released statistics
only, in a separate in-memory DuckDB that can see nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sandbox.core.access import DatasetAccess
from sandbox.core.errors import EnclaveError, QueryRefused, SandboxError
from sandbox.enclave.enclave import LOCKDOWN, Enclave
from sandbox.engines.base import Engine
from sandbox.engines.duck import DuckDBEngine
from sandbox.query.disclosure import (
    DisclosureParams,
    StatColumn,
    disclose,
    epsilon_cost,
    reads_group_entities,
)
from sandbox.query.entity_table import lift
from sandbox.query.entity_words import analyst_words
from sandbox.query.grouping_sets import grouping_sets, output_names, stacked_order
from sandbox.query.guard import Checked, check_query
from sandbox.query.key_groups import declared_groups
from sandbox.query.noise import NoiseSource
from sandbox.query.parse import Parsed, parse_query
from sandbox.query.parts import (
    Split,
    bind_thresholds,
    split_thresholds,
    split_totals,
    thresholds_in,
)
from sandbox.query.release_filter import apply_filter
from sandbox.query.rewrite import STATS_TABLE, ContributionBounds, Plan, build_plan
from sandbox.query.totals import WithTotals, total_column
from sandbox.query.windows import Window, split_windows

__all__ = [
    "PROBES",
    "THRESHOLD_FAILURE",
    "Prepared",
    "PreparedWithSets",
    "PreparedWithThresholds",
    "PreparedWithTotals",
    "PreparedWithWindows",
    "Released",
    "execute",
    "over_released",
    "prepare",
    "release",
    "release_database",
    "result_sha256",
    "run_thresholds",
    "with_thresholds",
]


@dataclass(frozen=True)
class Prepared:
    parsed: Parsed
    checked: Checked
    plan: Plan
    params: DisclosureParams

    @cached_property
    def columns(self) -> tuple[StatColumn, ...]:
        """The plan's statistics as disclosure reads them (read several times a run)."""
        return tuple(StatColumn(**asdict(stat)) for stat in self.plan.stats)

    @property
    def epsilon(self) -> float:
        """What releasing this query costs in ε (0 without a budget)."""
        if not self.params.epsilon:
            return 0.0
        return epsilon_cost(self.columns, self.params, grouped=bool(self.plan.keys))

    @property
    def query_sha256(self) -> str:
        return hashlib.sha256(self.parsed.normalized_sql.encode()).hexdigest()

    @property
    def touched(self) -> list[str]:
        return sorted(f"{b.dataset}.{b.column}" for b in self.checked.touched)


@dataclass(frozen=True)
class _WithParts(Prepared):
    """A query released with parts of its own: its cost and columns are theirs too."""

    parts: tuple[Prepared, ...] = ()

    @property
    def epsilon(self) -> float:
        return super().epsilon + sum(part.epsilon for part in self.parts)

    @property
    def touched(self) -> list[str]:
        return sorted({*super().touched, *(c for part in self.parts for c in part.touched)})


@dataclass(frozen=True)
class PreparedWithTotals(_WithParts):
    """A query whose totals are released as parts of their own (``sandbox/query/parts.py``).

    ``params`` is the outer query's share of the release (ε and δ split equally over
    the outer query and its totals); each part holds its own share.
    """


def _share(params: DisclosureParams, parts: int) -> DisclosureParams:
    """One of ``parts`` equal shares of a release's ε and δ (basic composition)."""
    if not params.epsilon:
        return params
    return replace(params, epsilon=params.epsilon / parts, delta=params.delta / parts)


def _split_prepared(
    split: Split,
    access: Mapping[str, DatasetAccess],
    params: DisclosureParams,
    bounds: ContributionBounds | None,
    max_sql_length: int,
    portable: bool,
    *,
    unrounded_parts: bool = False,
) -> tuple[DisclosureParams, tuple[Prepared, ...], Prepared]:
    """Each part and the outer query prepared as queries of their own, with an equal
    share each: (the share, the parts, the outer query).  ``unrounded_parts``: the parts
    released unrounded (a threshold goes into the query as released, not as shown)."""
    share = _share(params, 1 + len(split.totals))
    own = replace(share, round_digits=None) if unrounded_parts else share
    parts = tuple(
        prepare(t, access, own, bounds=bounds, max_sql_length=max_sql_length, portable=portable)
        for t in split.totals
    )
    main = prepare(
        split.main, access, share, bounds=bounds, max_sql_length=max_sql_length, portable=portable
    )
    return share, parts, main


def _with_totals(
    parsed: Parsed,
    split: Split,
    access: Mapping[str, DatasetAccess],
    params: DisclosureParams,
    bounds: ContributionBounds | None,
    max_sql_length: int,
    portable: bool,
) -> PreparedWithTotals:
    """The outer query and each total, each prepared as a query of its own."""
    _, parts, main = _split_prepared(split, access, params, bounds, max_sql_length, portable)
    return PreparedWithTotals(parsed, main.checked, main.plan, main.params, parts=parts)


@dataclass(frozen=True)
class PreparedWithThresholds(_WithParts):
    """A query whose WHERE compares with a total (``x > (SELECT avg(x) FROM t)``): each
    such threshold is released first, as the query of its own it is, and the query then
    runs with the released values in its place (``parts.split_thresholds``,
    :func:`run_thresholds`).  Its own fields are the query's with a stand-in constant
    for each threshold (the guard's verdict, the noise plan, ``explain``'s accuracy: none
    depends on the value); ``params`` its share of ε and δ, split equally with the
    thresholds as a query's totals are.  Never executed as it is (:func:`execute`)."""

    #: ``parts``: the thresholds, in order; the query with its stand-ins, and what
    #: preparing it again at the values needs
    main: Parsed | None = None
    share: DisclosureParams | None = None
    access: Mapping[str, DatasetAccess] | None = None
    bounds: ContributionBounds | None = None
    max_sql_length: int = 0
    portable: bool = False

    def at(self, values: tuple[object, ...]) -> Prepared:
        """The query prepared again with the thresholds' released values in place: the
        query that was costed, with a constant changed (else refused: its ε was charged
        for the stand-in's plan, which a run may never exceed)."""
        assert self.main is not None and self.share is not None and self.access is not None
        bound = prepare(
            bind_thresholds(self.main, values),
            self.access,
            self.share,
            bounds=self.bounds,
            max_sql_length=self.max_sql_length,
            portable=self.portable,
        )
        if (
            type(bound) is not Prepared
            or bound.params != self.params
            or bound.epsilon > Prepared.epsilon.fget(self)  # type: ignore[attr-defined]
        ):
            raise EnclaveError(
                "the query at its thresholds' released values is not the query costed",
                rule="release.outputs",
            )
        return bound


def _with_thresholds(
    parsed: Parsed,
    split: Split,
    access: Mapping[str, DatasetAccess],
    params: DisclosureParams,
    bounds: ContributionBounds | None,
    max_sql_length: int,
    portable: bool,
) -> PreparedWithThresholds:
    """Each threshold and the query with stand-ins, each prepared as a query of its own."""
    if thresholds_in(split.main) != len(split.totals):
        raise QueryRefused(
            "a subquery in WHERE is compared with a column as it stands (x > (SELECT "
            "avg(x) FROM t), x > 2 * (SELECT …)); here an expression around it could not "
            "be kept as written",
            rule="guard.subquery_predicate",
        )
    share, thresholds, main = _split_prepared(
        split, access, params, bounds, max_sql_length, portable, unrounded_parts=True
    )
    if type(main) is not Prepared:
        raise QueryRefused(
            "a subquery compared in WHERE is released before the query runs, which is then "
            "one release: without window functions, grouping sets or totals in its SELECT "
            "list (run those as a query of their own)",
            rule="guard.subquery_predicate",
        )
    prepared = PreparedWithThresholds(
        parsed,
        main.checked,
        main.plan,
        main.params,
        parts=thresholds,
        main=split.main,
        share=share,
        access=access,
        bounds=bounds,
        max_sql_length=max_sql_length,
        portable=portable,
    )
    # Whether the query is accepted may not depend on the thresholds' values (under review
    # a refusal at run time would tell an exact value's parity, or whether it was
    # withheld): it must be at every probe, else it is refused now, whatever the value.
    for probe in PROBES:
        try:
            prepared.at((probe,) * len(thresholds))
        except QueryRefused as refused:
            raise QueryRefused(
                f"compared with a subquery, whose value decides: {refused.message}",
                rule=refused.rule,
            ) from None
        except EnclaveError:
            raise QueryRefused(
                "compared with a subquery, the query is not one query whatever its value: "
                "compare a column with it (x > (SELECT avg(x) FROM t))",
                rule="guard.subquery_predicate",
            ) from None
    return prepared


#: Values a threshold's query is prepared at before it is accepted (data-independent):
#: whole and not, negative, large, withheld.
PROBES: tuple[object, ...] = (0, 1, 7, -3, 0.5, 12345.678, None)


@dataclass(frozen=True)
class PreparedWithSets(Prepared):
    """A query with ``ROLLUP``, ``CUBE`` or ``GROUPING SETS``: one query per grouping set
    (``grouping_sets.py``), each prepared as a query of its own with an equal share of
    ε and δ; their released rows are stacked in order, then ordered and limited by
    ``order_sql``.  Its own fields are the first set's; ``explain`` states, per output,
    the widest of the sets' accuracies (``cell_accuracy.output_accuracy``), and the
    engine reads up to the largest of their group read caps (``QueryService._read_cap``)."""

    sets: tuple[Prepared, ...] = ()
    #: ``ORDER BY … LIMIT …`` over the stacked rows' output names; "" for none.
    order_sql: str = ""
    #: The stacked rows' column names (the query's; a set's own may read ``NULL``).
    names: tuple[str, ...] = ()

    @property
    def epsilon(self) -> float:
        return sum(part.epsilon for part in self.sets)

    @property
    def touched(self) -> list[str]:
        return sorted({c for part in self.sets for c in part.touched})


@dataclass(frozen=True)
class PreparedWithWindows(Prepared):
    """A query with window functions (``windows.py``): the query without them
    (``inner``, prepared as any query, with each window's inputs as hidden outputs), then
    the windows over its released rows (``outer_sql``), outside the enclave.  Its own
    fields are the inner query's, but ``parsed``: the query as written."""

    inner: Prepared
    #: The windows, ORDER BY and LIMIT over the inner query's released outputs.
    outer_sql: str
    #: The query's output names, and per output the inner one it passes on (None: a window).
    names: tuple[str, ...]
    sources: tuple[str | None, ...]
    #: Each window as written and alone over the released rows (``window_types``).
    windows: tuple[Window, ...] = ()

    @property
    def epsilon(self) -> float:
        return self.inner.epsilon

    @property
    def touched(self) -> list[str]:
        return self.inner.touched


@dataclass(frozen=True)
class WithSets:
    """The stats of each grouping set's query, in order."""

    sets: tuple[pa.Table | WithTotals | WithSets, ...]


def _with_sets(
    parsed: Parsed,
    access: Mapping[str, DatasetAccess],
    params: DisclosureParams,
    bounds: ContributionBounds | None,
    max_sql_length: int,
    portable: bool,
) -> PreparedWithSets:
    """Each grouping set's query prepared on its own, with its share of the budget."""
    share = _share(params, len(parsed.sets))
    sets = tuple(
        prepare(
            Parsed(select, parsed.datasets, parsed.cte_names, parsed.sql),
            access,
            share,
            bounds=bounds,
            max_sql_length=max_sql_length,
            portable=portable,
        )
        for select in parsed.sets
    )
    first = sets[0]
    names = output_names(parsed.expression)
    if len(names) != len(first.plan.output_names):  # COLUMNS(…) expanded: the set's own
        names = list(first.plan.output_names)
    order = stacked_order(parsed.expression, names)
    return PreparedWithSets(
        parsed,
        first.checked,
        first.plan,
        first.params,
        sets=sets,
        order_sql=order,
        names=tuple(names),
    )


@dataclass(frozen=True)
class Released:
    table: pa.Table
    groups_suppressed: int | None  # noised with ε; None without (never an exact count)
    epsilon_spent: float
    #: The released statistics the outputs were computed from (for per-cell accuracy).
    stats: pa.Table | None = None
    #: The released value of each threshold the query's WHERE compared with, in order.
    thresholds: tuple[object, ...] = ()


def with_total(params: DisclosureParams) -> DisclosureParams:
    """``params`` with T applied: ``C`` at most ``T``, and ``T`` kept only where it binds.

    One cell never holds more than ``T`` of an entity's rows, so ``C`` above ``T`` is
    ``T``; and ``T`` at or above ``C·G`` (an ungrouped query's folded ``C``, say) drops
    nothing the group cap keeps: the query then runs as if no ``T`` were declared.
    """
    t = params.max_total_rows_per_entity
    if t is None:
        return params
    c = min(params.max_rows_per_entity, t)
    binds = t < c * params.max_groups_per_entity
    return replace(params, max_rows_per_entity=c, max_total_rows_per_entity=t if binds else None)


def prepare(
    sql: str | Parsed,
    access: Mapping[str, DatasetAccess],
    params: DisclosureParams,
    *,
    bounds: ContributionBounds | None = None,
    max_sql_length: int,
    portable: bool = False,
) -> Prepared:
    """Everything short of running: the guard's verdict and the rewritten SQL.

    ``portable``: the per-entity caps choose cells by a hash every engine computes
    alike (``rewrite.build_plan``); Spark needs it, DuckDB uses its own ``hash()``."""
    parsed = sql if isinstance(sql, Parsed) else parse_query(sql, max_length=max_sql_length)
    lifted = lift(
        parsed,
        access,
        rows_per_entity=(
            params.max_total_rows_per_entity
            or params.max_rows_per_entity * params.max_groups_per_entity
        )
        if params.epsilon
        else None,
        max_sql_length=max_sql_length,
    )
    if lifted is not None:
        # Over tables of one row per entity: one row, in one group, per entity.
        one = replace(
            params, max_rows_per_entity=1, max_groups_per_entity=1, max_total_rows_per_entity=None
        )
        with analyst_words(lifted.names):
            over = prepare(
                lifted.parsed,
                lifted.access,
                one,
                bounds=bounds,
                max_sql_length=max_sql_length,
                portable=portable,
            )
        return replace(over, parsed=parsed)  # the datasets and text the analyst named
    thresholds = split_thresholds(parsed)
    if thresholds is not None:
        return _with_thresholds(
            parsed, thresholds, access, params, bounds, max_sql_length, portable
        )
    windows = split_windows(parsed.expression, STATS_TABLE)
    if windows is not None:
        inner = prepare(
            Parsed(
                windows.inner,
                parsed.datasets,
                parsed.cte_names,
                parsed.sql,
                sets=grouping_sets(windows.inner),  # the windows run over the stacked rows
            ),
            access,
            params,
            bounds=bounds,
            max_sql_length=max_sql_length,
            portable=portable,
        )
        return PreparedWithWindows(
            parsed,
            inner.checked,
            inner.plan,
            inner.params,
            inner=inner,
            outer_sql=windows.outer_sql,
            names=windows.names,
            sources=windows.sources,
            windows=windows.windows,
        )
    if parsed.sets:
        return _with_sets(parsed, access, params, bounds, max_sql_length, portable)
    split = split_totals(parsed)
    if split is not None:
        return _with_totals(parsed, split, access, params, bounds, max_sql_length, portable)
    checked = check_query(parsed, access)
    if params.epsilon and bounds is None and not checked.keys and params.max_groups_per_entity > 1:
        # One group: an entity's C rows in each of G groups are C·G rows in this one, the
        # same L1 sensitivity the (C, G) pair promises, with no rows lost to a cap per group.
        params = replace(
            params,
            max_rows_per_entity=params.max_rows_per_entity * params.max_groups_per_entity,
            max_groups_per_entity=1,
        )
    if params.epsilon and bounds is None and checked.keys:
        # The keys' declared values per entity (a person's sex: 1) may bound the groups
        # an entity falls in below the dataset's G: the cap then keeps that many.
        declared = declared_groups(checked, access)
        if declared is not None and declared < params.max_groups_per_entity:
            params = replace(params, max_groups_per_entity=declared)
    if params.epsilon and bounds is None:
        params = with_total(params)
        bounds = ContributionBounds(
            max_rows_per_entity=params.max_rows_per_entity,
            max_groups_per_entity=params.max_groups_per_entity,
            max_total_rows_per_entity=params.max_total_rows_per_entity,
        )
    # Under a budget k is a floor on the *noisy* count (disclosure.selection_threshold):
    # the enclave keeps every group, so a DP release is not cut by a test on true counts.
    k = 1 if params.epsilon else params.k
    plan = build_plan(
        checked, access, bounds=bounds if params.epsilon else None, k=k, portable=portable
    )
    if params.epsilon and any(stat.kind in ("min", "max") for stat in plan.stats):
        raise QueryRefused(
            "min and max are not released under a privacy budget: no noise hides whose value "
            "an extreme is; count the values instead",
            rule="disclosure.extreme",
        )
    prepared = Prepared(parsed, checked, plan, params)
    if plan.ranked and not reads_group_entities(prepared.columns, params, grouped=bool(plan.keys)):
        # A row count selects the groups: the release never reads their entity count, and
        # over a ranked copy it is the stats query's one distinct count (W3 with ε).
        unread = build_plan(
            checked, access, bounds=bounds, k=k, portable=portable, group_entities=False
        )
        prepared = Prepared(parsed, checked, unread, params)
    return prepared


def execute(
    engine: Engine | Enclave,
    prepared: Prepared,
    *,
    max_groups: int | None = None,
    before: Callable[[Any], None] | None = None,
) -> pa.Table | WithTotals:
    """Run the stats query on its engine (timeout and result limits apply); totals too.

    The engine receives the rewritten query (``Plan.stats_sql``, DuckDB's dialect: the
    DuckDB engine runs it as it is, Spark transpiles its AST), never the operator's
    text; an :class:`Enclave` is run as the DuckDB engine.  ``before`` is called before
    each query reads a row (``Engine.run``).
    """
    if isinstance(engine, Enclave):
        engine = DuckDBEngine(engine)
    if isinstance(prepared, PreparedWithThresholds):
        # its plan holds stand-ins for the thresholds: run_thresholds, then execute .at()
        raise EnclaveError("the query's thresholds are not released yet", rule="release.outputs")
    if isinstance(prepared, PreparedWithWindows):
        return execute(engine, prepared.inner, max_groups=max_groups, before=before)
    if isinstance(prepared, PreparedWithSets):
        return WithSets(
            tuple(execute(engine, p, max_groups=max_groups, before=before) for p in prepared.sets)
        )
    table = engine.run(prepared.plan.stats_sql, max_rows=max_groups, before=before)
    if not isinstance(prepared, PreparedWithTotals):
        return table
    totals = tuple(execute(engine, p, max_groups=max_groups, before=before) for p in prepared.parts)
    return WithTotals(table, totals)


def run_thresholds(
    engine: Engine | Enclave,
    prepared: PreparedWithThresholds,
    *,
    noise: NoiseSource | None = None,
    database: duckdb.DuckDBPyConnection | None = None,
    before: Callable[[Any], None] | None = None,
) -> tuple[Prepared, tuple[Released, ...]]:
    """Release each threshold (executed, then disclosed, as the query of its own it is),
    then prepare the query at their released values: what :func:`execute` and
    :func:`release` then run.  Only released values reach the query (post-processing)."""
    parts: list[Released] = []
    for part in prepared.parts:
        stats = execute(engine, part, before=before)
        try:
            parts.append(release(stats, part, noise=noise, database=database))
        except SandboxError:
            raise
        except Exception:
            raise EnclaveError(
                "the released values could not be computed from the statistics",
                rule="disclosure.arithmetic",
            ) from None
    values = tuple(_value(part) for part in parts)
    try:
        return prepared.at(values), tuple(parts)
    except SandboxError:
        # Accepted at every probe value: a refusal here would depend on the values, so
        # it is a failure on the data (held under review, held_failure.DATA_FAILURES).
        raise EnclaveError(
            "the query could not be run at its thresholds' values", rule=THRESHOLD_FAILURE
        ) from None


#: The rule of a query refused at its thresholds' released values.
THRESHOLD_FAILURE = "release.threshold"


def _value(released: Released) -> object:
    """A threshold's released value (None: withheld)."""
    return released.table.column(0)[0].as_py() if released.table.num_rows else None


def with_thresholds(released: Released, thresholds: tuple[Released, ...]) -> Released:
    """The query's release with its thresholds': their ε, groups and values."""
    if not thresholds:
        return released
    suppressed = released.groups_suppressed
    if suppressed is not None:
        suppressed += sum(t.groups_suppressed or 0 for t in thresholds)
    return replace(
        released,
        groups_suppressed=suppressed,
        epsilon_spent=released.epsilon_spent + sum(t.epsilon_spent for t in thresholds),
        thresholds=tuple(_value(t) for t in thresholds),
    )


def release_database() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB, locked down, for computing outputs over released statistics."""
    con = duckdb.connect(config=dict(LOCKDOWN))
    con.execute("SET lock_configuration = true")
    return con


def release(
    stats: pa.Table | WithTotals,
    prepared: Prepared,
    *,
    noise: NoiseSource | None = None,
    database: duckdb.DuckDBPyConnection | None = None,
    max_groups: int | None = None,
) -> Released:
    """Disclosure control, then the operator's outputs over released statistics only.

    A query's totals are released first, each as the query of its own it is; the
    outer query's outputs then read their released values (never true ones).
    ``max_groups``: with ε, the most groups a run may form, held against their noisy
    number (``disclose``).
    """
    if isinstance(prepared, PreparedWithWindows):
        # The windows over the released rows only: post-processing, as any output is.
        inner = release(
            stats, prepared.inner, noise=noise, database=database, max_groups=max_groups
        )
        try:
            table = over_released(inner.table, prepared.outer_sql, database)
        except EnclaveError:
            # A failure here is held under review as any failure on the data is
            # (held_failure.DATA_FAILURES), and names no engine error.
            raise EnclaveError(
                "computing the windows over the released rows failed",
                rule="disclosure.arithmetic",
            ) from None
        table = _round(table, prepared.params.round_digits)
        return Released(table, inner.groups_suppressed, inner.epsilon_spent, inner.stats)
    if isinstance(stats, WithSets) != isinstance(prepared, PreparedWithSets):
        raise EnclaveError("the stats do not match the prepared query", rule="release.outputs")
    if isinstance(stats, WithSets) and isinstance(prepared, PreparedWithSets):
        return _stacked(stats, prepared, noise=noise, database=database, max_groups=max_groups)
    totals: list[Released] = []
    if isinstance(stats, WithTotals) != isinstance(prepared, PreparedWithTotals):
        raise EnclaveError("the stats do not match the prepared query", rule="release.outputs")
    if isinstance(stats, WithTotals) and isinstance(prepared, PreparedWithTotals):
        totals = [
            release(part_stats, part, noise=noise, database=database, max_groups=max_groups)
            for part_stats, part in zip(stats.totals, prepared.parts, strict=True)
        ]
        stats = stats.main
    # The engine's row order follows its hash tables, which every row shapes (and differs
    # between engines): noise is drawn, and released rows (and a LIMIT without ORDER BY)
    # follow, in the order of the group keys instead.
    stats = _sorted(stats, prepared.plan.keys)
    disclosed = disclose(
        stats, prepared.columns, prepared.params, noise=noise, max_groups=max_groups
    )
    released = _sorted(disclosed.table, prepared.plan.keys)
    released = _with_columns(released, totals)
    columns, where = prepared.plan.release_columns, prepared.plan.release_where
    kept = released if columns is None or where is None else apply_filter(released, where)
    if columns is not None and kept is not None:  # released statistics as they are
        table = kept.select([c for c, _ in columns]).rename_columns([n for _, n in columns])
    else:
        table = over_released(released, prepared.plan.release_sql, database)
    table = _round(table, prepared.params.round_digits)
    suppressed = disclosed.groups_suppressed
    if suppressed is not None:
        suppressed += sum(total.groups_suppressed or 0 for total in totals)
    spent = disclosed.epsilon_spent + sum(total.epsilon_spent for total in totals)
    return Released(table, suppressed, spent, released)


def _stacked(
    stats: WithSets,
    prepared: PreparedWithSets,
    *,
    noise: NoiseSource | None,
    database: duckdb.DuckDBPyConnection | None,
    max_groups: int | None,
) -> Released:
    """Each grouping set released as the query of its own it is, the rows stacked in
    order (a key a set does not group by is NULL there), then ordered and limited."""
    parts = [
        release(part_stats, part, noise=noise, database=database, max_groups=max_groups)
        for part_stats, part in zip(stats.sets, prepared.sets, strict=True)
    ]
    names = list(prepared.names)
    try:
        table = pa.concat_tables(
            [p.table.rename_columns(names) for p in parts], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise EnclaveError(
            "the grouping sets' outputs have types that cannot be stacked",
            rule="release.outputs",
        ) from None
    if prepared.order_sql:
        table = over_released(table, f"SELECT * FROM {STATS_TABLE} {prepared.order_sql}", database)
    counts = [p.groups_suppressed for p in parts]
    suppressed = None if all(c is None for c in counts) else sum(c or 0 for c in counts)
    return Released(table, suppressed, sum(p.epsilon_spent for p in parts), None)


def over_released(
    released: pa.Table, sql: str, database: duckdb.DuckDBPyConnection | None = None
) -> pa.Table:
    """``sql`` over the released stats (as ``STATS_TABLE``), in a cursor of the (locked,
    in-memory) release ``database``; None opens one for this call (about 16 ms)."""
    base = release_database() if database is None else database
    con: duckdb.DuckDBPyConnection | None = None
    try:
        con = base.cursor()
        con.register(STATS_TABLE, released)
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise EnclaveError(
            f"computing the released outputs failed ({type(exc).__name__})",
            rule="release.outputs",
        ) from None
    finally:
        if con is not None:
            con.close()
        if database is None:
            base.close()


def _with_columns(table: pa.Table, totals: list[Released]) -> pa.Table:
    """The released stats with each released total as a column (NULL if it was withheld)."""
    for index, total in enumerate(totals):
        values = total.table.column(0)
        value = values[0].as_py() if len(values) else None
        column = pa.array([value] * table.num_rows, type=values.type)
        table = table.append_column(total_column(index), column)
    return table


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    """The rows ordered by the group keys, ascending, nulls last.

    pyarrow sorts no interval: an interval key (``INTERVAL 1 DAY`` as a group key, or
    a difference of timestamps) sorts by its months, then days, then nanoseconds.
    """
    if not keys or table.num_rows == 0:
        return table
    proxy: dict[str, pa.Array | pa.ChunkedArray] = {}
    order: list[tuple[str, str]] = []
    for i, name in enumerate(keys):
        column = table.column(name)
        if pa.types.is_interval(column.type):
            values = column.to_pylist()
            for j, field in enumerate(("months", "days", "nanoseconds")):
                part = [None if v is None else getattr(v, field) for v in values]
                proxy[f"k{i}_{j}"] = pa.array(part, type=pa.int64())
                order.append((f"k{i}_{j}", "ascending"))
        else:
            proxy[f"k{i}"] = column
            order.append((f"k{i}", "ascending"))
    return table.take(pc.sort_indices(pa.table(proxy), sort_keys=order))


def _round(table: pa.Table, digits: int | None) -> pa.Table:
    """The grant's rounding of every float output.  A value too large to round (near the
    largest double) fails as ``disclosure.arithmetic``, which a reviewed run holds: the
    failure depends on the values (pyarrow's overflow once reached the analyst unheld)."""
    if digits is None:
        return table
    columns = []
    for column in table.columns:
        if pa.types.is_floating(column.type):
            try:
                column = pc.round(column, digits)
            except pa.ArrowException:
                raise EnclaveError(
                    "rounding the released values failed", rule="disclosure.arithmetic"
                ) from None
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def result_sha256(table: pa.Table) -> str:
    """Digest of a released table (Arrow IPC stream), bound into the receipt."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
