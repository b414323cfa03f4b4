"""``sandbox job submit|status|wait|cancel|list|result``: analysis jobs, remote or local.

With ``--url`` (or ``SANDBOX_URL``) the commands talk to a server over HTTP with
:class:`sandbox.client.SandboxClient`.  Without it they act on the local home's
control-plane database: a submitted job is queued for the home's server; with
``--wait`` (or ``sandbox job wait``) a job still queued is run right here.
Every command needs the operator's token (``--token`` or ``SANDBOX_TOKEN``).
"""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from sandbox.cli.common import settings_of
from sandbox.core.errors import Conflict, InvalidInput, QueryRefused
from sandbox.core.wording import counted

if TYPE_CHECKING:  # imported where used: a --url command loads neither DuckDB nor pyarrow
    import pyarrow as pa

    from sandbox.client import SandboxClient
    from sandbox.core.settings import Settings

__all__ = ["job_app", "remote_or_local", "remote_query"]

job_app = typer.Typer(
    help="Analysis jobs: submit, follow, cancel, fetch results (local home or --url).",
    no_args_is_help=True,
)

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="SANDBOX_URL", help="A Sandbox server (else the local home)."),
]
TokenOpt = Annotated[
    str, typer.Option("--token", envvar="SANDBOX_TOKEN", help="Your operator API token.")
]
RESULT_FORMATS = ("table", "json", "csv", "parquet", "arrow")


def _client() -> "type[SandboxClient]":
    """:class:`SandboxClient`, imported without httpx's own command-line tool.

    httpx's package ``__init__`` imports ``httpx._main`` (rich, click, pygments: about
    half of httpx's import time) and falls back to a stub when that import fails; a
    ``None`` in ``sys.modules`` makes it fail.  The sandbox command never runs httpx's
    tool, so a --url command skips that import.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from sandbox.client import SandboxClient

    return SandboxClient


class Released(NamedTuple):
    """A released result fetched from a server (what a local query's QueryResult holds)."""

    table: "pa.Table"
    meta: dict[str, Any]
    receipt: dict[str, Any]


def _job_id(value: str) -> str:
    """Refuse an empty id as a usage error, as when ``JOB=$(sandbox job submit ...)`` failed."""
    if not value.strip():
        raise typer.BadParameter(
            "the job id is empty (did the `sandbox job submit` that should have printed it "
            "fail or get refused?)"
        )
    return value


JobIdArg = Annotated[
    str,
    typer.Argument(
        metavar="JOB_ID", help="The job's id, as printed by `sandbox job submit`.", callback=_job_id
    ),
]


class _Local:
    """The client's job methods over the local home (no server needed)."""

    def __init__(self, settings: "Settings", token: str) -> None:
        from sandbox.services import Services

        self.services = Services(settings)
        self.actor = self.services.platform.authority.authenticate(token)

    def close(self) -> None:
        self.services.platform.close()

    def submit(
        self, sql: str, *, purpose: str | None, format: str, wait: bool, epsilon: float | None
    ) -> dict[str, Any]:
        import uuid

        job = self.services.desk.submit(
            self.actor,
            sql,
            purpose=purpose,
            fmt=format,
            rid=uuid.uuid4().hex,
            client="cli",
            epsilon=epsilon,
        )
        if wait:  # run here (no server needed); a held job shown as over HTTP (held_view)
            from sandbox.jobs.held_view import seen_by_operator

            job = seen_by_operator(self.services.runner.run_now(job.id))
        return job.to_dict()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.services.desk.get(self.actor, job_id, None, "cli").to_dict()

    def jobs(self, *, state: list[str] | None, limit: int) -> list[dict[str, Any]]:
        from sandbox.jobs.store import JobState

        states = [JobState(s) for s in state] if state else None
        found = self.services.desk.list_jobs(
            self.actor, states=states, limit=limit, offset=0, rid=None, client="cli"
        )
        return [j.to_dict() for j in found]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.services.desk.cancel(self.actor, job_id, None, "cli").to_dict()

    def wait(self, job_id: str, *, timeout: float | None, progress: Any) -> dict[str, Any]:
        from sandbox.jobs.held_view import seen_by_operator

        job = self.job(job_id)
        real = self.services.runner.store.get(job_id)
        if real.state.value == "queued":  # run here, whatever the operator's view shows
            job = seen_by_operator(self.services.runner.run_now(job_id)).to_dict()
        if job["state"] in ("queued", "running"):
            final = self.services.runner.wait(job_id, timeout or 3600.0)
            job = seen_by_operator(final).to_dict()
        progress(job)
        return job

    def result(self, job_id: str) -> "pa.Table":
        return self.services.desk.result(self.actor, job_id, "arrow", None, "cli")[1]

    def receipt(self, job_id: str) -> dict[str, Any]:
        return self.services.desk.receipt(self.actor, job_id, None, "cli")


class _Remote:
    def __init__(self, url: str, token: str) -> None:
        self.client: SandboxClient = _client()(url, token)

    def close(self) -> None:
        self.client.close()

    def submit(
        self, sql: str, *, purpose: str | None, format: str, wait: bool, epsilon: float | None
    ) -> dict[str, Any]:
        from sandbox.client import FINAL_STATES

        job = self.client.submit(sql, purpose=purpose, format=format, wait=wait, epsilon=epsilon)
        if wait and job["state"] not in FINAL_STATES | {"awaiting_review"}:
            job = self.client.wait(job["id"])
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.job(job_id)

    def jobs(self, *, state: list[str] | None, limit: int) -> list[dict[str, Any]]:
        return self.client.jobs(state=state, limit=limit)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.client.cancel(job_id)

    def wait(self, job_id: str, *, timeout: float | None, progress: Any) -> dict[str, Any]:
        return self.client.wait(job_id, timeout=timeout, progress=progress)

    def result(self, job_id: str) -> "pa.Table":
        return self.client.result(job_id)

    def receipt(self, job_id: str) -> dict[str, Any]:
        return self.client.receipt(job_id)


@contextmanager
def remote_or_local(ctx: typer.Context, url: str | None, token: str) -> Iterator[Any]:
    backend: _Local | _Remote = _Remote(url, token) if url else _Local(settings_of(ctx.obj), token)
    try:
        yield backend
    finally:
        backend.close()


def _show(job: dict[str, Any]) -> None:
    typer.echo(json.dumps(job, indent=2, ensure_ascii=False, default=str))


def _line(job: dict[str, Any]) -> str:
    extra = f" [{job['rule']}] {job['message']}" if job.get("rule") else ""
    return f"{job['id']}  {job['state']}{extra}"


def _progress(job: dict[str, Any]) -> None:
    typer.echo(f"{job['id']}  {job['state']:<16} {job['progress'] * 100:5.1f}%", err=True)


def _outcome(job: dict[str, Any]) -> None:
    """Exit status: 0 succeeded (or awaiting review), 2 refused/failed/cancelled/expired."""
    if job["state"] in ("refused", "failed", "cancelled", "expired"):
        raise QueryRefused(job.get("message") or job["state"], rule=job.get("rule") or job["state"])


@job_app.command("submit")
def submit(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="One SELECT over datasets you hold grants on.")],
    token: TokenOpt,
    url: UrlOpt = None,
    purpose: Annotated[str | None, typer.Option(help="Purpose code (picks the grant).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json, csv, parquet or arrow.")] = "json",
    wait: Annotated[bool, typer.Option(help="Wait for the outcome.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
    epsilon: Annotated[
        float | None,
        typer.Option(help="ε for this job, up to the grant's per-query maximum (its default)."),
    ] = None,
) -> None:
    """Submit an analysis job; prints its id and state (refusals exit 2 with the rule)."""
    if fmt not in RESULT_FORMATS[1:]:
        raise InvalidInput("--format is json, csv, parquet or arrow", rule="cli.format")
    with remote_or_local(ctx, url, token) as backend:
        job = backend.submit(sql, purpose=purpose, format=fmt, wait=wait, epsilon=epsilon)
    if as_json:
        _show(job)
    else:
        typer.echo(_line(job))
    _outcome(job)


@job_app.command("status")
def status(ctx: typer.Context, job_id: JobIdArg, token: TokenOpt, url: UrlOpt = None) -> None:
    """A job's state, progress and outcome (JSON)."""
    with remote_or_local(ctx, url, token) as backend:
        _show(backend.job(job_id))


@job_app.command("wait")
def wait_cmd(
    ctx: typer.Context,
    job_id: JobIdArg,
    token: TokenOpt,
    url: UrlOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
) -> None:
    """Wait for a job (progress on stderr); exit 0 when it succeeded or awaits review."""
    with remote_or_local(ctx, url, token) as backend:
        job = backend.wait(job_id, timeout=timeout, progress=_progress)
    typer.echo(_line(job))
    _outcome(job)


@job_app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobIdArg, token: TokenOpt, url: UrlOpt = None) -> None:
    """Cancel a queued, running or held job."""
    with remote_or_local(ctx, url, token) as backend:
        typer.echo(_line(backend.cancel(job_id)))


@job_app.command("list")
def list_cmd(
    ctx: typer.Context,
    token: TokenOpt,
    url: UrlOpt = None,
    state: Annotated[list[str] | None, typer.Option(help="Only this state (repeat).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """My jobs, newest first."""
    with remote_or_local(ctx, url, token) as backend:
        found = backend.jobs(state=state, limit=limit)
    for job in found:
        typer.echo(f"{_line(job)}  {job['created_at']}  {job['sql'][:60]}")


@job_app.command("result")
def result(
    ctx: typer.Context,
    job_id: JobIdArg,
    token: TokenOpt,
    url: UrlOpt = None,
    fmt: Annotated[str, typer.Option("--format", help=", ".join(RESULT_FORMATS))] = "table",
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    receipt: Annotated[Path | None, typer.Option(help="Also write the signed receipt.")] = None,
) -> None:
    """Fetch a succeeded job's released result."""
    if fmt not in RESULT_FORMATS:
        raise InvalidInput(f"--format is one of {', '.join(RESULT_FORMATS)}", rule="cli.format")
    if fmt in ("parquet", "arrow") and out is None:
        raise InvalidInput(f"--format {fmt} is binary: give --out FILE", rule="cli.format")
    with remote_or_local(ctx, url, token) as backend:
        table = backend.result(job_id)
        doc = backend.receipt(job_id) if receipt is not None else None
    if receipt is not None and doc is not None:
        receipt.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    data = _encode(table, fmt)
    if out is not None:
        out.write_bytes(data)
        typer.echo(f"wrote {counted(table.num_rows, 'row')} to {out}", err=True)
    else:
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()


def _encode(table: "pa.Table", fmt: str) -> bytes:
    if fmt == "table":
        from sandbox.cli.query import format_table

        return (format_table(table) + "\n").encode()
    from sandbox.jobs.results import encode

    return b"".join(encode(table, fmt)) + (b"\n" if fmt == "json" else b"")


def remote_query(
    url: str, token: str, sql: str, *, purpose: str | None, explain: bool, epsilon: float | None
) -> Any:
    """``sandbox query --url``: explain, or run as a job and fetch the released result."""
    with _client()(url, token) as client:
        if explain:
            verdict = client.explain(sql, purpose=purpose, epsilon=epsilon)
            shown = {k: v for k, v in verdict.items() if v is not None}
            typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
            if not verdict["accepted"]:
                raise QueryRefused(verdict["message"], rule=verdict["rule"])
            return None
        job = client.submit(sql, purpose=purpose, format="arrow", wait=True, epsilon=epsilon)
        if job["state"] in ("queued", "running"):
            job = client.wait(job["id"], progress=_progress)
        if job["state"] == "awaiting_review":
            raise Conflict(
                f"job {job['id']} awaits the bureau's review; fetch it later with "
                f"`sandbox job result {job['id']}`",
                rule="job.review",
            )
        _outcome(job)
        table = client.result(job["id"])
        meta = {**(job.get("meta") or {}), "job": job["id"]}
        return Released(table, meta, client.receipt(job["id"]))
