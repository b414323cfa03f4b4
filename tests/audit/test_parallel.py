"""Verification on several processes: the same report as one, on sound and damaged exports.

The export: 300 entries, tree heads every 7, so heads fall inside the workers' runs.
Parallel verification forks, which only a one-thread process may do, so it runs the way
``sandbox audit verify`` runs it: a fresh interpreter (here with a chunk of 4 KiB, about
six entries a run, so every export is many runs); its JSON report must equal the one
process report of the same directory, whatever was done to the file.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from audit import AuditTrail, KeyRing, Receipt, verify_export
from audit.checker import Checker
from audit.export import read_tree_heads
from audit.keys import read_public_keys
from audit.parallel import _ranges, prove_range
from tests.audit.conftest import fill

ROOT = Path(__file__).resolve().parents[2]
N = 300
_PARALLEL = """
import json, sys
from pathlib import Path
import audit.parallel
from audit import Receipt, verify_export
audit.parallel.CHUNK_BYTES = 4096
receipts = [Receipt.from_dict(r) for r in json.loads(sys.argv[2])]
assert audit.parallel.can_fork()
report = verify_export(Path(sys.argv[1]), workers=2, receipts=receipts)
print(json.dumps(report.to_dict()))
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Receipt]]:
    tmp = tmp_path_factory.mktemp("parallel")
    keys = KeyRing(tmp / "keys")
    keys.ensure()
    with AuditTrail.open(f"sqlite:///{tmp / 'a.db'}", keys, sign_every_n=7) as trail:
        receipts = fill(trail, N)
        trail.export(tmp / "export")
    return tmp / "export", receipts


def parallel_report(export: Path, receipts: list[Receipt] = ()) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PARALLEL, str(export), json.dumps([r.to_dict() for r in receipts])],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return json.loads(out.stdout)


def copy_with(export: Path, tmp_path: Path, edit: Callable[[bytes], bytes]) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for item in export.iterdir():
        if item.is_dir():
            (target / item.name).mkdir()
            for inner in item.iterdir():
                (target / item.name / inner.name).write_bytes(inner.read_bytes())
        else:
            (target / item.name).write_bytes(item.read_bytes())
    entries = target / "entries.jsonl"
    entries.write_bytes(edit(entries.read_bytes()))
    return target


def lines_edit(change: Callable[[list[bytes]], list[bytes]]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        lines = data.split(b"\n")
        last = lines.pop()
        assert last == b""
        return b"\n".join(change(lines)) + b"\n"

    return edit


def _forged(lines: list[bytes]) -> list[bytes]:
    lines[150] = lines[150].replace(b'"actor":"operator-', b'"actor":"intruder-', 1)
    return lines


EDITS: dict[str, Callable[[bytes], bytes]] = {
    "sound": lambda data: data,
    "one entry forged": lines_edit(_forged),
    "one entry deleted": lines_edit(lambda lines: lines[:100] + lines[101:]),
    "two entries swapped": lines_edit(
        lambda lines: [*lines[:200], lines[201], lines[200], *lines[202:]]
    ),
    "an empty line": lines_edit(lambda lines: [*lines[:50], b"", *lines[50:]]),
    "no final newline": lambda data: data[:-1],
    "cut in the last entry": lambda data: data[:-40],
    "cut in the middle": lambda data: data[: len(data) // 2],
    "a duplicated entry": lines_edit(lambda lines: [*lines[:20], lines[19], *lines[20:]]),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_two_processes_report_what_one_does(name: str, made, tmp_path: Path) -> None:
    export, receipts = made
    target = copy_with(export, tmp_path, EDITS[name])
    some = [receipts[i] for i in (0, 7, 149, 150, 151, N - 1)]
    one = verify_export(target, workers=1, receipts=some).to_dict()
    assert parallel_report(target, some) == one
    assert one["ok"] is (name in ("sound", "no final newline"))


def test_a_run_is_what_the_sequential_check_recomputes(made) -> None:
    """prove_range over each range, fed in order, leaves the checker where feed_many does."""
    export, _ = made
    path = export / "entries.jsonl"
    heads, _ = read_tree_heads(export / "tree_heads.jsonl")
    keys, _ = read_public_keys(export / "keys")
    ranges = list(_ranges(path, 4096))
    assert len(ranges) > 20 and ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    fast, slow = Checker(heads, keys), Checker(heads, keys)
    for start, end in ranges:
        run = prove_range(str(path), start, end)
        assert run.proven == run.lines > 0 and run.proven_bytes == end - start
        leaves = [run.leaves[i : i + 32] for i in range(0, len(run.leaves), 32)]
        assert fast.feed_proven(run.first_seq, run.first_prev, run.chains, leaves)
    slow.feed_many(path.read_bytes().split(b"\n")[:-1])
    assert (fast.chain, fast.expected_seq, fast.tree.root()) == (
        slow.chain,
        slow.expected_seq,
        slow.tree.root(),
    )
    assert (
        fast.finish(require_covered=True).to_dict() == slow.finish(require_covered=True).to_dict()
    )


def test_a_run_that_does_not_continue_the_chain_is_refused(made) -> None:
    export, _ = made
    path = export / "entries.jsonl"
    heads, _ = read_tree_heads(export / "tree_heads.jsonl")
    keys, _ = read_public_keys(export / "keys")
    first, second = list(_ranges(path, 4096))[:2]
    checker = Checker(heads, keys)
    later = prove_range(str(path), *second)
    leaves = [later.leaves[i : i + 32] for i in range(0, len(later.leaves), 32)]
    assert not checker.feed_proven(later.first_seq, later.first_prev, later.chains, leaves)
    assert (checker.size, checker.expected_seq) == (0, 0)  # nothing taken
    run = prove_range(str(path), *first)
    leaves = [run.leaves[i : i + 32] for i in range(0, len(run.leaves), 32)]
    assert not checker.feed_proven(run.first_seq, b"\1" * 32, run.chains, leaves)  # not genesis
    assert checker.feed_proven(run.first_seq, run.first_prev, run.chains, leaves)


def test_the_command_checks_with_every_core_and_with_one(made) -> None:
    """``sandbox audit verify --jobs`` as people run it: the same verdict and output."""
    export, _ = made
    sandbox = Path(sys.executable).with_name("sandbox")
    outputs = []
    for jobs in ("1", "2"):
        done = subprocess.run(
            [str(sandbox), "audit", "verify", str(export), "--json", "--jobs", jobs],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    bad = subprocess.run(
        [str(sandbox), "audit", "verify", str(export), "--jobs", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2  # a usage error, not a verdict


class _InlinePool:
    """A stand-in pool that proves each range at once in this process, and fails to
    start a worker at its ``fail_at``-th submission (as a fork refused by the OS would)."""

    fail_at = 3
    proved = 0  # ranges proved by every instance: the parallel path ran

    def __init__(self, max_workers: int, mp_context: object) -> None:
        self.submitted = 0

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn, *args):  # type: ignore[no-untyped-def]
        from concurrent.futures import Future

        self.submitted += 1
        if self.submitted == self.fail_at:
            raise OSError("fork refused")
        future: Future = Future()
        future.set_result(fn(*args))
        _InlinePool.proved += 1
        return future


@pytest.mark.parametrize("fail_at", [1, 3, 10_000])
def test_workers_that_cannot_start_leave_the_rest_to_the_sequential_check(
    made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """A pool that cannot start a worker (first, third or no submission) is no error:
    what workers proved stands, and the rest is checked here; the report is the same."""
    import audit.parallel

    export, receipts = made
    monkeypatch.setattr(_InlinePool, "fail_at", fail_at)
    monkeypatch.setattr(audit.parallel, "ProcessPoolExecutor", _InlinePool)
    monkeypatch.setattr(audit.parallel, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(audit.parallel, "can_fork", lambda: True)
    for name in ("sound", "one entry forged"):
        target = tmp_path / name
        target.mkdir()
        target = copy_with(export, target, EDITS[name])
        some = [receipts[i] for i in (0, 149, N - 1)]
        one = verify_export(target, workers=1, receipts=some).to_dict()
        before = _InlinePool.proved
        assert verify_export(target, workers=2, receipts=some).to_dict() == one
        assert (_InlinePool.proved > before) is (fail_at > 1)
