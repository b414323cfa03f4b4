"""Load throughput of the enclave: demo generation, and the file connectors.

Usage: python bench/enclave_load.py [--scale 1]

Prints rows/s for registering each demo dataset (generated inside DuckDB,
validated, certified) and for loading health.claims through the CSV and
Parquet connectors (staged copy + SHA-256 + pyarrow parse + DuckDB insert).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connectors.files import FileSource
from sandbox.core.settings import Settings
from sandbox.enclave.demo_data import demo_sources, demo_spec
from sandbox.enclave.encrypted import connect_home
from sandbox.platform import Platform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Settings(home=Path(tmp) / "home"))
        platform.init()
        print(f"demo at --scale {args.scale:g}")
        total_rows = 0
        total_s = 0.0
        for spec, source in demo_sources(args.scale):
            start = time.perf_counter()
            reg = platform.register(spec, source, registered_by="bench")
            elapsed = time.perf_counter() - start
            total_rows += reg.record.row_count
            total_s += elapsed
            print(
                f"  generator  {spec.id:<24} {reg.record.row_count:>10,} rows "
                f"{elapsed:6.2f} s  {reg.record.row_count / elapsed:>12,.0f} rows/s"
            )
        print(
            f"  generator  {'all four':<24} {total_rows:>10,} rows {total_s:6.2f} s  "
            f"{total_rows / total_s:>12,.0f} rows/s"
        )
        platform.close()

        # Export claims outside the enclave (bench only), then load them back through connectors.
        exports = Path(tmp) / "exports"
        exports.mkdir()
        # The enclave's reader has no file access (an encrypted home's least of all): the
        # rows come out as Arrow and pyarrow writes the files.
        con = connect_home(platform.settings)
        claims = con.sql("SELECT * FROM health.claims").to_arrow_table()
        con.close()
        pacsv.write_csv(claims, exports / "claims.csv")
        pq.write_table(claims, exports / "claims.parquet")
        spec = demo_spec("health.claims")
        for name in ("claims.csv", "claims.parquet"):
            path = exports / name
            start = time.perf_counter()
            reg = platform.register(spec, FileSource(path, platform.settings.staging_dir))
            elapsed = time.perf_counter() - start
            size_mb = path.stat().st_size / 1e6
            print(
                f"  {reg.record.connector:<10} {name:<24} {reg.record.row_count:>10,} rows "
                f"{elapsed:6.2f} s  {reg.record.row_count / elapsed:>12,.0f} rows/s  "
                f"({size_mb:.0f} MB, {size_mb / elapsed:.0f} MB/s)"
            )
        platform.close()


if __name__ == "__main__":
    main()
