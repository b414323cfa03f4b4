"""A job's states, and which of them are active or final.

The diagram of the transitions is in :mod:`sandbox.jobs.store`.
"""

from __future__ import annotations

import enum

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "HIDDEN_STATES", "JobState"]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_REVIEW = "awaiting_review"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
"""States that count against an operator's concurrent-jobs limit."""
FINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.REFUSED, JobState.CANCELLED, JobState.EXPIRED}
)
HIDDEN_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.AWAITING_REVIEW})
"""The states a review-bound job's operator sees as one, ``awaiting_review``
(:mod:`sandbox.jobs.held_view`)."""
