"""The audit library's own exceptions.

``audit`` is a standalone library: it does not import ``sandbox``.  The sandbox
translates these at its edge (``StoreUnavailable`` becomes ``AuditUnavailable``
and so on).  Key-directory problems raise :class:`audit.keys.KeyRingError`::

    AuditError
    ├── InvalidEntry          an entry's fields are not acceptable (the caller's fault)
    ├── InvalidQuery          an auditor query's filter or grouping is not acceptable
    ├── ProofError            a proof request or a proof is malformed
    │   └── RootMismatchError a proof leads to another root than expected
    ├── SignatureError        a tree head or receipt signature is bad or from an unknown key
    ├── NotFound              no such entry, or a tree size beyond the log
    ├── StoreUnavailable      the store could not record or read: nothing was acknowledged
    └── ExportError           an export directory is missing, unreadable or not empty
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "ExportError",
    "InvalidEntry",
    "InvalidQuery",
    "NotFound",
    "ProofError",
    "RootMismatchError",
    "SignatureError",
    "StoreUnavailable",
]


class AuditError(Exception):
    """Root of every error the audit library raises on purpose."""


class InvalidEntry(AuditError, ValueError):
    """An entry's fields cannot be recorded (wrong type, empty, not JSON-canonicalizable)."""


class InvalidQuery(AuditError, ValueError):
    """A filter or grouping names an unknown field or an unparseable time."""


class ProofError(AuditError, ValueError):
    """A proof was requested for impossible sizes, or a given proof is malformed."""


class RootMismatchError(ProofError):
    """A proof is well-formed but leads to another root: carries both for the report."""

    def __init__(self, expected: bytes, calculated: bytes) -> None:
        super().__init__(
            f"calculated root {calculated.hex()} does not match expected root {expected.hex()}"
        )
        self.expected = expected
        self.calculated = calculated


class SignatureError(AuditError):
    """A signature does not verify, or names a key id nobody published."""

    def __init__(self, message: str, *, unknown_key: bool = False) -> None:
        super().__init__(message)
        self.unknown_key = unknown_key


class NotFound(AuditError, LookupError):
    """The requested entry or tree size does not exist (yet)."""


class StoreUnavailable(AuditError):
    """The database failed; the append was not acknowledged (fail closed)."""


class ExportError(AuditError):
    """An export directory cannot be written or read."""
