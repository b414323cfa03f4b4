"""The deployment as one object: settings, control-plane DB, enclave, keys, catalog.

The CLI and the server both build a :class:`Platform` from a :class:`Settings`
and call its methods; nothing else wires components together.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from audit import AuditTrail, Receipt
from audit.errors import AuditError
from audit.keys import KeyRing, KeyRingError, SigningKey
from connectors.base import Source
from policies import Actor, Authority
from policies.admin import migrate_release_modes
from sandbox.core.classification import DatasetSpec
from sandbox.core.control_writer import ControlWriter
from sandbox.core.db import open_control_db
from sandbox.core.errors import AuditUnavailable, EnclaveError, SandboxError
from sandbox.core.home_keys import create_home_keys, open_home_keyring
from sandbox.core.keyring import Keyring as DataKeyring
from sandbox.core.settings import Settings
from sandbox.enclave.catalog import Catalog
from sandbox.enclave.demo_data import demo_sources
from sandbox.enclave.enclave import Enclave
from sandbox.enclave.registry import Registration, register_dataset
from sandbox.engines.base import DEFAULT_ENGINE, ENGINES
from sandbox.engines.base import Engine as QueryEngine
from sandbox.engines.duck import DuckDBEngine

__all__ = ["Platform"]


class Platform:
    """Everything a deployment home holds, opened lazily."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._creating = False
        self.created_master_key: Path | None = None
        """The master key file ``init`` generated (to tell the user where it is), if any."""

    # -- components ------------------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        """The control plane; an initialised home's SQLite file must exist (never recreated)."""
        if not self._creating:
            from sandbox.startup import check_control_file

            check_control_file(self)
            _ = self.data_keys  # an encrypted home opens only with its master key
        return open_control_db(self.settings.control_db_url)

    @cached_property
    def control_writer(self) -> ControlWriter:
        """Group-committed control-plane writes (a request's charge, usage, release, job)."""
        return ControlWriter(self.engine)

    @cached_property
    def enclave(self) -> Enclave:
        return Enclave.from_settings(self.settings, self.enclave_key())

    def query_engine(self, name: str = DEFAULT_ENGINE) -> QueryEngine:
        """The engine that runs stats queries over datasets registered on ``name``.

        DuckDB is the enclave file; Spark (``[spark]`` extra, a Java runtime) is started
        on first use, once per process, and reads the warehouse."""
        engines = self.__dict__.setdefault("_query_engines", {})
        if name not in engines:
            if name == "duckdb":
                engines[name] = DuckDBEngine(self.enclave)
            elif name == "spark":
                from sandbox.engines.spark import SparkEngine

                engines[name] = SparkEngine(
                    self.settings, self.catalog, shuffle_partitions=max(2, self.settings.threads)
                )
            else:
                raise EnclaveError(
                    f"no query engine named {name!r} (one of {', '.join(ENGINES)})",
                    rule="engine.unknown",
                )
        engine: QueryEngine = engines[name]
        return engine

    @cached_property
    def data_keys(self) -> DataKeyring | None:
        """The home's data keys (None: a home without encryption at rest)."""
        return open_home_keyring(self.settings)

    def enclave_key(self) -> bytes | None:
        return None if self.data_keys is None else self.data_keys.active("enclave").key

    @cached_property
    def keyring(self) -> KeyRing:
        return KeyRing(self.settings.keys_dir)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.engine)

    @cached_property
    def audit(self) -> AuditTrail:
        """The audit trail (opened on first use; creates its tables and key if needed)."""
        return AuditTrail.open(
            self.settings.audit_db_url,
            self.keyring,
            sign_every_n=self.settings.audit_sign_every_n,
            sign_every_s=self.settings.audit_sign_every_s,
        )

    @cached_property
    def authority(self) -> Authority:
        """Authentication and decisions; every decision is recorded in the audit trail.

        Grants stored before release modes existed get theirs first, audited
        (``policies.grants.migrate_release_modes``)."""
        authority = Authority(self.engine, recorder=self.audit)
        migrate_release_modes(authority)
        return authority

    def record(self, **fields: Any) -> Receipt:
        """Append one audit entry; a failure is :class:`AuditUnavailable` (callers fail closed)."""
        try:
            return self.audit.append(**fields)
        except AuditError as exc:
            raise AuditUnavailable(
                f"the audit trail could not record the event ({type(exc).__name__})",
                rule="audit.unavailable",
            ) from None

    def record_act(
        self,
        actor: Actor,
        action: str,
        target: str,
        decision: str,
        rule: str,
        *,
        dataset: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Receipt:
        """:meth:`record` of one act by ``actor``: its name, role, request and client, and
        ``details`` with the actor's own (``Actor.audit_details``) added."""
        return self.record(
            actor=actor.name,
            role=actor.role.value,
            action=action,
            target=target,
            decision=decision,
            rule=rule,
            dataset=dataset,
            request_id=actor.request_id,
            client=actor.client,
            details={**(details or {}), **actor.audit_details()},
        )

    @contextmanager
    def refusal_recorded(self, actor: Actor, entry: Mapping[str, Any]) -> Iterator[None]:
        """Record a :class:`SandboxError` raised in the block as a ``deny`` entry (``entry``'s
        fields, the error's rule, its message as the reason) and re-raise it; a failure of
        the audit trail itself is not recorded again."""
        try:
            yield
        except SandboxError as exc:
            if exc.rule not in ("audit.unavailable", "audit.append"):
                self.record(
                    **entry,
                    decision="deny",
                    rule=exc.rule or exc.code,
                    details={"reason": exc.message, **actor.audit_details()},
                )
            raise

    def signing_key(self) -> SigningKey:
        try:
            return self.keyring.active()
        except KeyRingError as exc:
            raise EnclaveError(f"{exc}: run `sandbox init`", rule="keys.missing") from None

    # -- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        """Create the home: directories (0700), platform key, enclave file, control-plane DB."""
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        for directory in (
            self.settings.certificates_dir,
            self.settings.staging_dir,
            self.settings.import_dir,
        ):
            directory.mkdir(exist_ok=True)
        self.keyring.ensure()
        self.created_master_key = create_home_keys(self.settings)
        self.enclave.create()
        self._creating = True  # the one place that may create the control-plane database
        try:
            _ = self.engine
        finally:
            self._creating = False

    def close(self) -> None:
        """Release everything opened; safe to call twice."""
        for engine in self.__dict__.pop("_query_engines", {}).values():
            engine.close()
        for name, closer in (
            ("authority", lambda: self.authority.close()),
            ("audit", lambda: self.audit.close()),
            ("enclave", lambda: self.enclave.close()),
            ("control_writer", lambda: self.control_writer.close()),
            ("engine", lambda: self.engine.dispose()),
        ):
            if name in self.__dict__:
                closer()
                del self.__dict__[name]

    # -- datasets --------------------------------------------------------------------------

    def register(
        self,
        spec: DatasetSpec,
        source: Source,
        *,
        registered_by: str | None = None,
        role: str = "admin",
        allowed_domains: frozenset[str] | None = None,
        acting: Mapping[str, Any] | None = None,
        procedure: dict[str, Any] | None = None,
        engine: str = "duckdb",
    ) -> Registration:
        """Register (or atomically replace) a dataset; the outcome is audited either way.

        ``acting``: the registering actor's token (``Actor.audit_details()``), recorded
        in both outcomes' details; none for the host console and the demo.  ``engine``:
        ``duckdb`` (the enclave) or ``spark`` (the Parquet warehouse), in both outcomes'
        details.
        """
        actor = registered_by or f"host:{getpass.getuser()}"
        token = dict(acting or {"token_id": None, "token_issued_by": None})
        target = f"dataset:{spec.id}"
        try:
            reg = register_dataset(
                settings=self.settings,
                control=self.engine,
                enclave=self.enclave,
                key=self.signing_key(),
                spec=spec,
                source=source,
                registered_by=actor,
                allowed_domains=allowed_domains,
                procedure=procedure,
                engine=engine,
            )
        except SandboxError as exc:
            self.record(
                actor=actor,
                role=role,
                action="dataset.register",
                target=target,
                decision="deny",
                rule=exc.rule or exc.code,
                dataset=spec.id,
                details={
                    "reason": exc.message,
                    "connector": getattr(source, "connector", ""),
                    "engine": engine,
                    **token,
                },
            )
            raise
        cert = reg.certificate["certificate"]
        self.record(
            actor=actor,
            role=role,
            action="dataset.register",
            target=target,
            decision="allow",
            rule="registry.register",
            dataset=spec.id,
            details={
                "version": cert["version"],
                "replaced": reg.replaced,
                "row_count": cert["row_count"],
                "source": cert["source"],
                "schema_sha256": cert["schema_sha256"],
                "classification_sha256": cert["classification_sha256"],
                "engine": reg.record.engine,
                **token,
            },
        )
        return reg

    def load_demo_data(self, scale: float = 1.0) -> list[Registration]:
        """Generate and register the four demo datasets (deterministic for a given scale)."""
        return [
            self.register(spec, source, registered_by="demo")
            for spec, source in demo_sources(scale)
        ]
