"""The control plane opened by a newer release over a database an older one created."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from sandbox.core.db import add_missing_columns, open_control_db


def test_columns_a_newer_release_declares_are_added_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'control.db'}"
    engine = open_control_db(url)
    with engine.begin() as conn:  # as a release before per-grant disclosure terms left it
        for column in ("dominance_n", "dominance_p", "round_digits"):
            conn.execute(sa.text(f"ALTER TABLE grants DROP COLUMN {column}"))
    engine.dispose()
    reopened = open_control_db(url)
    columns = {c["name"] for c in sa.inspect(reopened).get_columns("grants")}
    assert {"dominance_n", "dominance_p", "round_digits"} <= columns
    assert add_missing_columns(reopened) == []  # nothing left to add


@pytest.mark.postgres
def test_the_same_on_postgresql(pg_url: str) -> None:
    engine = open_control_db(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE grants DROP COLUMN round_digits"))
    engine.dispose()
    reopened = open_control_db(pg_url)
    assert "round_digits" in {c["name"] for c in sa.inspect(reopened).get_columns("grants")}
    reopened.dispose()
