"""A run held for review that failed on the data is held too, failure and all.

Under a grant that requires review nothing data-dependent reaches the operator before a
bureau approves: not the rows, not their number, and not whether the run failed.  A
failure on the data (the released result over ``max_result_rows``, the enclave's limits,
arithmetic the release cannot carry) is one bit about exact values: a query whose
``HAVING`` keeps ten thousand groups exactly when a total exceeds ``X`` read that total by
bisection, and the difference of two such totals one person's diagnosis (outside review,
December 2026).  So such a run ends as a held result like any other: the job waits in
``awaiting_review``; the reviewer sees one row saying what failed; approval releases the
failure (the operator then gets its rule and message), rejection refuses the job.

The failure travels as the held table itself (one row, its rule in the schema's
metadata), so the job store and the review flow carry it unchanged.
"""

from __future__ import annotations

import pyarrow as pa

from sandbox.core.errors import EnclaveError, QueryTimeout, ResultTooLarge, SandboxError

__all__ = ["DATA_FAILURES", "failure_table", "held_failure"]

#: The rules of failures that depend on the data a run read (not on the query alone).
DATA_FAILURES: dict[str, type[SandboxError]] = {
    "enclave.limits": QueryTimeout,
    "enclave.max_result_rows": ResultTooLarge,
    "disclosure.arithmetic": EnclaveError,
}
_RULE = b"sandbox.held_failure"
COLUMN = "run_failed"


def failure_table(exc: SandboxError) -> pa.Table:
    """The held table standing for ``exc``: its message in one row, its rule in metadata."""
    assert exc.rule in DATA_FAILURES, exc.rule
    schema = pa.schema([pa.field(COLUMN, pa.string())], metadata={_RULE: exc.rule.encode()})
    return pa.table({COLUMN: [exc.message]}, schema=schema)


def held_failure(table: pa.Table) -> SandboxError | None:
    """The failure a held table stands for, as the error to raise on approval; else None."""
    rule = (table.schema.metadata or {}).get(_RULE)
    if rule is None or table.num_rows != 1 or table.column_names != [COLUMN]:
        return None
    kind = DATA_FAILURES.get(rule.decode())
    if kind is None:
        return None
    return kind(str(table.column(0)[0].as_py()), rule=rule.decode())
