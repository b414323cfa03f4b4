"""The control-plane database: one SQLAlchemy Core data-access layer for SQLite and PostgreSQL.

Tables of every package are declared on :data:`metadata`; :func:`open_control_db`
creates them.  SQLite runs in WAL mode with ``synchronous=FULL`` so a committed
change survives a crash; PostgreSQL is used as is.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.core.errors import EnclaveError

__all__ = [
    "add_missing_columns",
    "dataset_versions",
    "datasets",
    "derived_contribution",
    "metadata",
    "open_control_db",
    "release_cache",
]

metadata = sa.MetaData()

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(130), primary_key=True),
    sa.Column("domain", sa.String(63), nullable=False, index=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("entity_key", sa.String(255), nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("connector", sa.String(40), nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("source_sha256", sa.String(64), nullable=False),
    sa.Column("loaded_at", sa.String(40), nullable=False),
    sa.Column("schema_sha256", sa.String(64), nullable=False),
    sa.Column("classification", sa.JSON, nullable=False),
    sa.Column("classification_sha256", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("registered_by", sa.String(255), nullable=False),
    sa.Column("frozen", sa.Boolean, nullable=False, default=False),
    # Which engine holds and runs the dataset: "duckdb" (the enclave file) or "spark".
    sa.Column("engine", sa.String(16), nullable=False, server_default="duckdb"),
    # The current version's entity keys were checked not to share the 64-bit hash the caps
    # group by (``enclave.entity_hashes``): at registration, at a reclassification that
    # names another key, or once by the server's start for a version registered before
    # registration checked it.
    sa.Column("entity_hashes_checked", sa.Boolean, nullable=False, server_default=sa.false()),
)

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("dataset_id", sa.String(130), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("registered_at", sa.String(40), nullable=False),
    sa.Column("registered_by", sa.String(255), nullable=False),
    sa.Column("connector", sa.String(40), nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("source_sha256", sa.String(64), nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("schema_sha256", sa.String(64), nullable=False),
    sa.Column("classification_sha256", sa.String(64), nullable=False),
    sa.Column("certificate", sa.JSON, nullable=False),
    # Where the version's rows lived: "duckdb" (the enclave file) or "spark" (the warehouse).
    sa.Column("engine", sa.String(16), nullable=False, server_default="duckdb"),
    # The version's quality report (aggregates only; its digest is in the certificate).
    sa.Column("quality", sa.JSON, nullable=True),
)


derived_contribution = sa.Table(
    "derived_contribution",
    metadata,
    sa.Column("dataset_id", sa.String(130), primary_key=True),
    # The entity key the bound was drawn for: another key draws again.
    sa.Column("entity_key", sa.String(255), nullable=False),
    # T drawn from the data (DP), below or above the default's reach; NULL: the draw kept
    # the default's bounds (it chose the default's reach, or, drawn before a draw could
    # raise them, "top or more").
    sa.Column("max_total_rows_per_entity", sa.Integer, nullable=True),
    # The largest candidate the draw chose among ("that or more"): the default's reach, or
    # the `default_bounds_max_rows` ceiling above it. A kept default under a lower top than
    # today's ceiling is drawn again, once.
    sa.Column("top", sa.Integer, nullable=False),
    sa.Column("epsilon", sa.Float, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),  # the dataset version drawn from
    sa.Column("derived_at", sa.String(40), nullable=False),
    # Per groupable column without a declared values_per_entity: the DP quantile of an
    # entity's distinct values of it ({column: n}); NULL: not drawn yet (a draw stored
    # before they were drawn), drawn once at the next query with a budget.
    sa.Column("values_per_entity", sa.JSON(none_as_null=True), nullable=True),
)
"""The rows-per-entity bound of a dataset whose classification declares no
``[contribution]``, drawn once from its data with an owner-side ε
(``sandbox.query.default_bounds``)."""


release_cache = sa.Table(
    "release_cache",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("operator", sa.String(255), nullable=False, index=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("result", sa.LargeBinary, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
    sa.Column("receipt", sa.JSON, nullable=False),
)
"""Released results by (operator, normalized query, grants, data versions): asking the same
query again returns the same noisy answer and spends no budget."""


def insert_ignore(conn: sa.engine.Connection, table: sa.Table, **values: Any) -> None:
    """Insert unless the key exists (the first writer's row stands), in one statement."""
    unknown = values.keys() - table.c.keys()
    if unknown:  # as .values() would: a parameter that names no column is a bug
        raise sa.exc.ArgumentError(f"no column {sorted(unknown)} in {table.name}")
    conn.execute(_insert_ignore(conn.dialect.name, table), values)


@functools.cache
def _insert_ignore(dialect: str, table: sa.Table) -> sa.Insert:
    """The statement, built once per dialect and table: the release cache's write runs it on
    every query, and building it each time cost 162 µs against 22 (SQLite, CPU)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # the same insert().on_conflict_do_nothing() in both dialects
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert(table).on_conflict_do_nothing()


BUSY_TIMEOUT_S = 10.0
"""How long a control-plane write waits for another writer (SQLite's busy timeout, and
the group writer's cross-process lock: ``sandbox.core.writer_lock``)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def add_missing_columns(engine: Engine) -> list[str]:
    """Add columns a newer release declares to tables an older one created.

    Only additive changes, and only columns that have a server default or may be NULL
    (so existing rows stay valid); anything else needs a real migration.  Returns what
    was added (``table.column``).
    """
    inspector = sa.inspect(engine)
    added: list[str] = []
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                if column.server_default is None and not column.nullable:
                    raise EnclaveError(
                        f"control-plane table {table.name} lacks column {column.name} and it "
                        "cannot be added in place: migrate the database",
                        rule="control_db.schema",
                    )
                ddl = sa.schema.CreateColumn(column).compile(dialect=engine.dialect)
                conn.execute(sa.text(f'ALTER TABLE "{table.name}" ADD COLUMN {ddl}'))
                added.append(f"{table.name}.{column.name}")
    return added


def open_control_db(url: str, *, create: bool = True) -> Engine:
    """Connect to the control-plane DB and (by default) create missing tables."""
    try:
        # A SQLite file cannot drop a connection as a server can: no ping before each use,
        # and enough pooled connections for every thread of a server (none reopened).
        sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
        pooling: dict[str, Any] = {"pool_size": 32} if sqlite else {}
        engine = sa.create_engine(url, future=True, pool_pre_ping=not sqlite, **pooling)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise EnclaveError(
            f"control-plane database URL is not usable: {type(exc).__name__}",
            rule="control_db.url",
        ) from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    # Declare the authorization tables and the governance procedures' tables.
    from sandbox.core import governance_tables, policy_tables, product_tables  # noqa: F401

    try:
        if create:
            metadata.create_all(engine)
            add_missing_columns(engine)
        else:
            with engine.connect():
                pass
    except sa.exc.DatabaseError as exc:  # also "file is not a database", not only locks
        where = engine.url.render_as_string(hide_password=True)
        if engine.dialect.name == "sqlite":
            where = str(engine.url.database)
        problem = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise EnclaveError(
            f"control-plane database {where} cannot be opened ({problem})",
            rule="control_db.open",
        ) from None
    return engine
