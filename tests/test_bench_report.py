"""The benchmark report's summary parser, held to the bench scripts' real output formats.

The samples are captured outputs: the ``QUICK_*`` ones verbatim from
``bench/report.py --quick`` on the 2-core VM, the ``FULL_*`` ones printed by the scripts'
own format strings at full sizes.  When a script's output changes form, a row here turns
into "see output" and a test fails, rather than the report quietly losing a figure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import report
from bench.report import SEE_OUTPUT, Run, render, summarize

QUICK_QUERY_OVERHEAD = """\
demo data at --scale 0.02 built in 0.4 s
threads=2, duckdb 2.0.1, median of 2, load average before: 1.9 1.7 0.9
workload                                raw s  plain s  ratio     dp s  ratio
W1 claims by district x diagnosis       0.008    0.029   3.40    0.076   9.01
W2 firms x wages join                   0.006    0.030   5.39    0.050   8.86
W3 trips by station x hour              0.003    0.025   7.82    0.171  53.71
stage floors (median s, ratio to raw DuckDB; the stats query or a cut of it, raw):
W1 claims by district x diagnosis    per-entity   0.004  0.46x   stats   0.007  0.84x
W1 claims by district x diagnosis    capped (ε)   0.016  1.94x   stats (ε)   0.019  2.25x
W2 firms x wages join                per-entity   0.006  1.09x   stats   0.010  1.75x
W2 firms x wages join                capped (ε)   0.009  1.63x   stats (ε)   0.012  2.06x
W3 trips by station x hour           per-entity   0.003  1.01x   stats   0.007  2.14x
W3 trips by station x hour           capped (ε)   0.008  2.44x   stats (ε)   0.012  3.77x
small query (added ms)                    1.7     17.7  +16.0 ms
"""

QUICK_ENCRYPTED = """\
duckdb 2.0.1, --scale 0.02, median of 2 (min-max)
workload                                      plain s      encrypted s  ratio
W1 claims by district x diagnosis      0.005 0.004-0.006   0.007 0.006-0.009   1.43
W2 firms x wages join                  0.006 0.005-0.006   0.005 0.005-0.005   0.94
W3 trips by station x hour             0.002 0.002-0.002   0.002 0.002-0.002   1.09
small query                            0.001 0.001-0.001   0.001 0.001-0.001   1.16
"""

FULL_ENCRYPTED = """\
duckdb 2.0.1, --scale 10, median of 5 (min-max)
workload                                      plain s      encrypted s  ratio
W1 claims by district x diagnosis      0.412 0.401-0.430   0.441 0.430-0.470   1.07
W2 firms x wages join                  0.306 0.295-0.316   0.325 0.315-0.335   1.06
W3 trips by station x hour             0.202 0.192-0.212   0.222 0.212-0.232   1.10
small query                            0.001 0.001-0.001   0.001 0.001-0.001   1.00
"""

QUICK_AUDIT = """\
store: SQLite file (WAL, synchronous=FULL)
durable appends, 1 thread:          578 /s  (1000 appends)
durable appends, 4 threads:       1,685 /s  (4000 appends)
durable appends, 8 threads:       1,919 /s  (4000 appends)
durable appends, 16 threads:      1,590 /s  (4000 appends; 0.33x the anchor, \
412 us CPU an append, 3.1 appends a commit)
offline verification:            33,559 entries/s (10000 entries, 10 tree heads, 0.30 s)
live store verification:          3,601 entries/s
bulk import to 50,000:          5,553 entries/s
inclusion proof at 50,000:  median 0.78 ms, p99 19.95 ms, max 100.67 ms
consistency proof at 50,000: 0.82 ms
"""

QUICK_AUTHZ = """\
policy: 20 operators, 100 grants, 40 datasets, 70 Casbin lines; backend sqlite; built through the audited admin API in 2.6 s
cold decisions (cache misses, 5,000 distinct requests): 463/s
warm decisions: 20,515/s  (10,500 decisions, 94% allowed; target >= 20,000/s)
warm decisions, 4 threads sharing one Authority: 24,595/s
first decision after a grant or freeze change: 0.9 ms median (cache refill)
first decision after a Casbin rule change: 4.7 ms median (Casbin reload)
raw Casbin enforce_ex on this policy (no cache): 18,668/s
"""  # noqa: E501 (verbatim output)

QUICK_ENCLAVE_LOAD = """\
demo at --scale 0.01
  generator  health.claims                10,000 rows   0.08 s       124,334 rows/s
  generator  market.enterprises              500 rows   0.03 s        14,725 rows/s
  generator  hrss.social_insurance         4,884 rows   0.04 s       128,952 rows/s
  generator  transport.trips               5,000 rows   0.04 s       124,307 rows/s
  generator  all four                     20,384 rows   0.19 s       105,901 rows/s
  csv        claims.csv                   10,000 rows   0.10 s       101,129 rows/s  (1 MB, 9 MB/s)
  parquet    claims.parquet               10,000 rows   0.06 s       181,163 rows/s  (0 MB, 4 MB/s)
"""

QUICK_HTTP = """\
demo home at --scale 0.01 built in 1.5 s
server http://127.0.0.1:58465, 1 process(es), 2 cores; 2 clients, 1 s per phase
explain             165 requests    164.5 req/s  p50   10.6 ms  p99   51.7 ms  errors 0  audit entries 165 == requests
query                41 requests     39.7 req/s  p50   43.8 ms  p99  125.6 ms  errors 0  audit entries 41 == requests
  CPU: server 24.1 ms a request (0.96 of 2 cores busy), load generator 2.0 ms a request (0.08 cores)
query (cached)       71 requests     69.7 req/s  p50   26.6 ms  p99   46.8 ms  errors 0  audit entries 71 == requests
mixed:  audit entries 51 == expected
  explain              28 requests     25.5 req/s  p50   13.4 ms  p99   27.2 ms  errors 0
  job poll              2 requests      1.8 req/s  p50    7.4 ms  p99    9.2 ms  errors 0
  job result            2 requests      1.8 req/s  p50   12.1 ms  p99   13.2 ms  errors 0
  job submit            2 requests      1.8 req/s  p50   14.2 ms  p99   15.7 ms  errors 0
  query                14 requests     12.7 req/s  p50   46.1 ms  p99  193.5 ms  errors 0
  query (cached)        5 requests      4.5 req/s  p50   37.1 ms  p99   39.9 ms  errors 0
  all                  53 requests     48.2 req/s  p50   18.0 ms  p99  193.5 ms  errors 0
"""  # noqa: E501 (verbatim output)

QUICK_NOISE = """\
discrete Laplace, 300 cells, best of 1:
  system (secrets)  scale              1:     4.1 ms      74,056 cells/s
  system (secrets)  scale             25:     3.3 ms      91,138 cells/s
  system (secrets)  scale          333.3:     2.8 ms     105,508 cells/s
  system (secrets)  scale      1.429e+07:     4.6 ms      64,809 cells/s
  system (secrets)  scale            0.3:     7.7 ms      38,886 cells/s
  seeded (tests)    scale              1:     0.7 ms     418,116 cells/s
  seeded (tests)    scale             25:     0.7 ms     434,749 cells/s
  seeded (tests)    scale          333.3:     0.6 ms     512,577 cells/s
  seeded (tests)    scale      1.429e+07:     0.6 ms     505,732 cells/s
  seeded (tests)    scale            0.3:     1.5 ms     200,816 cells/s
disclose, 60 groups x 5 noised columns (300 cells):
  without budget    34.5 ms
  with ε = 1         4.8 ms  (noise: -29.7 ms)
"""

FULL_QUERY_OVERHEAD = """\
demo data at --scale 10 built in 38.4 s
threads=2, duckdb 2.0.1, median of 5
workload                                raw s  plain s  ratio     dp s  ratio
W1 claims by district x diagnosis       0.412    0.451   1.09    0.530   1.29
W2 firms x wages join                   0.301    0.330   1.10    0.390   1.30
W3 trips by station x hour              0.250    0.271   1.08    0.355   1.42
stage floors (median s, ratio to raw DuckDB; the stats query or a cut of it, raw):
W1 claims by district x diagnosis    per-entity   0.401  0.97x   stats   0.430  1.04x
W1 claims by district x diagnosis    capped (ε)   0.498  1.21x   stats (ε)   0.520  1.26x
W2 firms x wages join                per-entity   0.310  1.03x   stats   0.320  1.06x
W2 firms x wages join                capped (ε)   0.350  1.16x   stats (ε)   0.370  1.23x
W3 trips by station x hour           per-entity   0.260  1.04x   stats   0.265  1.06x
W3 trips by station x hour           capped (ε)   0.330  1.32x   stats (ε)   0.340  1.36x
small query (added ms)                    1.3      5.4   +4.1 ms
"""

FULL_AUDIT = """\
store: SQLite file (WAL, synchronous=FULL)
durable appends, 1 thread:        6,234 /s  (5000 appends)
durable appends, 4 threads:      14,876 /s  (20000 appends)
durable appends, 8 threads:      15,321 /s  (20000 appends)
durable appends, 16 threads:     13,990 /s  (20000 appends; 2.81x the anchor, \
61 us CPU an append, 15.2 appends a commit)
offline verification:           412,346 entries/s (100000 entries, 100 tree heads, 0.24 s)
live store verification:        251,234 entries/s
bulk import to 1,000,000:        180,321 entries/s
inclusion proof at 1,000,000:  median 0.41 ms, p99 0.93 ms, max 2.10 ms
consistency proof at 1,000,000: 1.32 ms
"""

QUICK_PROFILE = """\
demo data at --scale 0.01 built in 1.4 s
small query: SELECT status, count(*) FROM market.enterprises WHERE founded = 2001 GROUP BY 1
--scale 0.01, median of 5 runs per path, ms (p10-p90)
raw duckdb 1.14 ms (p10-p90 0.87-1.27)

reviewed (computed, held): whole run 46.03 ms (p10-p90 32.37-57.55), added over raw +44.89 ms
  stage                 median ms         p10-p90  share
  parse                      0.69       0.66-0.76     1%
  authorization              0.17       0.16-0.23     0%
  catalog                    0.76       0.53-4.88     2%
  cost                       0.18       0.15-0.44     0%
  guard                      1.66       1.43-6.12     4%
  plan/rewrite               0.94       0.75-3.99     2%
  prepare (rest)             0.04       0.03-0.05     0%
  cache lookup               0.41      0.33-13.33     1%
  charge (ε, usage)         14.02      8.47-16.92    30%
  enclave                    9.17      4.01-12.62    20%
  disclosure                 0.47       0.46-0.48     1%
  release outputs            5.68      2.09-13.36    12%
  commit/audit               2.35      2.19-14.06     5%
  audit append               0.98       0.83-7.35     2%
  other                      0.56       0.50-0.62     1%

dp (noised, released): whole run 56.27 ms (p10-p90 39.24-57.75), added over raw +55.13 ms
  stage                 median ms         p10-p90  share
  parse                      0.70       0.50-0.74     1%
  authorization              0.22       0.21-0.23     0%
  catalog                    0.60       0.46-0.64     1%
  cost                       0.16       0.14-0.16     0%
  guard                      5.74       1.39-7.46    10%
  plan/rewrite               1.21       0.89-9.49     2%
  prepare (rest)             0.04       0.04-0.05     0%
  cache lookup               0.65       0.40-4.67     1%
  charge (ε, usage)         12.35      7.10-18.43    22%
  enclave                   12.92      9.13-17.46    23%
  disclosure                 0.88       0.79-1.03     2%
  release outputs            2.75       2.14-7.48     5%
  commit/audit               3.73       3.51-8.62     7%
  audit append               3.25       1.11-8.56     6%
  receipt                    0.16       0.11-0.20     0%
  other                      0.69       0.65-0.82     1%
"""

QUICK_PROFILE_HTTP = """\
demo home at --scale 0.01 built in 0.6 s
HTTP small query, one at a time: 40 requests in 1.0 s, 41.2 req/s, latency median 19.4 ms (p90 27.2 ms)
server CPU a request: 22.94 ms, by thread:
  event loop (h11, routing, validation, JSON)          1.85 ms    8%
  request threads (handler, job desk, query path)     19.05 ms   83%
  audit writer (group commit)                          0.67 ms    3%
  risk monitor                                         0.83 ms    4%
  DuckDB workers and other native threads              0.39 ms    2%
  other Python threads (job runner, watchdogs)         0.15 ms    1%
  (the client thread, not the server: 0.98 ms)
  (the process's CPU over the run: 23.75 ms a request, against 23.91 ms in its threads' sum, client included; 0 thread(s) ended during the run)
the request thread by stage (wall ms a request, mean):
  charge (ε, usage)                          4.94
  enclave                                    3.64
  commit/audit                               3.35
  guard                                      1.42
  audit append                               1.28
  disclosure                                 0.83
  plan/rewrite                               0.66
  parse                                      0.60
  receipt                                    0.53
  release outputs                            0.51
  catalog                                    0.37
  job desk: concurrency limit                0.37
  job desk: read the released rows back      0.36
  cache lookup                               0.27
  cost                                       0.17
  authorization                              0.16
  job desk: job row                          0.08
  prepare (rest)                             0.06
  outside the stages                         4.64
  (the request threads' CPU: 19.05 ms a request; the stages' wall time: 19.59 ms, which includes waiting for DuckDB's threads, fsync and the GIL)
"""  # noqa: E501 (verbatim output)

FULL_PROFILE_HTTP = QUICK_PROFILE_HTTP.replace(
    "40 requests in 1.0 s, 41.2 req/s", "600 requests in 12.0 s, 50.0 req/s"
)

QUICK_LOADGEN = """\
demo home at --scale 0.01 built in 2.5 s
server http://127.0.0.1:34843, 2 cores, load average 11.33 12.42 10.37; the load test's mix, 4 clients, 2 s
explain               8 requests      3.3 req/s  p50   76.2 ms  p99  203.0 ms  errors 0
query                 5 requests      2.1 req/s  p50 1442.0 ms  p99 1478.9 ms  errors 0
query (cached)        1 requests      0.4 req/s  p50  579.0 ms  p99  579.0 ms  errors 0
refused               1 requests      0.4 req/s  p50   67.8 ms  p99   67.8 ms  errors 1
all                  15 requests      6.2 req/s  p50  194.3 ms  p99 1478.9 ms  errors 1
audit entries 15 == expected
small queries p99 1478.9 ms (6 requests: query, query (cached))
error statuses: [422]
"""  # noqa: E501 (verbatim output)

FULL_PROFILE = QUICK_PROFILE.replace(
    "whole run 46.03 ms (p10-p90 32.37-57.55), added over raw +44.89 ms",
    "whole run 5.03 ms (p10-p90 4.37-5.55), added over raw +3.89 ms",
).replace(
    "whole run 56.27 ms (p10-p90 39.24-57.75), added over raw +55.13 ms",
    "whole run 6.07 ms (p10-p90 5.24-7.75), added over raw +4.93 ms",
)

FULL_LOADGEN = QUICK_LOADGEN.replace(
    "small queries p99 1478.9 ms (6 requests", "small queries p99 812.4 ms (1,204 requests"
)

FULL_HTTP = QUICK_HTTP.replace(
    "query                41 requests     39.7 req/s  p50   43.8 ms  p99  125.6 ms",
    "query              2410 requests    240.9 req/s  p50   21.3 ms  p99   44.6 ms",
)

QUICK_HTTP_2 = """\
demo home at --scale 0.01 built in 1.4 s
server http://127.0.0.1:39661, 2 process(es), 2 cores; 2 clients, 1 s per phase
query                52 requests     51.3 req/s  p50   35.2 ms  p99   98.0 ms  errors 0  audit entries 52 == requests
  CPU: server 27.0 ms a request (1.39 of 2 cores busy), load generator 2.1 ms a request (0.11 cores)
"""  # noqa: E501 (verbatim output)

QUICK = {
    "query_overhead.py": QUICK_QUERY_OVERHEAD,
    "query_overhead.py --encrypted": QUICK_ENCRYPTED,
    "audit_bench.py": QUICK_AUDIT,
    "authz_bench.py": QUICK_AUTHZ,
    "enclave_load.py": QUICK_ENCLAVE_LOAD,
    "http_load.py": QUICK_HTTP,
    "http_load.py --workers 2": QUICK_HTTP_2,
    "noise_bench.py": QUICK_NOISE,
    "profile_small.py": QUICK_PROFILE,
    "profile_http.py": QUICK_PROFILE_HTTP,
    "loadgen.py": QUICK_LOADGEN,
}
FULL = {
    **QUICK,
    "query_overhead.py": FULL_QUERY_OVERHEAD,
    "query_overhead.py --encrypted": FULL_ENCRYPTED,
    "audit_bench.py": FULL_AUDIT,
    "http_load.py": FULL_HTTP,
    "http_load.py --workers 2": QUICK_HTTP_2.replace(
        "query                52 requests     51.3 req/s  p50   35.2 ms  p99   98.0 ms",
        "query              2050 requests    205.0 req/s  p50   30.2 ms  p99   48.0 ms",
    ),
    "profile_small.py": FULL_PROFILE,
    "profile_http.py": FULL_PROFILE_HTTP,
    "loadgen.py": FULL_LOADGEN,
}


def rows(outputs: dict[str, str], judge: bool = True) -> dict[str, report.Figure]:
    return {f.name: f for f in summarize(outputs, judge=judge)}


def test_every_headline_is_found_in_the_captured_outputs() -> None:
    """Each summary row reads its figure from its script's real output."""
    for outputs in (QUICK, FULL):
        missing = [f.name for f in summarize(outputs) if f.value == SEE_OUTPUT]
        assert not missing
    assert {h.script for h in report.HEADLINES} == {b.key for b in report.BENCHES}


def test_the_figures_and_verdicts() -> None:
    full = rows(FULL)
    assert full["query overhead W1, plain (ratio to raw DuckDB)"].value == "1.09"
    assert full["query overhead W1, ε (ratio to raw DuckDB)"].value == "1.29"
    assert full["durable audit appends, 1 thread"].value == "6,234 /s"
    assert full["durable audit appends, 4 threads"].value == "14,876 /s"
    assert full["offline verification"].value == "412,346 entries/s"
    assert full["inclusion proof"].value.startswith("p99 0.93 ms")
    assert "1,000,000" in full["inclusion proof"].value
    assert full["authorization decisions, warm"].value == "20,515 /s"
    assert full["HTTP explain"].value == "164.5 req/s, p50 10.6 ms, p99 51.7 ms"
    assert full["HTTP small query (uncached)"].value == "240.9 req/s, p50 21.3 ms, p99 44.6 ms"
    assert full["small query, time added over raw DuckDB"].value == "+4.1 ms"
    assert full["query overhead W3, worse of reviewed and ε (ratio to raw DuckDB)"].value == (
        "1.08 reviewed, 1.42 ε"
    )
    assert full["small query added over raw DuckDB, dp (stage profile)"].value == "+4.9 ms"
    floor = "W1 floor, ε: the whole stats query over the ranked copy (ratio to raw)"
    assert full[floor].value == "1.26 (0.520 s)"
    floor = "W3 floor, ε: the whole stats query over the ranked copy (ratio to raw)"
    assert full[floor].value == "1.36 (0.340 s)"
    floors = "floors, exact: the per-entity stage, then the whole stats query"
    assert full[f"W3 {floors} (ratios to raw)"].value == "1.04 (0.260 s), then 1.06 (0.265 s)"
    assert full["HTTP small query one at a time: server CPU by thread"].value == (
        "22.9 ms CPU a request at 50.0 req/s: event loop 1.9, request threads 19.1, "
        "audit writer 0.7, risk monitor 0.8, DuckDB workers and other native threads 0.4, "
        "other Python threads 0.1"
    )
    assert full["HTTP small query one at a time: the request thread's largest stages"].value == (
        "charge (ε, usage) 4.9, enclave 3.6, commit/audit 3.4 ms (wall)"
    )
    assert full["small query in process, uncached dp (beside the HTTP rate)"].value == (
        "6.1 ms a query (165 req/s one at a time)"
    )
    assert full["CPU per durable append at 16 threads (under one GIL)"].value == (
        "61 µs (one core's ceiling 16,393 /s)"
    )
    assert full["50 clients mixed: small-query p99"].value == "p99 812 ms (1,204 requests)"
    assert full["HTTP audit entries = expected"].value == "4 of 4 phases equal"
    assert full["encrypted enclave / plain enclave, raw SQL"].value.startswith(
        "worst 1.10 (W1 1.07"
    )
    quick_enc = rows(QUICK)["encrypted enclave / plain enclave, raw SQL"]
    assert quick_enc.verdict == "**misses**" and quick_enc.value.startswith("worst 1.43")
    assert full["noisy disclosure, ε = 1"].value == "4.8 ms for 300 cells (noise -29.7 ms)"
    judged = {f.name: f.verdict for f in full.values() if f.target != "—"}
    assert set(judged.values()) == {"meets"}  # the full samples meet every target

    quick = rows(QUICK)
    assert quick["query overhead W1, plain (ratio to raw DuckDB)"].verdict == "**misses**"
    assert quick["durable audit appends, 1 thread"].verdict == "**misses**"
    assert quick["inclusion proof"].verdict == "**misses**"  # p99 19.95 ms on a busy VM
    assert quick["HTTP small query (uncached)"].verdict == "**misses**"  # 39.7 req/s
    two = "HTTP small query, 2 server processes (one interpreter per core)"
    assert quick[two].verdict == "**misses**"
    assert full[two].value == "205.0 req/s, p50 30.2 ms, p99 48.0 ms"
    assert quick["HTTP small query, 2 server processes: server CPU"].value.startswith(
        "27.0 ms CPU a request; 1.39 of 2 cores busy"
    )
    assert quick["HTTP small query, server CPU (what bounds its rate)"].value == (
        "24.1 ms CPU a request; 0.96 of 2 cores busy (load generator 2.0 ms a request)"
    )
    assert quick["small query added over raw DuckDB, reviewed (stage profile)"].value == "+44.9 ms"
    assert quick["50 clients mixed: small-query p99"].verdict == "**misses**"
    assert {f.verdict for f in rows(QUICK, judge=False).values()} == {""}


def test_a_changed_format_reads_see_output() -> None:
    """A figure whose line changed form is "see output"; the others are unaffected."""
    changed = dict(FULL)
    changed["authz_bench.py"] = QUICK_AUTHZ.replace("warm decisions: ", "warm: ")
    changed["http_load.py"] = QUICK_HTTP.replace(" req/s", " rps")
    changed["audit_bench.py"] = "Traceback (most recent call last):\n  ...\nValueError: boom\n"
    # A thread line in another form: no partial breakdown, "see output"; the stages read on.
    changed["profile_http.py"] = re.sub(r"( ms)(\s+\d+%)", r" msec\2", QUICK_PROFILE_HTTP, count=1)
    got = rows(changed)
    assert got["authorization decisions, warm"].value == SEE_OUTPUT
    assert got["authorization decisions, warm"].verdict == ""
    assert got["authorization decisions, cold"].value == "463 /s"
    assert got["HTTP explain"].value == SEE_OUTPUT
    assert got["HTTP audit entries = expected"].value == "4 of 4 phases equal"
    assert got["offline verification"].value == SEE_OUTPUT
    assert got["HTTP small query one at a time: server CPU by thread"].value == SEE_OUTPUT
    assert got["HTTP small query one at a time: the request thread's largest stages"].value != (
        SEE_OUTPUT
    )
    assert got["query overhead W1, plain (ratio to raw DuckDB)"].value == "1.09"
    assert {f.value for f in summarize({})} == {SEE_OUTPUT}


def test_an_audit_mismatch_misses() -> None:
    mismatch = QUICK_HTTP.replace("audit entries 41 == requests", "audit entries 40 != requests")
    got = rows({**FULL, "http_load.py": mismatch})["HTTP audit entries = expected"]
    assert (got.value, got.verdict) == ("3 of 4 phases equal", "**misses**")


def test_render_has_the_summary_machine_versions_and_every_output() -> None:
    runs = [
        Run(b, f"python bench/{b.script}", 1.5, 0, FULL[b.key], "")
        for b in report.BENCHES
        if b.script != "authz_bench.py"
    ]
    authz = next(b for b in report.BENCHES if b.script == "authz_bench.py")
    runs.append(Run(authz, "python bench/authz_bench.py", 2.0, 1, QUICK_AUTHZ, "WARNING: x\n"))
    text = render(runs, False, datetime(2026, 1, 2, 3, 4, tzinfo=UTC), report.machine())
    for heading in ("# Benchmark report", "## Summary", "## Machine", "## Versions"):
        assert heading + "\n" in text
    for name in ("duckdb", "pyarrow", "sqlglot", "pycasbin", "cryptography", "fastapi", "uvicorn"):
        assert f"| {name} | " in text
    for b in report.BENCHES:
        assert f"## bench/{b.key}\n" in text
    assert "`python bench/authz_bench.py`: 2.0 s wall, **exit status 1**" in text
    assert "stderr:\n\n```\nWARNING: x\n```" in text
    assert "W1 claims by district x diagnosis       0.412" in text  # verbatim
    assert "2026-01-02 03:04 UTC" in text and "Quick run" not in text
    assert f"| {SEE_OUTPUT} |" not in text.split("## Machine")[0]


def test_the_fast_scripts_still_print_what_the_parser_reads(tmp_path: Path) -> None:
    """The two quickest benchmarks run for real (a few seconds) and their figures parse."""
    fast = [b for b in report.BENCHES if b.script in ("noise_bench.py", "enclave_load.py")]
    outputs = {}
    for bench in fast:
        done = report.run(bench, quick=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs[bench.script] = done.stdout
    for figure in summarize(outputs):
        if figure.script in outputs:
            assert figure.value != SEE_OUTPUT, figure.name


@pytest.mark.slow
def test_a_quick_report_parses_every_figure(tmp_path: Path) -> None:
    """Every benchmark at its small sizes (about a minute): no "see output" in the summary."""
    out = tmp_path / "REPORT.md"
    done = subprocess.run(
        [sys.executable, str(report.ROOT / "bench" / "report.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    summary = out.read_text().split("## Machine")[0]
    assert "Quick run" in summary
    assert f"| {SEE_OUTPUT} |" not in summary


def test_python_speed_times_the_loop_and_main_reports_it_before_and_after(
    tmp_path: Path,
) -> None:
    """The speed anchor: a longer loop takes longer, and the Machine table shows both runs."""
    short, long = report.python_speed(100_000, 3), report.python_speed(2_000_000, 3)
    assert 0 < short < long
    out = tmp_path / "REPORT.md"
    assert report.main(["--quick", "--only", "noise_bench.py", "--out", str(out)]) == 0
    row = re.search(
        r"^\| Python speed \(5 M additions in a loop\) \| (.+) \|$", out.read_text(), re.M
    )
    assert row is not None
    assert re.fullmatch(r"\d+\.\d\d s before the benchmarks, \d+\.\d\d s after", row.group(1))


def test_a_phase_with_errors_gives_no_figure() -> None:
    """A server that answers nothing answers fast: a phase with errors is "see output",
    never a rate that meets (make bench once read 3,143 req/s from 31,455 failures)."""
    failed = dict(FULL)
    failed["http_load.py --workers 2"] = (
        "server http://127.0.0.1:36245, 2 process(es), 2 cores; 8 clients, 10 s per phase\n"
        "query             31455 requests   3143.1 req/s  p50    1.9 ms  p99   10.7 ms  "
        "errors 31455  audit entries 0 == expected\n"
        "  CPU: server -0.1 ms a request (-0.18 of 2 cores busy), load generator 0.4 ms a "
        "request (1.11 cores)\n"
        "  error statuses: [0]\n"
    )
    got = rows(failed)
    name = "HTTP small query, 2 server processes (one interpreter per core)"
    assert got[name].value == SEE_OUTPUT and got[name].verdict == ""
    assert got["HTTP small query, 2 server processes: server CPU"].value == SEE_OUTPUT
    assert rows(FULL)[name].value != SEE_OUTPUT  # the same line without errors reads
