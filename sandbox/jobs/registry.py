"""The runner registry: which server processes run jobs, and which of them have died.

Each process that runs jobs registers once, beats its heart while it lives and
marks itself stopped on a clean exit.  A runner that stopped, went silent or
(on this host) whose process is gone is dead; its running jobs are orphans the
next live runner fails cleanly (:mod:`sandbox.jobs.runner`).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.core.timeutil import to_rfc3339
from sandbox.jobs.states import JobState
from sandbox.jobs.tables import job_runners, jobs

__all__ = ["RunnerRegistry"]


def _now() -> datetime:
    return datetime.now(UTC)


class RunnerRegistry:
    """Rows of ``job_runners``: register, heartbeat, stop, find the dead, forget them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self) -> str:
        runner = "rn_" + uuid.uuid4().hex[:16]
        now = to_rfc3339(_now())
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(job_runners).values(
                    id=runner,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )
        return runner

    def heartbeat(self, runner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(job_runners)
                .where(job_runners.c.id == runner)
                .values(heartbeat_at=to_rfc3339(_now()))
            )

    def stop(self, runner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(job_runners)
                .where(job_runners.c.id == runner)
                .values(stopped_at=to_rfc3339(_now()))
            )

    def dead(self, *, stale_after_s: float, me: str) -> list[str]:
        """Runners that stopped, or whose process is gone (same host), or went silent."""
        cutoff = to_rfc3339(_now() - timedelta(seconds=stale_after_s))
        host = socket.gethostname()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(job_runners).where(job_runners.c.id != me)).all()
        dead = []
        for row in rows:
            if row.stopped_at is not None or row.heartbeat_at < cutoff:
                dead.append(row.id)
            elif row.host == host and not _alive(row.pid):
                dead.append(row.id)
        return dead

    def forget(self, runners: Sequence[str]) -> None:
        """Drop dead runners that hold no running job any more."""
        with self.engine.begin() as conn:
            for runner in runners:
                busy = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(jobs)
                    .where(jobs.c.runner == runner)
                    .where(jobs.c.state == JobState.RUNNING.value)
                ).scalar_one()
                if not busy:
                    conn.execute(sa.delete(job_runners).where(job_runners.c.id == runner))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
