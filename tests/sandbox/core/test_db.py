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


def _drop_and_reopen_datasets_mark(url: str) -> sa.Engine:
    """A catalog row written by a release before registrations checked entity hashes."""
    engine = open_control_db(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE datasets DROP COLUMN entity_hashes_checked"))
        conn.execute(
            sa.text(
                "INSERT INTO datasets (id, domain, name, title, description, entity_key, "
                "row_count, connector, source_uri, source_sha256, loaded_at, schema_sha256, "
                "classification, classification_sha256, version, registered_by, frozen) "
                "VALUES ('d.t', 'd', 't', 'T', '', 'k', 1, 'csv', 'x', 's', 'now', 's', "
                "'{}', 's', 1, 'tests', false)"
            )
        )
    engine.dispose()
    return open_control_db(url)


def test_an_older_catalog_row_is_marked_unchecked(tmp_path: Path) -> None:
    """The server's start then checks that version's entity hashes once."""
    reopened = _drop_and_reopen_datasets_mark(f"sqlite:///{tmp_path / 'control.db'}")
    with reopened.connect() as conn:
        marks = conn.execute(sa.text("SELECT entity_hashes_checked FROM datasets")).all()
    assert [bool(m[0]) for m in marks] == [False]


@pytest.mark.postgres
def test_an_older_catalog_row_is_marked_unchecked_on_postgresql(pg_url: str) -> None:
    reopened = _drop_and_reopen_datasets_mark(pg_url)
    with reopened.connect() as conn:
        marks = conn.execute(sa.text("SELECT entity_hashes_checked FROM datasets")).all()
    assert [bool(m[0]) for m in marks] == [False]
    reopened.dispose()
