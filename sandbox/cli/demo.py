"""The demo's accounts, grants and tokens, created through the same administration API.

A bootstrap: the host console enrols every demo account (its codes need no second
administrator), and the tokens are written to ``HOME/demo-tokens.json`` for the tour.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sandbox.cli.common import services

if TYPE_CHECKING:
    from sandbox.core.settings import Settings

__all__ = ["demo_accounts"]


def demo_accounts(settings: Settings) -> Path:
    """Demo accounts, grants and tokens; tokens written to HOME/demo-tokens.json (0600)."""
    from policies.demo import create_demo, write_tokens

    with services(settings, None) as (admin, host):
        tokens = create_demo(admin, host, now=datetime.now(UTC))
    path = settings.home / "demo-tokens.json"
    write_tokens(path, tokens)
    typer.echo(f"demo tokens (also in {path}, readable only by you):")
    for name, value in tokens.items():
        typer.echo(f"  {name:<17} {value}")
    return path
