"""The installed ``sandbox`` command against one home, with or without a token.

Shared by the CLI tests that act as several accounts on one deployment
(``test_cli_data_lists.py``, ``test_cli_governance.py``): the command runs as
tests/blackbox/conftest.py runs it (the console script, a clean environment, no
traceback allowed), and a refusal is status 2 with its rule on stderr.
"""

from __future__ import annotations

from pathlib import Path

from tests.blackbox.conftest import Result, sandbox

__all__ = ["ok", "refused", "run"]


def run(home: Path, *args: str, token: str | None = None) -> Result:
    """``sandbox --home HOME ARGS [--token TOKEN]``."""
    with_token = ["--token", token] if token else []
    return sandbox("--home", str(home), *args, *with_token, timeout=300)


def ok(home: Path, *args: str, token: str | None = None) -> str:
    """The command's standard output; it must succeed."""
    done = run(home, *args, token=token)
    assert done.code == 0, str(done)
    return done.out


def refused(home: Path, rule: str, *args: str, token: str | None = None) -> None:
    """The command must be refused (status 2) by ``rule``."""
    done = run(home, *args, token=token)
    assert done.code == 2, str(done)
    assert f"(rule: {rule})" in done.err, str(done)
