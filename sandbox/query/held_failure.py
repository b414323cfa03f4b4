"""A run held for review that failed on the data is held too, failure and all.

Under a grant that requires review nothing data-dependent reaches the operator before a
bureau approves: not the rows, not their number, and not whether the run failed.  A
failure on the data (the released result over ``max_result_rows``, the enclave's limits,
arithmetic the release cannot carry) is one bit about exact values: a query whose
``HAVING`` keeps ten thousand groups exactly when a total exceeds ``X`` read that total by
bisection, and the difference of two such totals one person's diagnosis (outside review,
December 2026).  So such a run ends as a held result like any other: the job waits in
``awaiting_review``; the reviewer sees what failed (no rows); approval releases the
failure (the operator then gets its rule and message), rejection refuses the job.

The failure travels as the held table itself: no column, no row, its rule and message
in the schema's metadata, which no query's result carries, so the job store and the
review flow carry it unchanged and the reviewer's view shows it apart from any table
(``ReviewOut.failed``).  (It was first one row, ``run_failed``, which a query could
imitate with an output of that name whose text varied with the data; the reviewer's
rows could not tell the two apart: review, December 2026.)

A job bound for review (``sandbox/jobs/held_view.py``) that ends any other way than by
its operator's cancel (refused when its run starts: a token revoked, a grant changed;
an internal error; its server stopped) is held the same way, by its runner: when such a
job starts and ends moves with the held runs queued before it, so its operator learns
how it ended only through its bureau's review, or from its expiry.  Those failures carry
their error's class (``_KIND``), and no cache key: nothing of the data is in them.
"""

from __future__ import annotations

import pyarrow as pa

from sandbox.core import errors
from sandbox.core.errors import (
    EnclaveError,
    NotFound,
    QueryTimeout,
    ResultTooLarge,
    SandboxError,
    Withheld,
)

__all__ = ["DATA_FAILURES", "failure_table", "held_failure"]

#: The rules of failures that depend on the data a run read (not on the query alone).
DATA_FAILURES: dict[str, type[SandboxError]] = {
    "enclave.limits": QueryTimeout,
    "enclave.max_result_rows": ResultTooLarge,
    "disclosure.arithmetic": EnclaveError,
    # a query refused at its thresholds' released values (release.run_thresholds)
    "release.threshold": EnclaveError,
}
_RULE = b"sandbox.held_failure.rule"
_MESSAGE = b"sandbox.held_failure.message"
_KIND = b"sandbox.held_failure.kind"  # the error's class, for a failure not in DATA_FAILURES


def failure_table(exc: SandboxError) -> pa.Table:
    """The held table standing for ``exc``: no column, its rule, message and class in
    metadata."""
    rule = exc.rule or exc.code
    kind = NotFound if isinstance(exc, Withheld) else type(exc)  # as its caller saw it
    metadata = {
        _RULE: rule.encode(),
        _MESSAGE: exc.message.encode(),
        _KIND: kind.__name__.encode(),
    }
    return pa.table({}, schema=pa.schema([], metadata=metadata))


def held_failure(table: pa.Table) -> SandboxError | None:
    """The failure a held table stands for, as the error to raise on approval; else None."""
    metadata = table.schema.metadata or {}
    rule, message = metadata.get(_RULE), metadata.get(_MESSAGE)
    if rule is None or message is None or table.num_columns or table.num_rows:
        return None
    kind = DATA_FAILURES.get(rule.decode()) or _error_class(metadata.get(_KIND))
    if kind is None:
        return None
    try:
        return kind(message.decode(), rule=rule.decode())
    except TypeError:  # a class that takes more (none is stored so: Withheld is NotFound)
        return SandboxError(message.decode(), rule=rule.decode())


def _error_class(name: bytes | None) -> type[SandboxError] | None:
    """One of the exception tree's classes by its name (``sandbox.core.errors``)."""
    found = None if name is None else getattr(errors, name.decode(), None)
    is_error = isinstance(found, type) and issubclass(found, SandboxError)
    return found if is_error else None
