"""Proving an export's entries on several cores, for the offline verifier.

What :meth:`audit.checker.Checker.feed_many` does one entry after another, checking
that an entry is well formed (:func:`audit.quick.fields_quick`), recomputing its chain
hash and hashing its Merkle leaf, is almost all of an offline verification's time, and
each run of entries can be checked on its own: a worker reads a byte range of
``entries.jsonl``, takes the ``seq`` and ``prev`` its first entry claims, proves each
entry in turn from there, and returns the chain hashes and leaves it recomputed.  The
parent accepts a run only where it continues the chain the parent holds (the claimed
``seq`` and ``prev`` are the parent's own next ``seq`` and chain head), so a run
proves exactly what the sequential check would have; signed tree heads are compared by
the parent at their sizes, as before.  At the first entry a worker cannot prove, or a run
that does not continue, the parent stops here and the sequential check reads the rest,
finding and explaining the problem as it always has: a sound export is verified faster,
a damaged one is reported the same.

Worker processes are forked, which is only safe from a process with one thread (the
``sandbox audit verify`` command); :func:`can_fork` says whether this one may.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Collection, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from audit.checker import Checker
from audit.merkle import SHA256, hash_leaves
from audit.quick import fields_quick

__all__ = ["CHUNK_BYTES", "Run", "can_fork", "prove_range", "verify_parallel"]

#: About how many bytes of ``entries.jsonl`` one worker task proves (about 13,000 entries).
CHUNK_BYTES = 1 << 22

_FORK = (
    multiprocessing.get_context("fork")
    if "fork" in multiprocessing.get_all_start_methods()
    else None
)


@dataclass
class Run:
    """What a worker proved of its byte range: the leading entries it could prove."""

    start: int  # byte offset of the range's first entry
    first_seq: int = -1  # the seq and prev its first entry claims (-1, b"": unreadable)
    first_prev: bytes = b""
    proven: int = 0  # how many entries, from the first, were proven
    proven_bytes: int = 0  # their length in the file, newlines included
    lines: int = 0  # how many entries the range holds
    chains: bytes = b""  # each proven entry's chain hash, 32 bytes each
    leaves: bytes = b""  # each proven entry's Merkle leaf hash, 32 bytes each
    found: dict[int, bytes] = field(default_factory=dict)  # wanted seq -> its entry


def can_fork() -> bool:
    """Whether worker processes may be forked from this process (one thread, a fork OS)."""
    return _FORK is not None and threading.active_count() == 1


def prove_range(path: str, start: int, end: int, wanted: Collection[int] = ()) -> Run:
    """Prove the entries in bytes ``[start, end)`` of ``path`` (whole lines), from the
    ``seq`` and ``prev`` the first one claims, as :meth:`Checker.feed_many` would."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    lines = data.split(b"\n")
    last = lines.pop()
    if last:  # the file's last line, without a newline: still a line (as _read_lines)
        lines.append(last)
    run = Run(start, lines=len(lines))
    if not lines:
        return run
    try:
        first = orjson.loads(lines[0])
        seq, chain = int(first["seq"]), bytes.fromhex(first["prev"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return run
    run.first_seq, run.first_prev = seq, chain
    sha256 = hashlib.sha256
    chains: list[bytes] = []
    size = 0
    for canonical in lines:
        if fields_quick(canonical, seq, chain) is None:
            break
        chain = sha256(chain + canonical).digest()
        chains.append(chain)
        if seq in wanted:
            run.found[seq] = canonical
        size += len(canonical) + 1
        seq += 1
    run.proven = len(chains)
    run.proven_bytes = min(size, end - start)
    run.chains = b"".join(chains)
    run.leaves = b"".join(hash_leaves(SHA256, lines[: run.proven]))
    return run


def verify_parallel(
    path: Path,
    checker: Checker,
    *,
    workers: int,
    wanted: Collection[int] = (),
    chunk: int | None = None,
) -> tuple[int, dict[int, bytes]]:
    """Feed ``checker`` the leading entries of ``path`` that workers prove and that
    continue its chain; returns the byte offset where a sequential check must go on
    (the file's size if nothing is left) and the entries of ``wanted`` seqs it took.

    At most ``2 · workers`` ranges are in flight, so memory stays bounded by the chunk
    size whatever the export's.
    """
    found: dict[int, bytes] = {}
    offset = 0
    ranges = _ranges(path, chunk or CHUNK_BYTES)
    wanted = frozenset(wanted)
    broken = False
    with ProcessPoolExecutor(max_workers=workers, mp_context=_FORK) as pool:
        pending: deque[Future[Run]] = deque()

        def submit_next() -> None:
            nonlocal broken
            if broken or (span := next(ranges, None)) is None:
                return
            try:
                pending.append(pool.submit(prove_range, os.fspath(path), *span, wanted))
            except (OSError, RuntimeError):  # no worker could start (a broken pool too)
                broken = True  # what was fed stands; the rest is read here

        for _ in range(2 * workers):
            submit_next()
        while pending:
            try:
                run = pending.popleft().result()
            except Exception:  # a worker that failed proves nothing: checked here instead
                break
            if not checker.feed_proven(
                run.first_seq, run.first_prev, run.chains, _split(run.leaves)
            ):
                break
            offset = run.start + run.proven_bytes
            found.update(run.found)
            if run.proven < run.lines:
                break
            submit_next()
        for future in pending:
            future.cancel()
    return offset, found


def _split(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


def _ranges(path: Path, chunk: int) -> Iterator[tuple[int, int]]:
    """Consecutive byte ranges of whole lines over the file, about ``chunk`` bytes each."""
    size = path.stat().st_size
    start = 0
    with open(path, "rb") as handle:
        while start < size:
            end = min(start + chunk, size)
            if end < size:
                handle.seek(end - 1)
                end += len(handle.readline()) - 1  # to just after the next newline (or the end)
            yield start, end
            start = end
