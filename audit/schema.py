"""The audit store's tables, and the few fixed queries the writer runs on every commit.

Table ``audit_entries`` keeps one row per entry: the canonical bytes, their chain
and leaf hashes, the hashes of the full power-of-two subtrees that leaf completes
(``subtree_hashes``, level 1 first; see :meth:`audit.store.Reads.node_hashes`),
and copies of the fields auditors filter on.  ``audit_tree_heads`` keeps the
signed tree heads.  One row per append keeps a commit to a single insert.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
)

__all__ = [
    "ENTRY_COLUMNS",
    "FILTER_COLUMNS",
    "LAST_ENTRY",
    "NEWEST_HEAD",
    "STATE_QUERY",
    "entries",
    "metadata",
    "tree_heads",
]

FILTER_COLUMNS = ("actor", "role", "action", "target", "dataset", "decision")


class _Bytes(LargeBinary):
    """Raw bytes in and out: both drivers take ``bytes`` as is, so skip the per-value
    ``Binary()`` wrapping (a measurable share of an append's CPU)."""

    cache_ok = True

    def bind_processor(self, dialect: Any) -> None:
        return None


metadata = MetaData()
# INTEGER PRIMARY KEY on SQLite makes seq the rowid: no second index.
_SEQ = BigInteger().with_variant(Integer, "sqlite")

entries = Table(
    "audit_entries",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("time", String(32), nullable=False),
    Column("actor", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("dataset", Text),
    Column("decision", String(8), nullable=False),
    Column("entry", _Bytes, nullable=False),
    Column("entry_hash", _Bytes, nullable=False),
    Column("leaf_hash", _Bytes, nullable=False),
    # Hashes of the full subtrees this leaf completes, level 1 first (see node_hashes).
    Column("subtree_hashes", _Bytes, nullable=False),
    Index("ix_audit_entries_time", "time"),
    Index("ix_audit_entries_actor", "actor", "seq"),
    Index("ix_audit_entries_action", "action", "seq"),
    Index("ix_audit_entries_dataset", "dataset", "seq"),
)
ENTRY_COLUMNS = tuple(column.name for column in entries.columns)
"""Column order of the row tuples :meth:`audit.store.WriteTxn.insert_entries` takes."""
tree_heads = Table(
    "audit_tree_heads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False, index=True),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("root_hash", _Bytes, nullable=False),
    Column("chain_head", _Bytes, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", _Bytes, nullable=False),
)

LAST_ENTRY = select(entries.c.seq, entries.c.entry_hash).order_by(entries.c.seq.desc()).limit(1)
NEWEST_HEAD = (
    select(tree_heads.c.tree_size, tree_heads.c.timestamp_ms)
    .order_by(tree_heads.c.tree_size.desc(), tree_heads.c.id.desc())
    .limit(1)
)
STATE_QUERY = select(
    LAST_ENTRY.with_only_columns(entries.c.seq).scalar_subquery().label("last_seq"),
    LAST_ENTRY.with_only_columns(entries.c.entry_hash).scalar_subquery().label("chain_head"),
    NEWEST_HEAD.with_only_columns(tree_heads.c.tree_size).scalar_subquery().label("signed_size"),
    NEWEST_HEAD.with_only_columns(tree_heads.c.timestamp_ms)
    .scalar_subquery()
    .label("signed_at_ms"),
)
