"""Running the parse of one source in a confined child process (the parent's side).

:func:`convert_isolated` starts ``python -m connectors.convert`` with the job on its
stdin, in the source's private work directory, with an environment that holds no
secret of the server's.  The child bounds itself with rlimits before it reads
anything (:func:`connectors.convert.confine`); where the server runs in a cgroup v2
subtree it may write to, the child is also put in a cgroup of its own with
``memory.max`` and ``pids.max`` (detected, never required).  The parent waits at
most ``timeout_s`` and kills it after that.

Every way the child can fail is one refusal, :class:`~sandbox.core.errors.ConnectorError`
with rule ``ingest.failed`` (or ``connector.parse`` for input that is merely
malformed), whose message names the limit or the signal and never a data value.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import connectors
from connectors.convert import RESULT
from connectors.limits import IngestLimits
from sandbox.core.errors import ConnectorError, EnclaveBusy

__all__ = ["Cgroup", "convert_isolated", "exit_reason", "parse_slot", "refused", "run_isolated"]

#: libpq's own settings, passed to a PostgreSQL import's child (the host console's, for the
#: source it names); nothing else of the environment is.
LIBPQ_ENVIRONMENT = (
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGCONNECT_TIMEOUT",
)

#: Verdict rules the child may give besides ``ingest.failed``.
_CHILD_RULES = frozenset(
    {"ingest.failed", "connector.parse", "connector.postgresql", "connector.postgresql.extra"}
)

_ROOT = str(Path(connectors.__file__).resolve().parents[1])


def refused(reason: str, rule: str = "ingest.failed") -> ConnectorError:
    """The error of a source the child would not (or could not) convert."""
    if rule != "ingest.failed":
        return ConnectorError(reason, rule=rule)
    return ConnectorError(f"ingest.failed: {reason}; the enclave is unchanged", rule=rule)


def exit_reason(returncode: int, limits: IngestLimits, *, oom_killed: bool = False) -> str:
    """Why a child that left no verdict ended (its exit status, and a cgroup's OOM count)."""
    if oom_killed:
        return f"memory above {limits.memory_bytes} bytes (ingest_memory_bytes)"
    if returncode >= 0:
        return f"the parser failed (exit status {returncode})"
    number = -returncode
    if number == signal.SIGXCPU:
        return f"CPU time above {limits.cpu_s} s (ingest_cpu_s)"
    if number == signal.SIGXFSZ:
        return f"output above {limits.max_output_bytes} bytes (ingest_max_output_bytes)"
    return f"child crashed (signal {number})"


@dataclass(frozen=True)
class Cgroup:
    """A cgroup v2 of one child: ``memory.max`` and ``pids.max`` under the server's subtree."""

    path: Path

    @classmethod
    def create(
        cls,
        limits: IngestLimits,
        *,
        mounts: Path = Path("/proc/self/mounts"),
        membership: Path = Path("/proc/self/cgroup"),
    ) -> Cgroup | None:
        """A new cgroup beside or below this process's, if one can be made; else None.

        Usable means: the cgroup2 hierarchy is mounted, this process's cgroup (or its
        parent, as under systemd's ``DelegateSubgroup=``) delegates the memory
        controller to its children, and we may write there.  Nothing is enabled or
        moved to get there: a deployment that wants it delegates the subtree.
        """
        try:
            root = next(
                Path(fields[1])
                for fields in (line.split() for line in mounts.read_text().splitlines())
                if len(fields) > 2 and fields[2] == "cgroup2"
            )
            own = next(
                line[3:] for line in membership.read_text().splitlines() if line.startswith("0::")
            )
        except (OSError, StopIteration):
            return None
        here = root / own.strip().lstrip("/")
        for base in (here, here.parent):
            if not base.is_relative_to(root) or not os.access(base, os.W_OK):
                continue
            try:
                delegated = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "memory" not in delegated:
                continue
            path = base / f"sandbox-ingest-{uuid.uuid4().hex[:16]}"
            try:
                path.mkdir()
                (path / "memory.max").write_text(str(limits.memory_bytes))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
                if "pids" in delegated:
                    (path / "pids.max").write_text("64")
            except OSError:
                Cgroup(path).remove()
                continue
            return cls(path)
        return None

    def add(self, pid: int) -> bool:
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError:
            return False
        return True

    def oom_killed(self) -> bool:
        try:
            events = (self.path / "memory.events").read_text().split()
        except OSError:
            return False
        counts = dict(zip(events[::2], events[1::2], strict=False))
        return counts.get("oom_kill", "0") != "0"

    def remove(self) -> None:
        for _ in range(50):  # the kernel empties a cgroup a moment after its last process ends
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


def _take_slot(directory: Path, slots: int) -> int | None:
    for index in range(slots):
        fd = os.open(directory / f".ingest.slot-{index}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return fd
    return None


@contextmanager
def parse_slot(directory: Path, limits: IngestLimits) -> Iterator[None]:
    """One of ``limits.concurrency`` turns to parse, shared by every process on the host.

    Before the confined child, parsing ran under the enclave writer, one at a time; this
    keeps a bound (``concurrency`` times ``memory_bytes``) now that it runs beside queries.
    The turns are ``flock`` locks on ``.ingest.slot-N`` files in ``directory`` (the home,
    beside the enclave's lock files); a process that dies frees its turn.
    """
    deadline = time.monotonic() + limits.timeout_s
    delay = 0.01
    while (fd := _take_slot(directory, limits.concurrency)) is None:
        if time.monotonic() >= deadline:
            raise EnclaveBusy(
                f"{limits.concurrency} sources were being parsed for {limits.timeout_s:g} s "
                "(ingest_concurrency); retry later",
                rule="ingest.busy",
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _environment(passed: tuple[str, ...] = ()) -> dict[str, str]:
    """The child's whole environment: no database URL, token or key of the server's
    (``passed``: the few variables a source's own connection needs)."""
    return {
        **{name: os.environ[name] for name in passed if name in os.environ},
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": _ROOT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        # pyarrow loads numpy, whose OpenBLAS reserves memory per thread at import.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }


def convert_isolated(
    *,
    source: Path,
    fmt: str,
    compression: str | None,
    workdir: Path,
    output: Path,
    limits: IngestLimits,
) -> int:
    """Convert ``source`` into the Arrow IPC file ``output`` in a confined child; its rows."""
    job = {"input": str(source), "format": fmt, "compression": compression}
    return int(run_isolated(job, workdir=workdir, output=output, limits=limits)["rows"])


def run_isolated(
    job: dict[str, Any],
    *,
    workdir: Path,
    output: Path,
    limits: IngestLimits,
    environment: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one ``connectors.convert`` job (``format`` and its inputs) in a confined child,
    writing ``output``; its verdict (``rows``, and ``sha256`` where the child hashes).

    ``environment`` names variables of this process the child may see (libpq's, for a
    PostgreSQL source); a job's secrets (a source URL) travel on its stdin, never argv.
    """
    result = workdir / RESULT
    job = {
        **job,
        "output": str(output),
        "result": str(result),
        "limits": limits.to_dict(),
        "parent": os.getpid(),
    }
    cgroup = Cgroup.create(limits)
    # -P: the work directory (the child's cwd) holds the input; never import from it.
    proc = subprocess.Popen(
        [sys.executable, "-P", "-s", "-m", "connectors.convert"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
        env=_environment(environment),
        start_new_session=True,
    )
    oom = False
    try:
        if cgroup is not None and not cgroup.add(proc.pid):
            cgroup.remove()
            cgroup = None
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died already: its exit status says why
        try:
            returncode = proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            raise refused(f"timed out after {limits.timeout_s:g} s (ingest_timeout_s)") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            output.unlink(missing_ok=True)
            result.unlink(missing_ok=True)
        if cgroup is not None:
            oom = cgroup.oom_killed()
            cgroup.remove()
    verdict = _verdict(result)
    result.unlink(missing_ok=True)
    if returncode != 0 or verdict is None or not verdict.get("ok"):
        output.unlink(missing_ok=True)  # a partial table
    if returncode != 0 or verdict is None:
        raise refused(exit_reason(returncode, limits, oom_killed=oom))
    if not verdict.get("ok"):
        rule = verdict.get("rule")
        raise refused(
            str(verdict.get("reason", ""))[:300],
            rule if rule in _CHILD_RULES else "ingest.failed",
        )
    return verdict


def _verdict(path: Path) -> dict[str, Any] | None:
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return verdict if isinstance(verdict, dict) else None
