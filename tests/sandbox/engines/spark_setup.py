"""Spark for the engine tests: whether it can run here, and a deployment's data moved to it.

In CI (``CI=true``) a missing PySpark or Java fails the tests; locally they are skipped
with the reason.  :func:`move_to_warehouse` puts each dataset's current version in the
warehouse layout (``sandbox.enclave.warehouse.dataset_dir``) and flips its catalog
engine to ``spark``: the same rows as the enclave's, for an equivalence test.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from sandbox.enclave.warehouse import dataset_dir
from sandbox.platform import Platform


def require_spark() -> None:
    """Skip (locally) or fail (in CI) unless PySpark and a Java runtime are here."""
    missing = []
    if importlib.util.find_spec("pyspark") is None:
        missing.append("pyspark (the [spark] extra)")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        missing.append("a Java runtime")
    if not missing:
        return
    reason = "the Spark engine tests need " + " and ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def move_to_warehouse(platform: Platform) -> None:
    """Every dataset's rows to the warehouse as Parquet, its catalog engine ``spark``."""
    for record in platform.catalog.list():
        domain, _, table = record.id.partition(".")
        rows = platform.enclave.query(f'SELECT * FROM "{domain}"."{table}"', max_rows=10**9)
        target = dataset_dir(platform.settings.warehouse_dir, record.id, record.version)
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, target / "part-00000.parquet")
    with platform.engine.begin() as conn:
        conn.execute(sa.text("UPDATE datasets SET engine = 'spark'"))
