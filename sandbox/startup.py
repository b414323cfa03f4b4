"""Start-up checks: refuse to serve a damaged home, with one line that names the file.

``sandbox serve`` runs :func:`check_home` before any worker starts.  Each problem
is an :class:`~sandbox.core.errors.EnclaveError` whose message names the file and what
is wrong with it (rules ``startup.*``), so the CLI prints one line and exits 2:

- a file of the home is missing although the home was initialised (an empty
  control plane or audit trail must never be started silently in its place);
- a file is not what it should be (not SQLite, not DuckDB, truncated);
- a database is locked by another process past ``lock_wait_s``;
- a dataset of the catalog is missing from the enclave or has other row counts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sandbox.core.db import datasets
from sandbox.core.errors import EnclaveBusy, EnclaveError, InvalidInput
from sandbox.enclave.catalog import table_schema_sha256
from sandbox.enclave.entity_hashes import check_entity_hashes

if TYPE_CHECKING:
    from sandbox.enclave.catalog import DatasetRecord
    from sandbox.platform import Platform

__all__ = ["check_control_file", "check_home", "has_history", "initialised", "sqlite_path"]

SQLITE_MAGIC = b"SQLite format 3\x00"
DUCKDB_MAGIC = b"DUCK"  # at offset 8
DUCKDB_HEADERS = 3 * 4096


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def initialised(platform: Platform) -> bool:
    """Was ``sandbox init`` run on this home (its key or its enclave file exists)?"""
    return (
        platform.settings.enclave_path.exists() or (platform.settings.keys_dir / "ACTIVE").exists()
    )


def has_history(engine: sa.Engine) -> bool:
    """Does the control plane hold anything whose creation was audited (accounts, datasets)?"""
    from sandbox.core.db import datasets
    from sandbox.core.policy_tables import accounts

    with engine.connect() as conn:
        for table in (accounts, datasets):
            if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
                return True
    return False


def _fail(rule: str, message: str) -> EnclaveError:
    return EnclaveError(message, rule=f"startup.{rule}")


def check_sqlite_file(path: Path, what: str, rule: str) -> None:
    """A SQLite file that exists must start with SQLite's header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise _fail(rule, f"{what} {path} cannot be read ({exc.strerror})") from None
    if head != SQLITE_MAGIC:
        problem = "is empty" if not head else "is not an SQLite database (corrupt or overwritten)"
        raise _fail(rule, f"{what} {path} {problem}: restore it from a backup")


def probe_write_lock(path: Path, what: str, rule: str, wait_s: float) -> None:
    """Take and release the database's write lock, waiting at most ``wait_s``."""
    try:
        con = sqlite3.connect(path, timeout=wait_s, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise _fail(
                rule,
                f"{what} {path} is locked by another process (waited {wait_s:g} s for its "
                "write lock): stop whatever holds it",
            ) from None
        raise _fail(rule, f"{what} {path} cannot be written ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise _fail(rule, f"{what} {path} is damaged ({exc}): restore it from a backup") from None


def check_enclave_file(path: Path) -> None:
    """The enclave file exists, has DuckDB's header, and is as long as its blocks say."""
    if not path.exists():
        raise _fail("enclave", f"enclave file {path} does not exist: run `sandbox init`")
    with open(path, "rb") as handle:
        head = handle.read(12)
    if head[8:12] != DUCKDB_MAGIC:
        raise _fail(
            "enclave",
            f"enclave file {path} is not a DuckDB database (corrupt or overwritten): "
            "restore it from a backup",
        )


def check_control_file(platform: Platform) -> None:
    """Before the control plane is opened: a SQLite file of an initialised home must be there.

    Opening would otherwise create an empty one, and the deployment would start
    without its accounts, grants, budgets and jobs.
    """
    control = sqlite_path(platform.settings.control_db_url)
    if control is None:
        return
    if control.exists():
        check_sqlite_file(control, "control-plane database", "control_db")
    elif initialised(platform):
        raise _fail(
            "control_db",
            f"control-plane database {control} is missing although the home "
            f"{platform.settings.home} was initialised: restore it from a backup "
            "(Sandbox does not start with an empty one)",
        )


def check_home(platform: Platform, *, lock_wait_s: float = 5.0) -> None:
    """Every component of the home is present, of the right kind, unlocked and consistent."""
    from audit.errors import AuditError

    settings = platform.settings
    if not initialised(platform):
        raise _fail("home", f"home {settings.home} is not initialised: run `sandbox init`")
    check_control_file(platform)
    control = sqlite_path(settings.control_db_url)
    if control is not None:
        probe_write_lock(control, "control-plane database", "control_db", lock_wait_s)
    engine = platform.engine
    history = has_history(engine)
    audit = sqlite_path(settings.audit_db_url)
    if audit is not None:
        if audit.exists():
            check_sqlite_file(audit, "audit store", "audit")
            probe_write_lock(audit, "audit store", "audit", lock_wait_s)
        elif history:
            raise _fail(
                "audit",
                f"audit store {audit} is missing but the control plane has audited history: "
                "restore it from a backup (a new, empty trail would hide the old one)",
            )
    where = audit or "database"
    try:
        size = platform.audit.store.size()
    except AuditError as exc:
        raise _fail("audit", f"audit store {where} cannot be opened ({exc})") from None
    if history and size == 0:
        raise _fail(
            "audit",
            f"audit store {where} is empty but the control plane has audited history: "
            "restore it from a backup",
        )
    check_enclave_file(settings.enclave_path)
    check_enclave_contents(platform)


def check_enclave_contents(platform: Platform) -> None:
    """The enclave opens, is not truncated, and holds every catalog dataset with its rows
    and its columns."""
    path = platform.settings.enclave_path
    try:
        _check_enclave_contents(platform, path)
    except EnclaveBusy:
        raise
    except EnclaveError as exc:
        if exc.rule and exc.rule.startswith(("startup.", "keys.")):
            raise
        raise _fail(
            "enclave",
            f"enclave file {path} is damaged: it cannot be opened (corrupt or unreadable): "
            "restore it from a backup",
        ) from None


def _check_warehouse_version(platform: Platform, record: DatasetRecord) -> None:
    """A dataset held in the warehouse: its version's Parquet files are there and hold the
    catalog's number of rows (read from their footers)."""
    from sandbox.enclave.warehouse import dataset_dir, version_row_count

    directory = dataset_dir(platform.settings.warehouse_dir, record.id, record.version)
    try:
        rows = version_row_count(directory)
    except Exception:  # missing, unreadable or not Parquet
        raise _fail(
            "warehouse",
            f"warehouse directory {directory} of dataset {record.id} is missing or "
            "unreadable: restore it from a backup",
        ) from None
    if rows != record.row_count:
        raise _fail(
            "warehouse",
            f"warehouse directory {directory} holds other rows for {record.id} than the "
            "catalog says: restore it from a backup",
        )


def _check_enclave_contents(platform: Platform, path: Path) -> None:
    checked: list[DatasetRecord] = []  # versions whose entity hashes this start checked
    with platform.enclave.cursor() as cur:
        try:
            size = cur.execute(
                "SELECT * FROM pragma_database_size() WHERE database_name = current_database()"
            ).fetchone()
            tables = {
                f"{schema}.{name}"
                for schema, name in cur.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables"
                ).fetchall()
            }
            block_size = int(size[2])  # type: ignore[index]
            # Free blocks at the end are not kept in the file (DuckDB truncates them, e.g.
            # after a table is created from Arrow in parallel): only used blocks must fit.
            used_blocks = int(size[4])  # type: ignore[index]
            if path.stat().st_size < DUCKDB_HEADERS + block_size * used_blocks:
                raise _fail(
                    "enclave",
                    f"enclave file {path} is truncated (shorter than its {used_blocks} "
                    "used blocks): restore it from a backup",
                )
            for record in platform.catalog.list():
                if record.engine != "duckdb":
                    _check_warehouse_version(platform, record)
                    continue
                if record.id not in tables:
                    raise _fail(
                        "enclave",
                        f"enclave file {path} lacks dataset {record.id} of the catalog: "
                        "restore it from a backup",
                    )
                rows = cur.execute(f"SELECT count(*) FROM {record.id}").fetchone()
                if rows is None or int(rows[0]) != record.row_count:
                    raise _fail(
                        "enclave",
                        f"enclave file {path} holds other rows for {record.id} than the "
                        "catalog says: restore it from a backup",
                    )
                # A registration whose control-plane commit failed after the table's
                # leaves the catalog describing columns the table no longer has.
                if table_schema_sha256(cur, record.id) != record.schema_sha256:
                    raise _fail(
                        "enclave",
                        f"enclave file {path} holds other columns for {record.id} than "
                        "the catalog says: register the dataset again, or restore both "
                        "from a backup",
                    )
                # Registered before registration checked it: entity keys sharing the
                # 64-bit hash the caps group by (enclave.entity_hashes).  Once per
                # version: the check reads the whole key column (about 5 s at 10 M rows).
                if record.entity_hashes_checked:
                    continue
                table = ".".join(f'"{part}"' for part in record.id.split(".", 1))
                try:
                    check_entity_hashes(cur, table, record.entity_key)
                except InvalidInput:
                    raise _fail(
                        "enclave",
                        f"enclave file {path}: two of {record.id}'s entity keys share the "
                        "64-bit hash the per-entity caps group by: re-code its keys and "
                        "register it again",
                    ) from None
                checked.append(record)
        except EnclaveError:
            raise
        except Exception as exc:  # duckdb's own errors: a damaged file
            raise _fail(
                "enclave", f"enclave file {path} is damaged ({type(exc).__name__})"
            ) from None
    _mark_entity_hashes_checked(platform, checked)


def _mark_entity_hashes_checked(platform: Platform, records: list[DatasetRecord]) -> None:
    """Record that these versions' entity keys were checked; a version registered or
    reclassified meanwhile (another version or key) keeps its own mark."""
    if not records:
        return
    with platform.engine.begin() as conn:
        for record in records:
            conn.execute(
                sa.update(datasets)
                .where(
                    datasets.c.id == record.id,
                    datasets.c.version == record.version,
                    datasets.c.entity_key == record.entity_key,
                )
                .values(entity_hashes_checked=True)
            )
