"""Crash safety and multi-process appends, with real child processes.

A child appending in a loop is killed with SIGKILL at random moments, several
rounds on the same store; afterwards the store verifies and every append the
child had acknowledged (printed) is present with the same entry hash.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from audit import AuditTrail, KeyRing

APPENDER = Path(__file__).with_name("appender.py")


def start(url: str, keys: Path, threads: int, count: int, tag: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APPENDER), url, str(keys), str(threads), str(count), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def collect(child: subprocess.Popen[str], into: list[tuple[int, str]]) -> threading.Thread:
    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            seq, digest = line.split()
            into.append((int(seq), digest))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def stored_hashes(url: str) -> dict[int, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT seq, entry_hash FROM audit_entries"))
            return {row.seq: bytes(row.entry_hash).hex() for row in rows}
    finally:
        engine.dispose()


def test_sigkill_never_loses_an_acknowledged_append(db_url: str, keyring: KeyRing) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    rounds = 5 if db_url.startswith("sqlite") else 3
    acknowledged: list[tuple[int, str]] = []
    for round_ in range(rounds):
        seen: list[tuple[int, str]] = []
        with start(db_url, keyring.directory, threads=3, count=-1, tag=f"r{round_}") as child:
            reader = collect(child, seen)
            deadline = time.time() + 30
            target = rng.randint(5, 300)  # kill after a random number of acknowledged appends
            while len(seen) < target and time.time() < deadline and child.poll() is None:
                time.sleep(0.001)
            time.sleep(rng.random() * 0.05)  # ...and at a random moment after that
            child.send_signal(signal.SIGKILL)
            child.wait()
            reader.join(timeout=10)
            assert child.stderr is not None
            assert seen, child.stderr.read()
        acknowledged.extend(seen)
        stored = stored_hashes(db_url)
        missing = [(seq, h) for seq, h in acknowledged if stored.get(seq) != h]
        assert not missing, f"round {round_}: acknowledged appends lost: {missing[:5]}"
        with AuditTrail.open(db_url, keyring) as trail:
            report = trail.verify()
            assert report.ok, report.summary()
            assert report.entries == len(stored) == max(stored) + 1


def test_processes_append_to_one_gapless_chain(db_url: str, keyring: KeyRing) -> None:
    children = [
        start(db_url, keyring.directory, threads=2, count=40, tag=f"p{i}") for i in range(3)
    ]
    seen: list[tuple[int, str]] = []
    readers = [collect(child, seen) for child in children]
    for child, reader in zip(children, readers, strict=True):
        with child:
            assert child.wait(timeout=120) == 0, child.stderr.read() if child.stderr else ""
            reader.join(timeout=10)
    seqs = sorted(seq for seq, _ in seen)
    assert seqs == list(range(3 * 2 * 40))
    assert stored_hashes(db_url) == dict(seen)
    with AuditTrail.open(db_url, keyring) as trail:
        report = trail.verify()
        assert report.ok and report.entries == 240, report.summary()
