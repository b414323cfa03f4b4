"""Deterministic synthetic demo data, generated inside DuckDB (no downloads).

Every value is a pure function of the row number through DuckDB's ``hash``,
so the same ``--scale`` always yields the same tables, whatever the thread
count.  Like any source, a table is generated before the enclave's writer is taken
(in a private in-memory DuckDB, into a finished Arrow file in the registration's work
directory), and the writer is held only to swap that file in.

Distributions are shaped to exercise disclosure control: districts and diagnoses
are skewed (rare combinations fall under k), a few claims exceed the clamping bound,
and a few employers dominate their industry's wage totals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow.ipc as ipc

from connectors.base import LoadedSource
from connectors.convert import OUTPUT
from connectors.files import FinishedFile
from connectors.limits import IngestLimits
from sandbox.core.classification import DatasetSpec, parse_classification
from sandbox.enclave.enclave import LOCKDOWN

__all__ = ["DEMO_DATASETS", "DemoSource", "demo_sources", "demo_spec"]

DEMO_DATASETS = ("health.claims", "market.enterprises", "hrss.social_insurance", "transport.trips")


def _u(expr: str, salt: int) -> str:
    """A uniform number in [0, 1) from ``expr`` and a salt."""
    return f"((hash({expr}, {salt}) % 1000003)::DOUBLE / 1000003)"


def _pick(values: list[str], index_expr: str) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"([{quoted}])[1 + ({index_expr})::BIGINT]"


SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建")
DIAGNOSES = (
    "I10 E11 J06 K29 M54 J18 I25 N18 E78 K21 J44 I63 M17 N39 K80 H25 J45 I48 F32 G47 "
    "C34 C50 C16 B18 K74 L40 M81 E05 D50 G40 F20 C22 N40 H40 R51 A15 B20 Q21 C91 G35"
).split()
INDUSTRIES = (
    "manufacturing retail construction software finance catering logistics real_estate "
    "education health agriculture services"
).split()
WORDS = list("华信达盛通联恒泰鑫源兴宏安科创新")


def _district(expr: str, salt: int) -> str:
    return f"'D' || lpad((1 + floor(16 * pow({_u(expr, salt)}, 1.6)))::INT::VARCHAR, 2, '0')"


def _credit_code(e: str) -> str:
    return (
        f"'913101' || lpad((hash({e}, 31) % 100)::VARCHAR, 2, '0') || "
        f"lpad({e}::VARCHAR, 9, '0') || "
        f"substr('0123456789ABCDEFGHJKLMNPQRTUWXY', 1 + (hash({e}, 32) % 31)::INT, 1)"
    )


def claims_sql(scale: float) -> str:
    n = max(1000, int(1_000_000 * scale))
    persons = max(200, n // 5)
    p = f"(hash(i, 1) % {persons})"
    age = f"(18 + hash({p}, 13) % 70)::INTEGER"
    return f"""
SELECT
  'C' || lpad(i::VARCHAR, 10, '0') AS claim_id,
  'P' || lpad({p}::VARCHAR, 9, '0') AS person_id,
  {_pick(SURNAMES, f"hash({p}, 11) % {len(SURNAMES)}")}
    || {_pick(GIVEN, f"hash({p}, 12) % {len(GIVEN)}")}
    || {_pick(GIVEN, f"hash({p}, 10) % {len(GIVEN)}")} AS name,
  '3101' || lpad((hash({p}, 16) % 100)::VARCHAR, 2, '0')
    || strftime(DATE '2025-06-30' - to_years({age}) - to_days((hash({p}, 17) % 365)::INTEGER),
                '%Y%m%d')
    || lpad((hash({p}, 18) % 1000)::VARCHAR, 3, '0')
    || substr('0123456789X', 1 + (hash({p}, 19) % 11)::INTEGER, 1) AS id_number,
  {age} AS age,
  CASE hash({p}, 14) % 2 WHEN 0 THEN 'F' ELSE 'M' END AS gender,
  {_district(p, 15)} AS district,
  'H' || lpad((hash(i, 21) % 120)::VARCHAR, 3, '0') AS hospital_id,
  {_pick(DIAGNOSES, f"floor({len(DIAGNOSES)} * pow({_u('i', 22)}, 3))")} AS diagnosis_code,
  CASE WHEN hash(i, 25) % 1000 = 0
       THEN 150000 + (hash(i, 27) % 150000)
       ELSE exp(5 + 4 * {_u("i", 23)}) * (1 + {_u("i", 24)})
  END::DECIMAL(12, 2) AS claim_amount,
  DATE '2025-01-01' + (hash(i, 26) % 365)::INTEGER AS claim_date
FROM range({n}) AS t(i)
"""


def enterprises_sql(scale: float) -> str:
    n = max(200, int(50_000 * scale))
    u = _u("e", 35)
    return f"""
SELECT
  {_credit_code("e")} AS credit_code,
  {_pick(WORDS, f"hash(e, 33) % {len(WORDS)}")} || {_pick(WORDS, f"hash(e, 34) % {len(WORDS)}")}
    || lpad(e::VARCHAR, 6, '0') || '有限公司' AS name,
  {_pick(INDUSTRIES, f"hash(e, 36) % {len(INDUSTRIES)}")} AS industry,
  {_district("e", 37)} AS district,
  CASE WHEN hash(e, 38) % 2000 = 0 THEN 2000000000
       ELSE pow(10, 4 + 4 * {_u("e", 39)}) END::DECIMAL(16, 2) AS registered_capital,
  (1990 + hash(e, 40) % 36)::INTEGER AS founded,
  CASE WHEN {u} < 0.85 THEN 'active' WHEN {u} < 0.95 THEN 'cancelled' ELSE 'revoked' END
    AS status
FROM range({n}) AS t(e)
"""


def social_insurance_sql(scale: float) -> str:
    n = max(200, int(50_000 * scale))
    base = f"floor(pow(10, 3.5 * pow({_u('e', 42)}, 2)))"
    month_u = _u("e * 12 + m", 44)
    return f"""
SELECT
  {_credit_code("e")} AS credit_code,
  '2025-' || lpad((m + 1)::VARCHAR, 2, '0') AS month,
  ({base} * (0.9 + 0.2 * {month_u}))::INTEGER AS employees,
  (({base} * (0.9 + 0.2 * {month_u}))::INTEGER * (4000 + 20000 * {_u("e", 45)})
     * (0.95 + 0.1 * {_u("e * 12 + m", 46)}))::DECIMAL(16, 2) AS wage_total
FROM range({n}) AS t(e), range(12) AS s(m)
WHERE hash(e, 41) % 5 <> 0
ORDER BY e, m
"""


def trips_sql(scale: float) -> str:
    n = max(1000, int(500_000 * scale))
    cards = max(100, n // 10)
    return f"""
SELECT
  'T' || lpad((hash(t, 51) % {cards})::VARCHAR, 10, '0') AS card_id,
  'S' || lpad((1 + hash(t, 52) % 80)::VARCHAR, 3, '0') AS board_station,
  'S' || lpad((1 + (hash(t, 52) + 1 + hash(t, 53) % 79) % 80)::VARCHAR, 3, '0') AS alight_station,
  TIMESTAMP '2025-03-01 00:00:00'
    + to_seconds(((hash(t, 54) % 31) * 86400 + 18000 + hash(t, 56) % 68400)::BIGINT)
    AS board_time,
  (2 + hash(t, 55) % 9 + 0.5 * (hash(t, 57) % 2))::DECIMAL(6, 2) AS fare
FROM range({n}) AS s(t)
"""


GENERATORS = {
    "health.claims": claims_sql,
    "market.enterprises": enterprises_sql,
    "hrss.social_insurance": social_insurance_sql,
    "transport.trips": trips_sql,
}


@dataclass(frozen=True)
class DemoSource:
    """A generator connector: the table is computed by SQL, outside the enclave."""

    dataset_id: str
    scale: float
    connector: str = "generator"

    def _loaded(self, sql: str) -> LoadedSource:
        return LoadedSource(
            connector=self.connector,
            uri=f"demo://{self.dataset_id}?scale={self.scale:g}",
            sha256=hashlib.sha256(sql.encode()).hexdigest(),
        )

    def prepare(self, workdir: Path, limits: IngestLimits) -> FinishedFile:
        """Generate the table into a finished Arrow file in ``workdir`` (no enclave lock).

        The generator runs in its own in-memory DuckDB, locked down like the enclave and
        bounded by ``ingest_memory_bytes``; only trusted SQL of this module runs there.
        """
        sql = GENERATORS[self.dataset_id](self.scale)
        output = workdir / OUTPUT
        config = dict(LOCKDOWN, memory_limit=f"{limits.memory_bytes}B", threads=2)
        rows = 0
        with duckdb.connect(":memory:", config=config) as con:
            reader = con.sql(sql).to_arrow_reader()
            with ipc.new_file(str(output), reader.schema) as writer:
                for batch in reader:
                    rows += batch.num_rows
                    writer.write_batch(batch)
        finished = FinishedFile(output, self._loaded(sql), rows)
        finished.check(limits)
        return finished

    def load_into(self, con: duckdb.DuckDBPyConnection, target: str) -> LoadedSource:
        """Generate inside ``con`` (a caller holding a writer already; the registry prepares)."""
        sql = GENERATORS[self.dataset_id](self.scale)
        con.execute(f"CREATE OR REPLACE TABLE {target} AS {sql}")
        return self._loaded(sql)


def demo_spec(dataset_id: str) -> DatasetSpec:
    """The bureau-reviewed classification shipped for a demo dataset."""
    folder = resources.files("sandbox.enclave").joinpath("demo")
    text = folder.joinpath(f"{dataset_id}.toml").read_text("utf-8")
    return parse_classification(text, source_name=f"{dataset_id}.toml")


def demo_sources(scale: float) -> list[tuple[DatasetSpec, DemoSource]]:
    return [(demo_spec(d), DemoSource(d, scale)) for d in DEMO_DATASETS]
