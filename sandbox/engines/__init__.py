"""Query engines: what runs a guard's checked stats query over governed data.

DuckDB (the enclave file, :mod:`sandbox.engines.duck`) is the default and the only
engine ``make demo`` needs; Spark (:mod:`sandbox.engines.spark`, the ``[spark]``
extra and a Java runtime) runs datasets registered with ``--engine spark`` from the
Parquet warehouse.  Every engine takes the rewritten query as a sqlglot AST, never
operator text (:mod:`sandbox.engines.base`).
"""
