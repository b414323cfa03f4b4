"""The analysis cache (sandbox/query/plan_cache.py): hits on a repeat, never stale.

Every policy change an operator could be caught out by (a grant narrowed or suspended,
a dataset reclassified or frozen, on this server or another one) takes effect on the
very next query of the same service, whose caches were warm with that query.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from policies import Actor, Administration
from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Role as ColumnRole
from sandbox.core.classification import parse_classification
from sandbox.core.errors import SandboxError
from sandbox.platform import Platform
from sandbox.query.parse import parse_query
from sandbox.query.plan_cache import PlanCache, access_key
from sandbox.query.service import QueryService
from sandbox.reclassify import reclassify
from tests.conftest import build_deployment

DATASET = "market.enterprises"
SQL = "SELECT status, count(*) AS n FROM market.enterprises WHERE founded > 1990 GROUP BY 1"


@pytest.fixture
def world(tmp_path: Path):
    """A deployment of its own (each test changes policy), its service and tokens."""
    platform, tokens = build_deployment(tmp_path / "home")
    yield platform, QueryService(platform), tokens
    platform.close()


def _actor(platform: Platform, tokens: dict[str, str], name: str) -> Actor:
    return platform.authority.authenticate(tokens[name])


def _admin(platform: Platform) -> Administration:
    return Administration(platform.authority, k_floor=platform.settings.k_floor)


def _bank_grant(platform: Platform, tokens: dict[str, str]):
    bureau = _actor(platform, tokens, "bureau-market")
    (grant,) = [g for g in _admin(platform).list_grants(bureau) if g.operator == "op-bank"]
    return bureau, grant


def _warm(service: QueryService, bank: Actor) -> dict:
    """The query explained twice: the second answer comes from the cache."""
    first = service.explain(bank, SQL)
    hits = service._plans.hits
    second = service.explain(bank, SQL)
    assert first["accepted"] and second == {**first}
    assert service._plans.hits >= hits + 3  # parse, cost and prepare all hit
    return second


def test_a_repeat_is_answered_from_the_cache_and_runs_the_same(world) -> None:
    platform, service, tokens = world
    bank = _actor(platform, tokens, "op-bank")
    _warm(service, bank)
    held = [service.run_job(bank, SQL) for _ in range(2)]
    assert held[0].table.equals(held[1].table)
    # Nothing on the path changed the shared parse: it is still what the SQL says, also
    # where the guard rewrites (a CAST runs as TRY_CAST) and the rewrite adds clauses.
    cast = (
        "SELECT CAST(founded AS VARCHAR) AS y, count(*) AS n FROM market.enterprises "
        "GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
    )
    for sql in (SQL, cast):
        for _ in range(2):
            service.run_job(bank, sql)
        auth = service.check(bank, sql)
        assert auth.prepared.parsed.expression == parse_query(sql, max_length=20_000).expression
        assert auth.prepared is service.check(bank, sql).prepared


def test_narrowing_the_grant_applies_to_the_next_query(world) -> None:
    platform, service, tokens = world
    bank = _actor(platform, tokens, "op-bank")
    assert _warm(service, bank)["k"] == 10
    bureau, grant = _bank_grant(platform, tokens)
    _admin(platform).narrow_grant(bureau, grant.id, k=25, reason="test")
    assert service.explain(bank, SQL)["k"] == 25
    columns = frozenset({"industry", "district", "founded"})  # status no longer granted
    _admin(platform).narrow_grant(bureau, grant.id, columns=columns, reason="test")
    answer = service.explain(bank, SQL)
    assert not answer["accepted"] and answer["rule"] == "grant.column_list"
    with pytest.raises(SandboxError) as refused:
        service.run_job(bank, SQL)
    assert refused.value.rule == "grant.column_list"


def test_suspending_the_grant_applies_to_the_next_query(world) -> None:
    platform, service, tokens = world
    bank = _actor(platform, tokens, "op-bank")
    _warm(service, bank)
    bureau, grant = _bank_grant(platform, tokens)
    _admin(platform).suspend_grant(bureau, grant.id, reason="test")
    answer = service.explain(bank, SQL)
    assert not answer["accepted"] and answer["rule"] == "grant.suspended"
    with pytest.raises(SandboxError) as refused:
        service.run_job(bank, SQL)
    assert refused.value.rule == "grant.suspended"


def test_freezing_the_dataset_applies_to_the_next_query(world) -> None:
    platform, service, tokens = world
    bank = _actor(platform, tokens, "op-bank")
    _warm(service, bank)
    _admin(platform).set_dataset_frozen(Actor.host("tests"), DATASET, True, reason="incident")
    answer = service.explain(bank, SQL)
    assert not answer["accepted"] and answer["rule"] == "dataset.frozen"


def test_reclassifying_the_dataset_applies_to_the_next_query(world) -> None:
    platform, service, tokens = world
    bank = _actor(platform, tokens, "op-bank")
    _warm(service, bank)
    record = platform.catalog.get(DATASET)
    spec = record.spec
    status = next(c for c in spec.columns if c.name == "status")
    changed = dataclasses.replace(status, role=ColumnRole.IDENTIFIER)
    columns = tuple(changed if c is status else c for c in spec.columns)
    reclassify(
        platform,
        dataclasses.replace(spec, columns=columns),
        _actor(platform, tokens, "bureau-market"),
    )
    answer = service.explain(bank, SQL)
    assert not answer["accepted"] and answer["rule"] == "guard.identifier"


def test_a_change_made_by_another_server_applies_to_the_next_query(world) -> None:
    platform, service, tokens = world
    bank = _actor(platform, tokens, "op-bank")
    _warm(service, bank)
    other = Platform(platform.settings)  # a second API server on the same control plane
    try:
        bureau, grant = _bank_grant(other, tokens)
        _admin(other).narrow_grant(bureau, grant.id, k=30, reason="test")
    finally:
        other.close()
    assert service.explain(bank, SQL)["k"] == 30


def test_the_chosen_epsilon_is_part_of_the_key(world) -> None:
    platform, service, tokens = world
    insurer = _actor(platform, tokens, "op-insurer")
    sql = "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"
    assert service.explain(insurer, sql, epsilon=0.5)["epsilon"] == pytest.approx(0.5)
    assert service.explain(insurer, sql, epsilon=1.0)["epsilon"] == pytest.approx(1.0)
    assert service.explain(insurer, sql, epsilon=0.5)["epsilon"] == pytest.approx(0.5)


def test_a_size_of_zero_turns_the_cache_off(world) -> None:
    platform, _, tokens = world
    service = QueryService(Platform(dataclasses.replace(platform.settings, plan_cache_size=0)))
    try:
        bank = _actor(service.platform, tokens, "op-bank")
        assert service.explain(bank, SQL)["accepted"]
        assert service.explain(bank, SQL)["accepted"]
        assert len(service._plans) == 0 and service._plans.hits == 0
    finally:
        service.platform.close()


# -- the cache itself -------------------------------------------------------------------


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = PlanCache(2)
    for key in ("a", "b"):
        cache.get_or_build(key, lambda key=key: key.upper())
    cache.get_or_build("a", lambda: "never built")  # a is now the most recent
    cache.get_or_build("c", lambda: "C")
    assert len(cache) == 2
    assert cache.get_or_build("a", lambda: "rebuilt") == "A"
    assert cache.get_or_build("b", lambda: "rebuilt") == "rebuilt"


def test_a_refusal_is_never_cached() -> None:
    cache = PlanCache(4)
    calls = []

    def refuse() -> str:
        calls.append(1)
        raise ValueError("refused")

    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get_or_build("q", refuse)
    assert len(calls) == 2 and len(cache) == 0


def test_no_key_means_no_cache() -> None:
    cache = PlanCache(4)
    assert cache.get_or_build(None, lambda: 1) == 1
    assert cache.get_or_build(None, lambda: 2) == 2
    assert len(cache) == 0


SPEC = parse_classification(
    Path("sandbox/enclave/demo/market.enterprises.toml").read_text("utf-8"), source_name="demo"
)


def test_the_access_key_takes_every_field_but_the_spec() -> None:
    base = DatasetAccess(SPEC, groupable=frozenset({"industry"}))
    versions = {DATASET: (1, "digest")}
    key = access_key({DATASET: base}, versions)
    assert key == access_key(
        {DATASET: DatasetAccess(SPEC, groupable=frozenset({"industry"}))}, versions
    )
    for field in dataclasses.fields(DatasetAccess):
        if field.name == "spec":
            continue
        changed = {
            "max_level": base.max_level.__class__.L1,
            "columns": frozenset({"industry"}),
            "groupable": frozenset(),
        }.get(field.name)
        if changed is None:
            continue  # a field this test does not know how to vary (covered by the next test)
        assert (
            access_key({DATASET: dataclasses.replace(base, **{field.name: changed})}, versions)
            != key
        )
    assert access_key({DATASET: base}, {DATASET: (2, "digest")}) != key


def test_an_unhashable_access_is_analysed_without_the_cache() -> None:
    @dataclasses.dataclass(frozen=True)
    class Wider(DatasetAccess):
        extra: list[str] = dataclasses.field(default_factory=list)

    assert access_key({DATASET: Wider(SPEC, extra=["x"])}, {DATASET: (1, "d")}) is None
