"""Errors of the audit package reported as the project's errors: one edge, one mapping.

``audit`` stands alone and knows nothing of :class:`~sandbox.core.errors.SandboxError`;
the API and the CLI translate its errors here, so both render them alike.
"""

from __future__ import annotations

from audit import (
    AuditError,
    ExportError,
    InvalidEntry,
    InvalidQuery,
    KeyRingError,
    NotFound,
    ProofError,
    StoreUnavailable,
)
from sandbox.core.errors import AuditUnavailable, InvalidInput, SandboxError
from sandbox.core.errors import NotFound as SandboxNotFound

__all__ = ["translate_audit_error"]


def translate_audit_error(exc: AuditError | KeyRingError) -> SandboxError:
    """The sandbox error an audit error is reported as (one edge, one mapping)."""
    if isinstance(exc, NotFound):
        return SandboxNotFound(str(exc), rule="audit.not_found")
    if isinstance(exc, InvalidEntry | InvalidQuery | ProofError):
        return InvalidInput(str(exc), rule="audit.invalid")
    if isinstance(exc, ExportError):
        return InvalidInput(str(exc), rule="audit.export")
    if isinstance(exc, StoreUnavailable | KeyRingError):
        return AuditUnavailable(str(exc), rule="audit.store")
    return AuditUnavailable(str(exc), rule="audit.error")
