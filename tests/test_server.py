"""The real server over HTTP: uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_health(demo_platform) -> None:
    port = _free_port()
    env = dict(os.environ, SANDBOX_HOME=str(demo_platform.settings.home))
    demo_platform.close()  # release the enclave file for the server process
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        deadline = time.time() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok" and body["datasets"] == 4
        missing = httpx.get(f"http://127.0.0.1:{port}/no-such-route", timeout=2)
        assert missing.status_code == 404
        assert missing.json() == {"code": "not_found", "message": "Not Found", "rule": "api.http"}
        assert len(missing.headers["X-Request-ID"]) == 32
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert "/v1/jobs" in spec["paths"]
        anonymous = httpx.get(f"http://127.0.0.1:{port}/v1/me", timeout=5)
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
