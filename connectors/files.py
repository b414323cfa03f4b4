"""File connectors: CSV, Parquet, newline-delimited JSON and Arrow IPC, read with pyarrow.

A file is parsed in two steps, so that parsing never holds the enclave's writer:

1. :meth:`FileSource.prepare` (no lock): copy the file into the registration's private
   work directory, hashing the very bytes copied, and convert the copy to an Arrow IPC
   file in a confined child process (:mod:`connectors.isolation`); then check the
   finished file (schema nesting, row count, full validation) in this process.
2. :meth:`FinishedFile.load_into` (under the writer): memory-map the finished file and
   create the table from it.

Provenance records the source's own name (an upload's file name, a path under
``imports/``, the command line's file name) and its SHA-256, never a server path.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc

from connectors.base import LoadedSource, load_arrow
from connectors.convert import COMPRESSIONS, OUTPUT
from connectors.isolation import convert_isolated, refused
from connectors.limits import IngestLimits
from sandbox.core.errors import ConnectorError

__all__ = ["FORMATS", "FileSource", "FinishedFile", "detect_format"]

FORMATS: dict[str, tuple[str, ...]] = {
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
    "json": (".jsonl", ".ndjson", ".json"),
    "arrow": (".arrow", ".arrows", ".ipc", ".feather"),
}


def detect_format(path: Path) -> str:
    """The format named by the suffix (before a compression suffix: ``x.csv.gz`` is CSV)."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) > 1 and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    for name, known in FORMATS.items():
        if suffix in known:
            return name
    raise ConnectorError(
        f"cannot tell the format of '{path.name}' from its extension; "
        f"pass --format ({', '.join(FORMATS)})",
        rule="connector.format",
    )


def _stage(path: Path, name: str, workdir: Path) -> tuple[Path, str]:
    """Copy the source into the work directory, hashing the very bytes copied."""
    staged = workdir / f"input{path.suffix.lower()}"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as src, open(staged, "xb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except FileNotFoundError:
        raise ConnectorError(
            f"source file '{name}' does not exist", rule="connector.missing"
        ) from None
    except IsADirectoryError:
        raise ConnectorError(f"source '{name}' is a directory", rule="connector.missing") from None
    except PermissionError:
        raise ConnectorError(
            f"source file '{name}' is not readable", rule="connector.access"
        ) from None
    return staged, digest.hexdigest()


@dataclass(frozen=True)
class FinishedFile:
    """A source already converted to an Arrow IPC file: loading it is the only locked step."""

    path: Path
    loaded: LoadedSource
    rows: int

    @property
    def connector(self) -> str:
        return self.loaded.connector

    def check(self, limits: IngestLimits) -> None:
        """Refuse a file the child should not have written (its rows, nesting, validity)."""
        with pa.memory_map(str(self.path)) as source:
            try:
                reader = ipc.open_file(source)
                rows = 0
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    batch.validate(full=True)
                    rows += batch.num_rows
            except (pa.ArrowException, OSError, ValueError):
                raise refused("the converted table is not valid Arrow") from None
        if rows != self.rows or rows > limits.max_rows:
            raise refused(f"row count above {limits.max_rows} (ingest_max_rows)")

    def load_into(self, con: duckdb.DuckDBPyConnection, target: str) -> LoadedSource:
        with pa.memory_map(str(self.path)) as source:
            table = ipc.open_file(source).read_all()  # zero-copy: pages of the file
            load_arrow(con, target, table, what=self.loaded.connector)
        return self.loaded


@dataclass(frozen=True)
class FileSource:
    """A file on the server, in one of :data:`FORMATS` (CSV and JSON may be compressed).

    ``name`` is what provenance records (default: the file's name).
    """

    path: Path
    staging_dir: Path
    format: str | None = None
    name: str | None = None

    @property
    def connector(self) -> str:
        return self.format or detect_format(Path(self.name or Path(self.path).name))

    def prepare(self, workdir: Path, limits: IngestLimits) -> FinishedFile:
        """Stage, hash and convert the file in a confined child (no enclave lock is held)."""
        fmt = self.connector
        if fmt not in FORMATS:
            raise ConnectorError(
                f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}", rule="connector.format"
            )
        name = self.name or Path(self.path).name
        staged, digest = _stage(Path(self.path), name, workdir)
        compression = COMPRESSIONS.get(staged.suffix) if fmt in ("csv", "json") else None
        output = workdir / OUTPUT
        try:
            rows = convert_isolated(
                source=staged,
                fmt=fmt,
                compression=compression,
                workdir=workdir,
                output=output,
                limits=limits,
            )
        finally:
            staged.unlink(missing_ok=True)
        finished = FinishedFile(output, LoadedSource(connector=fmt, uri=name, sha256=digest), rows)
        finished.check(limits)
        return finished

    def load_into(self, con: duckdb.DuckDBPyConnection, target: str) -> LoadedSource:
        """Prepare (default limits) and load in one step; the registry calls the two apart."""
        workdir = self.staging_dir / "work" / uuid.uuid4().hex
        workdir.mkdir(parents=True, mode=0o700)
        try:
            return self.prepare(workdir, IngestLimits()).load_into(con, target)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
