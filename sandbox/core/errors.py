"""The one exception tree of Sandbox.

Every error a user can see descends from :class:`SandboxError`.  Each class
carries a stable machine-readable ``code`` and the HTTP ``status`` it maps to,
so the server renders every error in one handler and the CLI prints the same
code.  A refusal also names the ``rule`` that refused it.  Messages are written
by us, never copied from a data value::

    SandboxError
    ├── InvalidInput (400)
    │   ├── ClassificationError (422)
    │   ├── ConnectorError (422)
    │   └── CertificateError (422)
    ├── AuthenticationError (401)
    ├── Forbidden (403)
    │   └── BudgetExhausted (403)
    ├── QueryRefused (422)
    ├── NotFound (404)
    │   └── Withheld (404)
    ├── Conflict (409)
    ├── ResultTooLarge (413)
    ├── QueryTimeout (408)
    ├── RateLimited (429)
    │   └── QuotaExceeded (429)
    ├── EnclaveError (500)
    │   └── EnclaveBusy (503)
    ├── AuditUnavailable (503)
    └── ControlPlaneUnavailable (503)
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailable",
    "AuthenticationError",
    "BudgetExhausted",
    "CertificateError",
    "ClassificationError",
    "Conflict",
    "ConnectorError",
    "ControlPlaneUnavailable",
    "EnclaveBusy",
    "EnclaveError",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "QueryRefused",
    "QueryTimeout",
    "QuotaExceeded",
    "RateLimited",
    "ResultTooLarge",
    "SandboxError",
    "Withheld",
]


class SandboxError(Exception):
    """Root of every error Sandbox reports; ``code`` and ``status`` are stable API."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule

    def to_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.rule:
            body["rule"] = self.rule
        return body

    def __str__(self) -> str:
        return f"{self.message} [rule: {self.rule}]" if self.rule else self.message

    @property
    def audited(self) -> tuple[str, str]:
        """The rule and message the audit trail records (the caller's, unless withheld)."""
        return self.rule or self.code, self.message


class InvalidInput(SandboxError):
    code = "invalid_input"
    status = 400


class ClassificationError(InvalidInput):
    """A classification file does not describe its dataset correctly."""

    code = "invalid_classification"
    status = 422


class ConnectorError(InvalidInput):
    """A source could not be read; the enclave is left unchanged."""

    code = "connector_error"
    status = 422


class CertificateError(InvalidInput):
    """A registration certificate is malformed, tampered with, or signed by an unknown key."""

    code = "invalid_certificate"
    status = 422


class AuthenticationError(SandboxError):
    code = "unauthenticated"
    status = 401


class Forbidden(SandboxError):
    code = "forbidden"
    status = 403


class BudgetExhausted(Forbidden):
    """A grant's privacy budget (epsilon) cannot pay for this release."""

    code = "budget_exhausted"
    status = 403


class QueryRefused(SandboxError):
    """The guard refused a query; ``rule`` names the rule."""

    code = "query_refused"
    status = 422


class NotFound(SandboxError):
    code = "not_found"
    status = 404


class Withheld(NotFound):
    """A refusal answered exactly as "does not exist" because its real reason would tell
    the caller that something of another account exists (another operator's job, a
    dataset it holds no grant on).  The audit trail records the real rule and reason
    (:attr:`audited`); the caller sees only the not-found answer."""

    def __init__(self, message: str, *, rule: str, actual_rule: str, actual_reason: str) -> None:
        super().__init__(message, rule=rule)
        self.actual_rule = actual_rule
        self.actual_reason = actual_reason

    @property
    def audited(self) -> tuple[str, str]:
        return self.actual_rule, self.actual_reason


class Conflict(SandboxError):
    code = "conflict"
    status = 409


class ResultTooLarge(SandboxError):
    code = "result_too_large"
    status = 413


class QueryTimeout(SandboxError):
    code = "query_timeout"
    status = 408


class RateLimited(SandboxError):
    code = "rate_limited"
    status = 429


class QuotaExceeded(RateLimited):
    """A grant's daily quota (queries or rows scanned) is used up."""

    code = "quota_exceeded"
    status = 429


class EnclaveError(SandboxError):
    """The enclave failed in a way that is not the caller's fault."""

    code = "enclave_error"
    status = 500


class EnclaveBusy(EnclaveError):
    """The enclave file is held by another process (e.g. a running server)."""

    code = "enclave_busy"
    status = 503


class AuditUnavailable(SandboxError):
    """The audit trail could not record an entry; nothing is released (fail closed)."""

    code = "audit_unavailable"
    status = 503


class ControlPlaneUnavailable(SandboxError):
    """The control-plane database refused a read or write (locked, disk full, gone).

    Its transaction rolled back, so nothing it would have recorded or released happened.
    """

    code = "control_plane_unavailable"
    status = 503
