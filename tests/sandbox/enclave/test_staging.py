"""Unregistered uploads: quotas per account and in total, counted as they stream, and the
sweep that deletes what outlived ``upload_ttl_s`` (at start and on a schedule)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from sandbox.core.settings import Settings
from sandbox.enclave.staging import RESCAN_BYTES, Staging, StagingFull, StagingQuota
from sandbox.services import Services


def finished(directory: Path, name: str, owner: str, size: int, *, age_s: float = 0) -> None:
    data = directory / f"{name}.csv"
    data.write_bytes(b"x" * size)
    (directory / f"{name}.upload.json").write_text(json.dumps({"owner": owner, "file": data.name}))
    if age_s:
        old = time.time() - age_s
        for path in (data, directory / f"{name}.upload.json"):
            os.utime(path, (old, old))


def staging(tmp_path: Path, **limits: int) -> Staging:
    settings = Settings(home=tmp_path / "home", **limits)
    return Staging(tmp_path / "uploads", lambda: settings)


def test_an_account_quota_counts_its_finished_and_streaming_uploads(tmp_path: Path) -> None:
    area = staging(tmp_path, max_staging_bytes_per_account=10_000, max_staging_bytes=100_000)
    finished(area.ready(), "up_a", "bureau-a", 6_000)
    finished(area.ready(), "up_b", "bureau-b", 9_000)
    mine = area.quota("bureau-a", area.directory / "up_new.csv")
    other = area.quota("bureau-a", area.directory / "up_other.csv")
    out = io.BytesIO()
    mine.write(out, b"y" * 3_000, 3_000)
    other.check(1_000)  # 6,000 + 3,000 + 1,000: exactly the quota
    with pytest.raises(StagingQuota) as refused:
        other.check(1_001)
    assert (refused.value.status, refused.value.rule) == (413, "api.staging_quota")
    mine.close()  # a finished or abandoned upload no longer counts as in progress
    other.check(4_000)
    # Another account is not held back by bureau-a's uploads.
    area.quota("bureau-b", area.directory / "up_c.csv").check(1_000)


def test_the_total_counts_every_file_once(tmp_path: Path) -> None:
    area = staging(tmp_path, max_staging_bytes_per_account=100_000, max_staging_bytes=20_000)
    finished(area.ready(), "up_a", "bureau-a", 8_000)
    partial = area.directory / "up_partial.csv"  # another process's upload in progress
    partial.write_bytes(b"z" * 5_000)
    streaming = area.directory / "up_here.csv"
    quota = area.quota("bureau-b", streaming)
    streaming.write_bytes(b"w" * 4_000)  # already on disk: counted at its streamed size only
    quota.check(7_000)
    with pytest.raises(StagingFull) as full:
        quota.check(7_001)
    assert (full.value.status, full.value.code) == (507, "staging_full")


def test_a_long_upload_rereads_the_directory(tmp_path: Path) -> None:
    limit = 3 * RESCAN_BYTES
    area = staging(tmp_path, max_staging_bytes_per_account=limit, max_staging_bytes=limit)
    quota = area.quota("bureau-a", area.directory / "up_long.csv")
    quota.check(RESCAN_BYTES)
    finished(area.ready(), "up_late", "bureau-z", 2 * RESCAN_BYTES)  # another process's
    quota.check(RESCAN_BYTES + 1)  # not re-read yet
    with pytest.raises(StagingFull):
        quota.check(2 * RESCAN_BYTES)


def test_the_sweep_deletes_what_outlived_its_time(tmp_path: Path) -> None:
    area = staging(tmp_path, upload_ttl_s=3600)
    finished(area.ready(), "up_old", "bureau-a", 10, age_s=7200)
    finished(area.ready(), "up_new", "bureau-a", 10)
    busy = area.directory / "up_busy.csv"
    busy.write_bytes(b"x")
    os.utime(busy, (time.time() - 7200, time.time() - 7200))
    quota = area.quota("bureau-a", busy)  # an upload still streaming here is kept
    assert area.sweep() == ["up_old.csv", "up_old.upload.json"]
    quota.close()
    assert area.sweep() == ["up_busy.csv"]
    assert sorted(p.name for p in area.directory.iterdir()) == ["up_new.csv", "up_new.upload.json"]


def test_the_server_sweeps_at_start(platform, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uploads = platform.settings.staging_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    finished(uploads, "up_stale", "bureau-a", 10, age_s=2 * 86_400)
    finished(uploads, "up_fresh", "bureau-a", 10)
    services = Services(platform.settings)
    services.start()
    try:
        assert sorted(p.name for p in uploads.iterdir()) == ["up_fresh.csv", "up_fresh.upload.json"]
    finally:
        services.stop()
