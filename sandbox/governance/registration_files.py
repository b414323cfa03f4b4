"""The file a registration application names, kept from application to certificate.

An upload is moved (its record in the uploads directory removed), an import copied,
into ``staging/registrations/<application>/`` (0700), with its SHA-256: the certificate
is issued only for those bytes, and the directory goes when the application closes.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SourceFile", "discard", "keep", "kept_directory", "sha256_of"]


@dataclass(frozen=True)
class SourceFile:
    """The file an application names: where it is now, and what provenance calls it."""

    path: Path
    name: str
    format: str | None = None
    move: bool = False
    """An upload (moved into the application's directory) or an import (copied)."""
    also_remove: tuple[Path, ...] = ()
    """Once moved: files that described it where it was (an upload's record)."""


def kept_directory(staging_dir: Path, app_id: str) -> Path:
    return staging_dir / "registrations" / app_id


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keep(directory: Path, source: SourceFile) -> dict[str, Any]:
    """Keep ``source`` in ``directory`` (new); what the application records of it."""
    directory.mkdir(parents=True, mode=0o700)
    kept = directory / Path(source.name).name
    if source.move:
        shutil.move(source.path, kept)
        for extra in source.also_remove:
            extra.unlink(missing_ok=True)
    else:
        shutil.copyfile(source.path, kept)
    return {
        "file": kept.name,
        "name": source.name,
        "format": source.format,
        "bytes": kept.stat().st_size,
        "sha256": sha256_of(kept),
    }


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
