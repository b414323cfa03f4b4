"""The deployment as one object: settings, control-plane DB, enclave, keys, catalog.

The CLI and the server both build a :class:`Platform` from a :class:`Settings`
and call its methods; nothing else wires components together.
"""

from __future__ import annotations

import getpass
import os
from functools import cached_property

from sqlalchemy.engine import Engine

from audit.keys import KeyRing, KeyRingError, SigningKey
from connectors.base import Source
from sandbox.catalog import Catalog
from sandbox.classification import DatasetSpec
from sandbox.db import open_control_db
from sandbox.demo_data import demo_sources
from sandbox.enclave import Enclave
from sandbox.errors import EnclaveError
from sandbox.registry import Registration, register_dataset
from sandbox.settings import Settings

__all__ = ["Platform"]


class Platform:
    """Everything a deployment home holds, opened lazily."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- components ------------------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        return open_control_db(self.settings.control_db_url)

    @cached_property
    def enclave(self) -> Enclave:
        return Enclave.from_settings(self.settings)

    @cached_property
    def keyring(self) -> KeyRing:
        return KeyRing(self.settings.keys_dir)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.engine)

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
        self.enclave.create()
        _ = self.engine

    def close(self) -> None:
        if "enclave" in self.__dict__:
            self.enclave.close()
        if "engine" in self.__dict__:
            self.engine.dispose()

    # -- datasets --------------------------------------------------------------------------

    def register(
        self,
        spec: DatasetSpec,
        source: Source,
        *,
        registered_by: str | None = None,
        allowed_domains: frozenset[str] | None = None,
    ) -> Registration:
        return register_dataset(
            settings=self.settings,
            engine=self.engine,
            enclave=self.enclave,
            key=self.signing_key(),
            spec=spec,
            source=source,
            registered_by=registered_by or f"cli:{getpass.getuser()}",
            allowed_domains=allowed_domains,
        )

    def load_demo_data(self, scale: float = 1.0) -> list[Registration]:
        """Generate and register the four demo datasets (deterministic for a given scale)."""
        return [
            self.register(spec, source, registered_by="demo")
            for spec, source in demo_sources(scale)
        ]
