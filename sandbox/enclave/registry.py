"""Registering a dataset: load, classify, record, certify, as one atomic step.

Order of effects, chosen so that a failure leaves nothing half-done:
1. the classification file is parsed and validated (no I/O on the enclave yet);
2. a :class:`~connectors.base.StagedSource` (a file, a PostgreSQL table or query, the
   demo generator) reads, parses or generates its rows into a finished Arrow file in a
   private work directory under ``staging/work/``, within the ``ingest_*`` limits and
   one of ``ingest_concurrency`` turns on the host, while queries go on: the enclave's
   writer is not taken yet;
3. inside one DuckDB transaction, under the writer, the connector replaces the table
   (from the finished file), a generated entity key is numbered in, its schema is checked
   against the classification and its ranked copy written; any error rolls back, so the
   previous version (or nothing) stays.  On the host console the server processes of the
   same home let go of the enclave first (:func:`~sandbox.enclave.shared.exclusive_with_servers`);
4. the control-plane rows (dataset, version history) are written in one transaction
   that commits only after the DuckDB commit succeeded;
5. the work directory is removed, whatever happened;
6. the signed certificate is written to the home (and kept in the version history).

With ``engine="spark"`` the rows are loaded, checked and measured in the same DuckDB
transaction (so the certificate and the quality report are computed exactly as for
DuckDB), then, still inside it and with the catalog's row locked for the new version,
written as Parquet to a staged directory of the warehouse
(:mod:`sandbox.enclave.warehouse`), renamed into place as ``v<version>``, and the table
is dropped from the enclave before its COMMIT: the rows live only in the warehouse.  A
failure before the control-plane commit removes the new directory, and the previous
version (in either engine) stays as it was; after the commit the previous version's
directory, if it had one, is removed.  Writing Parquet needs only pyarrow: registering
for Spark works without pyspark or Java, and querying such a dataset is what needs them.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from audit.keys import SigningKey
from connectors.base import LoadedSource, Source, StagedSource
from connectors.isolation import parse_slot
from connectors.limits import IngestLimits
from sandbox.core.classification import DatasetSpec, validate_against_schema
from sandbox.core.db import dataset_versions, datasets
from sandbox.core.errors import ConnectorError, Forbidden, InvalidInput, SandboxError
from sandbox.core.settings import Settings
from sandbox.core.timeutil import now_rfc3339
from sandbox.enclave.catalog import DatasetRecord, schema_sha256, table_columns
from sandbox.enclave.certificates import issue_certificate
from sandbox.enclave.enclave import Enclave
from sandbox.enclave.entity_hashes import check_entity_hashes
from sandbox.enclave.generated_keys import number_rows
from sandbox.enclave.quality import measure_quality
from sandbox.enclave.quality_math import report_sha256
from sandbox.enclave.ranked_rows import build_ranked
from sandbox.enclave.shared import SharedEnclave, exclusive_with_servers
from sandbox.enclave.warehouse import publish, remove_version, write_staged

__all__ = ["ENGINES", "Registration", "check_engine", "register_dataset", "schema_sha256"]

#: Where a registered dataset's rows live: the enclave file, or Spark's Parquet warehouse.
ENGINES = ("duckdb", "spark")

_EXPORT_BATCH_ROWS = 65_536

WORK_TTL_S = 86_400
"""A work directory older than this was left by a killed process and is removed."""


@dataclass(frozen=True)
class Registration:
    record: DatasetRecord
    certificate: dict[str, Any]
    replaced: bool


def check_engine(name: str) -> str:
    """``name`` if it is an engine a dataset can be registered to; refused otherwise."""
    if name not in ENGINES:
        raise InvalidInput(f"engine must be one of {', '.join(ENGINES)}", rule="registry.engine")
    return name


def _quoted(spec: DatasetSpec) -> str:
    return f'"{spec.domain}"."{spec.table}"'


def register_dataset(
    *,
    settings: Settings,
    control: Engine,
    enclave: Enclave,
    key: SigningKey,
    spec: DatasetSpec,
    source: Source | StagedSource,
    registered_by: str,
    allowed_domains: frozenset[str] | None = None,
    procedure: dict[str, Any] | None = None,
    engine: str = "duckdb",
) -> Registration:
    """Load ``source`` as dataset ``spec.id`` (replacing any previous version atomically).

    ``control``: the control-plane database.  ``procedure``: the registration procedure's
    record (who accepted and reviewed it, the publicity window: ``sandbox.governance``),
    carried in the certificate; none on the host console's direct path.  ``engine``:
    where the rows live, ``duckdb`` (the enclave) or ``spark`` (the warehouse).
    """
    check_engine(engine)
    if allowed_domains is not None and spec.domain not in allowed_domains:
        raise Forbidden(
            f"registering in domain '{spec.domain}' is outside this account's domains",
            rule="registry.domain",
        )
    limits = IngestLimits.from_settings(settings)
    with _workdir(settings.staging_dir) as workdir:
        if isinstance(source, StagedSource):
            with parse_slot(settings.home, limits):
                ready = source.prepare(workdir, limits)
        else:
            ready = source
        record_row, certificate, replaced, typed = _load(
            enclave,
            control,
            key,
            spec,
            ready,
            registered_by,
            procedure,
            k=settings.k_floor,
            engine=engine,
            warehouse_dir=settings.warehouse_dir,
        )
    _write_files(settings, typed, certificate)
    return Registration(DatasetRecord.from_row(record_row), certificate, replaced)


@contextmanager
def _workdir(staging_dir: Path) -> Iterator[Path]:
    """A private directory for one registration's files, removed afterwards."""
    work = staging_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in work.iterdir():  # left by a process killed mid-registration
        with suppress(OSError):
            if now - old.stat().st_mtime > WORK_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
    path = work / uuid.uuid4().hex
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _servers_yield(enclave: Enclave) -> AbstractContextManager[None]:
    """Outside a server (the host console), ask the server processes on this home to let go
    of the enclave for the swap-in; a server's own enclave does so in its writer."""
    if isinstance(enclave, SharedEnclave):
        return nullcontext()
    return exclusive_with_servers(enclave.path.parent)


def _load(
    enclave: Enclave,
    control: Engine,
    key: SigningKey,
    spec: DatasetSpec,
    source: Source,
    registered_by: str,
    procedure: dict[str, Any] | None = None,
    *,
    k: int,
    engine: str,
    warehouse_dir: Path,
) -> tuple[Any, dict[str, Any], bool, DatasetSpec]:
    """The locked part: replace the table, check it, evaluate its quality (counts only,
    small ones withheld below ``k``), record it; all or nothing.  For ``spark`` the
    table moves to the warehouse before the commits; the previous version's directory
    (if any) is removed after them."""
    published: list[int] = []  # the warehouse version this call put in place
    try:
        result, previous = _load_locked(
            enclave,
            control,
            key,
            spec,
            source,
            registered_by,
            procedure,
            k=k,
            engine=engine,
            warehouse_dir=warehouse_dir,
            published=published,
        )
    except BaseException:
        for version in published:  # the catalog never named it
            remove_version(warehouse_dir, spec.id, version)
        raise
    if previous is not None and previous.engine == "spark":  # replaced: no longer named
        remove_version(warehouse_dir, spec.id, previous.version)
    return result


def _load_locked(
    enclave: Enclave,
    control: Engine,
    key: SigningKey,
    spec: DatasetSpec,
    source: Source,
    registered_by: str,
    procedure: dict[str, Any] | None,
    *,
    k: int,
    engine: str,
    warehouse_dir: Path,
    published: list[int],
) -> tuple[tuple[Any, dict[str, Any], bool, DatasetSpec], Any]:
    with _servers_yield(enclave), enclave.writer() as con:
        con.execute("BEGIN TRANSACTION")
        committed = False  # the table's transaction: nothing to roll back once it committed
        try:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{spec.domain}"')
            loaded: LoadedSource = source.load_into(con, _quoted(spec))
            number_rows(con, spec)  # where the classification has the enclave make the key
            schema = table_columns(con, spec.domain, spec.table)
            typed = validate_against_schema(spec, schema)
            (row_count,) = con.execute(f"SELECT count(*) FROM {_quoted(spec)}").fetchone() or (0,)
            check_entity_hashes(con, _quoted(spec), spec.entity_key)
            build_ranked(con, typed, _quoted(spec), in_enclave=engine == ENGINES[0])
            quality = measure_quality(con, typed, k=k, evaluated_at=now_rfc3339())
            with control.begin() as cp:
                previous = cp.execute(
                    sa.select(datasets.c.version, datasets.c.engine)
                    .where(datasets.c.id == spec.id)
                    .with_for_update()
                ).first()
                record_row, certificate, replaced = _record(
                    cp,
                    typed,
                    loaded,
                    schema,
                    int(row_count),
                    registered_by,
                    key,
                    procedure,
                    quality=quality,
                    engine=engine,
                    entity_hashes_checked=True,
                )
                if engine == "spark":
                    _move_to_warehouse(con, spec, warehouse_dir, int(record_row.version), published)
                con.execute("COMMIT")
                committed = True
        except Exception as exc:
            if committed:
                # The table is in, its catalog record is not: runs check each table's columns
                # against its version before reading (startup too) until it is registered again.
                raise ConnectorError(
                    f"{spec.id} was loaded but its catalog record could not be written "
                    f"({type(exc).__name__}): register it again",
                    rule="registry.catalog",
                ) from exc
            con.execute("ROLLBACK")
            if isinstance(exc, SandboxError):
                raise
            raise ConnectorError(
                f"loading {spec.id} failed ({type(exc).__name__}); the enclave is unchanged",
                rule="registry.load",
            ) from exc
    return (record_row, certificate, replaced, typed), previous


def _move_to_warehouse(
    con: Any, spec: DatasetSpec, warehouse_dir: Path, version: int, published: list[int]
) -> None:
    """Write the loaded table as the version's Parquet directory and drop it from the
    enclave (inside the enclave's transaction: its COMMIT comes after)."""
    con.complete()  # an earlier fetchone() left its result open; the relation API refuses that
    reader = con.sql(f"SELECT * FROM {_quoted(spec)}").to_arrow_reader(_EXPORT_BATCH_ROWS)
    try:
        staged = write_staged(warehouse_dir, spec.id, version, reader, reader.schema)
    finally:
        reader.close()  # the open result would hold the table the DROP below removes
    try:
        publish(staged, warehouse_dir, spec.id, version)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    published.append(version)
    con.execute(f"DROP TABLE {_quoted(spec)}")


def _record(
    cp: sa.Connection,
    spec: DatasetSpec,
    loaded: LoadedSource,
    schema: dict[str, str],
    row_count: int,
    registered_by: str,
    key: SigningKey,
    procedure: dict[str, Any] | None = None,
    *,
    quality: dict[str, Any] | None = None,
    engine: str | None = None,
    entity_hashes_checked: bool,
) -> tuple[Any, dict[str, Any], bool]:
    """``quality``: the version's report (none on a reclassification), bound by the
    certificate; ``engine``: where its rows live (``None``: the previous version's place);
    ``entity_hashes_checked``: the caller ran ``enclave.entity_hashes`` on these rows."""
    previous = cp.execute(
        sa.select(datasets.c.version, datasets.c.engine)
        .where(datasets.c.id == spec.id)
        .with_for_update()
    ).first()
    version = 1 if previous is None else previous.version + 1
    if engine is None:
        engine = "duckdb" if previous is None else previous.engine or "duckdb"
    now = now_rfc3339()
    schema_digest = schema_sha256(schema)
    classification = spec.to_dict()
    certificate = issue_certificate(
        {
            "dataset": spec.id,
            "version": version,
            "owner": spec.domain,
            "title": spec.title,
            "entity_key": spec.entity_key,
            "schema_sha256": schema_digest,
            "classification_sha256": spec.sha256(),
            "source": {"connector": loaded.connector, "uri": loaded.uri, "sha256": loaded.sha256},
            "row_count": row_count,
            "engine": engine,
            "issued_at": now,
            "registered_by": registered_by,
            **({"procedure": procedure} if procedure is not None else {}),
            **(
                {"quality": {"sha256": report_sha256(quality), "score": quality["score"]}}
                if quality is not None
                else {}
            ),
        },
        key,
    )
    values = {
        "domain": spec.domain,
        "name": spec.table,
        "title": spec.title,
        "description": spec.description,
        "entity_key": spec.entity_key,
        "row_count": row_count,
        "connector": loaded.connector,
        "source_uri": loaded.uri,
        "source_sha256": loaded.sha256,
        "loaded_at": now,
        "schema_sha256": schema_digest,
        "classification": classification,
        "classification_sha256": spec.sha256(),
        "version": version,
        "registered_by": registered_by,
        "engine": engine,
        "entity_hashes_checked": entity_hashes_checked,
    }
    if previous is None:
        cp.execute(sa.insert(datasets).values(id=spec.id, frozen=False, **values))
    else:
        cp.execute(sa.update(datasets).where(datasets.c.id == spec.id).values(**values))
    cp.execute(
        sa.insert(dataset_versions).values(
            dataset_id=spec.id,
            version=version,
            registered_at=now,
            registered_by=registered_by,
            connector=loaded.connector,
            source_uri=loaded.uri,
            source_sha256=loaded.sha256,
            row_count=row_count,
            schema_sha256=schema_digest,
            classification_sha256=spec.sha256(),
            engine=engine,
            certificate=certificate,
            **({"quality": quality} if quality is not None else {}),  # else SQL NULL
        )
    )
    row = cp.execute(sa.select(datasets).where(datasets.c.id == spec.id)).one()
    return row, certificate, previous is not None


def _write_files(settings: Settings, spec: DatasetSpec, certificate: dict[str, Any]) -> None:
    version = certificate["certificate"]["version"]
    settings.certificates_dir.mkdir(parents=True, exist_ok=True)
    cert_path = settings.certificates_dir / f"{spec.id}.v{version}.json"
    cert_path.write_text(json.dumps(certificate, indent=2, ensure_ascii=False) + "\n")
