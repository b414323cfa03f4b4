"""Fixtures: a control-plane DB holding the four demo datasets' catalog rows, and a world
of demo accounts and grants on it, at a fixed time, on SQLite or a real PostgreSQL."""

from __future__ import annotations

import atexit
import copy
import functools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from policies import Actor, Administration, Authority, MemoryRecorder
from policies.demo import create_demo
from policies.tokens import IssuedToken
from sandbox.core.db import datasets, open_control_db
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from tests.pgserver import PgServer

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ROWS = {
    "health.claims": 10_000,
    "market.enterprises": 2_000,
    "hrss.social_insurance": 5_000,
    "transport.trips": 8_000,
}


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def add_catalog_rows(engine: Engine) -> None:
    """The catalog rows of the demo datasets (no enclave needed to decide)."""
    with engine.begin() as conn:
        for dataset_id in DEMO_DATASETS:
            spec = demo_spec(dataset_id)
            conn.execute(
                sa.insert(datasets).values(
                    id=dataset_id,
                    domain=spec.domain,
                    name=spec.table,
                    title=spec.title,
                    description=spec.description,
                    entity_key=spec.entity_key,
                    row_count=ROWS[dataset_id],
                    connector="test",
                    source_uri=f"test://{dataset_id}",
                    source_sha256="0" * 64,
                    loaded_at="2026-11-01T00:00:00.000000Z",
                    schema_sha256="0" * 64,
                    classification=spec.to_dict(),
                    classification_sha256=spec.sha256(),
                    version=1,
                    registered_by="test",
                    frozen=False,
                )
            )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'control.db'}"


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> tuple[str, dict[str, str]]:
    """A PostgreSQL database holding the demo world, copied per test (CREATE ... TEMPLATE)."""
    url = pg_server.create_database("policies_world_template")
    engine = open_control_db(url)
    add_catalog_rows(engine)
    authority = Authority(engine, recorder=MemoryRecorder(), clock=Clock())
    tokens = create_demo(Administration(authority), Actor.host("tester"), now=NOW)
    authority.close()
    engine.dispose()
    return "policies_world_template", tokens


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def control_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The control plane on SQLite, then on a real PostgreSQL server."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'control.db'}"


@functools.cache
def _sqlite_template() -> tuple[Path, dict[str, str], list[dict[str, Any]]]:
    """The demo world built once per test process on SQLite: the database file, its tokens
    and the entries its building recorded (each SQLite world starts as a copy of it)."""
    root = Path(tempfile.mkdtemp(prefix="policies-world-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    worlds = build_world(f"sqlite:///{root / 'control.db'}")
    world = next(worlds)
    made = (root / "control.db", dict(world.tokens), copy.deepcopy(world.recorder.entries))
    next(worlds, None)  # past its yield: the world is closed, its engine disposed
    return made


def sqlite_world(path: Path) -> Iterator[World]:
    """The demo world on SQLite at ``path``: a copy of this process's template, its
    recorder holding what building the world recorded (as if built here)."""
    template, tokens, entries = _sqlite_template()
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copyfile(f"{template}{suffix}", f"{path}{suffix}")
    yield from build_world(f"sqlite:///{path}", tokens=tokens, entries=copy.deepcopy(entries))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The demo world on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield from sqlite_world(tmp_path / "control.db")
        return
    import psycopg

    server: PgServer = request.getfixturevalue("pg_server")
    template, tokens = request.getfixturevalue("pg_template")
    name = "w_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    with psycopg.connect(server.libpq_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield from build_world(server.url.rsplit("/", 1)[0] + f"/{name}", tokens=tokens)


@dataclass
class World:
    """Demo accounts and grants on one control plane, with tokens and a hand-moved clock."""

    url: str
    engine: Engine
    clock: Clock
    recorder: MemoryRecorder
    authority: Authority
    admin: Administration
    host: Actor
    tokens: dict[str, str]
    servers: list[tuple[Authority, Engine]] = field(default_factory=list)

    def actor(self, name: str) -> Actor:
        return self.authority.authenticate(self.tokens[name])

    def enrol(self, name: str, *, ttl: timedelta = timedelta(days=90)) -> IssuedToken:
        """A new token for ``name`` the only way the admin can bring one about: an enrolment
        code (from the host console), redeemed by the account's holder."""
        code = self.admin.issue_enrolment(self.host, name, token_ttl=ttl).code
        return self.admin.redeem_enrolment(code)

    def server(self, recorder: MemoryRecorder | None = None) -> Authority:
        """Another API server on the same database (its own engine, caches and enforcer)."""
        engine = open_control_db(self.url)
        server = Authority(engine, recorder=recorder or MemoryRecorder(), clock=self.clock)
        self.servers.append((server, engine))
        return server

    def close(self) -> None:
        for server, engine in [*self.servers, (self.authority, self.engine)]:
            server.close()
            engine.dispose()

    def grant_id(self, operator: str, dataset: str) -> str:
        actor = self.actor(operator)
        found = [g for g in self.admin.list_grants(actor) if g.dataset == dataset]
        return found[0].id


def build_world(
    url: str, tokens: dict[str, str] | None = None, entries: list[dict[str, Any]] | None = None
) -> Iterator[World]:
    """A world on ``url``; with ``tokens``, the database already holds it (a template copy),
    and ``entries`` are what building it recorded."""
    engine = open_control_db(url)
    if tokens is None:
        add_catalog_rows(engine)
    clock = Clock()
    recorder = MemoryRecorder()
    recorder.entries.extend(entries or [])
    authority = Authority(engine, recorder=recorder, clock=clock)
    admin = Administration(authority, k_floor=10)
    host = Actor.host("tester")
    if tokens is None:
        tokens = create_demo(admin, host, now=NOW)
    world = World(url, engine, clock, recorder, authority, admin, host, tokens)
    yield world
    world.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The demo world on SQLite."""
    yield from sqlite_world(tmp_path / "control.db")


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One demo world for a module of read-only decisions (do not change it)."""
    yield from sqlite_world(tmp_path_factory.mktemp("world") / "control.db")
