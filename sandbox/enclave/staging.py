"""Uploads waiting to be registered: quotas per account and in total, and their cleaning.

A bureau uploads a source file (``POST /v1/uploads``) into ``HOME/staging/uploads/``
as ``up_<id>.<suffix>`` plus its record ``up_<id>.upload.json`` (owner, domain, size;
two dots, so no upload's own name, ``up_<id>`` and one suffix, is ever a record's), then
registers it.  A request's body is capped by ``max_upload_bytes``; what stays on
disk between upload and registration is capped here:

- per account, ``max_staging_bytes_per_account`` (413 ``staging_quota``), and
- in total, ``max_staging_bytes`` (507 ``staging_full``),

checked while the body streams, so an upload is refused as soon as it would pass
either.  An account's usage is its finished uploads on disk plus its uploads in
progress in this process; the total is every file on disk (any process's, finished
or not) with this process's uploads in progress at their current size.  The
directory is re-read every :data:`RESCAN_BYTES` of an upload, so uploads in progress
in other server processes count late: per account once they finish, in total up
to that much late each.  Uploads not registered within
``upload_ttl_s`` are deleted by :meth:`Staging.sweep`, which the server runs at
start and every ``staging_sweep_s``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sandbox.core.errors import SandboxError
from sandbox.core.settings import Settings

#: The name ending of an upload's record file: ``up_<id>.upload.json``.
RECORD_SUFFIX = ".upload.json"

__all__ = ["RECORD_SUFFIX", "RESCAN_BYTES", "Staging", "StagingFull", "StagingQuota", "UploadQuota"]

RESCAN_BYTES = 16 << 20
"""How far an upload grows between two readings of the staging directory."""


class StagingQuota(SandboxError):
    """The account's unregistered uploads would pass ``max_staging_bytes_per_account``."""

    code = "staging_quota"
    status = 413


class StagingFull(SandboxError):
    """Unregistered uploads of all accounts would pass ``max_staging_bytes``."""

    code = "staging_full"
    status = 507


@dataclass(frozen=True)
class Usage:
    """Bytes on disk: per owner (finished uploads) and in total (finished or not)."""

    by_owner: dict[str, int]
    total: int
    sizes: dict[str, int]  # file name -> bytes


class Staging:
    """The uploads directory of one home, for one server process."""

    def __init__(
        self,
        directory: Path,
        settings: Callable[[], Settings],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._inflight: dict[Path, tuple[str, int]] = {}

    def ready(self) -> Path:
        """The directory (created 0700 if missing)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.directory

    def usage(self) -> Usage:
        """What the directory holds now (files vanishing meanwhile are skipped)."""
        sizes: dict[str, int] = {}
        owners: dict[str, str] = {}
        for path in self.ready().iterdir():
            try:
                if path.name.endswith(RECORD_SUFFIX):
                    info = json.loads(path.read_text())
                    owners[str(info["file"])] = str(info["owner"])
                else:
                    sizes[path.name] = path.stat().st_size
            except (OSError, ValueError, KeyError, TypeError):
                continue
        by_owner: dict[str, int] = {}
        for name, owner in owners.items():
            by_owner[owner] = by_owner.get(owner, 0) + sizes.get(name, 0)
        return Usage(by_owner, sum(sizes.values()), sizes)

    def quota(self, account: str, path: Path) -> UploadQuota:
        """Start counting the upload being written to ``path`` for ``account``."""
        with self._lock:
            self._inflight[path] = (account, 0)
        return UploadQuota(self, account, path)

    def _grow(self, path: Path, size: int) -> dict[Path, tuple[str, int]]:
        """Record the upload's size; returns this process's uploads in progress."""
        with self._lock:
            self._inflight[path] = (self._inflight[path][0], size)
            return dict(self._inflight)

    def _done(self, path: Path) -> None:
        with self._lock:
            self._inflight.pop(path, None)

    def sweep(self) -> list[str]:
        """Delete uploads older than ``upload_ttl_s`` (and files left without a partner);
        returns the deleted names.  Uploads in progress in this process are kept."""
        ttl = self.settings().upload_ttl_s
        now = self.clock()
        with self._lock:
            busy = {p.name for p in self._inflight}
        removed = []
        for path in self.ready().iterdir():
            try:
                if path.name in busy or now - path.stat().st_mtime <= ttl:
                    continue
                path.unlink()
            except OSError:
                continue
            removed.append(path.name)
        return sorted(removed)


class UploadQuota:
    """The quotas of one upload in progress: :meth:`check` its size as it grows."""

    def __init__(self, staging: Staging, account: str, path: Path) -> None:
        self.staging = staging
        self.account = account
        self.path = path
        self._usage: Usage | None = None
        self._scanned_at = 0

    def check(self, size: int) -> None:
        """Raise :class:`StagingQuota` or :class:`StagingFull` if ``size`` bytes would pass."""
        if self._usage is None or size - self._scanned_at >= RESCAN_BYTES:
            self._usage = self.staging.usage()
            self._scanned_at = size
        inflight = self.staging._grow(self.path, size)
        usage = self._usage
        limits = self.staging.settings()
        # Uploads in progress here count at their current size, not as last read on disk.
        account_bytes = usage.by_owner.get(self.account, 0) + sum(
            n for account, n in inflight.values() if account == self.account
        )
        if account_bytes > limits.max_staging_bytes_per_account:
            raise StagingQuota(
                "your unregistered uploads would pass "
                f"{limits.max_staging_bytes_per_account} bytes: register or wait for "
                "older ones to expire",
                rule="api.staging_quota",
            )
        read = sum(usage.sizes.get(p.name, 0) for p in inflight)
        total = usage.total - read + sum(n for _, n in inflight.values())
        if total > limits.max_staging_bytes:
            raise StagingFull("the staging area is full; try again later", rule="api.staging_full")

    def write(self, out: BinaryIO, chunk: bytes, size: int) -> None:
        """Write ``chunk`` of the upload (``size`` bytes with it), once :meth:`check` passes."""
        self.check(size)  # before the bytes land: a refused upload never passes a quota
        out.write(chunk)

    def close(self) -> None:
        self.staging._done(self.path)
