"""The file a registration application names, kept from application to certificate.

An upload is moved (its record in the uploads directory removed), an import copied,
into ``staging/registrations/<application>/`` (0700), with its SHA-256: the certificate
is issued only for those bytes, and the directory goes when the application closes.
In an encrypted home the kept file is sealed (:mod:`sandbox.core.sealed_files`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.core.keyring import Keyring
from sandbox.core.sealed_files import plain_digest, seal_copy

__all__ = ["SourceFile", "discard", "keep", "kept_directory"]


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


def keep(directory: Path, source: SourceFile, keys: Keyring | None = None) -> dict[str, Any]:
    """Keep ``source`` in ``directory`` (new); what the application records of it.

    An upload is already sealed (in an encrypted home); an import is sealed as it is
    copied.  Bytes and SHA-256 describe the plain bytes (what the bureau can check)."""
    directory.mkdir(parents=True, mode=0o700)
    kept = directory / Path(source.name).name
    if source.move:
        shutil.move(source.path, kept)
        for extra in source.also_remove:
            extra.unlink(missing_ok=True)
    else:
        seal_copy(source.path, kept, keys)
    sha256, size = plain_digest(kept, keys)
    return {
        "file": kept.name,
        "name": source.name,
        "format": source.format,
        "bytes": size,
        "sha256": sha256,
    }


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
