# Over 400 lines: one method per API route, so the client mirrors docs/api.md.
"""A Python client for the Sandbox HTTP API (httpx).

::

    from sandbox.client import SandboxClient

    with SandboxClient("https://sandbox.example.org", token) as client:
        job = client.submit("SELECT district, count(*) AS n FROM health.claims GROUP BY 1")
        job = client.wait(job["id"], progress=lambda j: print(j["state"], j["progress"]))
        table = client.result(job["id"])          # pyarrow.Table
        frame = client.result_frame(job["id"])    # pandas.DataFrame, if pandas is installed

Every error response becomes the :class:`~sandbox.core.errors.SandboxError` subclass of its
``code`` (with ``message`` and ``rule``); a :class:`~sandbox.core.errors.RateLimited` carries
``retry_after`` (seconds).  Nothing is retried silently.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sandbox.core import errors
from sandbox.core.errors import SandboxError

if TYPE_CHECKING:  # imported by result(): a CLI command that fetches none starts faster
    import pyarrow as pa

__all__ = ["FINAL_STATES", "ConnectionFailed", "SandboxClient"]

FINAL_STATES = frozenset({"succeeded", "failed", "refused", "cancelled", "expired"})
"""Job states that will not change again (``awaiting_review`` may)."""


class ConnectionFailed(SandboxError):
    """The server could not be reached (or the connection broke)."""

    code = "connection_failed"
    status = 503


def _error_classes() -> dict[str, type[SandboxError]]:
    found: dict[str, type[SandboxError]] = {}
    pending: list[type[SandboxError]] = [SandboxError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_response(response: httpx.Response) -> SandboxError:
    """The SandboxError an error response stands for."""
    try:
        body = response.json()
        code, message, rule = body["code"], body["message"], body.get("rule")
    except (ValueError, KeyError, TypeError):
        code, message, rule = "http_error", f"HTTP {response.status_code}", None
    cls = _error_classes().get(code, SandboxError)
    exc = cls(message, rule=rule)
    if cls is SandboxError:
        exc.code = code
        exc.status = response.status_code
    if isinstance(exc, errors.RateLimited):
        exc.retry_after = int(response.headers.get("Retry-After", "1"))  # type: ignore[attr-defined]
    return exc


class SandboxClient:
    """One token's view of one Sandbox server."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "sandbox-client"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send one request; an error response raises its SandboxError."""
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"cannot reach {self.url} ({type(exc).__name__})", rule="client.connect"
            ) from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    @staticmethod
    def _params(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    # -- anyone ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")  # type: ignore[no-any-return]

    def issue_own_token(
        self, *, days: float = 90, label: str = "", replace_current: bool = False
    ) -> dict[str, Any]:
        """A new token for this token's own account (``replace_current`` revokes this one)."""
        body = {"days": days, "label": label, "replace_current": replace_current}
        return self._json("POST", "/v1/me/tokens", json=body)  # type: ignore[no-any-return]

    @classmethod
    def redeem(
        cls, url: str, code: str, *, token_sha256: str | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Redeem an enrolment code for your account's token (no token needed); with
        ``token_sha256``, for a token you made (pending a second admin's approval when an
        admin account issued the code)."""
        body = (
            {"code": code} if token_sha256 is None else {"code": code, "token_sha256": token_sha256}
        )
        with cls(url, "", timeout=timeout) as client:
            client._http.headers.pop("Authorization", None)
            return client._json("POST", "/v1/enrol", json=body)  # type: ignore[no-any-return]

    def me(self) -> dict[str, Any]:
        return self._json("GET", "/v1/me")  # type: ignore[no-any-return]

    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/datasets")  # type: ignore[no-any-return]

    def grants(self, *, operator: str | None = None, domain: str | None = None) -> list[Any]:
        return self._json(  # type: ignore[no-any-return]
            "GET", "/v1/grants", params=self._params(operator=operator, domain=domain)
        )

    def grant(self, grant_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/grants/{grant_id}")  # type: ignore[no-any-return]

    def usage(self, **filters: Any) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/usage", params=self._params(**filters))  # type: ignore[no-any-return]

    def statement(self, month: str, **who: Any) -> str:
        return self.request("GET", f"/v1/statements/{month}", params=self._params(**who)).text

    def settings(self) -> dict[str, Any]:
        return self._json("GET", "/v1/settings")  # type: ignore[no-any-return]

    # -- operator --------------------------------------------------------------------------

    def explain(
        self, sql: str, *, purpose: str | None = None, epsilon: float | None = None
    ) -> dict[str, Any]:
        body = self._params(sql=sql, purpose=purpose, epsilon=epsilon)
        return self._json("POST", "/v1/explain", json=body)  # type: ignore[no-any-return]

    def submit(
        self,
        sql: str,
        *,
        purpose: str | None = None,
        format: str = "json",
        wait: bool = False,
        timeout: float = 10.0,
        epsilon: float | None = None,
    ) -> dict[str, Any]:
        """Submit a job; with ``wait``, the server waits up to ``timeout`` for its outcome.

        ``epsilon``: the ε this query spends, up to the grant's per-query maximum.
        """
        params = {"wait": "true", "timeout": timeout} if wait else None
        body = self._params(sql=sql, purpose=purpose, format=format, epsilon=epsilon)
        return self._json("POST", "/v1/jobs", json=body, params=params)  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def jobs(
        self, *, state: list[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        params = self._params(state=state, limit=limit, offset=offset)
        return self._json("GET", "/v1/jobs", params=params)["jobs"]  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 0.25,
        progress: Callable[[dict[str, Any]], None] | None = None,
        until_review: bool = True,
    ) -> dict[str, Any]:
        """Poll until the job is final (or awaiting review, with ``until_review``).

        ``progress`` is called with the job each time its state or progress changes.
        Raises :class:`~sandbox.core.errors.QueryTimeout` (rule ``client.wait``) after ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[str, float] | None = None
        delay = min(0.05, poll_s)
        while True:
            job = self.job(job_id)
            now = (job["state"], job["progress"])
            if progress is not None and now != seen:
                progress(job)
            seen = now
            if job["state"] in FINAL_STATES or (until_review and job["state"] == "awaiting_review"):
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.QueryTimeout(
                    f"job {job_id} is still {job['state']} after {timeout:g} s", rule="client.wait"
                )
            time.sleep(delay)
            delay = min(poll_s, delay * 2)

    def result_bytes(self, job_id: str, format: str = "arrow") -> bytes:
        return self.request("GET", f"/v1/jobs/{job_id}/result", params={"format": format}).content

    def stream_result(self, job_id: str, format: str = "csv") -> Iterator[bytes]:
        """The result in ``format``, chunk by chunk (for large results, to a file)."""
        try:
            with self._http.stream(
                "GET", f"/v1/jobs/{job_id}/result", params={"format": format}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"cannot reach {self.url} ({type(exc).__name__})", rule="client.connect"
            ) from None

    def result(self, job_id: str) -> pa.Table:
        """The released result as a pyarrow Table (fetched as Arrow IPC)."""
        data = self.result_bytes(job_id, "arrow")
        import pyarrow as pa

        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()

    def result_frame(self, job_id: str) -> Any:
        """The released result as a pandas DataFrame (needs pandas)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise errors.InvalidInput(
                "pandas is not installed: use result() for a pyarrow Table", rule="client.pandas"
            ) from None
        return self.result(job_id).to_pandas()

    def receipt(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/receipt")  # type: ignore[no-any-return]

    def query(
        self, sql: str, *, purpose: str | None = None, timeout: float | None = None
    ) -> tuple[pa.Table, dict[str, Any]]:
        """Submit, wait and fetch: the released table and the finished job."""
        job = self.submit(sql, purpose=purpose, format="arrow")
        job = self.wait(job["id"], timeout=timeout)
        if job["state"] != "succeeded":
            raise _job_error(job)
        return self.result(job["id"]), job

    # -- bureau ----------------------------------------------------------------------------

    def upload(self, path: Path, *, domain: str) -> dict[str, Any]:
        """Upload a source file (streamed) for a registration in ``domain``."""

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

        return self._json(  # type: ignore[no-any-return]
            "POST",
            "/v1/uploads",
            params={"domain": domain, "filename": Path(path).name},
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
        )

    def register(
        self,
        classification: str,
        *,
        upload_id: str | None = None,
        path: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/datasets``: closed, refused to every account (``registration.procedure``).

        A bureau registers through the procedure: :meth:`apply_registration`."""
        source = self._params(upload_id=upload_id, path=path, format=format)
        body = {"classification": classification, "source": source}
        return self._json("POST", "/v1/datasets", json=body)  # type: ignore[no-any-return]

    def apply_registration(
        self,
        classification: str,
        *,
        update_frequency: str,
        upload_id: str | None = None,
        path: str | None = None,
        format: str | None = None,
        listing: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Apply to register (or re-register) a dataset: the registration procedure's first
        step (the admin accepts, reviews and issues the certificate)."""
        source = self._params(upload_id=upload_id, path=path, format=format)
        body: dict[str, Any] = {
            "classification": classification,
            "source": source,
            "update_frequency": update_frequency,
        }
        if listing is not None:
            body["listing"] = listing
        return self._json("POST", "/v1/registrations", json=body)  # type: ignore[no-any-return]

    def classify(self, dataset_id: str, classification: str) -> dict[str, Any]:
        return self._json(  # type: ignore[no-any-return]
            "PUT",
            f"/v1/datasets/{dataset_id}/classification",
            json={"classification": classification},
        )

    def quality(self, dataset_id: str) -> dict[str, Any]:
        """The dataset's quality report (newest version) and its history."""
        return self._json("GET", f"/v1/datasets/{dataset_id}/quality")  # type: ignore[no-any-return]

    def products(self) -> list[dict[str, Any]]:
        """Data products you may see, with their usage counts."""
        return self._json("GET", "/v1/products")  # type: ignore[no-any-return]

    def run_product(
        self, product_id: str, params: dict[str, Any], *, wait: bool = False
    ) -> dict[str, Any]:
        """Run a product you subscribe to: ``{"product", "subscription", "job"}``."""
        return self._json(  # type: ignore[no-any-return]
            "POST",
            f"/v1/products/{product_id}/run",
            params=self._params(wait=wait or None),
            json={"params": params},
        )

    def issue_grant(self, **terms: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(terms, default=str))
        return self._json("POST", "/v1/grants", json=body)  # type: ignore[no-any-return]

    def narrow_grant(self, grant_id: str, **changes: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(changes, default=str))
        return self._json("POST", f"/v1/grants/{grant_id}/narrow", json=body)  # type: ignore[no-any-return]

    def set_release_mode(
        self,
        grant_id: str,
        mode: str,
        *,
        reason: str,
        epsilon_total: float | None = None,
        epsilon_per_query: float | None = None,
    ) -> dict[str, Any]:
        """The owning bureau's choice: ``dp`` (noised) or ``reviewed`` (exact after review)."""
        body: dict[str, Any] = {"mode": mode, "reason": reason}
        if epsilon_total is not None:
            body["epsilon_total"] = epsilon_total
        if epsilon_per_query is not None:
            body["epsilon_per_query"] = epsilon_per_query
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/v1/grants/{grant_id}/release-mode", json=body
        )

    def grant_status(self, grant_id: str, change: str, reason: str = "") -> dict[str, Any]:
        """``change`` is suspend, resume or revoke."""
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/v1/grants/{grant_id}/{change}", json={"reason": reason}
        )

    def reviews(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/reviews")  # type: ignore[no-any-return]

    def review(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/reviews/{job_id}")  # type: ignore[no-any-return]

    def approve(self, job_id: str, reason: str) -> dict[str, Any]:
        body = {"verdict": "approve", "reason": reason}
        return self._json("POST", f"/v1/reviews/{job_id}", json=body)  # type: ignore[no-any-return]

    def reject(self, job_id: str, reason: str) -> dict[str, Any]:
        body = {"verdict": "reject", "reason": reason}
        return self._json("POST", f"/v1/reviews/{job_id}", json=body)  # type: ignore[no-any-return]

    # -- auditor ---------------------------------------------------------------------------

    def audit_entries(self, **filters: Any) -> list[dict[str, Any]]:
        params = self._params(**filters)
        return self._json("GET", "/v1/audit/entries", params=params)["entries"]  # type: ignore[no-any-return]

    def audit_entry(self, seq: int) -> dict[str, Any]:
        return self._json("GET", f"/v1/audit/entries/{seq}")  # type: ignore[no-any-return]

    def audit_verify(self) -> dict[str, Any]:
        return self._json("POST", "/v1/audit/verify")  # type: ignore[no-any-return]

    def tree_head(self) -> dict[str, Any]:
        return self._json("GET", "/v1/audit/tree-head")  # type: ignore[no-any-return]

    def sign_tree_head(self) -> dict[str, Any]:
        """Have the platform sign a tree head over every entry now (auditors)."""
        return self._json("POST", "/v1/audit/tree-head")  # type: ignore[no-any-return]

    def inclusion_proof(self, seq: int, size: int | None = None) -> dict[str, Any]:
        params = self._params(seq=seq, size=size)
        return self._json("GET", "/v1/audit/proofs/inclusion", params=params)  # type: ignore[no-any-return]

    def consistency_proof(self, size1: int, size2: int | None = None) -> dict[str, Any]:
        params = self._params(size1=size1, size2=size2)
        return self._json("GET", "/v1/audit/proofs/consistency", params=params)  # type: ignore[no-any-return]

    def audit_export(self, destination: Path) -> Path:
        """Download an export archive (.tar.gz) to ``destination``."""
        response = self.request("GET", "/v1/audit/export")
        Path(destination).write_bytes(response.content)
        return Path(destination)

    # -- admin -----------------------------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/admin/accounts")  # type: ignore[no-any-return]

    def create_account(self, **account: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(account, default=str))
        return self._json("POST", "/v1/admin/accounts", json=body)  # type: ignore[no-any-return]

    def issue_token(self, account: str, *, days: float = 90, label: str = "") -> dict[str, Any]:
        """A token for ``account``: refused (``token.not_own``) unless it is your own."""
        body = {"days": days, "label": label}
        return self._json("POST", f"/v1/admin/accounts/{account}/tokens", json=body)  # type: ignore[no-any-return]

    def approve_enrolment(self, enrolment_id: str, fingerprint: str) -> dict[str, Any]:
        """Approve a redeemed enrolment as the second administrator (admin)."""
        path = f"/v1/admin/enrolments/{enrolment_id}/approve"
        return self._json("POST", path, json={"fingerprint": fingerprint})  # type: ignore[no-any-return]

    def enrol(
        self, account: str, *, hours: float = 24, days: float = 90, label: str = ""
    ) -> dict[str, Any]:
        """A one-time enrolment code for ``account`` (admin): hand it to the holder."""
        body = {"hours": hours, "days": days, "label": label}
        return self._json("POST", f"/v1/admin/accounts/{account}/enrolments", json=body)  # type: ignore[no-any-return]

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/admin/tokens/{token_id}/revoke")  # type: ignore[no-any-return]

    def freeze(
        self, *, dataset: str | None = None, operator: str | None = None, reason: str = ""
    ) -> Any:
        body = self._params(dataset=dataset, operator=operator, reason=reason)
        return self._json("POST", "/v1/admin/freeze", json=body)

    def unfreeze(
        self, *, dataset: str | None = None, operator: str | None = None, reason: str = ""
    ) -> Any:
        body = self._params(dataset=dataset, operator=operator, reason=reason)
        return self._json("POST", "/v1/admin/unfreeze", json=body)

    def rotate_key(self) -> dict[str, str]:
        return self._json("POST", "/v1/admin/keys/rotate")  # type: ignore[no-any-return]

    def update_settings(self, **changes: Any) -> dict[str, Any]:
        return self._json("PUT", "/v1/admin/settings", json=changes)  # type: ignore[no-any-return]


def _job_error(job: dict[str, Any]) -> SandboxError:
    """The error a job that did not succeed stands for."""
    state = job["state"]
    message = job.get("message") or f"the job is {state}"
    rule = job.get("rule")
    if state == "refused":
        return errors.QueryRefused(message, rule=rule)
    if state == "awaiting_review":
        return errors.Conflict(f"job {job['id']} awaits the bureau's review", rule="job.review")
    if state == "cancelled":
        return errors.Conflict(message, rule=rule)
    if state == "expired":
        return errors.Conflict(message, rule=rule)
    return errors.EnclaveError(message, rule=rule)
