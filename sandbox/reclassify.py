"""Changing a registered dataset's classification without reloading its rows.

The bureau sends a new classification for a dataset already in the enclave.  It
is validated against the table's schema as loaded; the catalog then gets a new
version with the same source and row count, a new registration certificate is
signed, and the change is audited (``dataset.classify``) inside the same
control-plane transaction, so it is never committed without its entry.  The
next decision on every server sees it (the dataset version moved).

All of it runs on one enclave cursor, held from reading the current version to
writing the next: a registration takes the writer (from swapping its table in to
recording its version), which waits for running cursors in this process, and its own
process's readers yield only when idle; another process cannot open the file for
writing while this one reads it.  So no registration lands in between and leaves the
new version describing columns the table no longer has.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from connectors.base import LoadedSource
from policies import Actor
from sandbox.core.classification import DatasetSpec, validate_against_schema
from sandbox.core.db import dataset_versions
from sandbox.core.errors import Conflict, InvalidInput
from sandbox.core.timeutil import now_rfc3339
from sandbox.enclave.catalog import DatasetRecord, table_columns
from sandbox.enclave.entity_hashes import check_entity_hashes
from sandbox.enclave.quality import measure_quality
from sandbox.enclave.registry import Registration, _quoted, _record, _write_files
from sandbox.platform import Platform

__all__ = ["reclassify"]


def reclassify(
    platform: Platform,
    spec: DatasetSpec,
    actor: Actor,
    *,
    request_id: str | None = None,
    client: str | None = None,
    procedure: dict[str, Any] | None = None,
    expected_version: int | None = None,
) -> Registration:
    """Record ``spec`` as the new classification of the registered dataset ``spec.id``;
    ``procedure``: the registration procedure's record a revision was issued under;
    ``expected_version``: the version that revision was reviewed against (checked under
    the cursor, so a registration landing after the caller looked refuses it)."""
    entry = {
        "actor": actor.name,
        "role": actor.role.value,
        "action": "dataset.classify",
        "target": f"dataset:{spec.id}",
        "dataset": spec.id,
        "request_id": request_id,
        "client": client,
    }
    # Nothing inside may take another enclave cursor or the writer: under a waiting
    # writer a SharedEnclave's new cursors wait for this one, which would never end.
    with platform.refusal_recorded(actor, entry), platform.enclave.cursor() as con:
        current = platform.catalog.get(spec.id)
        if expected_version is not None and current.version != expected_version:
            raise Conflict(
                f"{spec.id} has a new version since this revision was applied: the bureau "
                "applies again",
                rule="registration.source_changed",
            )
        if current.engine != "duckdb":
            # Its rows are in the warehouse, under their version's directory: a new
            # version without new rows would name a directory that does not exist.
            raise InvalidInput(
                f"{spec.id} is held in the {current.engine} warehouse: a new classification "
                "is registered with its file again",
                rule="registry.engine",
            )
        schema = table_columns(con, spec.domain, spec.table)
        typed = validate_against_schema(spec, schema)
        # Another entity key: its values must not share the hash the caps group by (the
        # same rows under the same key were checked at their registration or start).
        if typed.entity_key != current.entity_key or not current.entity_hashes_checked:
            check_entity_hashes(con, _quoted(typed), typed.entity_key)
        # The same rows under new declarations: validity, uniqueness may change; the rows
        # are as old as the version that loaded them (timeliness counts from then).
        with platform.engine.connect() as conn:
            earlier = conn.execute(
                sa.select(dataset_versions.c.quality, dataset_versions.c.registered_at).where(
                    dataset_versions.c.dataset_id == spec.id,
                    dataset_versions.c.version == current.version,
                )
            ).first()
        as_of = None if earlier is None else (earlier.quality or {}).get("data_as_of")
        quality = measure_quality(
            con,
            typed,
            k=platform.settings.k_floor,
            evaluated_at=now_rfc3339(),
            data_as_of=as_of or (None if earlier is None else earlier.registered_at),
        )
        loaded = LoadedSource(current.connector, current.source_uri, current.source_sha256)
        with platform.engine.begin() as conn:
            row, certificate, _ = _record(
                conn,
                typed,
                loaded,
                schema,
                current.row_count,
                actor.name,
                platform.signing_key(),
                procedure,
                quality=quality,
                entity_hashes_checked=True,
            )
            platform.record(
                **entry,
                decision="allow",
                rule="registry.classify",
                details={
                    "version": certificate["certificate"]["version"],
                    "classification_sha256": typed.sha256(),
                    "previous_classification_sha256": current.classification_sha256,
                    **actor.audit_details(),
                },
            )
    _write_files(platform.settings, typed, certificate)
    return Registration(DatasetRecord.from_row(row), certificate, True)
