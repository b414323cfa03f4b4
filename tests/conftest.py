"""Shared fixtures: a tiny enclave in a temp dir, and a real PostgreSQL server."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
from hypothesis import HealthCheck, settings

from tests.pgserver import PgServer, start_pg_server

# Property-based budgets: `make test` runs the default profile (bounded, about a
# hundred examples a property); `make test-long` runs `--hypothesis-profile=long`.
# Tests that set `max_examples` themselves scale it with `hypothesis_scale()`.
settings.register_profile("default", deadline=None)
settings.register_profile(
    "long",
    deadline=None,
    max_examples=2_000,
    suppress_health_check=[HealthCheck.too_slow],
)


def hypothesis_scale() -> int:
    """How many times more examples the active profile asks for than the default."""
    # Not the bare name: the `settings` fixture below rebinds it in this module.
    return max(1, hypothesis.settings().max_examples // 100)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = start_pg_server()
    except (FileNotFoundError, OSError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL database for one test (SQLAlchemy URL)."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:50].lower()
    return pg_server.create_database(name)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    from sandbox.core.settings import Settings

    return Settings(home=tmp_path / "home", threads=2, memory_limit="1GB")


@pytest.fixture
def platform(settings):  # type: ignore[no-untyped-def]
    """An initialised, empty home in a temp dir."""
    from sandbox.platform import Platform

    plat = Platform(settings)
    plat.init()
    yield plat
    plat.close()


@pytest.fixture(scope="session")
def demo_platform(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A small demo home (scale 0.01: 10,000 claims) shared by read-only tests."""
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    plat = Platform(Settings(home=tmp_path_factory.mktemp("demo") / "home", threads=2))
    plat.init()
    plat.load_demo_data(scale=0.01)
    yield plat
    plat.close()


def _make_deployment(home: Path) -> dict[str, str]:
    """Build a demo home (scale 0.01) with the demo accounts and grants; its tokens."""
    from datetime import UTC, datetime

    from policies import Actor, Administration
    from policies.demo import create_demo
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    plat = Platform(Settings(home=home, threads=2))
    try:
        plat.init()
        plat.load_demo_data(scale=0.01)
        admin = Administration(plat.authority, k_floor=plat.settings.k_floor)
        return create_demo(admin, Actor.host("tests"), now=datetime.now(UTC))
    finally:
        plat.close()


def copy_master_key(template: Path, home: Path) -> None:
    """Copy a home's master key file (kept beside the home, not in it) along with it."""
    key = template.parent / f"{template.name}.master.key"
    if key.exists():
        shutil.copy2(key, home.parent / f"{home.name}.master.key")


@functools.cache
def _deployment_template() -> tuple[Path, dict[str, str]]:
    """One demo deployment per test process, built on first use and copied by every
    :func:`build_deployment` (building one takes seconds; a copy, milliseconds).  A home
    holds no absolute path (tests/test_conftest.py checks that a copy works as its own)."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-template-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tokens = _make_deployment(root / "home")
    return root / "home", tokens


def build_deployment(home: Path):  # type: ignore[no-untyped-def]
    """A demo home (scale 0.01) with the demo accounts, grants and tokens: (platform, tokens).

    A copy of this process's template deployment: the same datasets, accounts, grants,
    tokens and platform key in every copy, each copy its own home to change."""
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    template, tokens = _deployment_template()
    home.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, home)
    copy_master_key(template, home)
    return Platform(Settings(home=home, threads=2)), dict(tokens)


@pytest.fixture(scope="session")
def demo_deployment(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A shared demo deployment for read-only tests (do not exhaust its budgets)."""
    plat, tokens = build_deployment(tmp_path_factory.mktemp("deploy") / "home")
    yield plat, tokens
    plat.close()
