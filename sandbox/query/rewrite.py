# Over 400 lines: one rewrite into the stats and release queries; its helpers go together.
"""Rewrite a checked query into the two SQL texts the pipeline runs.

1. The **stats query** runs in the enclave.  It pre-aggregates per group *and
   entity* (so each entity's contribution can be clamped and bounded, and the
   two largest contributions to each sum are known for the dominance rule),
   then aggregates per group: ``__k*`` keys, ``__entities``, and one column per
   base statistic (row counts ``__r*``, non-null counts ``__n*``, clamped sums
   ``__s*``, sums of squares ``__q*``, top-2 contributions ``__t*``, min/max of
   dimensions).
2. The **release query** runs outside the enclave, over the disclosed stats
   table only: it computes the operator's output expressions (``avg`` =
   sum / count, variance from the moments, ...) and applies HAVING, ORDER BY and
   LIMIT to released values, never to true ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import cast

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.scope import Scope

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import INTEGER_TYPES
from sandbox.core.errors import QueryRefused
from sandbox.enclave.ranked_rows import RANK, ranked_table
from sandbox.query.cannot_raise import cannot_raise, column_types, kept_non_null, split_and
from sandbox.query.cohorts import COHORT_CHECKED
from sandbox.query.column_rules import is_entity_key
from sandbox.query.columns_expr import EXPANDED
from sandbox.query.comoments import CENTRED, product_bounds, product_factors
from sandbox.query.derived_source import with_derived_tables
from sandbox.query.disclosure import QUANTILE_BINS, sum_counts
from sandbox.query.entity_caps import (
    CELL_ROWS,
    GROUP_KEPT,
    PORTABLE_TEXT,
    PORTABLE_TIME,
    ROWS_KEPT,
    cap_can_bind,
    clamp,
    group_cap,
    mean_clamped,
    scaled_to_cap,
    share_of_cap,
    total_cap,
)
from sandbox.query.guard import QUANTILES, Checked, entity_dataset, first_source, quantile_of
from sandbox.query.joined import check_budget_joins, entity_in, joined_datasets
from sandbox.query.nodes import output_name
from sandbox.query.normalize import MAX_OFFSET
from sandbox.query.release_filter import FilterSpec, filter_spec
from sandbox.query.rollup import STAGE
from sandbox.query.shares import SHARE, mark_shares
from sandbox.query.totals import total_reference

__all__ = ["ContributionBounds", "Plan", "Stat", "build_plan"]

STATS_TABLE = "__sbx_stats"
ENTITIES = "__entities"
#: A joined dataset's entity key in its own pre-aggregate (a name no source carries).
JOINED_ENTITY = "__sbx_je"
#: How a per-(group, entity) statistic becomes per group: a template over its column.
SUM = "sum({})"


@dataclass(frozen=True)
class Stat:
    """One column of the stats table and how disclosure treats it."""

    name: str
    #: entities | joined | rows | count | distinct | sum | sumsq | min | max | top2 | quantile
    kind: str
    lower: float | None = None
    upper: float | None = None
    of: str | None = None
    #: Under ``FILTER (WHERE ...)``: the stat counting the entities the filter keeps, which
    #: decides whether this cell may be released (a filtered cell is a group of its own).
    cell: str | None = None
    #: For "quantile": which one (0.5 for median); the column holds a histogram of bins.
    q: float | None = None
    #: For "quantile" over whole numbers: one bin per whole number of the bounds (bin
    #: ``i`` holds ``lower + i``); None: ``QUANTILE_BINS`` equal bins.
    bins: int | None = None
    #: A column the release shows as it is (the entities column as ``count(DISTINCT
    #: key)``), not only one that selects groups: its error is an output's.
    shown: bool = False
    #: A count under ``FILTER (WHERE ...)``: it counts a finer cell than its group's rows.
    filtered: bool = False
    #: For a measure's presence cell under a FILTER: that FILTER's own cell, which holds
    #: it (entities with a value of ``x`` among those the FILTER keeps).
    within: str | None = None


@dataclass(frozen=True)
class ContributionBounds:
    """Per-entity caps applied when the grant has a privacy budget."""

    max_rows_per_entity: int = 2
    max_groups_per_entity: int = 3
    #: T: an entity's rows over all groups together (``entity_caps.total_cap``); None
    #: where none is declared or it cannot bind (``release.with_total``).
    max_total_rows_per_entity: int | None = None


@dataclass
class Plan:
    stats_sql: str
    release_sql: str
    stats: list[Stat]
    keys: list[str]
    output_names: list[str]
    primary: str
    bounds: ContributionBounds | None = None
    notes: list[str] = field(default_factory=list)
    #: The release is a plain projection: (stats column, output name) per output, no
    #: order or limit, and no filter but one ``release_filter`` can evaluate; None
    #: where it computes anything else (``release.release`` then runs ``release_sql``).
    release_columns: tuple[tuple[str, str], ...] | None = None
    #: With ``release_columns``: the release's ``WHERE`` (the query's HAVING) as
    #: ``release_filter.filter_spec`` gives it, None without one.
    release_where: FilterSpec | None = None
    #: The stats query has no per-entity stage (each cell is one row: ``one_row_per_cell``):
    #: its result holds only for the dataset version that fact was established on.
    one_stage: bool = False
    #: The stats query reads the dataset's ranked copy (``sandbox.enclave.ranked_rows``):
    #: one aggregate keeps each entity's rows ranked at most T, counts it where ranked at
    #: most G (``_ranked_stats``).
    ranked: bool = False
    #: A predicate stands without ``TRY`` because of its columns' types in the catalog
    #: (``cannot_raise``): it may run only on the dataset versions it was planned on.  Said
    #: for a plan's readers (tests); the service checks every run that way, typed or not
    #: (``QueryService._check_versions``: measures' casts and join keys rest on types too).
    typed: bool = False


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _limit(release: exp.Select, limit: exp.Limit) -> None:
    """The released SELECT's LIMIT, and its OFFSET (normalize.py puts it in the LIMIT node).

    Both apply to the released rows in their released order, as written.
    """
    limit = limit.copy()
    offset = limit.args.get("offset")
    limit.set("offset", None)
    release.set("limit", limit)
    if offset is None:
        return
    if not (
        isinstance(offset, exp.Literal) and offset.is_int and 0 <= int(offset.name) <= MAX_OFFSET
    ):
        raise QueryRefused(
            f"OFFSET takes a whole number from 0 to {MAX_OFFSET:,}", rule="guard.limit"
        )
    release.set("offset", exp.Offset(expression=offset))


def _inject_entity(checked: Checked, access: Mapping[str, DatasetAccess]) -> exp.Expression:
    """Carry the primary dataset's entity key through derived tables; return its final form."""
    entity_key = access[checked.primary].spec.entity_key.lower()
    return _entity_of(checked.final_scope, entity_key, set())


def _entity_of(scope: Scope, entity_key: str, carried: set[int]) -> exp.Expression:
    """The entity key as a column of a SELECT scope's first FROM source."""
    alias, source = first_source(scope)
    if isinstance(source, exp.Table):
        return _col(entity_key, alias)
    _carry(source, entity_key, carried)
    return _col("__sbx_e", alias)


def _carry(scope: Scope, entity_key: str, carried: set[int]) -> None:
    """Add ``__sbx_e`` to a derived scope's outputs (to every branch of a UNION ALL), once."""
    if id(scope.expression) in carried:
        return
    carried.add(id(scope.expression))
    if isinstance(scope.expression, exp.SetOperation):
        for branch in scope.set_operation_scopes:
            _carry(branch, entity_key, carried)
        return
    entity = _entity_of(scope, entity_key, carried)
    scope.expression.append("expressions", exp.alias_(entity, "__sbx_e", quoted=True))


def _written(sql: str) -> exp.Expr:
    """A select-list item this module wrote as DuckDB SQL, kept as its text.

    The per-cell statistics (clamps, caps, counts) are written here as text and only
    ever written out again as a whole item (``<sql> AS "name"``, or ``<sql>`` that
    already ends in its alias): ``exp.Var`` writes its text as it is.  Parsing them back
    into trees only to write them again took about 60 µs each, a quarter of a small
    query's plan (``bench/profile_small.py``).  Never for a part of a larger expression:
    the text carries no precedence (the release side's means and variances are parsed).
    """
    return exp.Var(this=sql)


#: Aggregates released from a sum of squares (and the sum of the same values).
SQUARING = (exp.Stddev, exp.StddevSamp, exp.StddevPop, exp.Variance, exp.VariancePop)


class _Stats:
    def __init__(
        self,
        checked: Checked,
        access: Mapping[str, DatasetAccess],
        bounds: ContributionBounds | None,
        k: int = 1,
        joined: list[str] | None = None,
    ) -> None:
        self.checked = checked
        self.joined = joined or []
        self.access = access
        self.bounds = bounds
        self.k = k
        self.inner: list[exp.Expr] = []
        self.outer: list[str] = []
        self.stats: list[Stat] = [Stat(ENTITIES, "entities")]
        self.seen: dict[str, str] = {}
        self.tops: dict[str, tuple[str, str]] = {}  # sum column -> (its top2, magnitude)
        self.entity_sql = "NULL"  # the entity key as the per-entity pre-aggregate sees it
        self.portable = False  # the cap's hashes computed alike on every engine
        #: Each statistic computed straight from the rows, per group: what the two stages
        #: give where every (group, entity) cell is one row (``one_stage``); None once a
        #: statistic has no such form (a quantile's per-entity sample).
        self.direct: list[str] | None = []
        #: Each statistic over a ranked copy's rows (``_ranked_stats``): (name, kind, its
        #: per-group form without its FILTER and the rank's condition, or an entity
        #: count's kept-row predicate; the FILTER's predicate); None once one has no such
        #: form (a FILTER on rows, a quantile's per-entity sample, an extreme).
        self.ranked: list[tuple[str, str, str, str]] | None = []
        #: The FILTER of the aggregate being replaced ("" without): its ranked forms keep
        #: it beside the rank's condition (``_ranked_stats``).
        self.filter_sql = ""
        #: The measures a square or a product of reads (``_by_mean``); None until asked.
        self.squared: set[str] | None = None

    def _distinct(self, arg: exp.Distinct, entities: str) -> str:
        """``count(DISTINCT key)``: the entities column of the dataset whose key it is.

        Under a budget every join is on entity keys, so all datasets count the same.
        """
        base = self.checked.lineage.resolve(arg.expressions[0], self.checked.final_scope).single
        if base is None or base.dataset not in self.joined or self.bounds is not None:
            return entities
        return f"{entities}_j{self.joined.index(base.dataset) + 1}"

    def _by_mean(self, sql: str) -> bool:
        """Whether a sum of the measure ``sql`` clamps each entity's mean, not each value.

        Not where any other aggregate of the query reads ``sql`` in a square or a product
        (a variance, a co-moment): those sum clamped values, and their centred forms
        combine that sum with this one (``Σ(x - c)² = Σx² - 2cΣx + c²n``), which stays
        within its bounds only where both clamp the same values."""
        if self.squared is None:
            self.squared = set()
            for node in self.checked.root.find_all(*SQUARING, exp.Sum, exp.Avg):
                if isinstance(node, SQUARING) or product_factors(node.this) is not None:
                    self.squared |= {
                        c.sql(dialect="duckdb") for c in node.this.find_all(exp.Column)
                    }
        return sql not in self.squared

    def _cap_count(self, agg: str) -> str:
        if self.bounds is None:
            return agg
        return f"least({agg}, {self.bounds.max_rows_per_entity})"

    def _add(
        self,
        key: str,
        kind: str,
        inner_sql: str,
        outer: str,
        *,
        direct: str,
        row: tuple[str, str] | None = None,
        lower: float | None = None,
        upper: float | None = None,
        cell: str | None = None,
        filtered: bool = False,
        ranked: str | None = None,
        of: str | None = None,
    ) -> str:
        """One stats column: ``inner_sql`` per (group, entity), ``outer`` over it per group.

        ``direct``: the same statistic per group straight from the rows where each cell is
        one row; ``row``: for a sum or sum of squares, its one row's value and FILTER
        clause (what its top-two contributions are over, then).
        """
        if key in self.seen:
            return self.seen[key]
        prefix = {
            "entities": "__e",
            "rows": "__r",
            "count": "__n",
            "distinct": "__v",
            "sum": "__s",
            "sumsq": "__q",
            "min": "__min",
            "max": "__max",
        }[kind]
        name = f"{prefix}{len(self.stats)}"
        self.seen[key] = name
        self.inner.append(exp.alias_(_written(inner_sql), name, quoted=True))
        quoted = f'"{name}"'
        self.outer.append(f'{outer.format(quoted)} AS "{name}"')
        if self.ranked is not None:
            form = ranked if kind == "entities" else direct
            where = f" FILTER (WHERE {self.filter_sql})" if self.filter_sql else ""
            if kind != "entities" and form is not None and where:
                form = form[: -len(where)] if form.endswith(where) else None
            if form is None or kind in ("min", "max"):
                self.ranked = None
            else:
                self.ranked.append((name, kind, form, self.filter_sql))
        if self.direct is not None:
            if outer == SUM and kind in ("entities", "rows", "count"):
                # The two stages' sum of per-cell counts is a HUGEINT: the same type here.
                direct = f"CAST({direct} AS HUGEINT)"
            self.direct.append(f'{direct} AS "{name}"')
        self.stats.append(Stat(name, kind, lower, upper, of=of, cell=cell, filtered=filtered))
        if kind in ("sum", "sumsq"):
            # Dominance: the two largest per-entity contributions, to a sum and (what a
            # variance or stddev releases) to a sum of squares.
            top = f"__t{len(self.stats)}"
            signed = kind == "sum" and (lower or 0.0) < 0
            magnitude = f'abs("{name}")' if signed else f'"{name}"'
            self.outer.append(f'max({magnitude}, 2) AS "{top}"')
            if self.direct is not None and row is not None:
                value, where = row
                value = f"abs({value})" if signed else value
                self.direct.append(f'max({value}, 2){where} AS "{top}"')
            self.stats.append(Stat(top, "top2", lower, upper, of=name))
            self.tops[name] = (top, magnitude)
            if self.ranked is not None:  # dominance is not applied under a budget
                self.ranked.append((top, "top2", "", ""))
        return name

    def joined_stats(self, j: int) -> tuple[list[str], list[Stat]]:
        """Per group, from a pre-aggregate per (group, entity of the j-th joined dataset).

        Its distinct entities (each entities column counted again on its entities) and
        the top two contributions of its entities to each sum and sum of squares.  Rows
        where the dataset has no entity (an outer join's unmatched side) are no entity.
        """
        known = f'FILTER (WHERE "{JOINED_ENTITY}" IS NOT NULL)'
        outer = [f'count("{JOINED_ENTITY}") AS "{ENTITIES}_j{j}"']
        stats = [Stat(f"{ENTITIES}_j{j}", "joined", of=ENTITIES)]
        for stat in self.stats:
            if stat.kind == "entities" and stat.name != ENTITIES:
                outer.append(f'sum("{stat.name}") {known} AS "{stat.name}_j{j}"')
                stats.append(Stat(f"{stat.name}_j{j}", "joined", of=stat.name, cell=stat.name))
            elif stat.name in self.tops:
                top, magnitude = self.tops[stat.name]
                outer.append(f'max({magnitude}, 2) {known} AS "{top}_j{j}"')
                stats.append(Stat(f"{top}_j{j}", "top2", stat.lower, stat.upper, of=stat.name))
        return outer, stats

    def per_entity(self) -> list[exp.Expr]:
        """The per-(group, entity) columns a joined dataset's pre-aggregate needs."""
        wanted = {s.name for s in self.stats if s.kind in ("entities", "sum", "sumsq")}
        return [e for e in self.inner if e.alias in wanted]

    def _whole_numbers(self, column: exp.Expr) -> bool:
        """Does the measure hold whole numbers only (its registered type an integer)?"""
        if not isinstance(column, exp.Column):
            return False
        base = self.checked.lineage.resolve(column, self.checked.final_scope).single
        if base is None:
            return False
        spec = self.access[base.dataset].spec.column(base.column)
        return bool(spec.type and INTEGER_TYPES.fullmatch(spec.type))

    def _measure_bounds(self, column: exp.Column) -> tuple[float, float]:
        info = self.checked.lineage.resolve(column, self.checked.final_scope)
        base = info.single
        if base is None:
            raise QueryRefused(
                "aggregated measures must be dataset columns", rule="guard.aggregate_argument"
            )
        spec = self.access[base.dataset].spec.column(base.column)
        if spec.bounds is None:
            raise QueryRefused(
                f"{base.dataset}.{spec.name} has no clamping bounds",
                rule="guard.aggregate_argument",
            )
        return spec.bounds

    def _clamped(
        self, arg: exp.Expr, sql: str, *, centred: bool = False
    ) -> tuple[float, float, str]:
        """A measure's row bounds and its value clamped to them, as SQL.

        ``x * y`` of two measures (``comoments``): each factor clamped to its own bounds,
        so the product lies within the product of the intervals, its bounds.
        ``centred``: each factor less its bounds' midpoint after clamping (a co-moment's
        sum under a budget, ``comoments.CENTRED``): ``(x - mx) * (y - my)`` lies within
        ``±wx·wy`` (half-widths), a quarter of ``[0, hi_x·hi_y]``'s width for bounds
        from 0, and ``(x - mx)²`` within ``[0, wx²]``.
        """
        factors = product_factors(arg) or (cast(exp.Column, arg),)
        bounds = [self._measure_bounds(f) for f in factors]
        texts = [f.sql(dialect="duckdb") for f in factors]
        values = [clamp(f"({t})::DOUBLE", *lh) for t, lh in zip(texts, bounds, strict=True)]
        if centred:
            mids = [(lo + hi) / 2 for lo, hi in bounds]
            values = [f"({v} - {m!r})" for v, m in zip(values, mids, strict=True)]
            bounds = [(lo - m, hi - m) for (lo, hi), m in zip(bounds, mids, strict=True)]
        if len(factors) == 1:
            return bounds[0][0], bounds[0][1], values[0]
        lo, hi = product_bounds(bounds[0], bounds[1], same=texts[0] == texts[1])
        return lo, hi, f"(({values[0]}) * ({values[1]}))"

    def _quantile(
        self,
        node: exp.Expression,
        sql: str,
        clamped: str,
        bounds: tuple[float, float],
        filter_sql: str,
        tag: str,
        whole: bool = False,
    ) -> str:
        """A histogram per group of the measure's bins, at most C rows per entity.

        Bins: one per whole number of the bounds where the measure holds whole numbers
        and its bounds are whole numbers at most ``QUANTILE_BINS`` apart (so a quantile
        is one of them, as the data's own values are); else ``QUANTILE_BINS`` equal bins.

        Disclosure chooses the quantile among the bin edges by the exponential mechanism
        (permute-and-flip): only under a budget.  Each entity's C rows are those whose
        (value, entity) hashes smallest: a choice made from its own rows, and a different
        pseudo-random order for each entity (one order for all, e.g. by the bin's hash,
        would over-represent the same bins in every entity's sample and bias the result).
        """
        name = self.checked.parsed.written(node)
        if self.bounds is None:
            raise QueryRefused(
                f"{name}() needs a privacy budget on the grant: quantiles are released only "
                "with differential privacy (the exponential mechanism over the measure's "
                "declared bounds); without one use avg, or count with FILTER on ranges",
                rule="guard.quantile_needs_budget",
            )
        if self.portable:
            raise QueryRefused(
                f"{name}() is not computed alike on every engine (its per-entity sample is "
                "chosen by a hash only DuckDB computes): run it on a DuckDB dataset",
                rule="engine.unsupported",
            )
        q = quantile_of(node)
        lo, hi = bounds
        bins: int | None = None
        if whole and float(lo).is_integer() and float(hi).is_integer() and hi - lo < QUANTILE_BINS:
            bins = int(hi - lo) + 1
            bin_ = f"least({bins - 1}, floor(({clamped}) - {lo!r}))::INTEGER"
        else:
            width = (hi - lo) / QUANTILE_BINS
            bin_ = f"least({QUANTILE_BINS - 1}, floor((({clamped}) - {lo!r}) / {width!r}))::INTEGER"
        keep = f"({sql}) IS NOT NULL" + (f" AND ({filter_sql})" if filter_sql else "")
        cap = self.bounds.max_rows_per_entity
        key = f"quantile:{q}:{sql}{tag}"
        if key in self.seen:
            return self.seen[key]
        column = f"__h{len(self.stats)}"
        self.seen[key] = column
        where = f" FILTER (WHERE {filter_sql})" if filter_sql else ""
        cell = self._present(sql, where, tag)
        order = f"hash(({sql})::VARCHAR, ({self.entity_sql})::VARCHAR)"
        inner = f"list_slice(list({bin_} ORDER BY {order}) FILTER (WHERE {keep}), 1, {cap})"
        self.inner.append(exp.alias_(_written(inner), column, quoted=True))
        self.outer.append(f'list_aggregate(flatten(list("{column}")), \'histogram\') AS "{column}"')
        self.direct = None  # its sample is chosen per entity: two stages always
        self.ranked = None
        self.stats.append(Stat(column, "quantile", lo, hi, cell=cell, q=q, bins=bins))
        return column

    def _uncentred_product(
        self,
        factors: tuple[exp.Column, exp.Column],
        centred: str,
        count: str,
        predicate: exp.Expr | None,
    ) -> exp.Expression:
        """``Σxy`` from ``Σ(x - mx)(y - my)`` (``centred``), as post-processing:
        ``+ my·Σx + mx·Σy - n·mx·my`` (``Σx²``: ``+ 2·mx·Σx - n·mx²``), with ``Σx``, ``Σy``
        the plain sums under the same FILTER, the ones every co-moment form reads (so one
        set of statistics serves corr and the intercept alike) and ``n`` their row count.
        The co-moments computed from these (``Σxy - Σx·Σy/n``) are then exactly the centred
        ones, ``Σx'y' - Σx'·Σy'/n``, with the noise of the narrower bounds.
        """

        def plain(column: exp.Column) -> str:
            total: exp.Expression = exp.Sum(this=column.copy())
            if predicate is not None:
                total = exp.Filter(this=total, expression=exp.Where(this=predicate.copy()))
            return cast(exp.Column, self.replacement(total)).name

        mids = [sum(self._measure_bounds(f)) / 2 for f in factors]
        texts = [f.sql(dialect="duckdb") for f in factors]
        sums = [plain(f) for f in factors]
        if texts[0] == texts[1]:
            text = f'("{centred}" + {2 * mids[0]!r} * "{sums[0]}" - "{count}" * {mids[0] ** 2!r})'
        else:
            text = (
                f'("{centred}" + {mids[1]!r} * "{sums[0]}" + {mids[0]!r} * "{sums[1]}" '
                f'- "{count}" * {mids[0] * mids[1]!r})'
            )
        return exp.maybe_parse(text, dialect="duckdb")

    def _rows(self, where: str, tag: str, cell: str | None) -> str:
        """``count(*)``, under the FILTER ``where`` (its entity cell ``cell``) if any."""
        return self._counted("rows" + tag, "rows", "*", where, cell)

    def _share_rows(self, where: str, base: str, tag: str, cell: str) -> str:
        """A share's numerator: each entity's rows under ``where`` as its share of its
        kept rows (``entity_caps.share_of_cap``), not capped apart from its denominator."""
        assert self.bounds is not None
        cap = self.bounds.max_rows_per_entity
        counted = f"count(*){where}"
        return self._add(
            f"share{tag}|{base}",
            "rows",
            share_of_cap(where, base, cap, self.entity_sql),
            SUM,
            direct=counted,
            cell=cell,
            filtered=True,
        )

    def _count(self, sql: str, where: str, tag: str, cell: str | None) -> str:
        """``count(sql)``, under the FILTER ``where`` if any; ``cell`` its entity cell."""
        return self._counted(f"count:{sql}{tag}", "count", sql, where, cell)

    def _counted(self, key: str, kind: str, arg: str, where: str, cell: str | None) -> str:
        counted = f"count({arg}){where}"
        return self._add(
            key,
            kind,
            self._cap_count(counted),
            SUM,
            direct=counted,
            cell=cell,
            filtered=bool(where),
        )

    def _present(self, sql: str, where: str, tag: str) -> str:
        """The stat counting entities with a value of ``sql`` (under the filter, if any).

        ``count(x)``, ``sum(x)``, ``avg(x)`` and the extremes see only rows where ``x``
        is not NULL: a sparse column (or one made sparse by a CASE in a CTE) is a filter
        in disguise, so those cells pass the low-count filter on these entities.
        """
        name = self._add(
            f"present:{sql}{tag}",
            "entities",
            f"(count({sql}){where} > 0)::BIGINT",
            SUM,
            direct=f"count({sql}){where}",
            ranked=f"({sql}) IS NOT NULL",
        )
        within = self.seen.get("distinct" + tag) if where else None  # the FILTER's cell
        if within is not None:
            self.stats = [replace(s, within=within) if s.name == name else s for s in self.stats]
        return name

    def _values(self, sql: str, filter_sql: str, tag: str, *, stage: bool = False) -> str:
        """``count(DISTINCT x)`` of a column other than the entity key: how many values.

        Per (group, entity) cell the list of its distinct values; per group the number
        of distinct values over its cells' lists.  Under a budget each cell keeps at most
        ``C`` of its values, those whose ``hash(x, entity)`` is smallest (a choice from
        the entity's own rows; one order shared by every entity, such as the smallest
        values, would make entities keep the same few and undercount the rest), so one
        entity adds or removes at most ``C`` values in a group, and no more values over
        all its kept cells than rows: a row count's sensitivity (``disclosure``, kind
        ``distinct``).  Its cell is ``x``'s presence, as ``count(x)``'s: entities with a
        value of ``x``.

        ``stage``: the count of a per-``x`` stage's rows (``rollup.py``), whose NULL
        ``x`` is a row, so one value: each value is counted as ``{'v': x}``, and the
        cell is the group's (or its FILTER's) entities.
        """
        where = f" FILTER (WHERE {filter_sql})" if filter_sql else ""
        value = f"{{'v': {sql}}}" if stage else sql
        keep = [] if stage else [f"({sql}) IS NOT NULL"]
        keep += [f"({filter_sql})"] if filter_sql else []
        kept = f" FILTER (WHERE {' AND '.join(keep)})" if keep else ""
        if self.bounds is None:
            values = f"list(DISTINCT {value}){kept}"
        else:
            chosen = f"hash({sql}, {self.entity_sql})"
            values = f"arg_min(DISTINCT {value}, {chosen}, {self.bounds.max_rows_per_entity}){kept}"
        cell = None
        if stage and filter_sql:
            cell = self.seen.get("distinct" + tag)
        elif not stage:
            cell = self._present(sql, where, tag)
        return self._add(
            f"values:{sql}{tag}" + (":stage" if stage else ""),
            "distinct",
            values,
            "len(list_distinct(flatten(list({}))))",
            direct=f"count(DISTINCT {value}){where}",
            cell=cell,
            filtered=bool(filter_sql),
        )

    def replacement(self, node: exp.Expression) -> exp.Expression:
        """The release-side expression for one aggregate of the operator's query."""
        where = ""
        filter_sql = ""
        predicate: exp.Expression | None = None
        share_of = node.meta.get(SHARE)  # a share's numerator (shares.mark_shares)
        if isinstance(node, exp.Filter):
            predicate = node.expression.this
            filter_sql = predicate.sql(dialect="duckdb")
            where = f" FILTER (WHERE {filter_sql})"
            node = node.this
        arg = node.this
        tag = f"|{filter_sql}"
        self.filter_sql = filter_sql
        if predicate is not None and not _per_entity(self.checked, self.access, predicate):
            self.ranked = None  # the ranks are global: it keeps a heavy entity's fewer rows
        # The entities a FILTER keeps (0 or 1 per entity and group): its cells' k filter.
        cell = (
            self._add(
                "distinct" + tag,
                "entities",
                f"(count(*){where} > 0)::BIGINT",
                SUM,
                direct=f"count(*){where}",
                ranked="true",
            )
            if filter_sql
            else None
        )
        if isinstance(node, exp.Count):
            # a share's numerator (not on Spark: its draw is DuckDB's hash)
            budgeted = self.bounds is not None and not self.portable
            if isinstance(arg, exp.Star) and isinstance(share_of, str) and budgeted and cell:
                return _col(self._share_rows(where, share_of, tag, cell))
            if isinstance(arg, exp.Star):
                return _col(self._rows(where, tag, cell))
            if isinstance(arg, exp.Distinct):
                info = self.checked.lineage.resolve(arg.expressions[0], self.checked.final_scope)
                if not is_entity_key(info, self.access):
                    column = arg.expressions[0].sql(dialect="duckdb")
                    stage = bool(node.meta.get(STAGE))
                    return _col(self._values(column, filter_sql, tag, stage=stage))
                name = self._distinct(arg, cell or ENTITIES)
                # Released as it is: the groups' entity count, or a FILTER's (which no
                # count of its rows may then stand in for: disclosure._counted_cells).
                self.stats = [replace(s, shown=True) if s.name == name else s for s in self.stats]
                return _col(name)
            sql = arg.sql(dialect="duckdb")
            return _col(self._count(sql, where, tag, self._present(sql, where, tag)))
        sql = arg.sql(dialect="duckdb")
        if isinstance(node, exp.Min | exp.Max):
            # Not the extreme row (a WHERE can add one person's row to a crowd) but the
            # k-th most extreme entity: at least k entities lie at or beyond it.
            kind = "min" if isinstance(node, exp.Min) else "max"
            kth = f"list_extract({kind}({{}}, {self.k}), {self.k})"
            return _col(
                self._add(
                    f"{kind}:{sql}{tag}",
                    kind,
                    f"{kind}({sql}){where}",
                    kth,
                    direct=f"list_extract({kind}({sql}, {self.k}){where}, {self.k})",
                    cell=self._present(sql, where, tag),
                )
            )
        factors = product_factors(arg)
        centred = (
            bool(node.meta.get(CENTRED))
            and self.bounds is not None
            and factors is not None
            and isinstance(node, exp.Sum)
        )
        lo, hi, clamped = self._clamped(arg, sql, centred=centred)
        if factors is not None:
            # Counted (and tested for presence) as the clamped DOUBLE product, never the
            # product as typed: DECIMAL(16,2) * DECIMAL(16,2) can overflow, an error
            # that would depend on a row's values.  NULL exactly where a factor is.  A
            # centred product is a statistic of its own (never merged with sum(x * y)).
            sql = clamped
        if isinstance(node, QUANTILES):
            whole = self._whole_numbers(arg)
            return _col(self._quantile(node, sql, clamped, (lo, hi), filter_sql, tag, whole))
        per_entity_sum = f"sum({clamped}){where}"
        if self.bounds is not None:
            # Under a budget every statistic is over each entity's capped rows: its count
            # is capped at C, so its sum is scaled to C of its rows (its mean times C)
            # where it has more.  Clamping the sum instead made averages of entities with
            # more than C rows too large (the sum of all rows over a count of C).
            cap = self.bounds.max_rows_per_entity
            if factors is None and isinstance(node, exp.Sum | exp.Avg) and self._by_mean(sql):
                # each entity's mean clamped, not each value (entity_caps.mean_clamped)
                per_entity_sum = mean_clamped(f"(({sql})::DOUBLE)", where, lo, hi, cap)
            else:
                per_entity_sum = scaled_to_cap(per_entity_sum, f"count({sql}){where}", cap)
                per_entity_sum = clamp(per_entity_sum, min(lo, 0.0) * cap, max(hi, 0.0) * cap)
        # Where the FILTER keeps only rows with a value (``FILTER (WHERE x IS NOT NULL
        # AND …)``, as comoments writes for corr), x's presence is the FILTER's own cell
        # and its count the FILTER's row count: one cell and one count for every sum
        # under it, not one each to noise (``disclosure._centres`` pairs them).
        present = cell is not None and predicate is not None and kept_non_null(predicate, arg)
        cell = cell if present else self._present(sql, where, tag)
        s = self._add(
            f"sum:{sql}{tag}",
            "sum",
            per_entity_sum,
            SUM,
            direct=f"sum({clamped}){where}",
            row=(clamped, where),
            lower=lo,
            upper=hi,
            cell=cell,
        )
        n = self._rows(where, tag, cell) if present else self._count(sql, where, tag, cell)
        if centred and factors is not None:
            return self._uncentred_product(factors, s, n, predicate)
        if isinstance(node, exp.Sum):
            # Released as it is: a plain sum, which disclosure centres only where its
            # bounds contain 0 (``disclosure._centres``).
            self.stats = [replace(st, shown=True) if st.name == s else st for st in self.stats]
            return _col(s)
        mean = f'("{s}" / NULLIF("{n}", 0))'
        if isinstance(node, exp.Avg):
            # A mean of values in [lo, hi] lies there: a noisy one is brought back (free,
            # after the noise; an outside rehearsal read 102.29 for scores in [0, 100]).
            return exp.maybe_parse(_within(mean, lo, hi), dialect="duckdb")
        square = f"sum(({clamped}) * ({clamped})){where}"
        if self.bounds is not None:
            cap = self.bounds.max_rows_per_entity
            square = scaled_to_cap(square, f"count({sql}){where}", cap)
            square = clamp(square, 0.0, max(lo * lo, hi * hi) * cap)
        row_square = f"(({clamped}) * ({clamped}))"
        q = self._add(
            f"sumsq:{sql}{tag}",
            "sumsq",
            square,
            SUM,
            direct=f"sum({row_square}){where}",
            row=(row_square, where),
            lower=lo,
            upper=hi,
            cell=cell,
            of=s,  # the sum of the same values: disclosure centres the squares against it
        )
        pop = isinstance(node, exp.StddevPop | exp.VariancePop)
        denominator = f'NULLIF("{n}", 0)' if pop else f'NULLIF("{n}" - 1, 0)'
        variance = f'(greatest(0, "{q}" - "{s}" * "{s}" / NULLIF("{n}", 0)) / {denominator})'
        if isinstance(node, exp.Stddev | exp.StddevSamp | exp.StddevPop):
            return exp.maybe_parse(f"sqrt({variance})", dialect="duckdb")
        return exp.maybe_parse(variance, dialect="duckdb")


def _within(value: str, lo: float, hi: float) -> str:
    """``value`` brought into ``[lo, hi]`` (each finite end; NULL stays NULL, which
    DuckDB's ``greatest`` would not keep)."""
    ends = [(f"{value} < {lo!r}", lo)] if math.isfinite(lo) else []
    ends += [(f"{value} > {hi!r}", hi)] if math.isfinite(hi) else []
    if not ends:
        return value
    whens = " ".join(f"WHEN {test} THEN {end!r}" for test, end in ends)
    return f"(CASE {whens} ELSE {value} END)"


def _try(node: exp.Expr) -> exp.Expr:
    """``TRY(node)``: NULL instead of an error (a bare column or key name cannot fail)."""
    return (
        node.copy()
        if isinstance(node, exp.Column | exp.Try | exp.Literal)
        else exp.Try(this=node.copy())
    )


def contain_errors(
    root: exp.Expression, final: exp.Select, access: Mapping[str, DatasetAccess]
) -> bool:
    """Make every operator expression that runs in the enclave unable to raise.

    A run-time error is one exact bit about the rows that caused it (``CASE WHEN
    <one person> THEN 1 / 0``): predicates (WHERE and FILTER) and the expressions of
    derived tables become ``TRY(...)``, NULL where they would fail.  A predicate's
    conjuncts that cannot fail on any value (``sandbox/query/cannot_raise.py``: an
    integer or text column of a dataset against literals of its kind) stand bare, so
    DuckDB can push them into its scan.  Join keys are equalities of declared key
    columns (they cannot fail on a value; a filter beside them in ``ON`` becomes
    ``TRY(...)`` too), and the released SELECT's own expressions run outside, over
    released statistics.  Returns whether a conjunct stands bare (the plan is ``typed``).
    """
    bare = False
    types = {
        dataset: {c.name.lower(): c.type for c in grant.spec.columns if c.type}
        for dataset, grant in access.items()
    }
    for where in list(root.find_all(exp.Where)):
        select = where.find_ancestor(exp.Select)
        columns = {} if select is None else column_types(select, types)
        parts = []
        for part in split_and(where.this):
            # A cohort's membership compares entity keys of one type (join_rules): it
            # cannot fail on a value, and DuckDB runs no subquery under TRY.  Its own
            # WHERE is one of those this loop reaches.
            safe = _is_cohort(part) or cannot_raise(part, columns)
            bare = bare or safe
            parts.append(part if safe else _try(part))
        where.set("this", parts[0] if len(parts) == 1 else exp.and_(*parts))
    for join in list(root.find_all(exp.Join)):
        on = join.args.get("on")
        for cond in list(on.flatten()) if isinstance(on, exp.And) else [on] if on else []:
            if not (
                isinstance(cond, exp.EQ)
                and isinstance(cond.this, exp.Column)
                and isinstance(cond.expression, exp.Column)
            ):
                cond.replace(_try(cond))  # a filter on one side, like WHERE
    for select in list(root.find_all(exp.Select)):
        if select is final:
            continue
        for proj in select.expressions:
            inner = proj.this if isinstance(proj, exp.Alias) else proj
            if not isinstance(inner, exp.Column | exp.Try | exp.Literal):
                inner.replace(_try(inner))
    return bare


def _is_cohort(part: exp.Expr) -> bool:
    """A WHERE conjunct the guard accepted as a cohort (``cohorts.py``), parentheses aside."""
    while isinstance(part, exp.Paren):
        part = part.this
    return bool(part.meta.get(COHORT_CHECKED))


def _is_aggregate(node: exp.Expression) -> bool:
    return isinstance(node, exp.Filter | exp.AggFunc)


def build_plan(
    checked: Checked,
    access: Mapping[str, DatasetAccess],
    *,
    bounds: ContributionBounds | None = None,
    output_names: list[str] | None = None,
    k: int = 1,
    portable: bool = False,
    group_entities: bool = True,
) -> Plan:
    """Turn a checked query into the stats SQL (enclave) and the release SQL (outside).

    ``k`` is the release's minimum group size: extremes are released as the k-th most
    extreme entity's value.  ``portable``: the per-entity caps choose cells by a hash
    every engine computes alike (``entity_caps.portable_hash``; Spark always), not
    DuckDB's faster ``hash()``.  ``group_entities`` False: the release will not read the
    groups' entity count (``disclosure.reads_group_entities``); a plan over a ranked copy
    then leaves it NULL instead of counting distinct entities (the other plans count it
    as rows of their per-entity stage, which costs nothing).
    """
    final = cast(exp.Select, checked.final_scope.expression)  # the guard refuses any other
    typed = contain_errors(checked.root, final, access)
    entity = _inject_entity(checked, access)
    joined = joined_datasets(checked)
    if bounds is not None and joined:
        check_budget_joins(checked)
    carried: set[tuple[int, str]] = set()
    entities = (
        []
        if bounds is not None
        else [
            entity_in(
                checked.final_scope,
                dataset,
                access[dataset].spec.entity_key.lower(),
                f"__sbx_e{j}",
                carried,
            )
            for j, dataset in enumerate(joined, 1)
        ]
    )
    stats = _Stats(checked, access, bounds, k, joined)
    stats.portable = portable
    stats.entity_sql = entity.sql(dialect="duckdb")
    key_names = {key.sql(): f"__k{i}" for i, key in enumerate(checked.keys)}

    def to_release(node: exp.Expression) -> exp.Expression:
        total = total_reference(node)  # a total released on its own (parts.py)
        if total is not None:
            return total
        if node.sql() in key_names:
            return _col(key_names[node.sql()])
        if _is_aggregate(node):
            return stats.replacement(node)
        return node

    names = output_names or _output_names(checked)
    release_projections = []
    if bounds is not None:
        mark_shares(final)  # before the copies below: each carries its numerator's mark
    for proj, name in zip(final.expressions, names, strict=True):
        body = _try(proj.unalias().copy().transform(to_release))
        release_projections.append(exp.alias_(body, name, quoted=True))
    release = exp.select(*release_projections).from_(STATS_TABLE)
    if final.args.get("having"):
        release = release.where(_try(final.args["having"].this.copy().transform(to_release)))
    if final.args.get("order"):
        order = final.args["order"].copy()
        outputs = dict(zip((p.alias_or_name for p in final.expressions), names, strict=True))
        for ordered in order.expressions:
            target = ordered.this
            if isinstance(target, exp.Column) and not target.table and target.name in outputs:
                ordered.set("this", _col(outputs[target.name]))
            else:
                ordered.set("this", _try(target.transform(to_release)))
        release.set("order", order)
    if final.args.get("limit"):
        _limit(release, final.args["limit"])
    projected = [p.this for p in release_projections]
    where = release.args.get("where")
    release_where = None if where is None else filter_spec(where.this)
    plain = (
        all(isinstance(p, exp.Column) for p in projected)
        and not any(release.args.get(clause) for clause in ("order", "limit", "offset"))
        and (where is None or release_where is not None)
    )
    release_columns = (
        tuple((p.name, n) for p, n in zip(projected, names, strict=True)) if plain else None
    )

    inner = exp.Select()
    inner.set(
        "expressions",
        [exp.alias_(_try(key), f"__k{i}", quoted=True) for i, key in enumerate(checked.keys)]
        + [exp.alias_(entity, "__sbx_e", quoted=True), *stats.inner],
    )
    inner.set("from_", final.args["from_"].copy())
    if final.args.get("joins"):
        inner.set("joins", [j.copy() for j in final.args["joins"]])
    if final.args.get("where"):
        inner.set("where", final.args["where"].copy())
    group_cols = [f'"__k{i}"' for i in range(len(checked.keys))]
    total = None if bounds is None else bounds.max_total_rows_per_entity
    if total is not None and not (group_cols and bounds and bounds.max_groups_per_entity > 1):
        total = None  # one cell per entity, or one group: C ≤ T (release.with_total) holds it
    if total is not None:
        cell_rows: exp.Expr = _written(stats._cap_count("count(*)"))
        inner.append("expressions", exp.alias_(cell_rows, CELL_ROWS, quoted=True))
    # ``inner`` and ``release`` are this plan's own trees (copies of the query's parts),
    # written out without the generator's defensive copy of them: a deep copy of the
    # per-cell SELECT with its clamping expressions was most of the plan's cost (about 1
    # ms of 6 on a small query with an average).  A tree the generator rewrites as it
    # writes (moving nested CTEs up) writes the same SQL again.
    inner_sql = (
        inner.sql(dialect="duckdb", copy=False)
        + " GROUP BY "
        + ", ".join([*group_cols, '"__sbx_e"'])
    )
    ctes = []
    with_ = checked.root.args.get("with_")
    if with_ is not None:
        ctes = [cte.sql(dialect="duckdb") for cte in with_.expressions]
    make = partial(
        Plan,
        release_sql=release.sql(dialect="duckdb", copy=False),
        keys=[f"__k{i}" for i in range(len(checked.keys))],
        output_names=names,
        primary=checked.primary,
        bounds=bounds,
        release_columns=release_columns,
        release_where=release_where if plain else None,
        typed=typed,
    )

    def plan(*, stats_sql: str, **rest: object) -> Plan:
        # A per-entity table the query reads is computed by its own SELECT, inline.
        return make(stats_sql=with_derived_tables(stats_sql, access), **rest)  # type: ignore[arg-type]

    if stats.direct is not None and not entities and one_row_per_cell(checked, access):
        # Each (group, entity) cell is one row: the per-entity stage would copy the rows,
        # and each entity is in one group, so no cap can bind.  Same table, one pass.
        inner.set("expressions", inner.expressions[: len(checked.keys)])
        for direct in [f'count(*) AS "{ENTITIES}"', *stats.direct]:
            inner.append("expressions", _written(direct))
        one = inner.sql(dialect="duckdb", copy=False)
        if group_cols:
            one += " GROUP BY " + ", ".join(group_cols)
            if bounds is not None:  # as below: groups under k never leave the enclave
                one += f" HAVING count(*) >= {k}"
        stats_sql = f"WITH {', '.join(ctes)} {one}" if ctes else one
        return plan(stats_sql=stats_sql, stats=list(stats.stats), one_stage=True)
    if total is not None and not entities and _reads_ranks(checked, access, stats, portable):
        assert bounds is not None  # a total exists only under a budget
        _alias, table = first_source(checked.final_scope)
        alias = table.alias_or_name  # type: ignore[union-attr]
        schema, copy = ranked_table(access[checked.primary].spec)
        rank_column = exp.column(RANK, table=alias, quoted=True)
        rank = rank_column.sql(dialect="duckdb")
        inner.set("expressions", inner.expressions[: len(checked.keys)])
        for form in _ranked_stats(stats, bounds, rank, group_entities=group_entities):
            inner.append("expressions", _written(form))
        source = exp.table_(
            copy, db=schema, alias=exp.to_identifier(alias, quoted=True), quoted=True
        )
        inner.set("from_", exp.From(this=source))
        within = max(bounds.max_groups_per_entity, total)
        kept = exp.LTE(this=rank_column, expression=exp.Literal.number(within))
        where = inner.args.get("where")
        inner.set("where", exp.Where(this=kept if where is None else exp.and_(where.this, kept)))
        ranked_sql = inner.sql(dialect="duckdb", copy=False) + " GROUP BY " + ", ".join(group_cols)
        ranked_sql += f" HAVING count(*) >= {k}"  # rows: at least its entities (as below)
        stats_sql = f"WITH {', '.join(ctes)} {ranked_sql}" if ctes else ranked_sql
        return plan(stats_sql=stats_sql, stats=list(stats.stats), ranked=True)
    if bounds is None:
        ctes.append(f"__sbx_pe AS ({inner_sql})")
    elif not cap_can_bind(group_cols, bounds.max_groups_per_entity):
        # Under a budget rows without an entity are no entity's: dropped, as the cap does.
        ctes.append(f'__sbx_pe AS (SELECT * FROM ({inner_sql}) WHERE "__sbx_e" IS NOT NULL)')
    elif total is not None:
        # Entity counts keep G cells per entity, row counts and sums T rows (total_cap).
        kinds = _portable_kinds(checked, access) if portable else None
        per_cell = {e.alias for e in stats.inner}
        computed = [(st.name, st.kind) for st in stats.stats if st.name in per_cell]
        g = bounds.max_groups_per_entity
        paired = sum_counts(st for st in stats.stats if st.name in per_cell)
        ctes += total_cap(inner_sql, group_cols, g, total, computed, kinds, paired=paired)
    else:
        kinds = _portable_kinds(checked, access) if portable else None
        ctes += group_cap(inner_sql, group_cols, bounds.max_groups_per_entity, kinds)
    # Under a total cap a group exists by any entity's kept cell, for its entity counts
    # (G-capped) or its row statistics (within T): one entity alone makes at most
    # max(G, T) groups (both are prefixes of its cells' one order), which is what
    # partition selection's threshold covers (disclosure.groups_alone); in each it
    # counts one entity and at most min(C, T) rows.
    counted = "count(*)" if total is None else f'count(*) FILTER (WHERE "{GROUP_KEPT}")'
    exists = (
        counted if total is None else f'count(*) FILTER (WHERE "{GROUP_KEPT}" OR "{ROWS_KEPT}")'
    )
    outer = [*group_cols, f'{counted} AS "{ENTITIES}"', *stats.outer]
    main = f"SELECT {', '.join(outer)} FROM __sbx_pe"
    if group_cols:
        main += " GROUP BY " + ", ".join(group_cols)
    if bounds is not None and group_cols:
        # With a budget, groups under k never leave the enclave (disclosure would drop
        # them anyway): the number of groups it sees, noised, counts only groups of at
        # least k, and the stats table's size limit can only be reached by those.
        # Without group keys the one group exists whatever the data: its row is always
        # there (even over no entity), so whether it appears says nothing.
        main += f" HAVING {exists} >= {k}"
    all_stats = list(stats.stats)
    if not entities:
        stats_sql = f"WITH {', '.join(ctes)} {main}"
    else:
        # Every other dataset of the join counts its own entities and their contributions.
        ctes.append(f"__sbx_main AS ({main})")
        columns = ["__sbx_main.*"]
        joins = []
        for j, entity_j in enumerate(entities, 1):
            inner.set(
                "expressions",
                [
                    *inner.expressions[: len(checked.keys)],
                    exp.alias_(entity_j, JOINED_ENTITY, quoted=True),
                ]
                + [e.copy() for e in stats.per_entity()],
            )
            per = (
                inner.sql(dialect="duckdb", copy=False)
                + " GROUP BY "
                + ", ".join([*group_cols, f'"{JOINED_ENTITY}"'])
            )
            outer_j, stats_j = stats.joined_stats(j)
            x = f"SELECT {', '.join([*group_cols, *outer_j])} FROM __sbx_j{j}"
            if group_cols:
                x += " GROUP BY " + ", ".join(group_cols)
            ctes += [f"__sbx_j{j} AS ({per})", f"__sbx_x{j} AS ({x})"]
            columns += [f'__sbx_x{j}."{s.name}"' for s in stats_j]
            on = " AND ".join(
                f"__sbx_main.{c} IS NOT DISTINCT FROM __sbx_x{j}.{c}" for c in group_cols
            )
            joins.append(f"LEFT JOIN __sbx_x{j} ON {on or 'true'}")
            all_stats += stats_j
        stats_sql = (
            f"WITH {', '.join(ctes)} SELECT {', '.join(columns)} FROM __sbx_main {' '.join(joins)}"
        )
    return plan(stats_sql=stats_sql, stats=all_stats)


def _reads_ranks(
    checked: Checked, access: Mapping[str, DatasetAccess], stats: _Stats, portable: bool
) -> bool:
    """Whether the stats can be read off the dataset's ranked copy (``_ranked_stats``).

    Only where the final SELECT reads one dataset straight from its table (no join, no
    derived table) whose version the enclave holds ranked (``DatasetAccess.ranked``),
    with no WHERE and no FILTER but on what is one value per entity (``_per_entity``),
    and every statistic has a ranked form.  The ranks are over all of an entity's rows:
    a filter on its rows would keep fewer rows of an entity with more than ``G`` (or
    ``T``) rows than the per-query caps do, so those queries cap per query.  ``T``
    (binding) is at most ``C`` (``release.with_total`` then makes them equal): no group
    can hold more than ``C`` of an entity's ``T`` rows.
    """
    bounds = stats.bounds
    final = checked.final_scope.expression
    if portable or bounds is None or stats.ranked is None:
        return False
    total = bounds.max_total_rows_per_entity
    if total is None or total > bounds.max_rows_per_entity:
        return False
    where = final.args.get("where")
    if where is not None and not _per_entity(checked, access, where.this):
        return False
    item = _straight_from_table(checked, access)
    return item is not None and item.ranked


def _per_entity(
    checked: Checked, access: Mapping[str, DatasetAccess], predicate: exp.Expression
) -> bool:
    """Whether ``predicate`` reads only what is one value per entity, as declared: the
    entity key, and columns whose ``values_per_entity`` is 1 (a person's district).

    Such a WHERE keeps all of an entity's rows or none, so its ranks among the rows kept
    are its ranks (the per-query caps would keep the same).  A false declaration costs
    rows, never privacy: any filter keeps at most ``T`` rows ranked within ``T`` per
    entity, in at most ``G`` groups for those within ``G``."""
    if predicate.find(exp.Subquery, exp.Select):
        return False  # a cohort: entity-level too, but its ranks are not proven here
    try:
        bases = checked.lineage.of_expression(predicate, checked.final_scope).bases
    except QueryRefused:
        return False
    for base in bases:
        item = access.get(base.dataset)
        if item is None or base.dataset != checked.primary:
            return False
        if base.column.lower() == item.spec.entity_key.lower():
            continue
        try:
            if item.spec.column(base.column).values_per_entity != 1:
                return False
        except KeyError:
            return False
    return True


def _ranked_stats(
    stats: _Stats, bounds: ContributionBounds, rank: str, *, group_entities: bool = True
) -> list[str]:
    """The stats columns over a ranked copy's rows, each entity's rows ranked ``rank``.

    An entity counts (``entities``) in the groups of its rows ranked at most ``G``: at
    most ``G`` groups, once in each.  Its row statistics (``rows``, ``count``, ``sum``,
    ``sumsq``, ``distinct``) are over its rows ranked at most ``T``: at most ``T`` rows
    in all, and (``T ≤ C``) at most ``C`` in a group.  Those are the sensitivities of
    the per-query caps (``entity_caps.total_cap``), and a group exists where an entity
    keeps a row either way: at most ``max(G, T)`` groups alone, each with at most
    ``min(C, T)`` of its rows.  A cell (a measure's presence, a FILTER's entities) that a
    count of the same values stands in for under a budget (``disclosure._counted_cells``)
    or that no column reads (``_dead_cells``) is not read there: NULL, which spares a
    second distinct count.  ``top2`` is read only without a budget: NULL.  So is the
    groups' own entity count where a row count selects the groups and the query does not
    show it (``group_entities`` False: ``disclosure.reads_group_entities``).
    """
    g, t = bounds.max_groups_per_entity, bounds.max_total_rows_per_entity
    assert stats.ranked is not None and t is not None
    entity = stats.entity_sql
    shown = {s.name for s in stats.stats if s.shown}
    counted = {s.cell for s in stats.stats if s.kind in ("count", "rows")} - {None, ENTITIES}
    # A FILTER's cell no column reads (``disclosure._dead_cells``: released NULL, unread).
    read = {s.cell for s in stats.stats}
    counted |= {s.name for s in stats.stats if s.kind == "entities" and s.name not in read}
    counted.discard(ENTITIES)

    def entities(kept: str) -> str:
        return f"CAST(count(DISTINCT {entity}) FILTER (WHERE {kept}) AS HUGEINT)"

    whole = entities(f"{rank} <= {g}") if group_entities else "CAST(NULL AS HUGEINT)"
    out = [f'{whole} AS "{ENTITIES}"']
    for name, kind, form, filter_sql in stats.ranked:
        also = f" AND ({filter_sql})" if filter_sql else ""
        if kind == "top2":
            out.append(f'CAST(NULL AS DOUBLE[]) AS "{name}"')
        elif kind == "entities" and name in counted and name not in shown:
            out.append(f'CAST(NULL AS HUGEINT) AS "{name}"')
        elif kind == "entities":
            out.append(f'{entities(f"{rank} <= {g} AND {form}{also}")} AS "{name}"')
        else:
            agg = f"{form} FILTER (WHERE {rank} <= {t}{also})"
            if kind in ("rows", "count"):
                agg = f"CAST({agg} AS HUGEINT)"
            out.append(f'{agg} AS "{name}"')
    return out


def one_row_per_cell(checked: Checked, access: Mapping[str, DatasetAccess]) -> bool:
    """Whether each (group, entity) cell of the query is one row of its dataset.

    It is where the query reads one dataset straight from its table (no join, no derived
    table, which could repeat or merge rows) whose every row is a distinct entity
    (``DatasetAccess.entity_is_row``: the entity key verified unique and never NULL in
    the version read): a row is one entity and lies in one group.
    """
    item = _straight_from_table(checked, access)
    return item is not None and item.entity_is_row


def _straight_from_table(
    checked: Checked, access: Mapping[str, DatasetAccess]
) -> DatasetAccess | None:
    """The dataset the final SELECT reads straight from its table, with no join; None if
    it reads a derived table or a CTE, or joins."""
    if checked.final_scope.expression.args.get("joins"):
        return None
    _alias, source = first_source(checked.final_scope)
    if not isinstance(source, exp.Table) or entity_dataset(checked.final_scope) != checked.primary:
        return None
    return access.get(checked.primary)


def _portable_kinds(checked: Checked, access: Mapping[str, DatasetAccess]) -> list[str]:
    """Each group key's and the entity's canonical kind for the portable cap hash.

    A key's type is its expression's over its base columns' declared types; a type whose
    text differs between engines (a float, a decimal, an interval) is refused.
    """

    def base_type(column: exp.Column) -> str | None:
        base = checked.lineage.resolve(column, checked.final_scope).single
        if base is None:
            return None
        return access[base.dataset].spec.column(base.column).type

    def kind(expr: exp.Expression, written: str) -> str:
        typed = expr.copy()
        if isinstance(typed, exp.Column):
            found = base_type(expr)  # type: ignore[arg-type]
            dtype = (found or "").upper().split("(")[0]
        else:
            for column in list(typed.find_all(exp.Column)):
                found = base_type(column)
                if found is None:
                    dtype = ""
                    break
                column.replace(exp.cast(exp.null(), exp.DataType.build(found, dialect="duckdb")))
            else:
                annotated = annotate_types(typed, dialect="duckdb")
                dtype = annotated.type.sql(dialect="duckdb").upper() if annotated.type else ""
        if dtype in PORTABLE_TEXT:
            return "text"
        if dtype in PORTABLE_TIME:
            return "time"
        raise QueryRefused(
            f"the per-entity cap cannot choose cells alike on every engine by {written} "
            f"({dtype.lower() or 'a type not known here'}): group by an integer, text, date, "
            "boolean or timestamp key, or run it on a DuckDB dataset",
            rule="engine.unsupported",
        )

    kinds = [kind(key, key.sql(dialect="duckdb")) for key in checked.keys]
    spec = access[checked.primary].spec
    entity_type = spec.column(spec.entity_key).type or ""
    entity = entity_type.upper().split("(")[0]
    if entity not in PORTABLE_TEXT | PORTABLE_TIME:
        raise QueryRefused(
            f"the per-entity cap cannot choose cells alike on every engine by the entity key "
            f"{spec.entity_key} ({entity.lower() or 'a type not known here'})",
            rule="engine.unsupported",
        )
    return [*kinds, "text" if entity in PORTABLE_TEXT else "time"]


def _output_names(checked: Checked) -> list[str]:
    """Output column names as the operator wrote them: the alias, the column, or the SQL."""
    final = checked.final_scope.expression
    original = checked.parsed.expression
    written = original.expressions if isinstance(original, exp.Select) else []
    # A COLUMNS(...) projection stands for several outputs, each named after its column.
    plain = [p for p in written if not p.find(exp.Columns)]
    expanded = [p for p in final.expressions if p.meta.get(EXPANDED)]
    if len(plain) + len(expanded) != len(final.expressions):
        return [p.alias_or_name for p in final.expressions]
    names: list[str] = []
    remaining = iter(plain)
    for out in final.expressions:
        proj = out if out.meta.get(EXPANDED) else next(remaining)
        name = output_name(proj)
        while name in names:
            name += "_"
        names.append(name)
    return names
