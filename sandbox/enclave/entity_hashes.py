"""A registered table's entity keys must not share DuckDB's 64-bit ``hash()``.

Under a privacy budget the stats query caps each entity's contribution with windows
grouped by ``hash(entity)`` (``query.entity_caps``: the group cap's sort and the total
cap's partition), cheaper than grouping by the key itself (grouping by the key cost W3's
stats query 59% more, W1's 16%; a 128-bit hash 35% and 8%).  Two entities whose hashes
collide would share one run of ``G`` cells and one running total of ``T`` rows, and
removing one could move the other's statistics: twice the sensitivity the noise is
calibrated to, for that pair.  The chance is about ``N² / 2^65`` for ``N`` distinct keys
(10^-7 at two million), and only the bureau chooses keys; registration checks it once,
exactly, and refuses such a table (the keys can be re-coded).  The hashed values are
exactly the key column's, which the rewrite carries unchanged as the entity.
"""

from __future__ import annotations

import duckdb

from sandbox.core.errors import InvalidInput

__all__ = ["check_entity_hashes"]


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_entity_hashes(
    con: duckdb.DuckDBPyConnection, table: str, key: str, *, hash_function: str = "hash"
) -> None:
    """Refuse ``table`` (quoted) if two distinct non-NULL values of ``key`` share a hash.

    ``hash_function``: the SQL function the caps use (tests pass a weaker one to make a
    collision).  The refusal names the column, never a value.
    """
    column = _identifier(key)
    distinct, hashed = con.execute(
        f"SELECT count(DISTINCT {column}), "
        f"count(DISTINCT {hash_function}({column})) FILTER (WHERE {column} IS NOT NULL) "
        f"FROM {table}"
    ).fetchone() or (0, 0)
    if distinct != hashed:
        raise InvalidInput(
            f"two of the entity keys in {key} share the enclave's 64-bit hash, which its "
            "per-entity caps group by: re-code the keys (another surrogate id) and "
            "register again",
            rule="registry.entity_hash",
        )
