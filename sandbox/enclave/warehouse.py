"""The governed Parquet warehouse: where datasets registered with ``--engine spark`` live.

Layout, under :attr:`~sandbox.core.settings.Settings.warehouse_dir` (mode 0700, read only by
the engine's service account)::

    warehouse/<domain>/<table>/v<version>/part-*.parquet

One directory per registered version, written whole before the catalog names it, so a
reader that follows the catalog never sees a half-written version.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["dataset_dir"]


def dataset_dir(warehouse_dir: Path, dataset_id: str, version: int) -> Path:
    """The directory of one version of a dataset (``domain.table``) in the warehouse."""
    domain, _, table = dataset_id.partition(".")
    if not domain or not table or "/" in dataset_id or dataset_id.startswith("."):
        raise ValueError(f"not a dataset id: {dataset_id!r}")
    if version < 1:
        raise ValueError(f"not a dataset version: {version}")
    return Path(warehouse_dir) / domain / table / f"v{version}"
