"""What reading the negative list and important data costs a query, in the same run.

Usage: python bench/data_controls_overhead.py [--repeat 201] [--items 50]

On a demo home (scale 0.01) with ``--items`` entries on the lists (none touching the
query), times ``load_controls`` for the query's dataset and grant (a read of the
control plane), the query service's ``_access`` with the lists cached by policy state
(what a query pays between changes), and ``explain`` of a small query through the real
:class:`~sandbox.query.service.QueryService` (each with a distinct normalized query, so
no plan is reused), all in-process in the same run.  Prints medians with the 10th-90th
percentile spread, and the ratio of the uncached read to explain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies import Actor
from sandbox.core.data_controls import ItemKind, load_controls
from sandbox.governance.data_lists import DataLists
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

SQL = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 HAVING count(*) > {i}"


def spread(samples: list[float]) -> str:
    q = [x * 1000 for x in statistics.quantiles(samples, n=10)]
    median = statistics.median(samples) * 1000
    return f"{median:.3f} ms (p10 {q[0]:.3f}, p90 {q[-1]:.3f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=201)
    parser.add_argument("--items", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform, tokens = build_deployment(Path(tmp) / "home")
        try:
            lists = DataLists(platform)
            host = Actor.host("bench")
            columns = [c.name for c in platform.catalog.get("market.enterprises").spec.columns]
            for i in range(args.items):
                kind = ItemKind.IMPORTANT if i % 2 else ItemKind.LIMITED
                item = f"market.enterprises.{columns[i % len(columns)]}"
                try:
                    lists.add(host, kind, item, reason=f"bench {i}")
                except Exception:  # a duplicate: the list holds it already
                    pass
            service = QueryService(platform)
            insurer = platform.authority.authenticate(tokens["op-insurer"])
            grant = next(
                g
                for g in platform.authority.decide(
                    insurer, "dataset.query", datasets=["health.claims"], audit=False
                ).grants
            )
            loads, explains, cached = [], [], []
            records = {"health.claims": platform.catalog.get("health.claims")}
            for i in range(args.repeat):
                t0 = time.perf_counter()
                with platform.engine.connect() as conn:
                    load_controls(conn, ["health.claims"], {"health.claims": grant.id})
                loads.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                service._access((grant,), records, platform.authority.state)
                cached.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                answer = service.explain(insurer, SQL.format(i=i))
                explains.append(time.perf_counter() - t0)
                assert answer["accepted"], answer
        finally:
            platform.close()
    print(f"load_controls: {spread(loads)}")
    print(f"cached lists:  {spread(cached)}  (what the service pays per query between changes)")
    print(f"explain:       {spread(explains)}")
    print(
        f"ratio (median load_controls / median explain): "
        f"{statistics.median(loads) / statistics.median(explains):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
