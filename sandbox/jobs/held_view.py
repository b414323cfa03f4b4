"""What an operator sees of a job whose result waits for a bureau's review.

Such a result is exact, so anything that moves with its run is data the review has not
passed.  An outside attack read a k-1 membership bit (does the target have diagnosis
C91?) from when a held job reached ``awaiting_review`` and from its CPU time: a
``WHERE x > (SELECT count(*) … )`` threshold withheld (NULL) or not switched the held
query between reading nothing and reading every row, 114-303 ms against 449-671 ms over
HTTP.  So a review-bound job (known when it is submitted: the grants decide it, not the
data) shows its operator one state, ``awaiting_review``, from submission until it ends
(released, refused, failed, cancelled, expired), with no start, end, expiry, progress
or metadata; it never runs inline nor is waited for (``desk.submit``), is cancelled at
once in any state (``store.cancel``), expires a fixed time after submission, counts
against the concurrent-jobs limit apart, in all three states, for ``query_timeout_s``
after submission (``desk._within_concurrency``), and its CPU time reaches the operator's
usage only when its result is released (``QueryService._meter``).  Ended, it still
never shows its run's start or progress, nor, unless released, its held result's
metadata or expiry (an outside attack read the run's length from a cancelled job's
``started_at``, and whether it had been held from its ``expires_at`` and ``meta``).
Nothing else its operator sees waits on its run: it runs on workers of its own
(``JobRunner``'s held lane, ``JobStore.claim(held=True)``), is charged when submitted
(``QueryService.prepay``), and however it ends but by its operator's cancel is held for
review (``JobRunner._hold_failure``).  The bureau's review queue sees the real state.
"""

from __future__ import annotations

from dataclasses import replace

from sandbox.jobs.states import HIDDEN_STATES, JobState
from sandbox.jobs.store import Job

__all__ = ["seen_by_operator"]


def seen_by_operator(job: Job) -> Job:
    """``job`` as its operator sees it: a review-bound job not ended is ``awaiting_review``
    with nothing that moves with its run; ended, it never shows when its run started nor
    how far it got, and, unless released, neither its held result's metadata nor expiry
    (a cancel, a rejection or an expiry ends it at a moment its run does not choose, but
    those fields were written by the run); any other job as it is."""
    if not job.review_bound:
        return job
    if job.state in HIDDEN_STATES:
        return replace(
            job,
            state=JobState.AWAITING_REVIEW,
            started_at=None,
            finished_at=None,
            expires_at=None,
            progress=0.0,
            runner=None,
            meta=None,
        )
    # cancel_requested: whether its operator cancelled it, not whether an expiry had to
    # stop a run still going (JobStore.expire_held)
    cancelled = job.state is JobState.CANCELLED
    if job.receipt is not None:  # released (then perhaps expired): its metadata is its own
        return replace(job, started_at=None, progress=1.0, runner=None, cancel_requested=cancelled)
    return replace(
        job,
        started_at=None,
        progress=0.0,
        runner=None,
        expires_at=None,
        meta=None,
        cancel_requested=cancelled,
    )
