"""A shim for ``uvicorn server:app``: the application lives in :mod:`sandbox.api.app`.

``app`` is built on first access, from the environment (``SANDBOX_HOME`` and the
other settings in docs/settings.md), so importing this module opens nothing.
Nothing in the project imports it.
"""

from __future__ import annotations

from typing import Any

from sandbox.api.app import create_app

__all__ = ["create_app"]  # and `app`, built on first access


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(name)
