"""The governed Parquet warehouse: where datasets registered with ``--engine spark`` live.

Layout, under :attr:`~sandbox.core.settings.Settings.warehouse_dir` (mode 0700, read only by
the engine's service account)::

    warehouse/<domain>/<table>/v<version>/part-*.parquet

One directory per registered version, written whole before the catalog names it, so a
reader that follows the catalog never sees a half-written version:

1. :func:`write_staged` writes the rows into a hidden directory beside the version's
   (``.v<version>.<random>.tmp``), in files of at most ``rows_per_file`` rows and row
   groups of ``row_group_rows``, each file fsynced (directories 0700, files 0600);
2. :func:`publish` renames it into place (a leftover of a killed registration under
   the same name, never named by the catalog, is removed first) and fsyncs the parent;
3. after the catalog's commit the previous version's directory is removed
   (:func:`remove_version`); if the commit fails the new one is (the same call).

The Parquet files are not encrypted by the sandbox: the warehouse relies on the storage
encryption of the cluster that holds it (docs/operations.md, "The Spark warehouse").
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ROWS_PER_FILE",
    "ROW_GROUP_ROWS",
    "dataset_dir",
    "parquet_files",
    "publish",
    "remove_version",
    "version_row_count",
    "write_staged",
]

ROWS_PER_FILE = 4_000_000
"""Rows per ``part-*.parquet`` file: big tables become several files Spark reads in parallel."""

ROW_GROUP_ROWS = 262_144
"""Rows per Parquet row group (the unit a reader skips or splits on)."""

STAGED_TTL_S = 86_400
"""A staged directory older than this was left by a killed process and is removed."""

_DIR_MODE = 0o700
_FILE_MODE = 0o600


def dataset_dir(warehouse_dir: Path, dataset_id: str, version: int) -> Path:
    """The directory of one version of a dataset (``domain.table``) in the warehouse."""
    domain, _, table = dataset_id.partition(".")
    if not domain or not table or "/" in dataset_id or dataset_id.startswith("."):
        raise ValueError(f"not a dataset id: {dataset_id!r}")
    if version < 1:
        raise ValueError(f"not a dataset version: {version}")
    return Path(warehouse_dir) / domain / table / f"v{version}"


def parquet_files(directory: Path) -> list[Path]:
    """The ``part-*.parquet`` files of one version directory, in order."""
    return sorted(Path(directory).glob("part-*.parquet"))


def version_row_count(directory: Path) -> int:
    """Rows of one version, from the files' footers (no data read); a missing or
    unreadable directory raises :class:`OSError` or pyarrow's error."""
    files = parquet_files(directory)
    if not files:
        raise FileNotFoundError(f"no part-*.parquet in {directory}")
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _private_dirs(root: Path, leaf: Path) -> None:
    """``leaf``'s parents from ``root`` down, created 0700 (existing ones left alone)."""
    root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    path = root
    for part in leaf.relative_to(root).parts:
        path = path / part
        try:
            path.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep(table_dir: Path) -> None:
    """Remove staged directories a killed process left (older than :data:`STAGED_TTL_S`)."""
    now = time.time()
    for old in table_dir.glob(".v*.tmp"):
        try:
            if now - old.stat().st_mtime > STAGED_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def write_staged(
    warehouse_dir: Path,
    dataset_id: str,
    version: int,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    *,
    rows_per_file: int = ROWS_PER_FILE,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> Path:
    """Write ``batches`` as the Parquet files of ``dataset_id`` version ``version`` into a
    staged directory beside the version's; return it (the caller publishes or removes it).

    Every file is fsynced, then the directory; an error removes what was written."""
    final = dataset_dir(warehouse_dir, dataset_id, version)
    table_dir = final.parent
    _private_dirs(Path(warehouse_dir), table_dir)
    _sweep(table_dir)
    staged = table_dir / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    staged.mkdir(mode=_DIR_MODE)
    try:
        _write_parts(staged, batches, schema, rows_per_file, row_group_rows)
        _fsync_dir(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _write_parts(
    staged: Path,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    rows_per_file: int,
    row_group_rows: int,
) -> None:
    part = 0
    writer: pq.ParquetWriter | None = None
    handle = None
    in_file = 0

    def close() -> None:
        nonlocal writer, handle, in_file
        if writer is not None and handle is not None:
            writer.close()
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        writer, handle, in_file = None, None, 0

    def open_next() -> None:
        nonlocal writer, handle, part, in_file
        path = staged / f"part-{part:05d}.parquet"
        part += 1
        in_file = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        handle = os.fdopen(fd, "wb")
        writer = pq.ParquetWriter(handle, schema, compression="zstd")

    try:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0

        def flush_group() -> None:
            nonlocal pending, pending_rows, in_file
            if not pending_rows:
                return
            if writer is None:
                open_next()
            assert writer is not None
            writer.write_table(
                pa.Table.from_batches(pending, schema=schema), row_group_size=row_group_rows
            )
            in_file += pending_rows
            pending, pending_rows = [], 0
            if in_file >= rows_per_file:
                close()

        for batch in batches:
            offset = 0
            while offset < batch.num_rows:
                room = min(row_group_rows - pending_rows, rows_per_file - in_file - pending_rows)
                piece = batch.slice(offset, room)
                offset += piece.num_rows
                pending.append(piece)
                pending_rows += piece.num_rows
                if pending_rows >= row_group_rows or in_file + pending_rows >= rows_per_file:
                    flush_group()
        flush_group()
        if part == 0:  # no rows: one empty file keeps the schema for the reader
            open_next()
        close()
    except BaseException:
        if handle is not None:
            handle.close()
        raise


def publish(staged: Path, warehouse_dir: Path, dataset_id: str, version: int) -> Path:
    """Rename a staged directory into place as the version's directory.

    Called while the catalog's row of the dataset is locked for the new version, so a
    directory already there under that name was left by a registration killed before
    its commit (the catalog never named it) and is removed first."""
    final = dataset_dir(warehouse_dir, dataset_id, version)
    if final.exists():
        shutil.rmtree(final)
    os.rename(staged, final)
    _fsync_dir(final.parent)
    return final


def remove_version(warehouse_dir: Path, dataset_id: str, version: int) -> None:
    """Remove one version's directory, if there is one (after the catalog stopped naming it,
    or when the commit that would have named it failed)."""
    path = dataset_dir(warehouse_dir, dataset_id, version)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
        try:
            _fsync_dir(path.parent)
        except OSError:
            pass
