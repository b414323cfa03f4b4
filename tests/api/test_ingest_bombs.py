"""Ingestion cannot take the server down (issue 21): bombs against a live server.

Each bomb is built at test time and is small on disk; the server runs with low
``ingest_*`` limits so the refusals are quick.  Every bomb must be refused with
``422 connector_error`` and rule ``ingest.failed``, audited, with the server still
answering and nothing left under ``staging/``.  Before the confined parser, the
nesting bomb killed the server (SIGSEGV in pyarrow) and the others registered.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import FAST_PUBLICITY, LiveServer, served

MAX_BYTES = 4 << 20
MAX_ROWS = 100_000
LIMITS = {
    "SANDBOX_INGEST_MAX_BYTES": str(MAX_BYTES),
    "SANDBOX_INGEST_MAX_ROWS": str(MAX_ROWS),
    "SANDBOX_INGEST_MAX_DEPTH": "64",
    "SANDBOX_INGEST_TIMEOUT_S": "60",
}

CLASSIFICATION = """
[dataset]
id = "health.bombs"
title = "Would-be dataset"
entity_key = "person_id"
[columns.person_id]
level = "L3"
role = "identifier"
[columns.district]
level = "L1"
role = "dimension"
[columns.amount]
level = "L2"
role = "measure"
bounds = [0, 1000]
"""

ROW = {"person_id": "P-0001", "district": "D01", "amount": 1.0}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served(tmp_path_factory.mktemp("bombs"), {**LIMITS, **FAST_PUBLICITY}) as server:
        yield server


def nesting_bomb(directory: Path) -> Path:
    """The outside test's file: one JSON line nested 20,000 deep (120 KB)."""
    path = directory / "nested.jsonl"
    path.write_text('{"a":' * 20_000 + "1" + "}" * 20_000 + "\n")
    return path


def gzip_bomb(directory: Path) -> Path:
    """Valid CSV rows, three times ``MAX_BYTES`` once decompressed (about 1000:1).

    Rows of 70 bytes: ``MAX_BYTES`` is reached before ``MAX_ROWS`` rows, whatever the
    reader has buffered, so the refusal's reason is always the same one.
    """
    line = b"P-0001" + b"0" * 56 + b",D01,1.0\n"
    path = directory / "rows.csv.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b"person_id,district,amount\n")
        for _ in range(3 * MAX_BYTES // (len(line) * 10_000) + 1):
            out.write(line * 10_000)
    return path


def zstd_bomb(directory: Path) -> Path:
    """Valid JSON lines, three times ``MAX_BYTES`` once decompressed."""
    line = (json.dumps(ROW) + "\n").encode()
    path = directory / "rows.jsonl.zst"
    with pa.CompressedOutputStream(str(path), "zstd") as out:
        for _ in range(3 * MAX_BYTES // (len(line) * 10_000) + 1):
            out.write(line * 10_000)
    return path


def parquet_row_bomb(directory: Path) -> Path:
    """Three times ``MAX_ROWS`` identical rows: a few KB of run-length-encoded Parquet."""
    rows = 3 * MAX_ROWS
    table = pa.table({name: pa.array([value] * rows) for name, value in ROW.items()})
    path = directory / "rows.parquet"
    pq.write_table(table, path)
    return path


def _headers(live: LiveServer, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.tokens[who]}"}


def _upload_and_register(live: LiveServer, path: Path, fmt: str) -> httpx.Response:
    """Upload, apply, accept, review and issue (the file is read at issue); the issue's
    response.  A refused issue leaves the application open: the bureau withdraws it."""
    headers = _headers(live, "bureau-health")
    upload = httpx.post(
        f"{live.url}/v1/uploads",
        params={"domain": "health", "filename": path.name},
        content=path.read_bytes(),
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert upload.status_code == 201, upload.text
    body = {
        "classification": CLASSIFICATION,
        "source": {"upload_id": upload.json()["upload_id"], "format": fmt},
        "update_frequency": "monthly",
    }
    admin = _headers(live, "admin")
    applied = httpx.post(f"{live.url}/v1/registrations", json=body, headers=headers, timeout=60)
    assert applied.status_code == 201, applied.text
    steps = f"{live.url}/v1/registrations/{applied.json()['id']}"
    for step, step_body in (("accept", {}), ("review", {"verdict": "approve", "comment": "ok"})):
        done = httpx.post(f"{steps}/{step}", json=step_body, headers=admin, timeout=60)
        assert done.status_code == 200, done.text
    deadline = time.time() + 60
    while True:
        issued = httpx.post(f"{steps}/issue", headers=admin, timeout=120)
        waiting = issued.status_code == 409 and "publicity" in issued.json()["rule"]
        if not waiting or time.time() > deadline:
            break
        time.sleep(0.2)
    if issued.status_code != 200:
        httpx.post(f"{steps}/withdraw", json={}, headers=headers, timeout=60)
    return issued


def _staged_files(live: LiveServer) -> list[Path]:
    return [p for p in (live.home / "staging").rglob("*") if not p.is_dir()]


BOMBS = [
    pytest.param(nesting_bomb, "json", r"nesting depth above 64", id="nesting"),
    pytest.param(gzip_bomb, "csv", rf"decompressed size above {MAX_BYTES} bytes", id="gzip"),
    pytest.param(zstd_bomb, "json", rf"decompressed size above {MAX_BYTES} bytes", id="zstd"),
    pytest.param(parquet_row_bomb, "parquet", rf"row count above {MAX_ROWS}", id="parquet-rows"),
]


@pytest.mark.parametrize(("build", "fmt", "reason"), BOMBS)
def test_bomb_is_refused_and_the_server_stays_up(
    live: LiveServer, tmp_path: Path, build, fmt: str, reason: str
) -> None:
    bomb = build(tmp_path)
    assert bomb.stat().st_size < 200_000, "bombs stay small on disk"
    response = None
    try:
        response = _upload_and_register(live, bomb, fmt)
    except httpx.TransportError:
        pass  # the server died: the assertions below say so
    assert httpx.get(f"{live.url}/health", timeout=10).status_code == 200, "server is down"
    assert live.proc is not None and live.proc.poll() is None
    assert response is not None
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "connector_error" and error["rule"] == "ingest.failed"
    assert re.search(rf"^ingest\.failed: {reason}", error["message"]), error["message"]
    assert "P-0001" not in response.text, "a refusal never echoes data"
    assert not _staged_files(live), "no upload, staged copy or work file is left"
    assert "Traceback" not in live.log()
    entries = httpx.get(
        f"{live.url}/v1/audit/entries",
        params={"action": "dataset.register", "decision": "deny", "newest_first": "true"},
        headers=_headers(live, "auditor"),
        timeout=10,
    ).json()["entries"]
    assert entries[0]["rule"] == "ingest.failed" and entries[0]["dataset"] == "health.bombs"


def test_a_legal_file_still_registers_under_the_same_limits(live: LiveServer, tmp_path) -> None:
    path = tmp_path / "visits.csv.gz"
    with gzip.open(path, "wb") as out:
        out.write(b"person_id,district,amount\n")
        out.write(b"".join(f"P-{i:04d},D0{i % 3},{i % 100}.5\n".encode() for i in range(500)))
    response = _upload_and_register(live, path, "csv")
    assert response.status_code == 200, response.text
    certificate = response.json()["certificate"]["certificate"]
    assert certificate["row_count"] == 500
    assert certificate["source"]["uri"] == "visits.csv.gz", "the uploaded name, not a path"
    assert str(live.home) not in response.text
    assert not _staged_files(live)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("a\x00b.csv", id="nul"),
        pytest.param("x" * 5000 + ".csv", id="long-name"),
        pytest.param("d/" * 2000 + "x.csv", id="long-path"),
        pytest.param("x" * 300 + ".csv", id="long-component"),
    ],
)
def test_bad_import_paths_are_a_clean_400(live: LiveServer, path: str) -> None:
    body = {"classification": CLASSIFICATION, "source": {"path": path}, "update_frequency": "daily"}
    response = httpx.post(
        f"{live.url}/v1/registrations",
        json=body,
        headers=_headers(live, "bureau-health"),
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["rule"] == "api.import_path"
    assert "Traceback" not in live.log()


def test_upload_names_with_control_characters_are_refused(live: LiveServer) -> None:
    response = httpx.post(
        f"{live.url}/v1/uploads",
        params={"domain": "health", "filename": "a\x00b.csv"},
        content=b"person_id,district,amount\n",
        headers={**_headers(live, "bureau-health"), "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["rule"] == "api.upload"
