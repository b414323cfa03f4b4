"""The per-entity stage's caps under a budget: C rows per cell, G cells per entity, and
(where the data declares it) T rows per entity over all cells.

The stats query aggregates per cell ``(group, entity)`` first (``rewrite.build_plan``).
Under a budget each cell's statistics describe at most ``C`` of its rows
(:func:`scaled_to_cap`, :func:`clamp`), and each entity keeps at most ``G`` cells
(:func:`group_cap`); with a binding ``T`` its row counts and sums keep, instead, the
cells whose running total of rows stays within ``T`` (:func:`total_cap`).  These are
SQL fragments over that per-cell table; nothing here runs.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "PORTABLE_TEXT",
    "PORTABLE_TIME",
    "cap_can_bind",
    "clamp",
    "group_cap",
    "mean_clamped",
    "portable_hash",
    "scaled_to_cap",
    "share_of_cap",
    "total_cap",
]

#: The per-cell row count the total cap adds up (``C`` rows at most per cell).
CELL_ROWS = "__sbx_r"
#: True on the (at most ``G``) cells of an entity its entity counts keep.
GROUP_KEPT = "__sbx_gk"
#: An entity's running total of :data:`CELL_ROWS` over its cells in the cap's order.
RUNNING_ROWS = "__sbx_cum"
#: True on the cells of an entity its row counts and sums keep (within ``T`` rows).
ROWS_KEPT = "__sbx_rk"

#: Column types whose text (``CAST(x AS VARCHAR)``) is the same on DuckDB and Spark.
PORTABLE_TEXT = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INT",
        "INTEGER",
        "BIGINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "VARCHAR",
        "TEXT",
        "DATE",
        "BOOLEAN",
    }
)
#: Timestamps: their microseconds since the epoch (``epoch_us``; Spark's ``unix_micros``).
PORTABLE_TIME = frozenset({"TIMESTAMP", "DATETIME"})


def _canonical(sql: str, kind: str) -> str:
    """One value's part of the canonical string: ``<length>:<text>``, or ``n`` for NULL.

    A prefix code: no two tuples of values make the same string."""
    text = f"CAST(epoch_us({sql}) AS VARCHAR)" if kind == "time" else f"CAST({sql} AS VARCHAR)"
    return f"coalesce(CAST(length({text}) AS VARCHAR) || ':' || {text}, 'n')"


def portable_hash(values: list[tuple[str, str]]) -> str:
    """A cell hash both engines compute alike: the MD5 (hex) of the values' canonical string.

    ``values``: (SQL, ``text`` or ``time``) per column.  Both DuckDB and Spark hash the
    same UTF-8 bytes to the same lowercase hex, and order hex strings of one length as
    the numbers they spell, so each entity keeps the same cells on both (DuckDB's own
    ``hash()`` is faster and stays its default; docs/architecture.md, "Engines").
    """
    return "md5(" + " || ".join(_canonical(sql, kind) for sql, kind in values) + ")"


def scaled_to_cap(per_entity: str, rows: str, cap: int) -> str:
    """``per_entity`` (a sum over one entity's rows) scaled to ``cap`` of its ``rows``.

    ``least(1, cap / rows)``: unchanged for an entity with at most ``cap`` rows, else its
    mean times ``cap``, so it stays within ``cap`` rows' bounds (the sensitivity the noise
    is calibrated to) and agrees with the count capped at ``cap``.  NULL where ``rows``
    is 0 (the sum is NULL there too).
    """
    return f"(({per_entity}) * least(1.0, {cap} / NULLIF({rows}, 0)))"


def mean_clamped(values: str, where: str, lo: float, hi: float, cap: int) -> str:
    """One entity's sum of ``values`` in a cell, its **mean** clamped to ``[lo, hi]``,
    times its count capped at ``cap``: ``clamp(Σx / n, lo, hi) · least(n, cap)``.

    Within ``least(n, cap)·[lo, hi]``, as the sum of its values each clamped and scaled to
    ``cap`` of them (:func:`scaled_to_cap`): the same sensitivity, centred or not, and the
    same under a total cap's scaling to ``m`` of them.  But it is the point of that
    interval nearest the entity's own (scaled) sum, so never farther from it: a person
    with one claim above the bound and others below keeps their total where their mean is
    within it (on the demo claims the total came out 4.5% low against 5.9%).  ``values``
    is the unclamped DOUBLE; ``where`` its FILTER clause (or "").  NULL where the cell has
    no value (the count is 0), as the sum is.
    """
    mean = f"(sum({values}){where} / NULLIF(count({values}){where}, 0))"
    return f"({clamp(mean, lo, hi)} * least(count({values}){where}, {cap}))"


def share_of_cap(where: str, base_where: str, cap: int, entity: str) -> str:
    """One entity's rows where a share's condition holds (``where``: its FILTER clause), as
    its share of the rows it keeps: ``h · min(1, cap / n)``, ``n`` its rows under the
    share's denominator (``base_where``: its FILTER clause, or "").

    Made a whole number by a draw from the entity's hash, ``floor(x + u)`` with ``u`` in
    [0, 1): at most ``cap`` (a row count's sensitivity), ``h`` itself where the entity has
    at most ``cap`` rows, and ``h · cap / n`` in expectation over ``u`` where it has more
    (``min(h, cap)``, the count capped apart, made a share of a busy entity's rows up to
    1: ``sandbox/query/shares.py``).  ``entity``: the entity key's SQL in the per-cell
    aggregate."""
    h, n = f"count(*){where}", f"count(*){base_where}"
    scaled = f"coalesce({h} * least(1.0, {cap} / NULLIF({n}, 0)), 0)"
    u = f"((min(hash({entity})) % 1048576) / 1048576.0)"
    return f"least({cap}, CAST(floor({scaled} + {u}) AS BIGINT))"


def clamp(sql: str, lo: float, hi: float) -> str:
    """``sql`` clamped to ``[lo, hi]``, NULL where it is NULL.

    DuckDB's ``least`` and ``greatest`` skip NULL arguments: a bare ``least(hi, NULL)``
    is ``hi``, which would count a missing value (or a cell whose FILTER keeps no row)
    as the upper bound.
    """
    return f"CASE WHEN ({sql}) IS NULL THEN NULL ELSE greatest({lo!r}, least({hi!r}, {sql})) END"


def cap_can_bind(group_cols: list[str], max_groups_per_entity: int) -> bool:
    """Whether keeping G groups per entity can drop anything.

    Without group keys the query forms one group, so each entity has one (group,
    entity) cell and any G of at least 1 keeps it: the cap is skipped, not weakened.
    """
    return bool(group_cols) or max_groups_per_entity < 1


def group_cap(
    inner_sql: str,
    group_cols: list[str],
    g: int,
    portable: list[str] | None = None,
) -> list[str]:
    """CTEs keeping at most ``g`` groups per entity of the per-(group, entity) table.

    Each entity keeps the ``g`` cells whose ``hash(keys, entity)`` is smallest: a choice
    made from that entity's own cells only (an unordered row_number would follow the
    engine's output order, which other entities' rows can change).  Cells without an
    entity (a NULL key) are dropped.

    How: one sort of the cells by (hash of the entity, hash of the cell), and a cell is
    dropped where the cell ``g`` places before it is the same entity's (it has ``g``
    smaller ones).  That window over one ordered stream of two 64-bit keys is the
    cheapest exact form that drops rows here (docs/disclosure.md, "Speed"): an aggregate
    of each entity's ``g`` smallest hashes (``min(h, g)``, a heap per entity) joined back
    cost about twice as much, and filtering on a ``row_number`` partitioned by entity
    (``QUALIFY`` or ``WHERE``) becomes, in DuckDB 2.0, a per-group top-N that outgrew a
    2 GB ``memory_limit`` on W1.  That ``row_number`` kept as a flag that masks each
    statistic, as :func:`total_cap` keeps ``GROUP_KEPT``, was 15-31% faster on W1 (not
    on W3), but needs the final aggregate to filter its entity counts on the flag.

    Ties: two entities whose 64-bit key hashes collide (about N² / 2^65 for N entities,
    10^-7 at two million) would share one run of ``g`` cells, and removing one could move
    the other's cells into the run: twice the sensitivity for that pair.  Registration
    refuses such a table (``enclave.entity_hashes``), so none is in the enclave.  Two
    cells of one entity with equal hashes (about g² / 2^64) keep exactly ``g``, in either
    order.

    ``portable``: each of the group columns' and the entity's canonical kind (``text``
    or ``time``) for :func:`portable_hash`, which both engines compute alike, and the
    cap as a window partitioned by entity (each entity's ``g`` smallest cell hashes), the
    form a distributed engine runs in parallel; None: DuckDB's ``hash()`` and the sort.
    """
    if g < 1:  # lag(…, 0) would compare each cell with itself and drop all
        raise ValueError(f"max_groups_per_entity must be at least 1, not {g}")
    cell = f"hash({', '.join([*group_cols, '__sbx_e'])})"
    of_entity = 'hash("__sbx_e")'
    if portable is not None:
        columns = [*group_cols, '"__sbx_e"']
        cell = portable_hash(list(zip(columns, portable, strict=True)))
        of_entity = portable_hash([('"__sbx_e"', portable[-1])])
    if g == 1:  # the smallest hash is a plain min per entity: cheaper than the sort
        return [
            f'__sbx_pg AS (SELECT *, {cell} AS "__sbx_h" FROM ({inner_sql}) '
            'WHERE "__sbx_e" IS NOT NULL)',
            '__sbx_cut AS (SELECT "__sbx_e", min("__sbx_h") AS "__sbx_t" FROM __sbx_pg '
            'GROUP BY "__sbx_e")',
            '__sbx_pe AS (SELECT __sbx_pg.* FROM __sbx_pg JOIN __sbx_cut USING ("__sbx_e") '
            'WHERE "__sbx_h" = "__sbx_t")',
        ]
    if portable is not None:
        # Partitioned by the entity itself: a distributed engine spreads the entities over
        # its executors (the one ordered stream below would be one task on Spark), and
        # both engines keep the same g cells (equal 128-bit hashes aside).
        return [
            f'__sbx_pg AS (SELECT *, {cell} AS "__sbx_h" FROM ({inner_sql}) '
            'WHERE "__sbx_e" IS NOT NULL)',
            "__sbx_pe AS (SELECT * FROM __sbx_pg QUALIFY row_number() "
            f'OVER (PARTITION BY "__sbx_e" ORDER BY "__sbx_h") <= {g})',
        ]
    return [
        f'__sbx_pg AS (SELECT *, {cell} AS "__sbx_h", {of_entity} AS "__sbx_he" '
        f'FROM ({inner_sql}) WHERE "__sbx_e" IS NOT NULL)',
        f'__sbx_pe AS (SELECT * FROM __sbx_pg QUALIFY lag("__sbx_he", {g}) '
        'OVER (ORDER BY "__sbx_he", "__sbx_h") IS DISTINCT FROM "__sbx_he")',
    ]


def total_cap(
    inner_sql: str,
    group_cols: list[str],
    g: int,
    t: int,
    columns: list[tuple[str, str]],
    portable: list[str] | None = None,
    *,
    paired: Mapping[str, str] | None = None,
) -> list[str]:
    """CTEs for a binding ``T``: entity counts keep ``g`` cells, row statistics ``t`` rows.

    One order of each entity's cells, by the cell's hash as :func:`group_cap`'s: its first
    ``g`` cells are the ones entity counts (``kind`` ``entities``) see, flagged
    :data:`GROUP_KEPT`; its row counts, sums and quantile histograms (``rows``, ``count``,
    ``sum``, ``sumsq``, ``quantile``: a histogram keeps the crossing cell's first ``k``
    rows' bins) see its first ``t`` rows of :data:`CELL_ROWS` (``least(count(*), C)`` a cell)
    in that order: every cell whose running total is at most ``t`` whole, and the one that
    crosses ``t`` in part, ``k = t - (the rows before it)`` of its ``r`` rows: each count at
    most ``k`` of the rows it counts (``m = least(n, k)``, a whole number), and each sum
    (and sum of squares) scaled to the ``m`` of its count's ``n`` values (``paired``: sum
    column to count column; a sum without one keeps the crossing cell whole or not at all),
    so an average over the part is the cell's average and a centred sum ``m·(mean - c)``;
    flagged :data:`ROWS_KEPT`. A group exists where any entity keeps a cell either way: both
    are prefixes of one order, so one entity alone makes at most ``max(g, t)`` groups, and
    in each it counts at most ``min(C, t)`` rows and one entity.  So one entity moves row
    statistics by at most ``t`` rows' worth in all, in at most ``t`` cells (each kept cell
    keeps one of its rows at least), and entity counts by ``g``: ``disclosure.sensitivity``
    with ``params.total_bound``.  (Until December 2026 the crossing cell was dropped whole:
    on ratings data with two services a count by service came out 6% low where the total was
    2% low, an outside rehearsal.)  A count of distinct values keeps whole cells only (its
    values are not rows).

    ``columns``: (name, kind) of each statistic the per-cell table computes, masked here
    (0 for counts, NULL otherwise) where its cap drops it.  The stage's output has the
    group columns, :data:`GROUP_KEPT`, :data:`ROWS_KEPT` and those columns.

    One window partitioned by the entity's hash (``portable``: by the entity, with the
    MD5 cell hash of :func:`group_cap`) gives both: a row number and a running total.
    Measured on W1 at 10 M rows (DuckDB 2.0, loaded machine, interleaved): 8.5 s against
    7.6 s for the group cap alone; the group cap's global sort with each entity's start
    joined back took 10.3 s, and T lags of that sort 9.4 s.  Re-measured (DuckDB 2.0.1,
    the stats query alone, 7 runs): 2.65 s against 2.76 s for the group cap's sort, raw
    0.83 s; no exact variant tried was 10% faster (docs/disclosure.md, "Speed").
    """
    if g < 2 or t < 1:
        raise ValueError(f"a total cap needs G of at least 2 and T of at least 1, not {g}, {t}")
    cell = f"hash({', '.join([*group_cols, '__sbx_e'])})"
    rows = f'"{CELL_ROWS}"'
    kept = f'"{GROUP_KEPT}"'
    running = f'"{RUNNING_ROWS}"'
    within = f"({running} <= {t})"  # the whole cell
    crossing = f"({running} - {rows} < {t})"  # any of its rows: the crossing cell in part
    part = f"({t} - ({running} - {rows}))"  # the crossing cell's rows kept, 1 … r - 1
    counted = f"least({{c}}, {part})"
    paired = paired or {}
    masks: dict[str, tuple[str, str | None, str]] = {
        "entities": (kept, None, "0"),
        # a quantile's histogram: the bins of the rows kept (the crossing cell's first
        # ``part``), so its temperature is T rows', not C·G (disclosure._planned)
        "quantile": (within, f"list_slice({{c}}, 1, {part})", "NULL"),
        "distinct": (within, None, "NULL"),  # values are not rows: whole cells only
    }
    masks |= {k: (within, counted, "0") for k in ("rows", "count")}
    masks |= {k: (within, None, "NULL") for k in ("sum", "sumsq")}
    projection = [*group_cols, kept, f'{crossing} AS "{ROWS_KEPT}"']
    for name, kind in columns:
        if kind not in masks:
            raise ValueError(f"no total cap for a statistic of kind {kind}")
        flag, in_part, dropped = masks[kind]
        col = f'"{name}"'
        if name in paired:  # scaled to the m of its count's n values the part keeps
            n = f'"{paired[name]}"'
            # a sum is a DOUBLE: no cast (Spark's engine check allows none of a derived
            # value), and "/" divides as a fraction on both engines
            in_part = f"(({{c}} * least({n}, {part})) / NULLIF({n}, 0))"
        partly = "" if in_part is None else f" WHEN {crossing} THEN {in_part.format(c=col)}"
        projection.append(f"CASE WHEN {flag} THEN {col}{partly} ELSE {dropped} END AS {col}")
    entity, hashed = '"__sbx_he"', ', hash("__sbx_e") AS "__sbx_he"'
    if portable is not None:
        columns_ = [*group_cols, '"__sbx_e"']
        cell = portable_hash(list(zip(columns_, portable, strict=True)))
        entity, hashed = '"__sbx_e"', ""
    # One window partitioned by the entity (its hash on DuckDB, as the group cap's sort:
    # colliding entities share one run) and ordered by the cell hash: both flags from it.
    ordered = f'PARTITION BY {entity} ORDER BY "__sbx_h"'
    return [
        f'__sbx_pg AS (SELECT *, {cell} AS "__sbx_h"{hashed} FROM ({inner_sql}) '
        'WHERE "__sbx_e" IS NOT NULL)',
        f"__sbx_po AS (SELECT *, row_number() OVER ({ordered}) <= {g} AS {kept}, "
        f"sum({rows}) OVER ({ordered} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) "
        f"AS {running} FROM __sbx_pg)",
        f"__sbx_pe AS (SELECT {', '.join(projection)} FROM __sbx_po)",
    ]
