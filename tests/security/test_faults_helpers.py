"""The fault tests' own auditor: its offline check must fail on an export that does not verify.

``verify_offline`` trusts the exit status of ``sandbox audit verify``; when ``main()``
dropped that status, a tampered export passed and every fault test judged by it
would have passed too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audit import AuditTrail, KeyRing
from tests.audit.conftest import fill
from tests.security.faults import verify_offline


def test_verify_offline_fails_on_a_tampered_export(tmp_path: Path) -> None:
    with AuditTrail.open(
        f"sqlite:///{tmp_path / 'audit.db'}", KeyRing(tmp_path / "keys"), sign_every_n=3
    ) as trail:
        fill(trail, 5)
        trail.export(tmp_path / "export")
    verify_offline(tmp_path / "export")
    entries = tmp_path / "export" / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b'"decision":"deny"', b'"decision":"allow"'))
    with pytest.raises(AssertionError, match="offline verify failed"):
        verify_offline(tmp_path / "export")
    with pytest.raises(AssertionError, match="offline verify failed"):
        verify_offline(tmp_path / "no-such-export")
