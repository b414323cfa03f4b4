"""The security suite's enclave: the demo deployment behind a real server, and a leak check.

Every test here talks to ``sandbox serve`` over loopback HTTP through clients whose
transport records each response body, so the leak check sees everything an attacker
would: released rows, refusals, job records, error bodies.  The identifier values
the check looks for are read from the enclave itself before the server starts (the
test, not the operator, is allowed to read rows).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sandbox.client import SandboxClient
from sandbox.core.classification import Role
from tests.api.conftest import LiveServer
from tests.conftest import build_deployment

ASCII_TOKEN = re.compile(r"[0-9A-Za-z]{6,}")
CJK_RUN = re.compile(r"[\u3400-\u9fff]{2,}")


@dataclass
class LeakCheck:
    """Looks for any identifier value of the enclave in text an operator received.

    ASCII identifiers (person numbers, identity-card numbers, credit codes, card ids)
    are matched as whole tokens; CJK identifiers (names) as any substring of a CJK run;
    anything else (an enterprise name mixing scripts and digits) as a plain substring.
    A value the request itself contained (an attacker typing a literal into its SQL)
    is not a leak of that response: the server may echo the operator's own SQL back.
    """

    ascii_values: frozenset[str]
    cjk_values: frozenset[str]
    cjk_lengths: tuple[int, ...]
    other_values: frozenset[str]
    checked: int = 0

    @classmethod
    def of(cls, values: set[str]) -> LeakCheck:
        cjk = {v for v in values if CJK_RUN.fullmatch(v)}
        plain = {v for v in values - cjk if ASCII_TOKEN.fullmatch(v)}
        other = {v for v in values - cjk - plain if len(v) >= 4}
        lengths = tuple(sorted({len(v) for v in cjk}))
        return cls(frozenset(plain), frozenset(cjk), lengths, frozenset(other))

    @property
    def size(self) -> int:
        return len(self.ascii_values) + len(self.cjk_values) + len(self.other_values)

    def found(self, text: str, request_text: str = "") -> list[str]:
        """The identifier values in ``text`` that ``request_text`` did not contain."""
        self.checked += 1
        hits = {tok for tok in ASCII_TOKEN.findall(text) if tok in self.ascii_values}
        for run in CJK_RUN.findall(text):
            for n in self.cjk_lengths:
                hits |= {run[i : i + n] for i in range(len(run) - n + 1)} & self.cjk_values
        hits |= {v for v in self.other_values if v in text}
        return sorted(v for v in hits if v not in request_text)

    def assert_clean(self, text: str, request_text: str = "") -> None:
        leaked = self.found(text, request_text)
        assert not leaked, f"{len(leaked)} identifier value(s) leaked, e.g. {leaked[0]!r}"


@dataclass
class Exchange:
    method: str
    path: str
    request: str
    status: int
    body: str


@dataclass
class RecordingTransport(httpx.BaseTransport):
    """An HTTP transport that keeps every request and response body it carried."""

    inner: httpx.HTTPTransport = field(default_factory=httpx.HTTPTransport)
    exchanges: list[Exchange] = field(default_factory=list)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        self.exchanges.append(
            Exchange(
                request.method,
                request.url.path + ("?" + request.url.query.decode() if request.url.query else ""),
                request.content.decode("utf-8", "replace"),
                response.status_code,
                body.decode("utf-8", "replace"),
            )
        )
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=request
        )

    def close(self) -> None:
        self.inner.close()


@dataclass
class SecurityServer:
    """The live server, its demo tokens, and the leak check over everything received."""

    live: LiveServer
    leaks: LeakCheck
    transport: RecordingTransport = field(default_factory=RecordingTransport)

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def tokens(self) -> dict[str, str]:
        return self.live.tokens

    def client(self, who: str, timeout: float = 60) -> SandboxClient:
        """A client for a demo account whose every response the leak check will see."""
        return SandboxClient(self.url, self.tokens[who], timeout=timeout, transport=self.transport)

    def assert_no_leaks(self) -> int:
        """Check every response received so far (the suite's final word); returns how many."""
        for ex in self.transport.exchanges:
            leaked = self.leaks.found(ex.body, ex.request + ex.path)
            assert not leaked, (
                f"{ex.method} {ex.path} -> {ex.status}: {len(leaked)} identifier value(s) "
                f"leaked, e.g. {leaked[0]!r}"
            )
        return len(self.transport.exchanges)


def identifier_values(platform) -> set[str]:  # type: ignore[no-untyped-def]
    """Every value of every column classified ``identifier``, in every dataset."""
    values: set[str] = set()
    with platform.enclave.cursor() as cur:
        for record in platform.catalog.list():
            for col in record.spec.columns:
                if col.role is Role.IDENTIFIER:
                    rows = cur.sql(f'SELECT DISTINCT "{col.name}"::VARCHAR FROM {record.id}')
                    values |= {r[0] for r in rows.fetchall() if r[0] is not None}
    return values


SERVER_ENV = {
    "SANDBOX_RATE_LIMIT_PER_MINUTE": "1000000",
    "SANDBOX_JOB_WORKERS": "2",
    # Held jobs count against it for query_timeout_s after submission (held_view), and the
    # corpus submits its reviewed lines faster than 64 a query_timeout_s when the machine
    # is idle: that limit is not what these suites test (tests/api/test_held_timing.py is).
    "SANDBOX_MAX_JOBS_PER_OPERATOR": "100000",
    "SANDBOX_QUERY_TIMEOUT_S": "10",
}


def _planner_reviewed(platform, tokens: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """op-planner's corpus lines are judged on exact results, as op-bank's: its bureau
    chooses ``reviewed`` for its grant (the demo's is ``dp``)."""
    from policies import Administration, ReleaseMode

    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    bureau = platform.authority.authenticate(tokens["bureau-transport"])
    for grant in admin.list_grants(bureau):
        if grant.operator == "op-planner":
            admin.set_release_mode(
                bureau, grant.id, ReleaseMode.REVIEWED, reason="attack corpus: exact results"
            )


def start_security_server(home: Path, env: dict[str, str] | None = None) -> SecurityServer:
    """A demo deployment (scale 0.01) in ``home`` served for real, with its leak check."""
    import json

    platform, tokens = build_deployment(home)
    try:
        leaks = LeakCheck.of(identifier_values(platform))
        _planner_reviewed(platform, tokens)
    finally:
        platform.close()
    (home / "demo-tokens.json").write_text(json.dumps(tokens))
    live = LiveServer(home, dict(tokens), env={**SERVER_ENV, **(env or {})})
    live.start()
    return SecurityServer(live, leaks)


@pytest.fixture(scope="session")
def security_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityServer]:
    """One server for the read-mostly attack corpus (tests must not exhaust its budgets)."""
    server = start_security_server(tmp_path_factory.mktemp("security") / "home")
    try:
        yield server
    finally:
        server.live.stop()
        server.transport.close()  # its pooled sockets, or pytest reports them unraisable
