"""Each entity's rows ranked once, at registration: the caps a query need not compute.

Where a classification declares ``caps_at = "registration"`` (``[contribution]``), the
registration writes beside the dataset's table a copy of its rows with an entity key,
each with its rank among its entity's rows (:data:`RANK`: 1, 2, … in the order of a
hash of the row's values).  A query with a budget that reads the table straight, with
no WHERE or FILTER (but on columns of one value per entity), then keeps each
entity's rows ranked at most ``T`` and counts the
entity in the groups of its rows ranked at most ``G`` with one plain aggregate
(``sandbox.query.rewrite``, "ranked"), not the per-entity stage and window of
``query.entity_caps`` (about twice the plain query's time on W1).

The rank of a row depends on its own entity's rows only (its place among them in the
order of the row's hash): adding or removing one entity leaves
every other entity's ranks as they were, which is what the caps' sensitivity needs.
Two rows of one entity with equal hashes are equal rows (or collide, about n² / 2^65
for an entity's n rows): either order keeps the same values.  The copy is written in the
registration's transaction, so it is of the same version as the table; a version
registered without the declaration drops it, and a reclassification that changes the
entity key finds none (the copy is named by its key).  It doubles the dataset's storage in the
enclave file (``docs/operations.md``).
"""

from __future__ import annotations

from typing import Any

from sandbox.core.classification import DatasetSpec
from sandbox.core.errors import EnclaveError

__all__ = [
    "RANK",
    "SCHEMA",
    "build_ranked",
    "declares_ranks",
    "ranked_name",
    "ranked_rows_present",
    "ranked_table",
]

#: The schema of the ranked copies (no dataset's domain can be named so: a dataset id
#: starts with a letter, ``classification_file.DATASET_ID``).
SCHEMA = "__sbx_ranked"
#: The rank column of a ranked copy.
RANK = "__sbx_rank"
#: Keyed rows ranked in one pass at most (whole entities): 4 M rows fit a 2 GB
#: ``memory_limit`` with nothing spilled (15 M in one pass did not).
BATCH_ROWS = 4_000_000


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_name(spec: DatasetSpec) -> str:
    """``<dataset>:<entity key>``: a reclassification that names another entity key
    (``sandbox.reclassify``, which leaves the table alone) finds no copy ranked by it."""
    return f"{spec.id}:{spec.entity_key.lower()}"


def ranked_table(spec: DatasetSpec) -> tuple[str, str]:
    """The schema and table name of the dataset's ranked copy, unquoted."""
    return SCHEMA, _table_name(spec)


def ranked_name(spec: DatasetSpec) -> str:
    """The quoted name of the dataset's ranked copy (by its entity key)."""
    return ".".join(_ident(part) for part in ranked_table(spec))


def declares_ranks(spec: DatasetSpec) -> bool:
    return spec.contribution is not None and spec.contribution.ranked


def build_ranked(con: Any, spec: DatasetSpec, table: str, *, in_enclave: bool = True) -> None:
    """Write (or drop) the ranked copy of ``table`` (quoted) as ``spec`` declares.

    Inside the registration's open transaction on ``con``.  ``in_enclave`` False: the
    rows move to the Spark warehouse, whose queries cap per query (a copy of an earlier
    version is dropped).
    """
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(SCHEMA)}")
    earlier = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = ? AND starts_with(table_name, ?)",
        [SCHEMA, f"{spec.id}:"],
    ).fetchall()
    for (name,) in earlier:  # an earlier version's, by whatever entity key it had
        con.execute(f"DROP TABLE {_ident(SCHEMA)}.{_ident(name)}")
    if not (in_enclave and declares_ranks(spec)):
        return
    key = _ident(spec.entity_key)
    names = [_ident(c.name) for c in spec.columns]
    name, rank = ranked_name(spec), _ident(RANK)
    (keyed,) = con.execute(f"SELECT count({key}) FROM {table}").fetchall()[0]
    batches = max(1, -(-int(keyed) // BATCH_ROWS))
    con.execute(
        f"CREATE TABLE {name} AS SELECT {', '.join(f't.{n}' for n in names)}, "
        f"0::BIGINT AS {rank} FROM {table} AS t LIMIT 0"
    )
    # One order by (entity hash, row hash) and each entity's offset in it, over the
    # entities of one batch (by entity hash) at a time: a window partitioned by entity
    # (payload or not) outgrew a 2 GB memory_limit at 10 M rows where nothing may spill
    # (an encrypted enclave), and so did this one pass at 15 M.  Registration has checked
    # that entity keys' hashes never collide (``entity_hashes``): the hash stands for the
    # entity, and an entity's rows all fall in one batch.  ``rowid`` is DuckDB's row id:
    # a classification with ranks may not name a column so (``classification``).
    for batch in range(batches):
        con.execute(
            f"INSERT INTO {name} "
            f"WITH s AS (SELECT rowid AS rid, hash({key}) AS he, hash({', '.join(names)}) AS h "
            f"FROM {table} WHERE {key} IS NOT NULL AND hash({key}) % {batches} = {batch}), "
            "n AS (SELECT he, count(*) AS c FROM s GROUP BY he), "
            "o AS (SELECT he, sum(c) OVER (ORDER BY he ROWS BETWEEN UNBOUNDED PRECEDING AND "
            "CURRENT ROW) - c AS off FROM n), "
            f"r AS (SELECT rid, row_number() OVER (ORDER BY s.he, s.h) - o.off AS {rank} "
            "FROM s JOIN o ON s.he = o.he) "
            f"SELECT {', '.join(f't.{n}' for n in names)}, r.{rank} "
            f"FROM {table} AS t JOIN r ON t.rowid = r.rid"
        )
    copied = 0
    for batch in range(batches):  # the check's distinct pairs, a batch at a time too
        copied += _check_ranks(con, name, key, f"hash({key}) % {batches} = {batch}")
    if copied != int(keyed):
        raise _not_whole()


def _not_whole() -> EnclaveError:
    return EnclaveError(
        "the ranked copy of the table did not come out whole (each entity's rows ranked "
        "once from 1): the registration is rolled back",
        rule="registry.ranks",
    )


def _check_ranks(con: Any, name: str, key: str, where: str = "true") -> int:
    """The rows of the copy ``where`` holds; refused unless each entity's ranks there are
    distinct whole numbers from 1: then no entity has more than ``k`` rows ranked at
    most ``k``, which is all the caps rely on (the caller checks every keyed row is
    there)."""
    rank = _ident(RANK)
    rows, low, pairs = con.execute(
        f"SELECT count(*), min({rank}), "
        f"count(DISTINCT (hash({key})::UHUGEINT << 32) | {rank}::UHUGEINT) FROM {name} "
        f"WHERE {where}"
    ).fetchall()[0]
    if rows and (int(low) < 1 or int(pairs) != int(rows)):
        raise _not_whole()
    return int(rows)


def ranked_rows_present(cursor: Any, spec: DatasetSpec) -> bool:
    """Whether the enclave holds the ranked copy of the table's current rows.

    The copy and the table are written in one transaction (and checked whole there,
    ``_check_ranks``); this checks that the copy exists with the classification's
    columns and the rank, and holds as many rows as the table has with a key (an
    enclave written before ranks existed has none: its queries cap per query).
    """
    if not declares_ranks(spec):
        return False
    columns = cursor.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
        "current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [SCHEMA, _table_name(spec)],
    ).fetchall()
    wanted = [c.name.lower() for c in spec.columns] + [RANK]
    if [name.lower() for name, _type in columns] != wanted or columns[-1][1] != "BIGINT":
        return False  # none, or not the columns this classification reads
    key = _ident(spec.entity_key)
    table = f"{_ident(spec.domain)}.{_ident(spec.table)}"
    (ranked,) = cursor.execute(f"SELECT count(*) FROM {ranked_name(spec)}").fetchall()[0]
    (keyed,) = cursor.execute(f"SELECT count({key}) FROM {table}").fetchall()[0]
    return int(ranked) == int(keyed)
