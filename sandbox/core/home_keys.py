"""A home's keys: which provider holds its master key, and its data keys (if encrypted).

A home is encrypted iff ``HOME/datakeys.json`` exists: it is created by ``sandbox
init`` when ``encrypt_at_rest`` is on (the default), with a new master key file
beside the home (``HOME.master.key``, mode 0600) unless ``master_key_file`` or
``master_key_env`` names one.  Opening an encrypted home without its master key,
or with another one, fails with one line naming the rule (``keys.master_*``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sandbox.core.key_provider import (
    EnvKeyProvider,
    FileKeyProvider,
    KeyProvider,
    generate_key_file,
)
from sandbox.core.keyring import Keyring, load_keyring, new_keyring, save_keyring
from sandbox.core.settings import Settings

__all__ = [
    "create_home_keys",
    "is_encrypted",
    "keyring_path",
    "master_key_path",
    "open_home_keyring",
    "provider_for",
]


def keyring_path(settings: Settings) -> Path:
    return settings.home / "datakeys.json"


def master_key_path(settings: Settings) -> Path:
    if settings.master_key_file:
        return Path(settings.master_key_file).resolve()
    return settings.home.parent / f"{settings.home.name}.master.key"


def is_encrypted(settings: Settings) -> bool:
    return keyring_path(settings).exists()


def provider_for(settings: Settings, environ: Mapping[str, str] | None = None) -> KeyProvider:
    """The configured master key provider (the environment is read here, at the edge)."""
    if settings.master_key_env:
        return EnvKeyProvider(settings.master_key_env, os.environ if environ is None else environ)
    return FileKeyProvider(master_key_path(settings))


def open_home_keyring(settings: Settings) -> Keyring | None:
    """The home's data keys, or None for a home without encryption."""
    if not is_encrypted(settings):
        return None
    return load_keyring(keyring_path(settings), provider_for(settings))


def create_home_keys(settings: Settings) -> Path | None:
    """At ``sandbox init``: a master key file (if none is configured) and new data keys.

    Returns the master key file created, if one was.  Does nothing when the home
    already has data keys or ``encrypt_at_rest`` is off.
    """
    if not settings.encrypt_at_rest or is_encrypted(settings):
        return None
    created = None
    if not settings.master_key_env and not master_key_path(settings).exists():
        generate_key_file(master_key_path(settings))
        created = master_key_path(settings)
    save_keyring(keyring_path(settings), new_keyring(), provider_for(settings))
    return created
