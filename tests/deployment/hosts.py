"""Several Sandbox hosts simulated as several processes on this machine.

A *host* here is what a separate machine would hold: its own home directory (its own
enclave file, staging area, checkpoints, lock files) and its own ``sandbox serve``
process on a loopback port.  What the hosts share is what a multi-host deployment
shares (docs/deployment.md, Several hosts): one PostgreSQL server holding the control
plane and the audit store, one warehouse directory (``SANDBOX_WAREHOUSE``, a shared
file system in production), and the platform's keys, copied from the first host the
way an operator copies them (``keys/``, ``datakeys.json``, the master key file).

Everything is driven through the installed ``sandbox`` command, as an operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.blackbox.conftest import SANDBOX, Result, _free_port, clean_env, wait_healthy
from tests.pgserver import PgServer

#: Every host names the log the same way: witnesses follow one origin, whatever host.
ORIGIN = "sandbox.test/several-hosts"
#: What an operator copies from the first host to every further one (relative to the
#: home; the master key file lives beside the home, see ``master_key_file``).
PLATFORM_FILES = ("keys", "datakeys.json")


@dataclass
class Host:
    """One simulated machine: a home, an environment, at most one ``sandbox serve``."""

    name: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    log: Path | None = None
    logs: list[Path] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 180, **extra: str) -> Result:
        """``sandbox --home HOME ARGS`` on this host's console."""
        return sandbox_cmd(
            "--home", str(self.home), *args, env={**self.env, **extra}, timeout=timeout
        )

    def start(self, *extra: str) -> None:
        """``sandbox serve`` on a free loopback port, in its own process group, until
        ``/health`` answers."""
        assert self.proc is None, f"{self.name} is already serving"
        port = _free_port()
        self.log = self.home.parent / f"serve-{port}.log"
        self.logs.append(self.log)
        with open(self.log, "wb") as sink:
            self.proc = subprocess.Popen(
                [SANDBOX, "--home", str(self.home), "serve", "--port", str(port), *extra],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, self.proc, self.output)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the server's process group and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@dataclass
class Deployment:
    pg: PgServer
    control_url: str
    audit_url: str
    warehouse: Path
    hosts: list[Host]
    tokens: dict[str, str]

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()


def sandbox_cmd(*args: str, env: dict[str, str], timeout: float = 180) -> Result:
    """The installed command with ``env``; fails on a traceback in its output."""
    proc = subprocess.run(
        [SANDBOX, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, str(result)
    return result


def master_key_file(home: Path) -> Path:
    """Where ``sandbox init`` puts a home's master key: beside the home, not in it."""
    return home.parent / f"{home.name}.master.key"


def copy_platform(first: Path, home: Path) -> None:
    """What an operator copies to a new host: the signing keys, the wrapped data keys,
    the master key file (mode kept: 0600), and the enclave file (its DuckDB datasets)."""
    home.mkdir(parents=True, mode=0o700)
    for name in PLATFORM_FILES:
        source = first / name
        if source.is_dir():
            shutil.copytree(source, home / name)
        else:
            shutil.copy2(source, home / name)
    shutil.copy2(master_key_file(first), master_key_file(home))
    copy_enclave(first, home)


def copy_enclave(first: Path, home: Path) -> None:
    """The enclave file, copied beside its target and renamed over it (never half-written)."""
    part = home / "enclave.duckdb.part"
    shutil.copy2(first / "enclave.duckdb", part)
    os.replace(part, home / "enclave.duckdb")


def make_deployment(root: Path, pg: PgServer, *, hosts: int = 2, **settings: str) -> Deployment:
    """A demo deployment of ``hosts`` hosts on one PostgreSQL and one warehouse.

    The first host is made by ``sandbox demo`` (accounts, grants, the four demo datasets
    in its enclave); every further host gets a copy of its platform files.  ``settings``:
    further ``SANDBOX_*`` variables for every host.
    """
    tag = root.name.lower().replace("-", "_")[:40]
    control = pg.create_database(f"{tag}_control")
    audit = pg.create_database(f"{tag}_audit")
    warehouse = root / "shared" / "warehouse"
    warehouse.mkdir(parents=True, mode=0o700)
    env = clean_env(
        SANDBOX_CONTROL_DB_URL=control,
        SANDBOX_AUDIT_DB_URL=audit,
        SANDBOX_WAREHOUSE=str(warehouse),
        SANDBOX_AUDIT_ORIGIN=ORIGIN,
        SANDBOX_JOB_WORKERS="1",
        **settings,
    )
    names = [chr(ord("a") + i) for i in range(hosts)]
    made = [Host(f"host-{n}", root / f"host-{n}" / "home", dict(env)) for n in names]
    first = made[0]
    first.home.parent.mkdir(parents=True)
    demo = first.run("demo", "--scale", "0.001", timeout=300)
    assert demo.code == 0 and "demo home ready" in demo.out, str(demo)
    for host in made[1:]:
        host.home.parent.mkdir(parents=True)
        copy_platform(first.home, host.home)
    tokens = json.loads((first.home / "demo-tokens.json").read_text())
    return Deployment(pg, control, audit, warehouse, made, tokens)


@contextmanager
def serving(deployment: Deployment) -> Iterator[Deployment]:
    """Every host serving; all stopped afterwards, with no traceback in any log."""
    try:
        for host in deployment.hosts:
            host.start()
        yield deployment
    finally:
        deployment.stop()
    for host in deployment.hosts:
        assert "Traceback" not in host.output(), host.output()[-3000:]


def request(
    url: str, method: str, path: str, token: str, body: Any = None, timeout: float = 30
) -> tuple[int, Any]:
    """One request; the status and the JSON body.  Transport errors are raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
