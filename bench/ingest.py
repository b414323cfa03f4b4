"""Ingestion under the confined parser: bombs refused, and how long a load holds the writer.

Usage:
    python bench/ingest.py bombs                     # each bomb at the default limits
    python bench/ingest.py lock --rows 5000000 --format parquet   # csv (gzip), json

``bombs`` builds the issue-21 bombs (a JSON line nested 20,000 deep; CSV gzip and
JSON zstd files of 2.1 GB decompressed; a Parquet file of 100 M rows) in a child
process, then prepares each one as a registration would and prints the verdict,
the wall time, the parsing child's peak RSS and CPU time, and this process's peak
RSS.  ``lock`` registers one large legal file while a thread queries the enclave,
and prints how long the writer was held and the longest query wait.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BOMBS = {
    "nesting": ("nested.jsonl", "json"),
    "gzip": ("rows.csv.gz", "csv"),
    "zstd": ("rows.jsonl.zst", "json"),
    "parquet-rows": ("rows.parquet", "parquet"),
}

VISITS = """
[dataset]
id = "health.visits"
title = "Outpatient visits"
entity_key = "person_id"
[columns.person_id]
level = "L3"
role = "identifier"
[columns.district]
level = "L1"
role = "dimension"
[columns.amount]
level = "L2"
role = "measure"
bounds = [0, 1000]
"""

_MAKE = """
import gzip, sys
import pyarrow as pa, pyarrow.parquet as pq
which, out, size = sys.argv[1], sys.argv[2], int(2.1e9)
if which == "nesting":
    open(out, "w").write('{"a":' * 20000 + "1" + "}" * 20000 + "\\n")
elif which == "gzip":
    line = b"P-0001,D01,1.0\\n"
    with gzip.open(out, "wb", 9) as f:
        f.write(b"person_id,district,amount\\n")
        for _ in range(size // (len(line) * 100000)):
            f.write(line * 100000)
elif which == "zstd":
    line = b'{"person_id": "P-0001", "district": "D01", "amount": 1.0}\\n'
    with pa.CompressedOutputStream(out, "zstd") as f:
        for _ in range(size // (len(line) * 100000)):
            f.write(line * 100000)
else:
    idx = pa.nulls(100_000_000, pa.int32()).fill_null(0)
    table = pa.table({"person_id": pa.array(["P-0001"]).take(idx),
                      "amount": pa.array([1.0]).take(idx)})
    pq.write_table(table, out, row_group_size=10_000_000)
"""

_PREPARE = """
import resource, sys, time
from pathlib import Path
from connectors.files import FileSource
from connectors.limits import IngestLimits
from sandbox.core.errors import ConnectorError
path, fmt = Path(sys.argv[1]), sys.argv[2]
work = path.parent / "work"
work.mkdir()
start = time.perf_counter()
try:
    FileSource(path, path.parent, fmt).prepare(work, IngestLimits())
    verdict = "accepted"
except ConnectorError as exc:
    verdict = exc.message
child = resource.getrusage(resource.RUSAGE_CHILDREN)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(verdict)
wall = time.perf_counter() - start
print(f"   {wall:.2f} s wall; child peak RSS {child.ru_maxrss / 1024:.0f} MB,"
      f" CPU {child.ru_utime + child.ru_stime:.2f} s; this process peak RSS {own:.0f} MB")
"""


def bombs() -> None:
    root = str(Path(__file__).resolve().parents[1])
    for which, (name, fmt) in BOMBS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            subprocess.run([sys.executable, "-c", _MAKE, which, str(path)], check=True)
            print(f"{which}: {path.stat().st_size / 1e6:.2f} MB on disk: ", end="", flush=True)
            # A fresh process: the child's peak RSS is not the bomb builder's.
            subprocess.run([sys.executable, "-c", _PREPARE, str(path), fmt], check=True, cwd=root)


def _write(path: Path, rows: int, fmt: str) -> Path:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    index = pa.array(range(rows), pa.int64())
    table = pa.table(
        {
            "person_id": pc.binary_join_element_wise("P", pc.cast(index, pa.string()), ""),
            "district": pc.cast(pc.add(pc.bit_wise_and(index, 3), 1), pa.string()),
            "amount": pc.cast(pc.bit_wise_and(index, 1023), pa.float64()),
        }
    )
    if fmt == "parquet":
        pq.write_table(table, path := path / "big.parquet")
    elif fmt == "csv":
        with pa.CompressedOutputStream(str(path := path / "big.csv.gz"), "gzip") as out:
            pacsv.write_csv(table, out)
    else:
        with open(path := path / "big.jsonl", "w") as out:
            for i in range(rows):
                out.write(f'{{"person_id": "P{i}", "district": "{(i & 3) + 1}", ')
                out.write(f'"amount": {float(i & 1023)}}}\n')
    return path


def lock(rows: int, fmt: str) -> None:
    from connectors.files import FileSource
    from sandbox.core.classification import parse_classification
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    spec = parse_classification(VISITS, source_name="visits.toml")
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), rows, fmt)
        print(f"{rows:,} rows, {path.stat().st_size / 1e6:.0f} MB {path.name}")
        platform = Platform(Settings(home=Path(tmp) / "home"))
        platform.init()
        small = Path(tmp) / "small.csv"
        small.write_text("person_id,district,amount\n" + "P1,1,1.0\n" * 10)
        platform.register(spec, FileSource(small, platform.settings.staging_dir))
        enclave = platform.enclave
        writer = enclave.writer
        held: list[float] = []

        @contextmanager
        def timed() -> Iterator[object]:
            with writer() as con:
                start = time.perf_counter()
                yield con
            held.append(time.perf_counter() - start)

        enclave.writer = timed  # type: ignore[method-assign]
        waits: list[float] = []
        stop = threading.Event()

        def query() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                enclave.query("SELECT count(*) FROM health.visits")
                waits.append(time.perf_counter() - start)
                time.sleep(0.01)

        thread = threading.Thread(target=query)
        thread.start()
        start = time.perf_counter()
        source = FileSource(path, platform.settings.staging_dir, None if fmt == "parquet" else fmt)
        reg = platform.register(spec, source)
        total = time.perf_counter() - start
        stop.set()
        thread.join()
        platform.close()
        print(
            f"registration {total:.2f} s ({reg.record.row_count:,} rows); writer held "
            f"{held[-1]:.2f} s; {len(waits)} queries meanwhile, longest {max(waits):.2f} s; "
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("bombs", "lock"))
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--format", choices=("parquet", "csv", "json"), default="parquet")
    args = parser.parse_args()
    if args.what == "bombs":
        bombs()
    else:
        lock(args.rows, args.format)


if __name__ == "__main__":
    main()
