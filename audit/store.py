"""The one data-access module of the audit trail: SQLAlchemy Core on SQLite or PostgreSQL.

Durability and ordering live here.  SQLite runs in WAL mode with
``synchronous=FULL`` (a commit is on disk when it returns) and a busy timeout;
a write transaction starts with ``BEGIN IMMEDIATE``, which takes the database's
single write lock, so appends from any number of threads *and processes* are
serialized by the database itself.  PostgreSQL write transactions take a
self-conflicting table lock (``SHARE ROW EXCLUSIVE``) with a lock timeout and
force ``synchronous_commit = on``.  Inside that lock the writer reads the head
of the chain, so sequence numbers are gapless whoever appends.

The tables are in :mod:`audit.schema`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    cast,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from audit.errors import StoreUnavailable
from audit.schema import ENTRY_COLUMNS, LAST_ENTRY, STATE_QUERY, entries, metadata, tree_heads
from audit.signing import TreeHead
from audit.sqlite_pragmas import prepare_connection
from audit.sqlite_txn import sqlite_transaction
from audit.state import LogState, SeqTaken, WriteOps, find_nodes

__all__ = [
    "AuditStore",
    "LogState",
    "Reads",
    "SeqTaken",
    "WriteTxn",
    "Writer",
    "find_nodes",
]


def _insert_sql(paramstyle: str) -> str:
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(paramstyle)
    if marker is None:
        raise StoreUnavailable(f"unsupported driver parameter style {paramstyle}")
    columns = ", ".join(ENTRY_COLUMNS)
    markers = ", ".join([marker] * len(ENTRY_COLUMNS))
    return f"INSERT INTO audit_entries ({columns}) VALUES ({markers})"


_SQLITE_INSERT = _insert_sql("qmark")
_SCHEMA_LOCK_KEY = 0x5A4E_4442_4155_4431  # pg advisory lock key for schema creation


def _head_from_row(row: Any) -> TreeHead:
    return TreeHead(
        tree_size=row.tree_size,
        timestamp_ms=row.timestamp_ms,
        root_hash=bytes(row.root_hash),
        chain_head=bytes(row.chain_head),
        key_id=row.key_id,
        signature=bytes(row.signature),
    )


class Reads:
    """Queries shared by plain reads and the write transaction (which must see its lock)."""

    conn: Connection

    def size_and_chain_head(self) -> tuple[int, bytes | None]:
        row = self.conn.execute(LAST_ENTRY).first()
        return (0, None) if row is None else (row.seq + 1, bytes(row.entry_hash))

    def state(self) -> LogState:
        """Head of the chain and of the signed heads, in one round trip."""
        row = self.conn.execute(STATE_QUERY).one()
        size = 0 if row.last_seq is None else row.last_seq + 1
        return LogState(
            size=size,
            chain_head=bytes(row.chain_head) if row.chain_head is not None else None,
            signed_size=row.signed_size or 0,
            signed_at_ms=row.signed_at_ms or 0,
        )

    def node_hashes(self, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Hashes of full subtrees ``(level, index)`` (see :func:`find_nodes`)."""

        def fetch(seqs: Sequence[int]) -> Iterable[tuple[int, bytes, bytes]]:
            query = select(entries.c.seq, entries.c.leaf_hash, entries.c.subtree_hashes)
            return [tuple(row) for row in self.conn.execute(query.where(entries.c.seq.in_(seqs)))]

        return find_nodes(wanted, fetch)

    def newest_tree_head(self) -> TreeHead | None:
        row = self.conn.execute(
            select(tree_heads).order_by(tree_heads.c.tree_size.desc(), tree_heads.c.id.desc())
        ).first()
        return None if row is None else _head_from_row(row)

    def tree_heads(self, max_size: int | None = None) -> list[TreeHead]:
        query = select(tree_heads).order_by(tree_heads.c.tree_size, tree_heads.c.id)
        if max_size is not None:
            query = query.where(tree_heads.c.tree_size <= max_size)
        return [_head_from_row(row) for row in self.conn.execute(query)]


class WriteTxn(Reads):
    """One locked write transaction: everything it inserts commits together or not at all."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_entries(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert rows (tuples in :data:`ENTRY_COLUMNS` order) with one ``executemany``.

        The statement goes to the driver as is (``exec_driver_sql``): on the hot
        path, SQLAlchemy's per-row parameter processing cost more than SQLite's
        own work.  Raises :class:`SeqTaken` if the first seq exists (another
        writer got there first).
        """
        if rows:
            try:
                self.conn.exec_driver_sql(_insert_sql(self.conn.dialect.paramstyle), list(rows))
            except IntegrityError as exc:
                raise SeqTaken(f"seq {rows[0][0]} is taken") from exc

    def insert_tree_head(self, head: TreeHead) -> None:
        values = head.to_dict() | {
            "root_hash": head.root_hash,
            "chain_head": head.chain_head,
            "signature": head.signature,
        }
        self.conn.execute(tree_heads.insert().values(**values))


class Writer:
    """One long-lived connection whose transactions take the append lock.

    On SQLite the transactions run on the driver connection itself
    (:mod:`audit.sqlite_txn`); on PostgreSQL through SQLAlchemy.
    """

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.conn: Connection | None = None
        self._raw: Any = None  # SQLite: the driver connection of ``conn``, looked up once

    @contextmanager
    def transaction(self) -> Iterator[WriteOps]:
        try:
            if self.conn is None:
                self.conn = self.store.engine.connect().execution_options(audit_write=True)
                self._raw = None
            if self.store.dialect == "sqlite":
                raw = self._raw
                if raw is None:
                    raw = self._raw = self.conn.connection.driver_connection
                    if raw is None:
                        raise StoreUnavailable("audit store connection is closed")
                with sqlite_transaction(raw, _SQLITE_INSERT) as txn:
                    yield txn
                return
            with self.store._begin(self.conn, write=True):
                yield WriteTxn(self.conn)
        except (SQLAlchemyError, StoreUnavailable) as exc:
            self.close()  # a broken connection is not reused
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"audit store failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._raw = None
        if self.conn is not None:
            try:
                self.conn.close()
            except SQLAlchemyError:
                pass
            self.conn = None


class AuditStore:
    """Engine, schema and every query of the audit trail; opened from a SQLAlchemy URL."""

    def __init__(self, url: str, *, lock_timeout_s: float = 30.0) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreUnavailable(f"audit store needs SQLite or PostgreSQL, not {self.dialect}")
        self.lock_timeout_s = lock_timeout_s
        self.engine = self._create_engine()

    def _create_engine(self) -> Engine:
        if self.dialect == "postgresql":
            return create_engine(self.url, pool_pre_ping=True)
        engine = create_engine(self.url, connect_args={"timeout": self.lock_timeout_s})
        timeout_s = self.lock_timeout_s

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            prepare_connection(dbapi_conn, timeout_s)  # we issue BEGIN ourselves, below

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("audit_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _connect(self, *, write: bool, lock: bool = True) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                with self._begin(conn, write=write, lock=lock):
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"audit store failed: {type(exc).__name__}") from exc

    @contextmanager
    def _begin(self, conn: Connection, *, write: bool, lock: bool = True) -> Iterator[None]:
        if write:
            conn = conn.execution_options(audit_write=True)
        with conn.begin():
            if write and lock and self.dialect == "postgresql":
                ms = int(self.lock_timeout_s * 1000)
                conn.exec_driver_sql(
                    f"SET LOCAL lock_timeout = {ms}; SET LOCAL synchronous_commit = on; "
                    "LOCK TABLE audit_entries IN SHARE ROW EXCLUSIVE MODE"
                )
            yield

    def writer(self) -> Writer:
        """A dedicated connection for one writer thread (saves a pool round trip per commit)."""
        return Writer(self)

    def create_schema(self) -> None:
        """Create the tables if missing; safe when several processes start at once."""
        with self._connect(write=True, lock=False) as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            metadata.create_all(conn)

    @contextmanager
    def writing(self) -> Iterator[WriteTxn]:
        """A write transaction holding the store-wide append lock until commit."""
        with self._connect(write=True) as conn:
            yield WriteTxn(conn)

    @contextmanager
    def reading(self) -> Iterator[Reads]:
        with self._connect(write=False) as conn:
            reads = Reads()
            reads.conn = conn
            yield reads

    def size(self) -> int:
        with self.reading() as r:
            return r.size_and_chain_head()[0]

    def fetch_nodes(self, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self.reading() as r:
            return r.node_hashes(wanted)

    def latest_tree_head(self) -> TreeHead | None:
        with self.reading() as r:
            return r.newest_tree_head()

    def tree_heads(self, max_size: int | None = None) -> list[TreeHead]:
        with self.reading() as r:
            return r.tree_heads(max_size)

    def entry_row(self, seq: int) -> Any:
        with self.reading() as r:
            return r.conn.execute(select(entries).where(entries.c.seq == seq)).first()

    def select_entries(
        self, conditions: Sequence[Any], *, offset: int, limit: int, newest_first: bool
    ) -> list[bytes]:
        order = entries.c.seq.desc() if newest_first else entries.c.seq
        query = select(entries.c.entry).where(*conditions).order_by(order)
        with self.reading() as r:
            rows = r.conn.execute(query.offset(offset).limit(limit))
            return [bytes(row.entry) for row in rows]

    def count_entries(self, by: Sequence[str], conditions: Sequence[Any]) -> list[dict[str, Any]]:
        columns = [entries.c[name] for name in by]
        count = func.count().label("count")
        query = (
            select(*columns, count)
            .where(*conditions)
            .group_by(*columns)
            .order_by(count.desc(), *columns)
        )
        with self.reading() as r:
            return [dict(row._mapping) for row in r.conn.execute(query)]

    def iter_entry_tuples(self, *, chunk: int = 20_000) -> Iterator[tuple[Any, ...]]:
        """Every row as a plain tuple in :data:`ENTRY_COLUMNS` order (bytes as ``bytes``),
        in seq order, read in chunks by key (each chunk its own short read)."""
        for rows in self.iter_entry_chunks(chunk=chunk):
            yield from rows

    def iter_entry_chunks(self, *, chunk: int = 20_000) -> Iterator[list[tuple[Any, ...]]]:
        """:meth:`iter_entry_tuples`, a list of up to ``chunk`` rows at a time.

        The query goes to the driver's own cursor, whose rows are already tuples:
        verification reads every row, and SQLAlchemy's row objects cost more than
        SQLite's own reading.
        """
        marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}[self.engine.dialect.paramstyle]
        sql = (
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_entries "
            f"WHERE seq > {marker} ORDER BY seq LIMIT {int(chunk)}"
        )
        binary = [i for i, c in enumerate(entries.columns) if isinstance(c.type, LargeBinary)]
        driver_error = self.engine.dialect.loaded_dbapi.Error
        after = -1
        while True:
            with self.reading() as r:
                try:
                    cursor = r.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                    try:
                        cursor.execute(sql, (after,))
                        rows = cursor.fetchall()
                    finally:
                        cursor.close()
                except driver_error as exc:
                    raise StoreUnavailable(f"audit store failed: {type(exc).__name__}") from exc
            if not rows:
                return
            if not all(type(row[i]) is bytes for row in rows for i in binary):
                # A driver that gives memoryview; or a SQLite row whose BLOB was stored as
                # TEXT (``replace()`` on a BLOB returns TEXT): its bytes, which the checks
                # then judge like any other (an unchanged text passes, an edit is reported).
                rows = [
                    tuple(_as_bytes(v) if i in binary else v for i, v in enumerate(row))
                    for row in rows
                ]
            yield [tuple(row) for row in rows] if type(rows[0]) is not tuple else rows
            after = rows[-1][0]

    def iter_entries(self, stop: int | None = None, *, chunk: int = 5000) -> Iterator[Any]:
        """Rows in seq order, read in chunks by key (each chunk its own short read).

        Binary columns are read as ``CAST(… AS BLOB)``: a SQLite row whose BLOB was stored
        as TEXT (``replace()`` on a BLOB) comes back as its bytes, not a ``TypeError``.
        """
        after = -1
        columns = [
            cast(c, LargeBinary).label(c.name) if isinstance(c.type, LargeBinary) else c
            for c in entries.columns
        ]
        while True:
            query = select(*columns).where(entries.c.seq > after).order_by(entries.c.seq)
            if stop is not None:
                query = query.where(entries.c.seq < stop)
            with self.reading() as r:
                rows = r.conn.execute(query.limit(chunk)).all()
            if not rows:
                return
            yield from rows
            after = rows[-1].seq


def _as_bytes(value: Any) -> Any:
    """A binary column's value as bytes (``str`` as its UTF-8; None stays None)."""
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)
