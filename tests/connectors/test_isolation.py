"""Sources are parsed in a confined child: every way it can fail is a clean refusal.

The bombs here are real (a pyarrow segfault, a 50 KB Parquet file that decodes to
2 GB, an output past ``RLIMIT_FSIZE``), built at test time and small on disk.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from connectors.files import FileSource
from connectors.isolation import Cgroup, _environment, exit_reason, parse_slot
from connectors.limits import IngestLimits
from sandbox.core.errors import ConnectorError, EnclaveBusy
from tests.connectors.helpers import visits_spec, visits_table, write


def _prepare(path: Path, tmp_path: Path, limits: IngestLimits, fmt: str | None = None):
    workdir = tmp_path / "work"
    workdir.mkdir()
    return FileSource(path, tmp_path / "staging", fmt).prepare(workdir, limits)


def _refusal(path: Path, tmp_path: Path, limits: IngestLimits, fmt: str | None = None) -> str:
    with pytest.raises(ConnectorError) as info:
        _prepare(path, tmp_path, limits, fmt)
    assert info.value.rule == "ingest.failed"
    assert not [p for p in (tmp_path / "work").rglob("*")], "the child's files are removed"
    return info.value.message


def test_a_parser_crash_is_a_refusal_not_a_dead_server(tmp_path: Path) -> None:
    bomb = tmp_path / "nested.jsonl"
    bomb.write_text('{"a":' * 20_000 + "1" + "}" * 20_000 + "\n")
    # With the depth check out of the way, pyarrow's recursion really crashes (in the child).
    message = _refusal(bomb, tmp_path, IngestLimits(max_depth=100_000))
    assert message.startswith("ingest.failed: child crashed (signal 11)")


def test_the_depth_check_stops_it_first(tmp_path: Path) -> None:
    bomb = tmp_path / "nested.jsonl"
    bomb.write_text('{"a":' * 20_000 + "1" + "}" * 20_000 + "\n")
    assert "nesting depth above 64" in _refusal(bomb, tmp_path, IngestLimits())


def test_a_child_past_its_time_is_killed(tmp_path: Path) -> None:
    path = write(visits_table(), tmp_path / "visits.csv", "csv")
    message = _refusal(path, tmp_path, IngestLimits(timeout_s=0.05))
    assert message.startswith("ingest.failed: timed out after 0.05 s (ingest_timeout_s)")


def test_memory_is_bounded_by_the_address_space_limit(tmp_path: Path) -> None:
    # One 1 MiB string, dictionary-encoded 2,000 times: 50 KB on disk, 2 GB decoded.
    values = pa.array(["x" * (1 << 20)])
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), values)
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"s": column}), path)
    assert path.stat().st_size < 200_000
    limits = IngestLimits(memory_bytes=1 << 30, max_bytes=1 << 40)
    message = _refusal(path, tmp_path, limits)
    assert message.startswith("ingest.failed: memory above 1073741824 bytes")


def test_decoded_dictionaries_count_towards_the_size_limit(tmp_path: Path) -> None:
    column = pa.DictionaryArray.from_arrays(
        pa.array([0] * 20_000, pa.int32()), pa.array(["y" * 1000])
    )
    path = tmp_path / "dict.parquet"
    pq.write_table(pa.table({"s": column}), path)
    message = _refusal(path, tmp_path, IngestLimits(max_bytes=1 << 20))
    assert "decompressed size above 1048576 bytes" in message


def test_output_is_bounded_by_the_file_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    pacsv.write_csv(pa.table({"a": list(range(300_000))}), path)
    message = _refusal(path, tmp_path, IngestLimits(max_output_bytes=1 << 20))
    assert message.startswith("ingest.failed: output above 1048576 bytes")


def test_nested_column_types_are_bounded_too(tmp_path: Path) -> None:
    kind: pa.DataType = pa.int64()
    value: object = 1
    for _ in range(70):
        kind, value = pa.struct([("a", kind)]), {"a": value}
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"n": pa.array([value], kind)}), path)
    assert "nesting depth above 64" in _refusal(path, tmp_path, IngestLimits())


def test_long_lines_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1," + "x" * 5000 + "\n")
    message = _refusal(path, tmp_path, IngestLimits(max_line_bytes=4096))
    assert "a line longer than 4096 bytes (ingest_max_line_bytes)" in message


def test_malformed_input_is_still_a_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ConnectorError) as info:
        _prepare(path, tmp_path, IngestLimits())
    assert info.value.rule == "connector.parse"
    assert info.value.message.startswith("json input is malformed: JSON parse error")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (-signal.SIGXCPU, "CPU time above 600 s (ingest_cpu_s)"),
        (-signal.SIGXFSZ, "output above 8589934592 bytes (ingest_max_output_bytes)"),
        (-signal.SIGSEGV, "child crashed (signal 11)"),
        (-signal.SIGKILL, "child crashed (signal 9)"),
        (1, "the parser failed (exit status 1)"),
    ],
)
def test_exit_reasons(code: int, reason: str) -> None:
    assert exit_reason(code, IngestLimits()) == reason


def test_an_oom_kill_in_a_cgroup_is_reported_as_memory() -> None:
    reason = exit_reason(-signal.SIGKILL, IngestLimits(), oom_killed=True)
    assert reason == "memory above 4294967296 bytes (ingest_memory_bytes)"


def test_the_child_gets_no_secret_of_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_CONTROL_DB_URL", "postgresql://u:secret@db/x")
    env = _environment()
    assert not [k for k in env if k.startswith("SANDBOX_")]
    assert "secret" not in "".join(env.values())


def _fake_cgroupfs(tmp_path: Path, delegated: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    service = root / "system.slice" / "sandbox.service"
    (service / "server").mkdir(parents=True)
    (service / "cgroup.subtree_control").write_text(delegated + "\n")
    (service / "server" / "cgroup.subtree_control").write_text("\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"proc /proc proc rw 0 0\ncgroup2 {root} cgroup2 rw 0 0\n")
    membership = tmp_path / "membership"
    membership.write_text("0::/system.slice/sandbox.service/server\n")
    return mounts, membership


def test_a_delegated_cgroup_subtree_is_used(tmp_path: Path) -> None:
    mounts, membership = _fake_cgroupfs(tmp_path, "cpu memory pids")
    limits = IngestLimits(memory_bytes=1 << 30)
    cgroup = Cgroup.create(limits, mounts=mounts, membership=membership)
    assert cgroup is not None
    assert cgroup.path.parent == tmp_path / "cgroup" / "system.slice" / "sandbox.service"
    assert (cgroup.path / "memory.max").read_text() == str(1 << 30)
    assert (cgroup.path / "pids.max").read_text() == "64"
    assert cgroup.add(12345) and (cgroup.path / "cgroup.procs").read_text() == "12345"
    (cgroup.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroup.oom_killed()


@pytest.mark.parametrize("delegated", ["", "cpu pids"])
def test_without_a_delegated_memory_controller_rlimits_alone_apply(
    tmp_path: Path, delegated: str
) -> None:
    mounts, membership = _fake_cgroupfs(tmp_path, delegated)
    assert Cgroup.create(IngestLimits(), mounts=mounts, membership=membership) is None
    assert Cgroup.create(IngestLimits(), mounts=tmp_path / "missing") is None


def _children(name: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and name in cmdline:
            found.append(int(entry.name))
    return found


def test_queries_answer_while_a_registration_parses(platform, tmp_path: Path) -> None:
    """The writer is not held while the child parses: stop the child, and query meanwhile."""
    small = write(visits_table(10), tmp_path / "small.csv", "csv")
    platform.register(visits_spec(), FileSource(small, platform.settings.staging_dir))
    big = write(visits_table(40), tmp_path / "big.parquet", "parquet")
    outcome: list[object] = []

    def register() -> None:
        try:
            source = FileSource(big, platform.settings.staging_dir)
            outcome.append(platform.register(visits_spec(), source))
        except Exception as exc:  # reported by the assertions below
            outcome.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    deadline = time.monotonic() + 30
    while not (children := _children(b"connectors.convert")):
        assert thread.is_alive(), f"the registration ended without a parsing child: {outcome}"
        assert time.monotonic() < deadline, "no parsing child appeared"
        time.sleep(0.005)
    counts: list[int] = []
    query = threading.Thread(
        target=lambda: counts.append(
            platform.enclave.query("SELECT count(*) FROM health.visits").column(0)[0].as_py()
        )
    )
    os.kill(children[0], signal.SIGSTOP)
    try:
        query.start()
        query.join(timeout=10)  # a query waiting for the writer would wait for ever
        assert counts == [10], "a query must answer while the source is being parsed"
        assert thread.is_alive(), "the registration is still parsing"
    finally:
        os.kill(children[0], signal.SIGCONT)
    thread.join(timeout=60)
    query.join(timeout=60)
    (registration,) = outcome
    assert not isinstance(registration, Exception), registration
    assert platform.enclave.query("SELECT count(*) FROM health.visits").column(0)[0].as_py() == 40


def test_parsing_turns_are_bounded_and_freed(tmp_path: Path) -> None:
    limits = IngestLimits(concurrency=2, timeout_s=0.3)
    with parse_slot(tmp_path, limits), parse_slot(tmp_path, limits):
        start = time.monotonic()
        with pytest.raises(EnclaveBusy) as info, parse_slot(tmp_path, limits):
            pass
        assert info.value.rule == "ingest.busy" and time.monotonic() - start >= 0.3
    with parse_slot(tmp_path, limits), parse_slot(tmp_path, limits):
        pass  # both turns were given back


def test_a_postgresql_child_gets_libpq_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.isolation import LIBPQ_ENVIRONMENT

    monkeypatch.setenv("SANDBOX_CONTROL_DB_URL", "postgresql://u:secret@db/x")
    monkeypatch.setenv("PGPASSWORD", "the-source-password")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-child")
    env = _environment(LIBPQ_ENVIRONMENT)
    assert env["PGPASSWORD"] == "the-source-password"  # the import's own connection
    assert "AWS_SECRET_ACCESS_KEY" not in env and not [k for k in env if k.startswith("SANDBOX_")]
    assert "PGPASSWORD" not in _environment()  # a file's child gets none of them
