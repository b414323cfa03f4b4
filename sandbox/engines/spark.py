"""The Spark engine: checked stats queries over the Parquet warehouse, on PySpark.

One :class:`~pyspark.sql.SparkSession` per process, on ``Settings.spark_master``,
created on first use: no UI, an in-memory catalog, UTC session time zone, and
``spark.sql.ansi.enabled=false`` deliberately: with ANSI off Spark returns NULL where
DuckDB's ``TRY(...)`` (which the rewrite puts around every operator expression that
reads data) returns NULL, for an invalid conversion or an index out of range; the
differences that remain (division by zero, float-to-integer casts, integer overflow)
are refused or rendered safe by :mod:`sandbox.engines.spark_sql`.

A dataset is a temporary view over its catalog version's directory in the warehouse
(``sandbox.enclave.warehouse.dataset_dir``).  The engine runs only the guard's
product: one SELECT, transpiled by :func:`~sandbox.engines.spark_sql.to_spark`; it
registers no UDF and takes no session setting from a query.  Each run is a job group
cancelled after ``query_timeout_s`` (and again every half second until it ends: a job
still being planned is not in the group yet); more than ``max_rows`` rows is
:class:`ResultTooLarge` (``enclave.max_result_rows``), never a truncated result; any
other failure is :func:`limits_failure`.  The result's column types are DuckDB's for
the same query (bound over empty tables of the datasets' schema), so the release step
downstream sees what it sees from DuckDB.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from sandbox.core.errors import EnclaveError, ResultTooLarge, SandboxError
from sandbox.core.settings import Settings
from sandbox.core.wording import counted
from sandbox.enclave.catalog import Catalog
from sandbox.enclave.enclave import LOCKDOWN, limits_failure
from sandbox.enclave.warehouse import dataset_dir
from sandbox.engines.spark_sql import to_spark

__all__ = ["SparkEngine", "spark_session"]

_LOCK = threading.Lock()
_SESSION: Any = None


def spark_session(master: str, *, shuffle_partitions: int = 8) -> Any:
    """This process's Spark session (created once; later calls return the same one)."""
    global _SESSION
    with _LOCK:
        if _SESSION is None:
            from pyspark.sql import SparkSession

            _SESSION = (
                SparkSession.builder.master(master)
                .appName("sandbox-engine")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.catalogImplementation", "in-memory")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.ansi.enabled", "false")
                .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
                .getOrCreate()
            )
            _SESSION.sparkContext.setLogLevel("ERROR")
        return _SESSION


def _duckdb_types(schema: pa.Schema) -> dict[str, str]:
    """A Parquet file's column DuckDB types, as the enclave's catalog names them."""
    con = duckdb.connect(config=dict(LOCKDOWN))
    try:
        con.register("e", schema.empty_table())
        relation = con.sql("SELECT * FROM e")
        return {n: str(t) for n, t in zip(relation.columns, relation.types, strict=True)}
    finally:
        con.close()


#: How often a run past its time is cancelled again (seconds).
CANCEL_EVERY_S = 0.5
#: How many queries' DuckDB result schemas are kept (a plan is run again and again).
SCHEMAS_KEPT = 512


class SparkEngine:
    """:class:`~sandbox.engines.base.Engine` over the warehouse, on PySpark."""

    name = "spark"

    def __init__(
        self, settings: Settings, catalog: Catalog, *, shuffle_partitions: int = 8
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.shuffle_partitions = shuffle_partitions
        self.timeout_s = settings.query_timeout_s
        self.max_result_rows = settings.max_result_rows
        self._views: dict[Path, tuple[str, pa.Schema, dict[str, str]]] = {}
        self._schemas: dict[tuple[str, tuple[str, ...]], pa.Schema] = {}
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        return spark_session(self.settings.spark_master, shuffle_partitions=self.shuffle_partitions)

    def _view(self, dataset: str) -> tuple[str, pa.Schema, dict[str, str]]:
        """The temporary view of the dataset's current version (created once)."""
        record = self.catalog.get(dataset)
        path = dataset_dir(self.settings.warehouse_dir, dataset, record.version)
        with self._lock:
            if path not in self._views:
                parts = sorted(path.glob("part-*.parquet"))
                if not parts:
                    raise EnclaveError(
                        f"{dataset} version {record.version} is not in the warehouse",
                        rule="engine.warehouse",
                    )
                digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
                name = f"__sbx_{dataset.replace('.', '_')}_v{record.version}_{digest}"
                self.session.read.parquet(str(path)).createOrReplaceTempView(name)
                schema = pq.read_schema(parts[0])
                self._views[path] = (name, schema, _duckdb_types(schema))
            return self._views[path]

    def _duckdb_schema(self, query: exp.Expr, schemas: dict[str, pa.Schema]) -> pa.Schema:
        """The schema DuckDB gives ``query``: bound over empty tables of the datasets'."""
        sql = query.sql(dialect="duckdb")
        key = (sql, tuple(sorted(schemas)))
        with self._lock:
            known = self._schemas.get(key)
        if known is None:
            known = self._bind(sql, schemas)
            with self._lock:
                if len(self._schemas) >= SCHEMAS_KEPT:
                    self._schemas.clear()
                self._schemas[key] = known
        return known

    def _bind(self, sql: str, schemas: dict[str, pa.Schema]) -> pa.Schema:
        con = duckdb.connect(config=dict(LOCKDOWN))
        try:
            for i, (dataset, schema) in enumerate(schemas.items()):
                domain, _, table = dataset.partition(".")
                con.register(f"__e{i}", schema.empty_table())
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{domain}"')
                con.execute(f'CREATE TABLE "{domain}"."{table}" AS SELECT * FROM __e{i}')
            return con.sql(sql).to_arrow_table().schema
        finally:
            con.close()

    def run(
        self,
        query: exp.Expr | str,
        *,
        max_rows: int | None,
        before: Callable[[Any], None] | None = None,
    ) -> pa.Table:
        if isinstance(query, str):  # the rewrite's DuckDB text: transpiled from its AST
            query = sqlglot.parse_one(query, read="duckdb")
        limit = self.max_result_rows if max_rows is None else max_rows
        datasets = sorted({f"{t.db}.{t.name}".lower() for t in query.find_all(exp.Table) if t.db})
        views: dict[str, str] = {}
        schemas: dict[str, pa.Schema] = {}
        columns: dict[str, dict[str, str]] = {}
        for dataset in datasets:
            views[dataset], schemas[dataset], columns[dataset] = self._view(dataset)
        sql = to_spark(query, views, columns)  # refuses what is not computed alike
        target = self._duckdb_schema(query, schemas)
        if before is not None:  # the views read the versions they were made of
            before(None)
        session = self.session
        context = session.sparkContext
        group = f"sbx-{uuid.uuid4().hex}"
        done, expired = threading.Event(), threading.Event()

        def cancel() -> None:
            # Again and again until the run ends: a job still being planned when the time
            # is up is not in the group yet, and one cancellation would miss it.
            if done.wait(self.timeout_s):
                return
            expired.set()
            while not done.is_set():
                context.cancelJobGroup(group)
                done.wait(CANCEL_EVERY_S)

        canceller = threading.Thread(target=cancel, name=f"{group}-timer", daemon=True)
        try:
            context.setJobGroup(group, "sandbox stats query", interruptOnCancel=True)
            canceller.start()
            table = session.sql(sql).limit(limit + 1).toArrow()
        except SandboxError:
            raise
        except Exception:
            # Timeout, memory or an error raised by a row: one message for all.
            raise limits_failure() from None
        finally:
            done.set()
            context.setJobGroup("", "", interruptOnCancel=False)
        if expired.is_set():  # a result that came in as the time ran out is not kept
            raise limits_failure()
        if table.num_rows > limit:
            raise ResultTooLarge(
                f"the result has more than {counted(limit, 'row')}",
                rule="enclave.max_result_rows",
            )
        return _as(table, target)

    def close(self) -> None:
        """Drop this engine's views; the process's session stays for other engines."""
        with self._lock:
            views, self._views = self._views, {}
        if _SESSION is not None:
            for name, _, _ in views.values():
                try:
                    _SESSION.catalog.dropTempView(name)
                except Exception:  # the JVM is gone (SIGTERM to the whole process group,
                    break  # as systemd sends it): its views went with it


def _as(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Spark's result in DuckDB's column names and types (the release step expects them)."""
    if table.num_columns != len(schema):
        raise limits_failure()
    columns = []
    for column, field in zip(table.columns, schema, strict=True):
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise limits_failure() from None
    return pa.table(columns, schema=schema)
