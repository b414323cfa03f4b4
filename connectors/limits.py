"""What one ingestion may cost: the limits a source is parsed under.

An uploaded or imported file is parsed by a child process (``connectors.convert``)
that cannot take the server with it: the operating system bounds its memory, CPU
time, output size and open files, the parent kills it after a wall-clock timeout,
and the child itself refuses input whose decompressed size, row count, nesting
depth or line length is past the limits here while it streams.  The values come
from the deployment's settings (``ingest_*``, ``docs/settings.md``).

This module is imported by the child, so it imports nothing of ``sandbox``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.core.settings import Settings

__all__ = ["OPEN_FILES", "IngestLimits"]

OPEN_FILES = 64
"""Open files the child may hold (``RLIMIT_NOFILE``): the input, the output, pyarrow's own."""


@dataclass(frozen=True, kw_only=True)
class IngestLimits:
    """The bounds of one source's parse (defaults: those of :class:`Settings`)."""

    memory_bytes: int = 4 << 30
    """Address space of the child (``RLIMIT_AS``; with cgroup v2 also ``memory.max``)."""
    cpu_s: int = 600
    """CPU seconds of the child (``RLIMIT_CPU``), all its threads together."""
    timeout_s: float = 600.0
    """Wall-clock seconds before the parent kills the child."""
    max_output_bytes: int = 8 << 30
    """Largest file the child may write (``RLIMIT_FSIZE``): the converted table."""
    max_bytes: int = 1 << 30
    """Bytes of data after decompression: CSV/JSON text, or decoded Parquet/Arrow columns."""
    max_rows: int = 50_000_000
    """Rows of the table."""
    max_depth: int = 64
    """Nesting of a JSON value, or of a Parquet/Arrow column type."""
    max_line_bytes: int = 1 << 20
    """Longest line of CSV or JSON-lines text, without its newline."""
    concurrency: int = 2
    """Children parsing at once on the host (all server processes): the others wait."""

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(
            memory_bytes=settings.ingest_memory_bytes,
            cpu_s=settings.ingest_cpu_s,
            timeout_s=settings.ingest_timeout_s,
            max_output_bytes=settings.ingest_max_output_bytes,
            max_bytes=settings.ingest_max_bytes,
            max_rows=settings.ingest_max_rows,
            max_depth=settings.ingest_max_depth,
            max_line_bytes=settings.ingest_max_line_bytes,
            concurrency=settings.ingest_concurrency,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IngestLimits:
        return cls(**values)
