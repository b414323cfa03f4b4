"""The black-box suite: the installed ``sandbox`` command, run as a user runs it.

Nothing here imports the project to act on it: each test starts the console script
that ``pip install`` put next to the interpreter (``.venv/bin/sandbox``) as a
subprocess, with a clean environment, and judges it by exit status and output only.
No output may contain a Python traceback.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent


def _sandbox_command() -> str:
    path = os.pathsep.join([str(BIN), os.environ.get("PATH", "")])
    found = shutil.which("sandbox", path=path)
    if found is None:
        pytest.fail(f"no installed `sandbox` command next to {sys.executable} (pip install -e .)")
    return found


SANDBOX = _sandbox_command()


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without SANDBOX_* settings, with BIN first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"sandbox {' '.join(self.args)} -> {self.code}\n{self.out[-1500:]}{self.err[-1500:]}"


def sandbox(*args: str, timeout: float = 120, **env: str) -> Result:
    """Run the installed command; fail the test on any traceback in its output."""
    proc = subprocess.run(
        [SANDBOX, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
    )
    result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, str(result)
    return result


@dataclass(frozen=True)
class DemoHome:
    home: Path
    tokens: dict[str, str]

    def run(self, *args: str, **env: str) -> Result:
        return sandbox("--home", str(self.home), *args, **env)


@functools.cache
def _demo_template() -> Path:
    """``sandbox --home HOME demo --scale 0.001``, run once per test process."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-blackbox-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    made = sandbox("--home", str(root / "home"), "demo", "--scale", "0.001", timeout=300)
    assert made.code == 0 and "demo home ready" in made.out, str(made)
    return root / "home"


def make_demo_home(home: Path) -> DemoHome:
    """A demo home made by ``sandbox demo --scale 0.001`` and the demo tokens it wrote: a
    copy of the one this process made (the same tokens and key in every copy)."""
    shutil.copytree(_demo_template(), home)
    key = _demo_template().parent / "home.master.key"  # beside the home, not in it
    if key.exists():
        shutil.copy2(key, home.parent / f"{home.name}.master.key")
    tokens = json.loads((home / "demo-tokens.json").read_text())
    return DemoHome(home, tokens)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    """One small demo home for the whole suite."""
    return make_demo_home(tmp_path_factory.mktemp("blackbox") / "home")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def call(
    server: Server, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    """One HTTP request; the status and the JSON body (errors included)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_healthy(
    url: str, proc: subprocess.Popen[Any], output: Callable[[], str], timeout: float = 90.0
) -> None:
    """Until ``url``/health answers 200; fails with the server's output if ``proc`` ends
    or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"sandbox serve did not answer /health: {output()[-2000:]}")
        time.sleep(0.2)


@contextmanager
def serving(home: DemoHome, *extra: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``sandbox serve`` on ``home`` as its own process, until /health answers (``env``:
    settings for this process, such as ``SANDBOX_MAX_RESULT_ROWS``)."""
    port = _free_port()
    log = home.home.parent / f"serve-{port}.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [SANDBOX, "--home", str(home.home), "serve", "--port", str(port), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=clean_env(**(env or {})),
            start_new_session=True,  # its own process group: stopped below, and only it
        )
    running = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_healthy(running.url, proc, running.output)
        yield running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
        assert "Traceback" not in running.output(), running.output()[-3000:]


@pytest.fixture(scope="session")
def server(demo: DemoHome) -> Iterator[Server]:
    """``sandbox serve`` on the demo home, for the whole suite."""
    with serving(demo) as running:
        yield running
