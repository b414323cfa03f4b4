"""File connectors: CSV, Parquet, newline-delimited JSON and Arrow IPC, read with pyarrow."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from connectors.base import LoadedSource, load_arrow, safe_reason
from sandbox.core.errors import ConnectorError

__all__ = ["FORMATS", "FileSource", "detect_format"]

FORMATS: dict[str, tuple[str, ...]] = {
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
    "json": (".jsonl", ".ndjson", ".json"),
    "arrow": (".arrow", ".arrows", ".ipc", ".feather"),
}


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    for name, suffixes in FORMATS.items():
        if suffix in suffixes:
            return name
    raise ConnectorError(
        f"cannot tell the format of '{path.name}' from its extension; "
        f"pass --format ({', '.join(FORMATS)})",
        rule="connector.format",
    )


def _stage(path: Path, staging_dir: Path) -> tuple[Path, str]:
    """Copy the source into the staging directory, hashing the very bytes copied."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    staged = staging_dir / f"{uuid.uuid4().hex}{path.suffix}"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as src, open(staged, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except FileNotFoundError:
        staged.unlink(missing_ok=True)
        raise ConnectorError(
            f"source file '{path}' does not exist", rule="connector.missing"
        ) from None
    except IsADirectoryError:
        staged.unlink(missing_ok=True)
        raise ConnectorError(f"source '{path}' is a directory", rule="connector.missing") from None
    except PermissionError:
        staged.unlink(missing_ok=True)
        raise ConnectorError(
            f"source file '{path}' is not readable", rule="connector.access"
        ) from None
    return staged, digest.hexdigest()


def _open(path: Path, fmt: str) -> pa.RecordBatchReader:
    if fmt == "csv":
        return pacsv.open_csv(path)
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        return pa.RecordBatchReader.from_batches(pf.schema_arrow, pf.iter_batches())
    if fmt == "json":
        return pajson.read_json(path).to_reader()
    with open(path, "rb") as handle:
        is_file_format = handle.read(6) == b"ARROW1"
    if is_file_format:
        table = ipc.open_file(path).read_all()
        return table.to_reader()
    return ipc.open_stream(pa.memory_map(str(path)))


@dataclass(frozen=True)
class FileSource:
    """A file on the server, in one of :data:`FORMATS`."""

    path: Path
    staging_dir: Path
    format: str | None = None

    @property
    def connector(self) -> str:
        return self.format or detect_format(self.path)

    def load_into(self, con: duckdb.DuckDBPyConnection, target: str) -> LoadedSource:
        fmt = self.connector
        if fmt not in FORMATS:
            raise ConnectorError(
                f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}", rule="connector.format"
            )
        staged, digest = _stage(Path(self.path), self.staging_dir)
        try:
            try:
                reader = _open(staged, fmt)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise ConnectorError(
                    f"{fmt} input is malformed: {safe_reason(exc)}", rule="connector.parse"
                ) from None
            load_arrow(con, target, reader, what=fmt)
        finally:
            staged.unlink(missing_ok=True)
        uri = Path(os.path.abspath(self.path)).as_uri()
        return LoadedSource(connector=fmt, uri=uri, sha256=digest)
