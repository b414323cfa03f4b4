# Over 400 lines: the disclosure rules applied to one stats table, each a small pure function.
"""Disclosure control: what of a stats table may leave the enclave, and how noisy.

Input is the stats table of :mod:`sandbox.query.rewrite` (one row per group: ``__k*``
keys, ``__entities``, one column per base statistic).  Output is the table the
operator's outputs are computed from.  The steps, in order:

1. **low-count filter**: a group with fewer than ``k`` distinct entities goes; with a
   budget the test is on the **noisy** count instead, against ``max(k, τ)``
   (``selection_threshold``, :mod:`sandbox.query.partition`), because which groups
   appear is itself data;
2. **dominance** ``(n, p)``, without a budget: a group where the ``n`` largest
   per-entity contributions to a sum exceed ``p`` of its total goes, so one large
   enterprise cannot be read off a total;
3. optionally, without a budget, the suppressed groups are **folded** into one
   remainder row with null keys, itself subject to both rules (on conservative bounds);
4. with a budget ε, **discrete Laplace or discrete Gaussian noise** (whichever is
   smaller for the query's columns, :mod:`sandbox.query.accountant`) on every count,
   sum and sum of squares, calibrated per column from the clamping bounds and the
   contribution bounds ``C`` (rows per entity and group) and ``G`` (groups per
   entity); ε is split by sensitivity, to minimise the summed relative variance;
5. **rounding**; top-2 columns never leave.

The math and its caveats are in ``docs/disclosure.md``.  The rules are stated per group
(``Fraction``, ``round``, ``int``); :mod:`sandbox.query.disclosure_exact` evaluates them a
column at a time with the same result bit for bit.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from sandbox.core.errors import EnclaveError, InvalidInput, QueryRefused
from sandbox.enclave.enclave import limits_failure
from sandbox.query import disclosure_exact as exact
from sandbox.query.accountant import CONVERSION_SHARE, Demand, Mechanism, allocate, choose
from sandbox.query.accuracy import gaussian_half_width, laplace_half_width
from sandbox.query.noise import ChoiceSource, GaussianSource, NoiseSource, system_noise
from sandbox.query.partition import gaussian_threshold, laplace_threshold

__all__ = [
    "ENTITIES",
    "GROUPS",
    "Disclosed",
    "DisclosureParams",
    "NoisePlan",
    "StatColumn",
    "StatKind",
    "disclose",
    "epsilon_cost",
    "group_read_cap",
    "noise_plan",
    "reads_group_entities",
    "selection_threshold",
    "sensitivity",
    "sum_counts",
]

ENTITIES = "__entities"
#: With ε, the number of groups is released too (it gives ``groups_suppressed``).
GROUPS = "__groups"
_KEY = re.compile(r"__k\d+\Z")
_Mask = npt.NDArray[np.bool_]
StatKind = Literal[
    "entities",
    "joined",
    "groups",
    "rows",
    "count",
    "distinct",
    "sum",
    "sumsq",
    "min",
    "max",
    "top2",
    "quantile",
]
_COUNTS = frozenset({"entities", "groups", "rows", "count", "distinct"})
#: Statistics of an entity's rows (at most ``C`` per cell, ``T`` or ``G·C`` in all): a
#: ``count(DISTINCT x)`` of a cell's values is at most its rows (``rewrite._values``).
_ROW_STATS = frozenset({"rows", "count", "distinct", "sum", "sumsq"})
_NOISED = _COUNTS | {"sum", "sumsq"}
_KINDS = (_NOISED - {"groups"}) | {"min", "max", "top2", "joined", "quantile"}
#: A DP quantile chooses among the edges of this many equal bins over the declared bounds.
QUANTILE_BINS = 1000
#: Used for decisions inside the enclave's boundary only, never released.  ("joined"
#: counts are released exactly without a budget, as count(DISTINCT key) of that dataset;
#: under a budget the rewrite joins on entity keys only and makes none.)
_UNRELEASED = frozenset({"top2"})


@dataclass(frozen=True)
class StatColumn:
    """One statistic column of the stats table and how disclosure treats it."""

    name: str
    kind: StatKind
    lower: float | None = None  # per-row clamping bounds (sum/sumsq/top2)
    upper: float | None = None
    # For "top2": the sum (or sum of squares) column it belongs to.  For "joined": the
    # entities column it counts again on another joined dataset's entities.  For
    # "sumsq": the sum of the same values over the same rows (``_centres``).
    of: str | None = None
    # Under FILTER (WHERE ...): the "entities" column counting who the filter keeps; a
    # cell is released only where that count passes the low-count filter itself.
    cell: str | None = None
    # For "quantile": which quantile (0.5 for median); the column is a histogram of
    # ``QUANTILE_BINS`` bins over [lower, upper], at most C rows per entity and group.
    q: float | None = None
    # For "quantile" over whole numbers: one bin per whole number (bin i holds lower + i).
    bins: int | None = None
    # Released as it is (the entities column as ``count(DISTINCT key)``): an output, not
    # only the count that selects the released groups (``_GATE_WEIGHT_ROWS``).
    shown: bool = False
    # A row count under FILTER (WHERE ...): a finer cell's, never the one that selects groups.
    filtered: bool = False
    # A measure's presence cell under a FILTER: that FILTER's own cell, which holds it.
    within: str | None = None


@dataclass(frozen=True)
class DisclosureParams:
    """A grant's disclosure settings; ``C`` and ``G`` must be what the rewrite enforced."""

    k: int
    epsilon: float | None = None
    max_rows_per_entity: int = 1
    max_groups_per_entity: int = 1
    dominance_n: int = 2
    dominance_p: float | None = 0.9
    round_digits: int | None = None
    fold_remainder: bool = False
    # With ε: the probability, per query, that the set of released groups gives one
    # entity away (see ``selection_threshold``).
    delta: float = 1e-6
    # Is G enforced by the rewrite?  Only then can a remainder row's distinct
    # entities be bounded below by Σ entities / G.  None: exactly when ε is set
    # (release.prepare caps contributions only for a budget).
    groups_capped: bool | None = None
    #: T: rows of one entity over all groups together, where the rewrite enforces it
    #: (``rewrite.ContributionBounds``; only ever below ``C·G``, else None).
    max_total_rows_per_entity: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.k < 1:
            problems.append("k must be at least 1")
        if self.epsilon is not None and not (0 < self.epsilon < math.inf):
            problems.append("epsilon must be positive and finite")
        if self.max_rows_per_entity < 1 or self.max_groups_per_entity < 1:
            problems.append("contribution bounds must be at least 1")
        if self.max_total_rows_per_entity is not None and self.max_total_rows_per_entity < 1:
            problems.append("contribution bounds must be at least 1")
        if self.dominance_n not in (1, 2):
            problems.append("dominance_n must be 1 or 2 (the stats carry the top two)")
        if self.dominance_p is not None and not 0 <= self.dominance_p <= 1:
            problems.append("dominance_p must be in [0, 1]")
        if not 0 < self.delta < 1:
            problems.append("delta must be in (0, 1)")
        if problems:
            raise InvalidInput("; ".join(problems), rule="disclosure.params")

    @property
    def capped(self) -> bool:
        return self.epsilon is not None if self.groups_capped is None else self.groups_capped

    @property
    def total_bound(self) -> int | None:
        """T where it binds (below ``C·G``): row counts and sums then pay for T rows."""
        t = self.max_total_rows_per_entity
        binds = t is not None and t < self.max_rows_per_entity * self.max_groups_per_entity
        return t if binds else None

    @property
    def groups_alone(self) -> int:
        """Groups one entity can make on its own: ``G``, or ``max(G, T)`` where ``T`` binds.

        Under a binding ``T`` a group exists through any entity's cell that its entity
        counts keep (its first ``G``) or its row statistics keep (within ``T`` rows, at
        most ``T`` cells): two prefixes of one order of its cells (``entity_caps.total_cap``).
        """
        t = self.total_bound
        g = self.max_groups_per_entity
        return g if t is None else max(g, t)

    @property
    def rows_bound(self) -> int:
        """Rows of one entity that row counts and sums can see over all groups together."""
        t = self.total_bound
        return self.max_groups_per_entity * self.max_rows_per_entity if t is None else t


@dataclass(frozen=True)
class Disclosed:
    """The released stats table and what releasing it cost."""

    table: pa.Table
    #: With ε a noisy lower bound (97.5%) on the groups held back; without, None: an exact
    #: count of groups below k would say whether anybody matches a query that releases
    #: nothing (docs/disclosure.md).
    groups_suppressed: int | None
    epsilon_spent: float


@dataclass(frozen=True)
class NoisePlan:
    """How one column is noised: integer units of ``resolution``, noise ``scale`` in units.

    ``scale`` is the discrete Laplace scale ``b`` (``mechanism == "laplace"``), the
    discrete Gaussian variance ``sigma²`` (``"gaussian"``), or a quantile's temperature.
    ``epsilon`` is the column's ε (Laplace, quantile) and ``rho`` its rho (zCDP, both).
    ``copy_of``: the column is released as that noised column's values (equal in every
    group, ``_copies``): no noise of its own, no ε; its scale is the source's.
    ``centre``/``centred_on``: see ``_centres`` (``half_width`` is then the centred sum's;
    the released sum also carries ``centre`` times the count's noise).
    """

    column: str
    sensitivity: Fraction  # L1 sensitivity of the whole column, in value units
    resolution: Fraction
    epsilon: Fraction
    scale: Fraction
    mechanism: Mechanism = "laplace"
    rho: Fraction = Fraction(0)
    copy_of: str | None = None
    #: A sum released centred (``_centres``): the noise is drawn on ``sum - centre·count``
    #: of the count column ``centred_on``, and the noisy count times ``centre`` is added
    #: back; ``sensitivity`` and ``scale`` are the centred sum's.
    centre: Fraction = Fraction(0)
    centred_on: str | None = None
    #: A sum of squares released centred (``_centres``): noised on ``Σ(x - centre)² =
    #: squares - 2·centre·sum + centre²·count`` of this sum column and the count
    #: ``centred_on``, and released as that plus ``2·centre·sum~ - centre²·count~`` of
    #: their released values; ``sensitivity`` and ``scale`` are the centred squares'.
    squares_of: str | None = None
    #: The column whose noisy values select the released groups (``_gate``): the entity
    #: count, or a row count of the whole group.  ``lone``: the most it counts in a group
    #: that one entity alone makes (1 entity; at most ``C`` rows).
    selects: bool = False
    lone: int = 1

    @property
    def half_width(self) -> float:
        """95% half-width of the noise on one cell, in value units (data-independent)."""
        if self.mechanism == "gaussian":
            return float(gaussian_half_width(self.scale) * self.resolution)
        return float(laplace_half_width(self.scale) * self.resolution)


def _stat_columns(columns: Sequence[StatColumn]) -> dict[str, StatColumn]:
    """Columns by name; ``__entities`` is always there (the k filter needs it)."""
    by_name = {ENTITIES: StatColumn(ENTITIES, "entities")}
    for column in columns:
        if column.kind not in _KINDS:
            raise EnclaveError(f"unknown statistic kind {column.kind!r}", rule="disclosure.stats")
        by_name[column.name] = column
    return by_name


def sensitivity(column: StatColumn, params: DisclosureParams) -> Fraction:
    """L1 sensitivity of a whole column when one entity is added or removed.

    One entity touches at most ``G`` groups, with at most ``C`` rows in each,
    each row clamped to ``[lower, upper]``: entities and the number of groups ``G``; rows
    and counts
    ``G·C``; sums ``G·C·max(|lower|, |upper|)``; sums of squares
    ``G·C·max(lower², upper²)``.  Where the data declares ``T < G·C`` rows over all
    groups together (``params.total_bound``), rows, counts and sums see ``T`` of an
    entity's rows instead of ``G·C`` (``params.rows_bound``; the rewrite's ``_total_cap``).
    """
    g, rows = params.max_groups_per_entity, params.rows_bound
    if column.kind == "groups":  # the groups that exist through it alone
        return Fraction(params.groups_alone)
    if column.kind == "entities":
        return Fraction(g)
    if column.kind in ("rows", "count", "distinct"):
        return Fraction(rows)
    if column.kind in ("sum", "sumsq"):
        if column.lower is None or column.upper is None:
            raise EnclaveError(
                f"{column.name} has no clamping bounds: cannot calibrate noise",
                rule="disclosure.bounds",
            )
        # The classification refuses these; a spec that got past it must not reach Fraction().
        finite = math.isfinite(column.lower) and math.isfinite(column.upper)
        if not finite or column.lower > column.upper:
            raise EnclaveError(
                f"{column.name} has clamping bounds that are not finite or not ordered: "
                "cannot calibrate noise",
                rule="disclosure.bounds",
            )
        bound = max(abs(Fraction(column.lower)), abs(Fraction(column.upper)))
        return rows * (bound if column.kind == "sum" else bound * bound)
    raise EnclaveError(f"{column.name} ({column.kind}) is never noised", rule="disclosure.stats")


def _resolution(delta: Fraction) -> Fraction:
    """The power of ten three decades below the sensitivity (data-independent).

    Released sums lie on this grid; rounding the true value to it costs at most
    one unit per changed group, which adds ``G`` units (≤ 0.1%) to the sensitivity.
    """
    if delta == 0:
        return Fraction(1)
    exponent = len(str(delta.numerator)) - len(str(delta.denominator))
    while Fraction(10) ** exponent > delta:
        exponent -= 1
    while Fraction(10) ** (exponent + 1) <= delta:
        exponent += 1
    return Fraction(10) ** (exponent - 3)


#: How much a column's error matters relative to a count's: the number of groups only
#: feeds the metadata's ``groups_suppressed`` (and the group limit), so it gets a small
#: share of ε, and never more than ``_GROUPS_CAP`` of it.
_GROUPS_WEIGHT = 0.01
#: The most of a query's ε (or rho) the number of groups takes.  The weights alone gave it
#: up to 27% beside one row count at C = 9 (a share goes as the cube root of its weight):
#: a count by diagnosis on the demo claims released its counts at 0.73 of ε for a
#: ``groups_suppressed`` its own noise kept at 0.
_GROUPS_CAP = 0.05
#: The same for a grouped query's entity count at ``C = 1``: it decides which groups are
#: released (``selection_threshold``'s τ grows as 1/ε of it) and is the count ``count(*)``
#: copies (``_copies``), so its error matters more than one output's.  Measured
#: (``bench/dp_accuracy.py``, ε 1, 10 repetitions, seed 14): on statsmodels' "fair"
#: survey (6,366 persons, one row each) the median share of true groups released rose
#: from 88.3 to 100% (SmartNoise 93.3%), the mean from 88.7 to 92.5%, the median error
#: stayed 0.4%; on PUMS (1,000 persons) 95.7% and 1.4% as before.
_GATE_WEIGHT = 4.0
#: At ``C > 1`` no output copies the entity count (``count(*)`` counts rows): unless the
#: query shows it (``count(DISTINCT key)``, ``StatColumn.shown``) it only selects groups,
#: so it weighs less than an output.  Weighed as one (1), it took 0.56 of ε from a count
#: by diagnosis on the demo claims (C = 9, G = 4) and left the count's cells 1.5-2x
#: SmartNoise SQL's error on the groups both released; how the weight trades groups
#: released for error is in docs/disclosure.md ("Budget split").
_GATE_WEIGHT_ROWS = 0.2
#: The typical magnitude of one entity's contribution, as a share of its bound (data-
#: independent): half the bound for a sum, a third of the squared bound for a sum of
#: squares (a uniform value's mean square), the whole bound for a count.
_TYPICAL = {"sum": Fraction(1, 2), "sumsq": Fraction(1, 3)}


def _units(
    column: StatColumn, params: DisclosureParams, *, gate: bool = False, weight: float = 1.0
) -> tuple[Fraction, Fraction, Demand]:
    """A column's grid, L1 sensitivity in units, and what it asks of the accountant.

    L2 sensitivity: one entity changes at most ``G`` cells, each by at most a ``G``-th
    of the L1 sensitivity (plus a rounding unit on a grid), so ``Δ₂ = Δ₁ / √G``.
    Under a binding ``T`` (``params.total_bound``) a row column's entity changes at most
    ``T`` cells (each it keeps holds at least one of its rows), each by at most ``C`` rows'
    worth plus a rounding unit, so ``Δ₂² ≤ (largest change per cell) · Δ₁``.
    The weight is ``1 / (typical per-entity contribution in units)²``: minimising
    ``Σ weight · variance`` minimises the summed *relative* variance of the columns.
    ``gate``: the column is the group's entity count that selects the released groups,
    weighed ``_GATE_WEIGHT`` times at ``C = 1`` (where ``count(*)`` copies it) and, above,
    ``_GATE_WEIGHT_ROWS`` times unless the query shows it (the allocation depends on the
    plan only, not data).  ``weight``: any other column's weight (``_weight``).
    """
    g = params.max_groups_per_entity
    delta = sensitivity(column, params)
    total = params.total_bound if column.kind in _ROW_STATS else None
    if column.kind in _COUNTS:
        per_group = delta / g if total is None else Fraction(params.max_rows_per_entity)
        if column.kind == "groups":
            weight = _GROUPS_WEIGHT
        elif gate and params.max_rows_per_entity == 1:
            weight = _GATE_WEIGHT
        elif gate and not column.shown:
            weight = _GATE_WEIGHT_ROWS
        if column.kind == "groups":
            l2 = float(delta)
        elif total is None:
            l2 = math.sqrt(g) * float(per_group)
        else:
            l2 = math.sqrt(float(per_group) * float(delta))
        typical = float(per_group) * _row_share(column, params)
        cap = _GROUPS_CAP if column.kind == "groups" else None
        return Fraction(1), delta, Demand(float(delta), l2, weight / typical**2, cap=cap)
    resolution = _resolution(delta)
    if total is None:
        per_cell = delta / g / resolution  # one cell's bound, in units
        per_group = Fraction(math.ceil(per_cell) + 1)
        units = Fraction(math.ceil(delta / resolution) + g)
        l2 = math.sqrt(g) * float(per_group)
    else:
        per_cell = delta / total * params.max_rows_per_entity / resolution  # C rows' bound
        per_group = Fraction(math.ceil(per_cell) + 1)
        units = Fraction(math.ceil(delta / resolution) + total)
        l2 = math.sqrt(float(per_group) * float(units))
    typical = max(float(per_cell * _TYPICAL[column.kind]) * _row_share(column, params), 1.0)
    demand = Demand(float(units), l2, weight / typical**2)
    return resolution, units, demand


def _row_share(column: StatColumn, params: DisclosureParams) -> float:
    """The share of ``C`` rows one entity typically has in a cell: ``(C + 1) / 2C``.

    Row statistics (row counts, counts and sums of a column) see up to ``C`` of an
    entity's rows in a cell; taken as uniform on ``1 … C`` (as a value is taken as half
    its bound), the typical entity has ``(C + 1)/2`` of them, not ``C``, so their relative
    error weighs more against the entity count's.  1 at ``C = 1``: one-row data is
    unchanged.  Measured (``bench/dp_accuracy.py``, ε 1, 10 repetitions, seed 14, ``C``
    against ``(C + 1)/2``): the demo claims (C = 9) median error 4.2 → 3.1% of cells
    (per query 4.1 → 3.3%), groups released median 100 → 96.2%, mean 84.2 → 81.7%;
    OpenDP's PUMS_dup (drawn C = 4) error 4.3 → 3.6% (per query 3.9 → 3.0%), groups
    82.2 → 76.1%, still above SmartNoise's 32.6%.
    """
    if column.kind not in _ROW_STATS:
        return 1.0
    c = params.max_rows_per_entity
    return (c + 1) / (2 * c)


def _floor(value: float) -> Fraction:
    """A rational at most ``value`` (never more ε than allocated)."""
    return Fraction(math.floor(value * 10**9), 10**9)


def _ceil(value: float) -> Fraction:
    """A rational at least ``value`` (never less noise than allocated)."""
    return Fraction(math.ceil(value * 10**6), 10**6)


def noise_plan(
    columns: Sequence[StatColumn], params: DisclosureParams, *, grouped: bool = True
) -> list[NoisePlan]:
    """Per noised column: sensitivity, grid, mechanism, share of ε and scale (empty without ε).

    ``grouped``: the query has GROUP BY keys; without, there is one group and the number
    of groups is not noised (nor released: ``groups_suppressed`` follows the table).

    A pure function of its (frozen) arguments, asked for several times per query
    (explain's accuracy, the ε charged, the release): remembered for the most recent
    plans.  Measured in process on the small query, about 0.2 ms of the 1 ms its five
    calls took (``bench/profile_small.py``).
    """
    if params.epsilon is None:
        return []
    return list(_noise_plan(tuple(columns), params, grouped))


def reads_group_entities(
    columns: Sequence[StatColumn], params: DisclosureParams, *, grouped: bool = True
) -> bool:
    """Whether the release reads each group's true entity count (``__entities``).

    Without a budget it always does (the low-count filter tests it against ``k``).  With
    ε only where it is noised: it selects the groups, or the query shows it, or a row
    count is released as its copy; where a row count selects the groups (``_gate``) it is
    neither noised nor read, and is released NULL (``_disclose``), so the stats query
    need not count it (``rewrite._ranked_stats``).
    """
    if params.epsilon is None:
        return True
    by_name = _stat_columns(columns)
    if by_name[ENTITIES].shown:
        return True
    return any(p.column == ENTITIES for p in noise_plan(columns, params, grouped=grouped))


@functools.lru_cache(maxsize=512)
def _noise_plan(
    columns: tuple[StatColumn, ...], params: DisclosureParams, grouped: bool
) -> tuple[NoisePlan, ...]:
    by_name = _stat_columns(columns)
    by_entities = _planned(by_name, params, grouped, None)
    gate = _gate(by_name, params, grouped)
    if gate is None:
        return by_entities
    by_rows = _planned(by_name, params, grouped, gate)
    return by_rows if _rows_select_better(by_entities, by_rows, params) else by_entities


def _gate(by_name: dict[str, StatColumn], params: DisclosureParams, grouped: bool) -> str | None:
    """A row count of the whole group that can select the released groups instead of
    ``__entities``, where the entity count is no output of its own; else None.

    Only a grouped query's (without keys the one group's existence is no data: its
    entity count is held against ``k`` alone, in persons).  Not where the query shows the
    entity count (``count(DISTINCT key)``: noised anyway) or ``count(*)`` copies it
    (``C = 1``: already one column).  ``count(*)`` first, else the first ``count(x)``;
    never one under a FILTER (it counts a finer cell, and would hold back groups).

    Where ``T`` binds, a group exists through any cell an entity keeps for its entity
    counts or its row statistics (``entity_caps.total_cap``): one whose only kept cells
    are one entity's holds at most ``min(C, T)`` of its rows and nothing of anyone else.
    (When it existed by entity-count cells only, a review made one entity's kept cell
    a group whose row count was 401 from others' cells beyond their ``G``.)
    """
    if not grouped or by_name[ENTITIES].shown:
        return None
    if ENTITIES in _copies(by_name, params).values():
        return None
    rows = [n for n, c in by_name.items() if c.kind == "rows" and c.cell is None]
    counts = [n for n, c in by_name.items() if c.kind == "count" and not c.filtered]
    candidates = rows + sorted(counts)
    return candidates[0] if candidates else _filter_gate(by_name, params)


def _filter_gate(by_name: dict[str, StatColumn], params: DisclosureParams) -> str | None:
    """A FILTERed row count that can select the groups: only where every output is a
    statistic of that one FILTER's cell (``count(*) FILTER (WHERE f)``, or ``count(x)``
    and ``avg(x)`` under it; ``sum(CASE WHEN f THEN 1 ELSE 0 END)`` is normalized to the
    first).  A group whose count there fails the cell's own low-count test shows no value
    anyway, so selecting on it holds back nothing the release would show, and the entity
    count need not be noised at all.  Sound as the unfiltered row count is: a group one
    entity alone makes holds at most ``min(C, T)`` of its rows under any FILTER.
    """

    # A FILTER's entity count shown as count(DISTINCT key) FILTER is an output of that
    # FILTER (its own cell); other entity columns are cells, and top2 no output.
    def own(column: StatColumn) -> str | None:
        return column.name if column.kind == "entities" else column.cell

    outputs = [
        c
        for c in by_name.values()
        if c.name != ENTITIES and c.kind != "top2" and (c.kind != "entities" or c.shown)
    ]
    copies = _copies(by_name, params)  # at C = 1 the row count is its cell's copy
    cells = {own(c) for c in outputs}
    if len(cells) == 1 and None not in cells:
        (cell,) = cells
        rows = sorted(
            n for n, c in by_name.items() if c.kind == "rows" and c.cell == cell and n not in copies
        )
        counts = sorted(n for n, c in by_name.items() if c.kind == "count" and c.cell == cell)
        candidates = rows + counts
        return candidates[0] if candidates else None

    # Measures' presence cells under one FILTER lie within its cell (``within``): with
    # ``count(*) FILTER (WHERE f)`` among the outputs, that count selects (beside
    # ``avg(x) FILTER (WHERE f)``).  Never a measure's count: a sparse x would hold back
    # groups whose other outputs pass (review, December 2026).
    def filter_of(name: str | None) -> str | None:
        column = by_name.get(name) if name is not None else None
        return (column.within or name) if column is not None else name

    mapped = {filter_of(own(c)) for c in outputs}
    if len(mapped) != 1 or None in mapped:
        return None
    (cell,) = mapped
    rows = sorted(
        n for n, c in by_name.items() if c.kind == "rows" and c.cell == cell and n not in copies
    )
    return rows[0] if rows else None


def _rows_select_better(
    by_entities: tuple[NoisePlan, ...], by_rows: tuple[NoisePlan, ...], params: DisclosureParams
) -> bool:
    """Does selecting on the row count release groups at least as small as on entities?

    Data-independent: an entity's rows in a group are taken as ``(C + 1)/2``, as the
    split's weights take them (``_row_share``), so the entity count's threshold ``τ_e``
    stands for ``τ_e·(C + 1)/2`` rows.  Selecting on rows also frees the entity count's
    share of ε for the outputs, so on a tie rows are taken.
    """
    entities = next(p for p in by_entities if p.selects)
    rows = next(p for p in by_rows if p.selects)
    c = params.max_rows_per_entity
    return selection_threshold(rows, params) * 2 <= selection_threshold(entities, params) * (c + 1)


def _weight(
    column: StatColumn, params: DisclosureParams, grouped: bool, gate: str | None, copied: bool
) -> float:
    """How much a column's relative error weighs in the split (``_units``' weights).

    A row count that selects the groups (``_gate``) weighs as the entity count it
    replaces would at ``C = 1`` (``_GATE_WEIGHT``: it sets τ there and is released),
    above as the output it is.  Without keys the entity count only meets ``k`` (a margin
    on a noisy count): unless shown or copied it weighs ``_GATE_WEIGHT_ROWS``.
    """
    if column.name == gate:
        return _GATE_WEIGHT if params.max_rows_per_entity == 1 else 1.0
    if column.name == ENTITIES and not grouped and not column.shown and not copied:
        return _GATE_WEIGHT_ROWS
    return 1.0


def _planned(
    by_name: dict[str, StatColumn],
    params: DisclosureParams,
    grouped: bool,
    gate: str | None,
) -> tuple[NoisePlan, ...]:
    """The noise plan with ``gate`` selecting the groups (None: the entity count does)."""
    epsilon = params.epsilon
    assert epsilon is not None  # noise_plan answers [] without a budget
    counted = _counted_cells(by_name)
    copies = _copies(by_name, params)
    centres = _centres(by_name)
    dead = _dead_cells(by_name)
    noised = [
        _centred(c, centres[c.name].centre) if c.name in centres else c
        for c in by_name.values()
        if c.kind in _NOISED | {"quantile"}
        and c.name not in counted
        and c.name not in copies
        and c.name not in dead
        and not (gate is not None and c.name == ENTITIES)
    ]
    if grouped:
        noised.append(StatColumn(GROUPS, "groups"))
    c = params.max_rows_per_entity
    shapes: list[tuple[Fraction, Fraction]] = []
    demands: list[Demand] = []
    for column in noised:
        if column.kind == "quantile":
            # Temperature 2·R/ε_j, R the rows of one entity its histograms can hold over
            # all groups: C·G, or T where it binds (entity_caps.total_cap keeps T rows' bins);
            # weighted like a count of the same reach.
            reach = params.rows_bound
            shapes.append((Fraction(1), Fraction(2 * reach)))
            demands.append(Demand(2.0 * reach, 2.0 * reach, 1 / (2.0 * c) ** 2, pure=True))
            continue
        entity_gate = grouped and gate is None and column.name == ENTITIES
        weight = _weight(column, params, grouped, gate, ENTITIES in copies.values())
        resolution, units, demand = _units(column, params, gate=entity_gate, weight=weight)
        shapes.append((resolution, units))
        demands.append(demand)
    chosen = choose(demands, epsilon, params.delta * CONVERSION_SHARE)
    if chosen.mechanism == "gaussian" and any(_floor(r) == 0 for r in chosen.rhos):
        # A share of rho too small for the ledger's grid (ε of 10^-4 and below): Laplace,
        # always a valid split of the same ε.
        chosen = allocate(demands, epsilon, params.delta * CONVERSION_SHARE, "laplace")
    selecting = gate or ENTITIES
    lone = min(c, params.rows_bound) if gate is not None else 1
    plans = []
    for i, column in enumerate(noised):
        resolution, units = shapes[i]
        rho = _floor(chosen.rhos[i])
        pure = column.kind == "quantile" or chosen.mechanism == "laplace"
        if (_floor(chosen.epsilons[i]) if pure else rho) == 0:
            raise QueryRefused(
                f"ε={epsilon:g} is too small to split over this query's statistics "
                "(a share rounds to nothing): choose a larger ε",
                rule="budget.epsilon",
            )
        delta = sensitivity(column, params) if column.kind != "quantile" else Fraction(c)
        selects, own_lone = column.name == selecting, lone if column.name == gate else 1
        if column.kind == "quantile" or chosen.mechanism == "laplace":
            eps = _floor(chosen.epsilons[i])
            plans.append(
                NoisePlan(
                    column.name,
                    delta,
                    resolution,
                    eps,
                    units / eps,
                    "laplace",
                    rho,
                    selects=selects,
                    lone=own_lone,
                )
            )
        else:
            sigma2 = _ceil(demands[i].l2 ** 2 / (2 * float(rho)))
            plans.append(
                NoisePlan(
                    column.name,
                    delta,
                    resolution,
                    Fraction(0),
                    sigma2,
                    "gaussian",
                    rho,
                    selects=selects,
                    lone=own_lone,
                )
            )
    by_plan = {p.column: p for p in plans}
    for name, centred in centres.items():
        by_plan[name] = replace(
            by_plan[name],
            centre=centred.centre,
            centred_on=centred.count,
            squares_of=centred.squares_of,
        )
    for name, source in copies.items():
        by_plan[name] = replace(
            by_plan[source],
            column=name,
            epsilon=Fraction(0),
            rho=Fraction(0),
            copy_of=source,
            selects=False,
        )
    return tuple(by_plan[n] for n in [*by_name, GROUPS] if n in by_plan)  # the columns' order


def _copies(by_name: dict[str, StatColumn], params: DisclosureParams) -> dict[str, str]:
    """``rows`` columns equal, in every group, to a column noised anyway: released as it.

    At ``C = 1`` the rewrite counts at most one row per entity and group (``least(count(*),
    1)`` per cell), so ``count(*)`` is the number of entities with a row there: exactly
    ``__entities``, and under a FILTER exactly that filter's entities column (or, where
    that cell is not noised, the ``count(x)`` that stands in for it).  Releasing the one
    noisy value twice is post-processing: the query's ε goes to the columns that differ,
    and a count query on one-row-per-entity data has half the noise it had when the two
    were noised apart (`tests/sandbox/query/test_copied_counts.py`).  Not where ``T``
    binds: row counts then keep an entity's cells within ``T`` rows, its entity counts
    its first ``G`` cells, and the two differ.
    """
    if params.max_rows_per_entity != 1 or params.max_total_rows_per_entity is not None:
        return {}
    counted = _counted_cells(by_name)
    out = {}
    for name, column in by_name.items():
        if column.kind == "rows":
            cell = column.cell or ENTITIES
            source = counted.get(cell, cell)
            if source != name:  # not the count that stands in for its own cell
                out[name] = source
    return out


#: How far the bounds may lie from 0, in half-widths ``w = (upper - lower)/2``, for a sum
#: or sum of squares to be noised centred: ``max(|lower|, |upper|) ≤ FLOAT_SPAN·w``.
#: The centred value is computed from DuckDB's float sums (``sum - c·count``,
#: ``squares - 2c·sum + c²·count``), whose rounding error scales with the values'
#: magnitude, while its sensitivity scales with ``w`` (``w²``): so the error, measured in
#: the noise grid, grows by up to ``max(|lower|, |upper|)/w`` (squared for squares) over
#: the uncentred statistic's.  Bounds around 0 are always within 2; ratings 1-5 and ages
#: 17-90 within 2.5; a review measured bounds [1000, 1010] (202, squared 40,804) move a
#: centred sum of squares by 3.7 grid units over 1 M rows (docs/disclosure.md,
#: "Floating-point sums in the enclave").
FLOAT_SPAN = 3


def _float_safe(lower: Fraction, upper: Fraction) -> bool:
    """Whether centring on ``[lower, upper]`` keeps float error within ``FLOAT_SPAN``."""
    return max(abs(lower), abs(upper)) * 2 <= FLOAT_SPAN * (upper - lower)


@dataclass(frozen=True)
class _Centre:
    """How one sum or sum of squares is noised centred: its count, the centre, and for a
    sum of squares the sum of the same values (None for a sum)."""

    count: str
    centre: Fraction
    squares_of: str | None = None


def _centres(by_name: dict[str, StatColumn]) -> dict[str, _Centre]:
    """Sums and sums of squares noised centred on their bounds' midpoint ``c``.

    **Sums.**  The rewrite pairs every ``sum(x)`` with ``count(x)`` over the same rows
    (both carry ``x``'s presence cell, and no other count or sum does), or, under a
    FILTER that keeps only rows where ``x`` is not NULL, with the FILTER's row count
    (both carry the FILTER's cell, which no other sum does; several such sums share the
    one count): per (group, entity) the sum is
    ``n·mean`` with ``n ≤ C`` rows counted and ``mean`` in ``[lower, upper]``, so
    ``sum - c·n = n·(mean - c)`` lies within ``±C·(upper - lower)/2``.  Noising that at
    its sensitivity ``G·C·(upper - lower)/2`` and adding ``c`` times the noisy count
    (noised anyway; post-processing) releases the sum with less sensitivity than at
    ``[0, upper]``, and an average ``c + (sum - c·n)~/n~`` whose count noise is
    weighed by ``|avg - c|`` rather than ``|avg|`` (the bounded mean of Google's DP
    library and OpenDP).  Bounds around 0 (``lower ≤ 0 ≤ upper``, ``c ≠ 0``): always,
    since there a released sum's variance is never larger than uncentred at the split
    ``noise_plan`` gives.  Bounds on one side of 0 (ratings 1 to 5, ages 17 to 90): only
    a sum no output shows as it is (``StatColumn.shown``: averages and variances read
    it), since a plain ``SUM`` would carry ``c`` times the count's noise, more than the
    bound it saves where ``c`` is far from 0 (``docs/disclosure.md``, "Averages, centred").

    **Sums of squares** (variances, standard deviations): ``Σ(x - c)²`` over a cell's
    rows is ``squares - 2c·sum + c²·n`` of its sum of squares, sum and count (the
    rewrite scales all three to the same capped rows), and lies in
    ``[0, n·((upper - lower)/2)²]``, a quarter or less of ``[0, n·max(lower², upper²)]``.
    Noised there at ``G·C·((upper - lower)/2)²`` and released as that plus
    ``2c·sum~ - c²·count~`` (post-processing of released columns), the release's
    ``squares - sum²/count`` is exactly ``Σ(x - c)²~ - (sum~ - c·count~)²/count~``: the
    variance of ``x - c``, which is ``x``'s.  Always, where the sum of the same values
    (``StatColumn.of``) carries the same count and bounds (``c ≠ 0``).

    Neither where the bounds lie far from 0 for their width (:data:`FLOAT_SPAN`): the
    centred value is computed from float sums, and there their rounding would outgrow
    the grid.
    """
    pairs = sum_counts(by_name.values())
    out: dict[str, _Centre] = {}
    for name, column in by_name.items():
        if column.kind not in ("sum", "sumsq") or name not in pairs:
            continue
        lower, upper = column.lower, column.upper
        if lower is None or upper is None or not math.isfinite(lower) or not math.isfinite(upper):
            continue  # sensitivity() refuses it
        centre = (Fraction(lower) + Fraction(upper)) / 2
        if centre == 0 or not _float_safe(Fraction(lower), Fraction(upper)):
            continue
        if column.kind == "sum":
            if column.shown and not lower <= 0 <= upper:
                continue
            out[name] = _Centre(pairs[name], centre)
            continue
        of = by_name.get(column.of or "")
        if (
            of is not None
            and of.kind == "sum"
            and pairs.get(of.name) == pairs[name]
            and (of.lower, of.upper) == (lower, upper)
        ):
            out[name] = _Centre(pairs[name], centre, of.name)
    return out


class _Counted(Protocol):
    """A stats column as the rewrite (``Stat``) and disclosure (``StatColumn``) see it."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def cell(self) -> str | None: ...
    @property
    def filtered(self) -> bool: ...


def sum_counts(columns: Iterable[_Counted]) -> dict[str, str]:
    """Each sum's (and sum of squares') count over the same rows: the one count column
    that carries its cell.  The rewrite pairs every ``sum(x)`` with ``count(x)`` (both
    carry ``x``'s presence cell, and no other count or sum does), or, under a FILTER that
    keeps only rows where ``x`` is not NULL, with the FILTER's row count (both carry the
    FILTER's cell; several such sums share the one count).  A sum without exactly one is
    left out.  Centring (``_centres``) and the total cap's part of a crossing cell
    (``entity_caps.total_cap``) both read this pairing: each proof needs the sum's own
    count."""
    columns = list(columns)
    counts: dict[str, list[str]] = {}
    for column in columns:
        counted = column.kind == "count" or (column.kind == "rows" and column.filtered)
        if counted and column.cell not in (None, ENTITIES):
            counts.setdefault(column.cell, []).append(column.name)
    return {
        column.name: counts[column.cell][0]
        for column in columns
        if column.kind in ("sum", "sumsq")
        and column.cell is not None
        and len(counts.get(column.cell, ())) == 1
    }


def _centred(column: StatColumn, centre: Fraction) -> StatColumn:
    """The sum of ``value - centre``: its bounds shifted, so ``sensitivity`` is the centred one."""
    assert column.lower is not None and column.upper is not None
    return replace(
        column,
        lower=float(Fraction(column.lower) - centre),
        upper=float(Fraction(column.upper) - centre),
    )


def _quantile(histogram: Any, column: StatColumn, plan: NoisePlan, source: Any) -> float:
    """One group's DP quantile: a bin, chosen by permute-and-flip, released as its value.

    Candidates are the bins over the declared bounds (data-independent): ``column.bins``
    whole numbers (bin ``i`` is ``lower + i``), else ``QUANTILE_BINS`` equal bins
    (released as the bin's midpoint).  A bin's score is minus how many rows the target
    rank ``q·n`` lies outside the rows it spans: 0 for the bin the quantile is in, also
    when many rows share one value (a score over the edges between bins would tie
    there, and choose at random).  An empty group still gets a (uniformly random) bin,
    so emptiness is not told by a NULL.
    """
    if not isinstance(source, ChoiceSource):
        raise EnclaveError("the noise source cannot choose a quantile", rule="disclosure.stats")
    size = column.bins or QUANTILE_BINS
    counts = [0] * size
    for bin_, n in histogram or ():
        if not 0 <= int(bin_) < size:
            raise EnclaveError(f"{column.name} has a bin out of range", rule="disclosure.stats")
        counts[int(bin_)] += int(n)
    target = Fraction(column.q or 0) * sum(counts)
    scores: list[Fraction] = []
    below = 0
    for count in counts:
        scores.append(-max(Fraction(0), below - target, target - (below + count)))
        below += count
    index = source.permute_and_flip(scores, plan.scale)
    lower, upper = Fraction(column.lower or 0), Fraction(column.upper or 0)
    if column.bins:
        return float(lower + index)
    return float(lower + (upper - lower) * (2 * index + 1) / (2 * QUANTILE_BINS))


def epsilon_cost(
    columns: Sequence[StatColumn], params: DisclosureParams, *, grouped: bool = True
) -> float:
    """The ε a release of these columns spends (0 without a budget): all of ``params.epsilon``.

    Laplace shares are rounded down and add to at most ε (basic composition); under the
    Gaussian the total rho converts to at most ε at ``δ · CONVERSION_SHARE``
    (:mod:`sandbox.query.accountant`).  Either way the ledger is charged the query's ε.
    """
    if not noise_plan(columns, params, grouped=grouped):
        return 0.0
    return float(params.epsilon or 0.0)


def selection_threshold(plan: NoisePlan, params: DisclosureParams, selections: int = 1) -> int:
    """With ε, a group is released only if its *noisy* count that selects reaches this.

    Which groups appear is itself data: a filter on true counts answers "does this set
    hold at least k entities?" exactly, whatever the noise on the values.  So the test
    is on the noisy entity count, against ``max(k, τ)`` with ``τ`` from
    :mod:`sandbox.query.partition` (``k`` on a noisy count is post-processing).  The
    query's δ goes to the group selection (less the Gaussian's conversion share);
    ``selections`` splits it further for a caller that makes several.  FILTERed cells
    need none (``_suppress_cells``).  A row count that selects (``_gate``) counts up to
    ``plan.lone`` rows in a group one entity alone makes, not 1: ``τ`` moves up by
    ``lone - 1`` (``G · P[lone + Z ≥ τ] ≤ δ_sel``); and ``k``, a number of entities, is
    held as the rows fewer than ``k`` of them cannot exceed, ``(k - 1)·lone + 1``, so
    the grant's least group is no smaller on rows than on entities (a margin on a noisy
    count either way: post-processing).
    """
    floor = params.k if plan.lone == 1 else (params.k - 1) * plan.lone + 1
    return max(floor, _tau(plan, params, selections) + plan.lone - 1)


def _tau(plan: NoisePlan, params: DisclosureParams, selections: int = 1) -> int:
    """``τ`` for a count of 1 in a group one entity alone makes (:mod:`partition`), of
    which there are at most ``params.groups_alone``."""
    g = params.groups_alone
    # δ: the Gaussian's conversion share (noise_plan), the read cap's (group_read_cap),
    # and the rest for the thresholds; the three add up to δ.
    if plan.mechanism == "gaussian":
        selecting = params.delta * (1 - CONVERSION_SHARE - LIMIT_DELTA_SHARE)
        return gaussian_threshold(plan.scale, g, selecting / max(1, selections))
    selecting = params.delta * (1 - LIMIT_DELTA_SHARE)
    return laplace_threshold(plan.scale, g, selecting / max(1, selections))


def _draw(source: NoiseSource, plan: NoisePlan, size: int) -> list[int]:
    """``size`` integers of the plan's noise."""
    if plan.mechanism == "gaussian":
        if not isinstance(source, GaussianSource):
            raise EnclaveError(
                "the noise source cannot draw Gaussian noise", rule="disclosure.stats"
            )
        return source.discrete_gaussian(plan.scale, size)
    return source.discrete_laplace(plan.scale, size)


def _validate(stats: pa.Table, by_name: dict[str, StatColumn]) -> None:
    names = set(stats.column_names)
    missing = sorted(set(by_name) - names)
    unknown = sorted(n for n in names - set(by_name) if not _KEY.match(n))
    if missing or unknown:
        raise EnclaveError(
            f"stats table does not match its plan (missing {missing}, unknown {unknown})",
            rule="disclosure.stats",
        )
    for column in by_name.values():
        of = by_name.get(column.of or "")
        if column.kind == "top2" and (of is None or of.kind not in ("sum", "sumsq")):
            raise EnclaveError(f"{column.name} belongs to no sum column", rule="disclosure.stats")
        if column.kind == "joined" and (of is None or of.kind != "entities"):
            raise EnclaveError(f"{column.name} counts no entities", rule="disclosure.stats")
        if column.kind == "quantile" and (
            column.q is None or column.lower is None or column.upper is None
        ):
            raise EnclaveError(f"{column.name} has no quantile or bounds", rule="disclosure.stats")
        if column.cell is not None and by_name.get(column.cell, column).kind != "entities":
            raise EnclaveError(f"{column.name}'s cell counts no entities", rule="disclosure.stats")


def _largest(top: list[Any] | None) -> list[float]:
    """Absolute contributions, largest first."""
    return sorted((abs(float(x)) for x in top or () if x is not None), reverse=True)


def _dominant(top: list[Any] | None, total: Any, params: DisclosureParams, limit: int) -> bool:
    """Do the ``limit`` largest contributions exceed ``p`` of the total (absolute values)?

    Absolute values, so a huge negative contribution counts as much as a
    positive one, and ``|total|`` (≤ Σ|x|) as the base, which errs on suppressing.
    """
    share = math.fsum(_largest(top)[:limit])
    return share > (params.dominance_p or 0) * abs(float(total or 0))


def _remainder(
    rows: list[dict[str, Any]], by_name: dict[str, StatColumn], params: DisclosureParams
) -> dict[str, Any] | None:
    """True totals of the suppressed groups, if that row passes both rules itself.

    An entity may sit in several suppressed groups, so Σ entities overcounts the
    distinct ones: their number is at least the largest group's and, where the
    rewrite caps G, at least ⌈Σ / G⌉.  Likewise the top ``n`` entities can hold
    at most ``n·G`` of the per-group top contributions (all of them uncapped).
    """
    g = params.max_groups_per_entity
    for name in (ENTITIES, *_joined(by_name, ENTITIES)):
        entities = [int(r[name] or 0) for r in rows]
        distinct = max(max(entities), -(-sum(entities) // g) if params.capped else 0)
        if distinct < params.k:
            return None
    totals: dict[str, Any] = {}
    for name, column in by_name.items():
        if column.kind == "distinct":  # values shared by groups: no sum of theirs
            totals[name] = None
        elif column.kind in _NOISED:
            present = [Fraction(r[name]) for r in rows if r[name] is not None]
            totals[name] = sum(present, Fraction(0)) if present or column.kind in _COUNTS else None
    if params.dominance_p:
        n = params.dominance_n
        for column in by_name.values():
            if column.kind == "top2":
                tops = [x for r in rows for x in _largest(r[column.name])[:n]]
                limit = n * g if params.capped else len(tops)
                assert column.of is not None
                if _dominant(tops, totals[column.of], params, limit):
                    return None
    return totals


def _release(
    values: pa.Array,
    column: StatColumn,
    plan: NoisePlan | None,
    noise: NoiseSource | None,
    counts_of: pa.Array | None = None,
) -> pa.Array:
    """One released statistic column: exact without ε, else true units + discrete noise.

    Per group, with ε: ``round(Fraction(v) / resolution)`` units (of ``v - centre·n``
    for a centred sum, ``counts_of`` its counts), plus the plan's draw, clamped at 0
    where the column cannot be negative, released as ``float(units · resolution)``.
    :mod:`sandbox.query.disclosure_exact` computes that a column at a time, exactly.
    """
    counts = column.kind in _COUNTS or column.kind == "joined"
    if plan is not None and noise is not None:
        centre = plan.centre if plan.centred_on is not None else Fraction(0)
        units = exact.grid_units(values, plan.resolution, centre, counts_of)
        draws = _draw(noise, plan, len(units))
        clamp = 0
        if counts or column.kind == "sumsq" or (column.lower or 0) >= 0:
            clamp = 1  # post-processing: cannot be negative
        elif (column.upper or 0) <= 0:
            clamp = -1
        noisy = exact.noisy_units(units, draws, clamp)
        return _int64(noisy) if counts else exact.grid_values(noisy, plan.resolution)
    return _exact_values(values, counts)


def _int64(values: exact.Ints) -> pa.Array:
    """Integers as int64 (Python ints that do not fit fail as ``pa.array`` fails on them)."""
    return pa.array(values.tolist() if values.dtype == object else values, pa.int64())


def _exact_values(values: pa.Array, counts: bool) -> pa.Array:
    """``int(v)`` (counts) or ``float(v)`` per value, nulls kept: int64 or float64."""
    kind = pa.int64() if counts else pa.float64()
    if values.type == kind:
        return values
    if counts and exact.as_ints(values, 0) is not None:
        return pc.cast(values, kind)  # an integer type whose values all fit
    if not counts and pa.types.is_floating(values.type):
        return pc.cast(values, kind)  # float32 and float16 widen exactly
    ints = None if counts else exact.as_ints(values, 0)
    if ints is not None and bool((np.abs(ints) <= 2**53).all()):
        nulls = pc.is_null(values).to_numpy(zero_copy_only=False)
        return pa.array(ints.astype(np.float64), kind, mask=nulls)  # exact below 2**53
    python = values.to_pylist()
    return pa.array([None if v is None else int(v) if counts else float(v) for v in python], kind)


def _rounded(array: pa.Array, column: StatColumn | None, digits: int | None) -> pa.Array:
    """Released statistics rounded as the grant says (keys and extremes untouched)."""
    if digits is None or column is None or column.kind in ("min", "max"):
        return array
    counts = column.kind in _COUNTS or column.kind == "joined"
    if counts and digits >= 0:
        return array
    return exact.rounded(array, digits, counts)


def _kept(
    data: dict[str, pa.Array], by_name: dict[str, StatColumn], params: DisclosureParams
) -> _Mask:
    """Which groups pass the low-count filter and the dominance rule (true values)."""
    counted = _counted_by(by_name, ENTITIES)
    keep = np.asarray(exact.least([data[n] for n in counted]) >= params.k, dtype=np.bool_)
    if params.dominance_p:
        for top in by_name.values():
            if top.kind != "top2" or top.of is None:
                continue
            keep &= ~_dominated(data[top.name], data[top.of], params, keep)
    return keep


def _dominated(tops: pa.Array, totals: pa.Array, params: DisclosureParams, where: _Mask) -> _Mask:
    """``_dominant`` for each group in ``where``: column-wise where that is one IEEE
    operation (``disclosure_exact.top_shares``), per group otherwise.
    """
    shares, exact_shares = exact.top_shares(tops, params.dominance_n)
    magnitudes, exact_totals = exact.magnitudes_of(totals)
    result = exact.dominant_rows(shares, magnitudes, params.dominance_p or 0) & where
    for i in np.flatnonzero(where & ~(exact_shares & exact_totals)):
        result[i] = _dominant(tops[i].as_py(), totals[i].as_py(), params, params.dominance_n)
    return result


def disclose(
    stats: pa.Table,
    columns: Sequence[StatColumn],
    params: DisclosureParams,
    *,
    noise: NoiseSource | None = None,
    max_groups: int | None = None,
) -> Disclosed:
    """Suppress, fold, noise and round a stats table; see the module docstring for the order.

    ``noise`` defaults to the OS CSPRNG; tests pass a seeded source.  Without ε
    nothing is noised and nothing is spent.  Arithmetic the release cannot carry (a
    statistic that overflowed to inf or nan in the enclave, bounds whose noise has no
    float64) is refused as :class:`EnclaveError` ``disclosure.arithmetic``, kind only.

    ``max_groups``: with ε, a grouped run whose *noisy* number of groups (the draw that
    gives ``groups_suppressed``) exceeds it fails as ``enclave.limits`` (``_over_limit``).
    """
    try:
        return _disclose(stats, columns, params, noise, max_groups)
    except (ArithmeticError, ValueError) as exc:
        raise EnclaveError(
            f"disclosure could not compute the release ({type(exc).__name__}); nothing is released",
            rule="disclosure.arithmetic",
        ) from exc


def _disclose(
    stats: pa.Table,
    columns: Sequence[StatColumn],
    params: DisclosureParams,
    noise: NoiseSource | None,
    max_groups: int | None = None,
) -> Disclosed:
    by_name = _stat_columns(columns)
    _validate(stats, by_name)
    data = {name: stats[name].combine_chunks() for name in stats.column_names}
    keys = [n for n in stats.column_names if _KEY.match(n)]
    plans = {p.column: p for p in noise_plan(columns, params, grouped=bool(keys))}
    source = (noise or system_noise()) if plans else None
    if plans and _joined(by_name, ENTITIES):
        # Exact counts of other datasets' entities have no noise plan (the rewrite joins
        # on entity keys under a budget and makes none): never release one with ε.
        raise EnclaveError("joined entity counts under a budget", rule="disclosure.stats")
    noisy_gate: exact.Ints | None = None
    gate = next((p for p in plans.values() if p.selects), None)
    suppressed_count: int | None = None
    if source is None:
        keep = _kept(data, by_name, params)
    elif gate is None:  # the entity count is noised unless a row count selects
        raise EnclaveError("no noised count selects the groups", rule="disclosure.stats")
    else:
        keep, noisy_gate = _selected(data[gate.column], gate, params, source, 1, grouped=bool(keys))
        if keys:
            noisy_groups = _noisy_groups(stats.num_rows, plans[GROUPS], source)
            if max_groups is not None and noisy_groups > max_groups:
                raise limits_failure()  # the noisy count decides, not the true one (_noisy_groups)
            suppressed_count = _suppressed_bound(noisy_groups, int(keep.sum()), plans[GROUPS])
        else:  # one group, known to exist: what was held back is what the table lacks
            suppressed_count = 1 - int(keep.sum())
    mask = pa.array(keep, pa.bool_())
    released = int(keep.sum())
    extra = None
    if params.fold_remainder and not keep.all() and keys and source is None:
        measures = [n for n in stats.column_names if not _KEY.match(n)]
        suppressed = stats.filter(pc.invert(mask)).select(measures).to_pylist()
        extra = _remainder(suppressed, by_name, params)
    kept = {name: array.filter(mask) for name, array in data.items()}
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name in stats.column_names:
        stat = by_name.get(name)
        if stat is not None and stat.kind in _UNRELEASED:
            continue
        if stat is None or stat.kind in ("min", "max"):  # keys and dimension extremes
            array = kept[name]
            if extra is not None:
                array = pa.concat_arrays([array, pa.nulls(1, array.type)])
        elif stat.kind == "quantile":
            plan = plans.get(name)
            if plan is None or source is None:
                raise EnclaveError("a quantile without a budget", rule="disclosure.stats")
            values = kept[name].to_pylist()
            array = pa.array([_quantile(v, stat, plan, source) for v in values], pa.float64())
        elif gate is not None and noisy_gate is not None and name == gate.column:
            # Already noised for the selection: release those same draws (no second spend).
            array = _int64(noisy_gate[keep])
        elif source is not None and name in _counted_cells(by_name):
            # Not noised: its cell test reads the noisy count of the same values instead.
            array = pa.nulls(released, pa.int64())
        elif source is not None and name not in plans and stat.kind in _NOISED:
            # The entity count where a row count selects the groups (``_gate``): not
            # noised, so not released (the release reads it only where it is shown).
            array = pa.nulls(released, pa.int64())
        elif (plan := plans.get(name)) is not None and plan.copy_of is not None:
            array = pa.nulls(released, pa.int64())  # its source's values, below
        elif plan is not None and plan.squares_of is not None and plan.centred_on is not None:
            # Σ(x - c)², true values inside the boundary; 2c·sum~ - c²·count~ added below.
            assert source is not None
            units = exact.square_units(
                kept[name],
                kept[plan.squares_of],
                kept[plan.centred_on],
                plan.resolution,
                plan.centre,
            )
            noisy = exact.noisy_units(units, _draw(source, plan, len(units)), 1)
            array = exact.grid_values(noisy, plan.resolution)
        elif plan is not None and plan.centred_on is not None:
            # sum - c·count, true values inside the boundary; c·(noisy count) added below.
            array = _release(
                kept[name], _centred(stat, plan.centre), plan, source, kept[plan.centred_on]
            )
        else:
            # A joined count summed over the folded groups overcounts their entities (as a
            # cell's does): the remainder row carries none.
            tail = None if extra is None else extra.get(name)
            array = _release(kept[name], stat, plans.get(name), source)
            if extra is not None:
                counts = stat.kind in _COUNTS or stat.kind == "joined"
                last = None if tail is None else int(tail) if counts else float(tail)
                array = pa.concat_arrays([array, pa.array([last], array.type)])
        names.append(name)
        arrays.append(array)
    position = {name: i for i, name in enumerate(names)}
    for name, plan in plans.items():
        if plan.copy_of is not None:
            arrays[position[name]] = arrays[position[plan.copy_of]]
    # After every copy: a centred sum's count may itself be a copy (a FILTER's row count
    # at C = 1, paired with the sums under a FILTER that keeps only rows with a value).
    for name, plan in plans.items():
        if plan.copy_of is None and plan.centred_on is not None and plan.squares_of is None:
            arrays[position[name]] = _uncentred(
                arrays[position[name]], arrays[position[plan.centred_on]], by_name[name], plan
            )
    # After the sums: a centred sum of squares adds back 2c·sum~ - c²·count~ of the
    # released (uncentred) sum and count.
    for name, plan in plans.items():
        if plan.squares_of is not None and plan.centred_on is not None:
            arrays[position[name]] = exact.uncentred_squares(
                arrays[position[name]],
                arrays[position[plan.squares_of]],
                arrays[position[plan.centred_on]],
                plan.centre,
            )
    true_kept = {}
    for name in _cells(by_name):
        least = exact.least([kept[n] for n in _counted_by(by_name, name)])
        if extra is not None:
            least = np.append(least.astype(object), np.array([extra[name]], dtype=object))
        true_kept[name] = least
    arrays = _suppress_cells(names, arrays, by_name, true_kept, plans, params, extra is not None)
    for name, array in zip(names, arrays, strict=True):
        if name in by_name and pa.types.is_floating(array.type) and not _finite(array):
            raise ValueError("a released statistic is not finite")  # with or without ε
    # Rounding is post-processing, after every decision made on the unrounded values.
    digits = params.round_digits
    arrays = [_rounded(a, by_name.get(n), digits) for n, a in zip(names, arrays, strict=True)]
    table = pa.table(arrays, names=names)
    return Disclosed(table, suppressed_count, epsilon_cost(columns, params, grouped=bool(keys)))


def _uncentred(centred: pa.Array, count: pa.Array, column: StatColumn, plan: NoisePlan) -> pa.Array:
    """The released sum: the noisy centred sum plus the centre times the released noisy count.

    Post-processing of two noised columns; clamped at 0 as any noisy sum of a measure
    whose bounds are on one side of 0.  Per group ``float(Fraction(s) + centre·n)``,
    computed a column at a time (``disclosure_exact.uncentred``).
    """
    clamp = 0
    if (column.lower or 0) >= 0:
        clamp = 1
    elif (column.upper or 0) <= 0:
        clamp = -1
    return exact.uncentred(centred, count, plan.centre, clamp)


def _joined(by_name: dict[str, StatColumn], of: str) -> list[str]:
    """The columns counting ``of`` again on each other dataset of a join."""
    return [n for n, c in by_name.items() if c.kind == "joined" and c.of == of]


def _counted_by(by_name: dict[str, StatColumn], name: str) -> tuple[str, ...]:
    """An entities column and its counts on every other dataset of a join (for _least)."""
    return (name, *_joined(by_name, name))


def _finite(array: pa.Array) -> bool:
    """No inf or nan among the values (nulls are suppressed cells, not values)."""
    return bool(pc.all(pc.is_finite(array.drop_null())).as_py() is not False)


def _counted_cells(by_name: dict[str, StatColumn]) -> dict[str, str]:
    """Cells (entities columns) that a ``count`` column of the same cell also measures.

    The rewrite's presence cell of ``x`` (entities with a non-NULL ``x``, under the
    same FILTER) and ``count(x)`` (rows with one, at most ``C`` per entity) are zero
    together: under a budget the noisy count stands in for the cell's entities.  So do
    a FILTER's cell (entities with a row it keeps) and ``count(*) FILTER (WHERE …)``.
    """
    out: dict[str, str] = {}
    for name in sorted(by_name):
        column = by_name[name]
        if column.kind not in ("count", "rows") or column.cell in (None, ENTITIES):
            continue
        cell = by_name.get(column.cell)
        if cell is not None and cell.shown:  # count(DISTINCT key) FILTER: released itself
            continue
        out.setdefault(column.cell, name)
    return out


def _cells(by_name: dict[str, StatColumn]) -> set[str]:
    """Columns counting the entities of a FILTER (all but the group's own ``__entities``)."""
    return {n for n, c in by_name.items() if c.kind == "entities" and n != ENTITIES}


def _dead_cells(by_name: dict[str, StatColumn]) -> set[str]:
    """FILTER cells no column reads and the query does not show: under a budget neither
    noised nor tested (no mask of theirs is applied), released NULL.  ``avg(x) FILTER
    (WHERE f)`` makes f's cell beside x's presence cell under f, which its ``count(x)``
    tests; f's own took about 0.2 of ε for nothing (review, December 2026)."""
    read = {c.cell for c in by_name.values() if c.cell is not None}
    return {n for n in _cells(by_name) if n not in read and not by_name[n].shown}


def _suppress_cells(
    names: list[str],
    arrays: list[pa.Array],
    by_name: dict[str, StatColumn],
    true: dict[str, exact.Ints],
    plans: dict[str, NoisePlan],
    params: DisclosureParams,
    remainder: bool = False,
) -> list[pa.Array]:
    """NULL every FILTERed cell whose own entities fail the low-count filter.

    ``count(*) FILTER (WHERE ...)`` in a group of a thousand people can count one: the
    filter makes a finer group, so its cells pass the grant's least cell: true count at
    least ``k``; with a budget, the released noisy count against ``k`` (a row count
    against ``(k - 1)·C + 1``, the rows fewer than ``k`` entities cannot exceed).  That
    is post-processing and takes no share of δ: the cell's count is noised in every
    released group, empty or not (only a *group's* existence is data no noise covers),
    so no partition-selection threshold τ applies, as for a query without GROUP BY (it
    was applied as a margin until an outside rehearsal found shares of 33 persons in 433
    withheld).  A measure's presence cell (entities
    with a value of ``x``) is not noised under a budget when a ``count(x)`` of the same
    cell is: that noisy count decides (``_counted_cells``), so ``sum(x)`` and ``avg(x)``
    pay for no extra column.
    A remainder row's cells are never released: its cell counts add up entity-group
    pairs across the folded groups, which overcounts the distinct entities.
    """
    position = {name: i for i, name in enumerate(names)}
    cells = _cells(by_name)
    counted = _counted_cells(by_name)
    masks: dict[str, pa.Array] = {}
    dead = _dead_cells(by_name) if plans else set()
    for cell in cells:
        if cell in dead:
            continue  # no column reads it, and it is not noised: released NULL
        if plans:  # under a budget: the noisy count decides, as a group's would
            source = counted.get(cell, cell)
            tau = params.k
            if source != cell:  # a count: one entity adds up to C rows, and k entities
                c = params.max_rows_per_entity  # are held as rows, as selection_threshold
                tau = (params.k - 1) * c + 1
            passed = pc.fill_null(pc.greater_equal(arrays[position[source]], tau), False)
            ok = passed.to_numpy(zero_copy_only=False).copy()
        else:
            ok = np.asarray(true[cell] >= params.k, dtype=np.bool_)
        if remainder and len(ok):
            ok[-1] = False
        masks[cell] = pa.array(ok, pa.bool_())
    out = list(arrays)
    for name, i in position.items():
        column = by_name.get(name)
        own = name if name in masks else (column.cell if column is not None else None)
        if own is not None:
            out[i] = pc.if_else(masks[own], out[i], pa.nulls(len(out[i]), out[i].type))
    return out


def _selected(
    counts: pa.Array,
    plan: NoisePlan,
    params: DisclosureParams,
    noise: NoiseSource,
    selections: int,
    *,
    grouped: bool = True,
) -> tuple[_Mask, exact.Ints]:
    """With ε: which groups' noisy selecting count (``plan``: the entity count, or the
    row count ``_gate`` chose) reaches ``max(k, τ)`` (``selection_threshold``).

    Without group keys (``grouped`` False) there is one group, whose existence is not
    data (the stats query returns its row even over no entity): no partition selection
    is needed, so its noisy count is held against ``k`` alone (post-processing).

    The dominance rule is not applied under a budget: its decision is a comparison
    on true values (a channel ε does not cover), and the noise on every sum already
    exceeds the largest contribution any one entity can make, which is what the rule
    protects (``docs/disclosure.md``).
    """
    if counts.null_count:
        # Counts are never NULL (count(*), count(DISTINCT …) give 0): a NULL is a plan
        # that left the selecting count unread (rewrite._ranked_stats), refused rather than
        # every group withheld as if it counted 0.
        raise EnclaveError("the selecting count has no value", rule="disclosure.stats")
    true = exact.as_ints(counts, 0)
    if true is None:
        true = np.array([int(v or 0) for v in counts.to_pylist()], dtype=object)
    draws = _draw(noise, plan, len(true))
    noisy = exact.noisy_units(true, draws, 1)
    tau = selection_threshold(plan, params, selections) if grouped else params.k
    return np.asarray(noisy >= tau, dtype=np.bool_), noisy


def _noisy_groups(groups: int, plan: NoisePlan, noise: NoiseSource) -> int:
    """With ε the number of groups is data too: released only noised (``plan``: ``GROUPS``).

    One draw serves both its uses, so nothing is spent twice: ``groups_suppressed``
    (``_suppressed_bound``) and the limit on the groups a run may form.  The enclave
    computes at most so many groups (``max_result_rows`` times 20).  Refusing on the true
    number let a query padded (``UNION ALL`` of constant tags) to sit at the limit read
    whether one more group, one person's, exists: an exact bit per query whatever its ε
    (outside review, December 2026).  The decision is now this noisy number against the
    limit, post-processing.  The engine stops reading at ``group_read_cap`` (memory).
    """
    (z,) = _draw(noise, plan, 1)
    return groups + z


#: The share of a grouped query's δ that pays for the engine's read cap on its groups
#: (``group_read_cap``); partition selection's thresholds take the rest (``_tau``).
LIMIT_DELTA_SHARE = 0.01
#: The most groups a run may have the engine read: this many times the group limit, and
#: at least ``READ_CAP_FLOOR`` (memory, not privacy); an ε whose groups noise needs more
#: is refused before the run (``group_read_cap``).
READ_CAP_MAX = 5
READ_CAP_FLOOR = 1_000_000


def group_read_cap(
    columns: Sequence[StatColumn], params: DisclosureParams, max_groups: int, *, grouped: bool
) -> int:
    """How many groups the engine may read for a grouped run held to ``max_groups`` on
    their noisy number (``_noisy_groups``); ``max_groups`` without ε.

    Stopping at ``H = max_groups + t`` refuses a run the noisy test alone would have
    passed only where the noise on the number of groups is below ``-t``.  ``t`` is its
    one-sided bound at ``δ' = δ · LIMIT_DELTA_SHARE / (1 + e^ε)`` (discrete Laplace:
    ``P[Z ≤ -t] ≤ exp(-t/b)``; discrete Gaussian, subgaussian: ``exp(-t²/(2 sigma²))``): the run
    then differs from the noisy test's on an event of probability at most ``δ'`` on every
    dataset, which costs ``(1 + e^ε)·δ'`` of δ, the share ``_tau`` leaves.  The cap
    depends on the plan only, never on data.  (A fixed cap of twice the limit did not
    hold at small ε: at ε = 0.001 the noise's scale was 33,530 and a run at 400,000
    groups passed where one more group failed every time; outside review, December
    2026.)  Refused (``budget.epsilon``) where ``H`` exceeds ``READ_CAP_MAX`` times the
    limit (at least ``READ_CAP_FLOOR``): that ε is too small for a grouped query here.
    """
    if not grouped or params.epsilon is None:  # one group, or no noise: the limit itself
        return max_groups
    plan = next(p for p in noise_plan(columns, params, grouped=True) if p.column == GROUPS)
    # ln(1/δ') = ln(1 + e^ε) - ln(δ·share), without forming e^ε (a grant may allow any ε)
    eps = params.epsilon
    log_inverse = eps + math.log1p(math.exp(-eps)) - math.log(params.delta * LIMIT_DELTA_SHARE)
    if plan.mechanism == "gaussian":  # plan.scale is σ²
        margin = math.ceil(math.sqrt(2 * float(plan.scale) * log_inverse))
    else:
        margin = math.ceil(float(plan.scale) * log_inverse)
    most = max(READ_CAP_MAX * max_groups, READ_CAP_FLOOR)
    if max_groups + margin > most:
        raise QueryRefused(
            f"ε={params.epsilon:g} is too small for a grouped query here: the noise on its "
            f"number of groups would need the enclave to form {max_groups + margin:,} "
            f"groups (at most {most:,}): choose a larger ε",
            rule="budget.epsilon",
        )
    return max_groups + margin


def _suppressed_bound(noisy_groups: int, kept: int, plan: NoisePlan) -> int:
    """At least how many groups were held back, from the noisy number of groups.

    The noisy number of groups minus the released ones, less the noise's 95% half-width
    ``w`` (``P(Z > w) ≤ 2.5%``), at least 0: a lower bound that holds with probability at
    least 97.5%.  The point estimate read wrong (a two-group query "suppressing 112
    groups" was noise of scale 22 on that number's small share of ε); the bound is 0
    unless the held-back groups clearly outnumber the noise.
    """
    return max(0, noisy_groups - kept - round(plan.half_width))
