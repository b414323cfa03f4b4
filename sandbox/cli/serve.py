"""``sandbox serve``: run the HTTP API under uvicorn, in one process or several.

The CLI never imports the API package: uvicorn loads the application factory by
name (:data:`APP_FACTORY`), and every process rebuilds its settings from the
environment this module exports.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from sandbox.core.errors import InvalidInput
from sandbox.core.settings import Settings
from sandbox.services import prepare_home

__all__ = ["APP_FACTORY", "serve_app"]

#: The application factory uvicorn imports in each server process.
APP_FACTORY = "sandbox.api.app:create_app"


def serve_app(
    settings: Settings, *, host: str | None, port: int | None, workers: int | None
) -> None:
    """``sandbox serve``: one process, or ``workers`` uvicorn processes sharing the home.

    Worker processes rebuild the settings from the environment, so the home and the
    process count are exported first; each process runs ``cores / workers`` job threads
    unless ``SANDBOX_JOB_WORKERS`` says otherwise.
    """
    import sys

    server_modules = ("uvicorn", "fastapi", "prometheus_client")
    if not all(importlib.util.find_spec(name) for name in server_modules):
        # The core install (CLI, local queries, audit verify) has no server.
        raise InvalidInput(
            "sandbox serve needs the server extra: pip install 'sandbox[server]'",
            rule="cli.server_extra",
        )
    import uvicorn

    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    prepare_home(settings)
    print(f"Sandbox API at http://{host}:{port}  (docs: http://{host}:{port}/docs)", flush=True)
    sys.stdout.flush()
    os.environ["SANDBOX_HOME"] = str(settings.home)
    os.environ["SANDBOX_WORKERS"] = str(workers)
    # Per-process metrics of every worker, summed at scrape (sandbox/api/metrics.py):
    # prometheus-client's multiprocess files, emptied at each start.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = settings.home / "run" / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if not os.environ.get("SANDBOX_JOB_WORKERS"):
        os.environ["SANDBOX_JOB_WORKERS"] = str(max(1, (os.cpu_count() or 1) // workers))
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        # The application decides who the client is (trusted_proxies), not uvicorn's
        # default of believing X-Forwarded-For from 127.0.0.1.
        proxy_headers=False,
        forwarded_allow_ips="",
        # h11 for its header limit (httptools, if installed, has none).
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
    )
