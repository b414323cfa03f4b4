"""``sandbox dataset quality`` and ``sandbox product …`` as a user runs them: the installed
command as a subprocess on its own small demo home, each role with its own token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.blackbox.conftest import DemoHome, make_demo_home

PRODUCT = '''
dataset = "health.claims"
title = "Claims per district"
description = "Claims per district, for one gender and ages from a band boundary."
template = """SELECT district, count(*) AS claims FROM health.claims
              WHERE gender = :g AND age >= :min_age GROUP BY district"""
columns = ["district", "gender", "age"]
groupable = ["gender", "age"]
price_per_run = "1.50"
terms = "cite the bureau"

[params.g]
type = "string"
domain = "health.claims.gender"

[params.min_age]
type = "int"
min = 0
max = 100
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    return make_demo_home(tmp_path_factory.mktemp("products-cli") / "home")


def test_dataset_quality(home: DemoHome) -> None:
    shown = home.run("dataset", "quality", "market.enterprises", "--token", home.tokens["op-bank"])
    assert shown.code == 0, str(shown)
    assert "score" in shown.out and "uniqueness" in shown.out and "history: v1" in shown.out
    as_json = home.run("dataset", "quality", "health.claims", "--json")
    report = json.loads(as_json.out)["report"]
    assert report["validity"]["columns"]["gender"]["rule"] == "values"
    unknown = home.run("dataset", "quality", "health.nothing")
    assert unknown.code == 2 and "dataset.unknown" in unknown.err, str(unknown)
    catalog = home.run("catalog", "show", "health.claims", "--token", home.tokens["op-bank"])
    assert "quality: score" in catalog.out and "update frequency: monthly" in catalog.out


def test_product_publish_subscribe_run(home: DemoHome, tmp_path: Path) -> None:
    spec = tmp_path / "product.toml"
    spec.write_text(PRODUCT)
    t = home.tokens
    refused = home.run("product", "publish", str(spec), "--token", t["op-bank"])
    assert refused.code == 2 and "product.role" in refused.err, str(refused)
    published = home.run("product", "publish", str(spec), "--json", "--token", t["bureau-health"])
    assert published.code == 0, str(published)
    pid = json.loads(published.out)["id"]

    listed = home.run("product", "list", "--token", t["op-planner"])
    assert pid in listed.out and "1.50 CNY/run" in listed.out and "runs 0" in listed.out

    sub = home.run(
        "product",
        "subscribe",
        pid,
        "--purpose-text",
        "district planning",
        "--use",
        "commercial",
        "--token",
        t["op-planner"],
    )
    assert sub.code == 0 and "requested" in sub.out, str(sub)
    sid = sub.out.split()[0]
    not_yet = home.run(
        "product", "run", pid, "--param", "g=F", "--param", "min_age=30", "--token", t["op-planner"]
    )
    assert not_yet.code == 2 and "product.not_subscribed" in not_yet.err, str(not_yet)
    approved = home.run("product", "approve-subscription", sid, "--token", t["bureau-health"])
    assert approved.code == 0 and "active" in approved.out, str(approved)

    bad = home.run(
        "product", "run", pid, "--param", "g=X", "--param", "min_age=30", "--token", t["op-planner"]
    )
    assert bad.code == 2 and "product.param_value" in bad.err and "X" not in bad.err, str(bad)
    ran = home.run(
        "product", "run", pid, "--param", "g=F", "--param", "min_age=30", "--token", t["op-planner"]
    )
    assert ran.code == 0, str(ran)
    job = json.loads(ran.out)["job"]
    assert job["state"] == "succeeded" and job["purpose"].startswith("product-")
    listed = home.run("product", "list", "--json", "--token", t["op-insurer"])
    usage = {p["id"]: p["usage"] for p in json.loads(listed.out)}
    assert usage[pid] == {"runs": 1, "subscribers": 1}
