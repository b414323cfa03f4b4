"""`propose-bounds`: C, G and clamping bounds from DP quantiles, the ε recorded each time."""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.files import FileSource
from sandbox.core.classification import parse_classification
from sandbox.core.errors import Forbidden, InvalidInput, SandboxError
from sandbox.query.bounds_proposal import (
    ACTION,
    VALUE_PART,
    owner_epsilon_spent,
    propose_bounds,
)
from sandbox.query.bounds_quantile import (
    COUNT_CANDIDATES,
    chosen_count,
    chosen_edge,
    count_scores,
    count_tolerance,
    edge_scores,
    rank_tolerance,
    value_edges,
)
from sandbox.query.noise import seeded_noise
from tests.conftest import build_deployment

EPSILON = 8.0  # large enough for a 2,000-person demo to land near the true percentile
Q = Fraction("0.95")
QV = Fraction("0.99")


def test_a_count_score_is_zero_exactly_at_the_quantiles() -> None:
    counts = [0] * 30
    counts[0], counts[4] = 90, 10  # 90 entities with one row, 10 with five
    scores = count_scores(counts, Q, range(1, 11))
    assert scores.index(max(scores)) == 4 and max(scores) == 0  # the 95th percentile is 5
    assert scores[0] == -5 and all(s == -5 for s in scores[5:])  # above the maximum: -(1-q)n
    # One atom (everybody has one gender): 1 is the quantile, every larger candidate loses n/20.
    assert count_scores([100], Q, [1, 2, 3]) == [0, -5, -5]


@given(st.lists(st.integers(0, 50), min_size=1, max_size=60), st.integers(0, 2**32))
def test_the_chosen_count_is_within_the_mechanisms_tolerance(counts: list[int], seed: int) -> None:
    epsilon = Fraction(1)
    chosen = chosen_count(counts, Q, epsilon, seeded_noise(seed))
    scores = count_scores(counts, Q)
    tolerance = count_tolerance(epsilon, len(COUNT_CANDIDATES))
    assert scores[COUNT_CANDIDATES.index(chosen)] >= max(scores) - tolerance


def test_value_edges_are_a_geometric_grid_inside_the_declared_bounds() -> None:
    edges = value_edges(0, 200_000)
    assert edges[0] == 0 and edges[-1] == 200_000 and list(edges) == sorted(set(edges))
    positive = [e for e in edges if e > 0]
    assert all(1.06 <= b / a <= 1.16 for a, b in itertools.pairwise(positive))
    assert len(edges) < 150  # against 1,001 equal-width bin edges
    signed = value_edges(-50, 120)
    assert signed[0] == -50 and signed[-1] == 120 and 0 in signed
    assert value_edges(18, 110)[:3] == (18, 20, 22)
    with pytest.raises(ValueError):
        value_edges(5, 5)


def _lognormal_histogram(edges: tuple[float, ...], n: int, seed: int) -> tuple[list[int], float]:
    """``n`` claim-like amounts (log-normal, median 1,600) binned on ``edges``; their 99th pct."""
    rng = random.Random(seed)
    xs = sorted(min(rng.lognormvariate(math.log(1600), 1.0), edges[-1]) for _ in range(n))
    counts = [0] * (len(edges) - 1)
    for x in xs:
        counts[min(bisect.bisect_right(edges, x) - 1, len(counts) - 1)] += 1
    return counts, xs[int(0.99 * n)]


def test_at_a_small_epsilon_the_upper_bound_lands_near_the_99th_percentile() -> None:
    """Seeded, statistical: ε = 0.05 for one quantile, 20,000 entities, declared bounds 12
    times the data's 99th percentile.  On 1,001 equal-width bins 92% of the candidates lie
    above the data and score alike, so the choice strays up towards the declared bound;
    on the geometric grid the candidates above the data are few."""
    edges = value_edges(0, 200_000)
    counts, p99 = _lognormal_histogram(edges, 20_000, seed=14)
    epsilon, seeds = Fraction(1, 20), range(200)
    chosen = [edges[chosen_edge(counts, QV, epsilon, 1, seeded_noise(s))] for s in seeds]
    # The same values on equal-width bins (each geometric bin lies inside one of them).
    width = 200_000 / 1000
    uniform = [0] * 1000
    for i, count in enumerate(counts):
        uniform[min(int(edges[i] / width), 999)] += count
    equal = [chosen_edge(uniform, QV, epsilon, 1, seeded_noise(s)) * width for s in seeds]

    def near(values: list[float]) -> float:
        return sum(p99 / 1.5 <= v <= p99 * 1.5 for v in values) / len(values)

    assert near(chosen) >= 0.85  # 91% in this seeded run (binomial sd about 2%)
    assert near(equal) <= 0.75  # 63%: the plateau above the data draws a third away


def test_the_count_prior_keeps_a_small_epsilon_off_the_plateau() -> None:
    """Seeded, statistical: 2,000 entities of 1 to 11 rows (95th percentile 8), ε 1/14 for
    the quantile (ε 1 over the seven quantiles of the demo claims).  Every candidate above
    11 scores alike; without the prior a quarter of the draws landed far up (a median of
    8 but a 95th percentile of 446)."""
    rng = random.Random(1)
    values = [1 + sum(rng.random() < 0.45 for _ in range(10)) for _ in range(2_000)]
    counts = [0] * 1000
    for v in values:
        counts[v - 1] += 1
    truth = sorted(values)[int(0.95 * len(values))]
    chosen = [chosen_count(counts, Q, Fraction(1, 14), seeded_noise(s)) for s in range(300)]
    near = sum(truth / 2 <= c <= 2 * truth for c in chosen) / len(chosen)
    assert near >= 0.95  # 99% in this seeded run; 73% without the prior
    assert statistics.median(chosen) == truth


def test_one_row_per_entity_data_gets_one_row_and_one_group(deployment) -> None:
    """Seeded, statistical: 500 enterprises of one row each (four groupable columns), ε 2.

    Every enterprise has one row and one value in each column, so C = G = 1.  G is one
    quantile of each entity's most distinct values: 1 in 20 of 20 seeded proposals here
    (it landed on 1 unless the draw strayed).  Drawn per column and the largest taken
    (one quantile per column, each with a fifth of the counts' ε), as before, G was 1
    in 56% of 200 simulated proposals."""
    platform, _ = deployment
    bureau = _actor(deployment, "bureau-market")
    proposals = [
        propose_bounds(platform, "market.enterprises", bureau, epsilon=2.0, source=seeded_noise(s))
        for s in range(20)
    ]
    assert set(proposals[0].groupings) == {"industry", "district", "founded", "status"}
    groups = [p.contribution.max_groups_per_entity for p in proposals]
    rows = [p.contribution.max_rows_per_entity for p in proposals]
    assert groups.count(1) >= 18, groups
    assert rows.count(1) >= 18, rows
    assert all(p.contribution.max_total_rows_per_entity == p.contribution.max_rows_per_entity
               for p in proposals)  # fmt: skip


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    platform, tokens = build_deployment(tmp_path_factory.mktemp("bounds") / "home")
    yield platform, tokens
    platform.close()


def _actor(deployment, name: str):
    platform, tokens = deployment
    return platform.authority.authenticate(tokens[name])


def _true_counts(platform, sql: str, size: int) -> list[int]:
    """A histogram straight from the enclave (what the mechanism must land near)."""
    counts = [0] * size
    with platform.enclave.cursor() as cur:
        for value, count in cur.sql(sql).fetchall():
            counts[int(value)] += int(count)
    return counts


def test_the_proposal_is_near_the_true_percentiles(deployment) -> None:
    platform, _ = deployment
    bureau = _actor(deployment, "bureau-health")
    proposal = propose_bounds(
        platform, "health.claims", bureau, epsilon=EPSILON, source=seeded_noise(14)
    )
    share = Fraction(EPSILON) * (1 - VALUE_PART) / 2  # C's quantile and G's
    # One value quantile per measure: the demo's declare lower bounds of 0, which stay.
    value_share = Fraction(EPSILON) * VALUE_PART / len(proposal.bounds)
    # C: per-person claim counts (bin j holds the persons with j + 1 claims).
    rows = _true_counts(
        platform,
        "SELECT n - 1, count(*) FROM (SELECT count(*) n FROM health.claims GROUP BY person_id) "
        "GROUP BY 1",
        1000,
    )
    scores = count_scores(rows, Q)
    c = proposal.contribution.max_rows_per_entity
    tolerance = count_tolerance(share, len(COUNT_CANDIDATES))
    assert scores[COUNT_CANDIDATES.index(c)] >= max(scores) - tolerance
    persons = sum(rows)
    assert sum(rows[:c]) >= 0.9 * persons  # near the 95th percentile in plain terms too
    # G: per person, the most distinct values in any one groupable column as released
    # (age in bands of 10); district and gender are one per person, diagnoses several.
    assert "id_number" not in proposal.groupings  # L4: never a grouping
    assert set(proposal.groupings) == {
        "age", "gender", "district", "hospital_id", "diagnosis_code", "claim_date"
    }  # fmt: skip
    most = _true_counts(
        platform,
        "SELECT least(n, 1000) - 1, count(*) FROM (SELECT greatest("
        "count(DISTINCT floor(age / 10) * 10), count(DISTINCT gender), "
        "count(DISTINCT district), count(DISTINCT hospital_id), "
        "count(DISTINCT diagnosis_code), count(DISTINCT claim_date)) n "
        "FROM health.claims GROUP BY person_id) GROUP BY 1",
        1000,
    )
    scores = count_scores(most, Q)
    g = proposal.contribution.max_groups_per_entity
    assert scores[COUNT_CANDIDATES.index(g)] >= max(scores) - tolerance
    assert sum(most[:g]) >= 0.9 * persons
    # Clamping bounds of claim_amount: within the declared bounds, near the 1% and 99%,
    # each an edge of the geometric grid over the declared bounds.
    declared = platform.catalog.get("health.claims").spec.column("claim_amount").bounds
    low, high = proposal.bounds["claim_amount"]
    assert declared[0] <= low < high <= declared[1]
    edges = value_edges(*declared)
    values = [0] * (len(edges) - 1)
    with platform.enclave.cursor() as cur:  # one value per entity, as the proposal reads
        one = cur.sql(
            "SELECT least(greatest(arg_min(claim_amount::DOUBLE, hash(claim_amount)), ?), ?) "
            "FROM health.claims WHERE claim_amount IS NOT NULL GROUP BY person_id",
            params=list(declared),
        ).fetchall()
    for (x,) in one:
        values[min(bisect.bisect_right(edges, x) - 1, len(values) - 1)] += 1
    tolerance = rank_tolerance(value_share, 1, len(edges))
    assert low == declared[0] == 0  # raising it would only bias (a summed CASE … ELSE 0)
    edge_scores_q = edge_scores(values, QV)
    assert edge_scores_q[edges.index(high)] >= max(edge_scores_q) - tolerance
    # The proposal is a classification the bureau can paste, and it parses.
    assert "[contribution]" in proposal.toml() and f"max_rows_per_entity = {c}" in proposal.toml()
    spec = proposal.apply_to(platform.catalog.get("health.claims").spec)
    assert spec.contribution == proposal.contribution
    assert spec.column("claim_amount").bounds == (low, high)
    assert spec.column("age").bounds == proposal.bounds["age"]


def test_every_proposal_spends_and_records_its_epsilon(deployment) -> None:
    platform, _ = deployment
    bureau = _actor(deployment, "bureau-transport")
    before = owner_epsilon_spent(platform, "transport.trips")
    first = propose_bounds(platform, "transport.trips", bureau, epsilon=0.25)
    second = propose_bounds(platform, "transport.trips", bureau, epsilon=0.25)
    assert first.owner_epsilon_spent == pytest.approx(before + 0.25)
    assert second.owner_epsilon_spent == pytest.approx(before + 0.5)
    assert owner_epsilon_spent(platform, "transport.trips") == pytest.approx(before + 0.5)
    entries = platform.audit.entries(limit=10_000, newest_first=True)
    mine = [e for e in entries if e.action == ACTION and e.dataset == "transport.trips"][:2]
    assert [e.details["epsilon"] for e in mine] == [0.25, 0.25]
    assert all(e.decision == "allow" and e.rule == "registry.propose_bounds" for e in mine)
    assert mine[0].actor == bureau.name
    assert mine[0].details["owner_epsilon_spent"] == pytest.approx(before + 0.5)


def test_only_the_owning_bureau_may_ask_and_refusals_are_audited(deployment) -> None:
    platform, _ = deployment
    size = platform.audit.size()
    with pytest.raises(Forbidden):
        propose_bounds(platform, "health.claims", _actor(deployment, "op-insurer"))
    with pytest.raises(Forbidden):
        propose_bounds(platform, "health.claims", _actor(deployment, "bureau-market"))
    with pytest.raises(InvalidInput) as info:
        propose_bounds(platform, "health.claims", _actor(deployment, "bureau-health"), epsilon=0)
    assert info.value.rule == "bounds.epsilon"
    with pytest.raises(InvalidInput) as info:
        propose_bounds(
            platform, "health.claims", _actor(deployment, "bureau-health"), percentile=1.0
        )
    assert info.value.rule == "bounds.percentile"
    entries = platform.audit.entries(offset=size, limit=100)
    assert [e.decision for e in entries] == ["deny"] * 4
    assert entries[-1].rule == "bounds.percentile" and entries[-2].rule == "bounds.epsilon"
    # A refused proposal spends nothing.
    spent = sum(e.details.get("epsilon", 0) for e in entries)
    assert spent == 0


def _cli(platform, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOX_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "--home", str(platform.settings.home), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_command_writes_a_reclassification(deployment) -> None:
    platform, tokens = deployment
    version = platform.catalog.get("market.enterprises").version
    done = _cli(
        platform,
        tokens["bureau-market"],
        "dataset",
        "propose-bounds",
        "market.enterprises",
        "--epsilon",
        "10",
        "--write",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["epsilon"] == 10 and out["written_version"] == version + 1
    # One row per enterprise: C and G are 1 but for a chance below 1e-6 (every other
    # candidate scores -n/20 = -25 for the 500 enterprises, at temperature 2/ε_j = 1.4);
    # T is C's quantile too (rows per entity in all).
    assert out["contribution"] == {
        "max_rows_per_entity": 1,
        "max_groups_per_entity": 1,
        "max_total_rows_per_entity": 1,
    }
    record = platform.catalog.get("market.enterprises")
    assert record.version == version + 1
    assert record.spec.contribution is not None
    assert record.spec.contribution.to_dict() == out["contribution"]
    low, high = out["bounds"]["registered_capital"]
    assert record.spec.column("registered_capital").bounds == (low, high)
    refused = _cli(platform, tokens["op-bank"], "dataset", "propose-bounds", "market.enterprises")
    assert refused.returncode != 0 and "dataset.classify" in refused.stderr
    assert math.isfinite(owner_epsilon_spent(platform, "market.enterprises"))
    with pytest.raises(SandboxError):
        propose_bounds(platform, "nosuch.table", _actor(deployment, "bureau-market"))


def test_a_dataset_in_the_warehouse_is_refused_before_anything_is_spent(deployment) -> None:
    """The histograms are enclave queries: a Spark dataset is refused by name, unspent."""
    platform, _ = deployment
    examples = Path(__file__).resolve().parents[3] / "examples"
    spec = parse_classification((examples / "visits.toml").read_text(), source_name="visits.toml")
    platform.register(
        spec,
        FileSource(examples / "visits.csv", platform.settings.staging_dir, None),
        engine="spark",
    )
    size = platform.audit.size()
    with pytest.raises(SandboxError) as info:
        propose_bounds(platform, spec.id, _actor(deployment, "bureau-health"), epsilon=0.5)
    assert info.value.rule == "engine.unsupported"
    assert "warehouse" in info.value.message
    (entry,) = platform.audit.entries(offset=size, limit=10)
    assert (entry.decision, entry.rule, entry.dataset) == ("deny", "engine.unsupported", spec.id)
    assert owner_epsilon_spent(platform, spec.id) == 0
