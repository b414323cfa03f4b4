"""The reviewer's page for a held run that failed on the data, in headless Chromium.

A reviewed run that fails on the data (here more released rows than the deployment's
``max_result_rows``) is held like a result (``sandbox/query/held_failure.py``): the
operator sees ``awaiting_review`` either way, and only the reviewer's page says it
failed, naming the rule, with no rows.  A second ``sandbox serve`` process on the
console's home runs with ``SANDBOX_MAX_RESULT_ROWS=3`` (the shared one keeps the
default, which the other journeys need).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.blackbox.conftest import serving

from .conftest import Browser, Console
from .test_journeys import find, go, sign_in, text, wait

OVER = "SELECT district, count(*) AS claims FROM health.claims GROUP BY 1"  # 16 rows


@pytest.fixture(scope="module")
def small(console: Console) -> Iterator[Console]:
    with serving(console.home, env={"SANDBOX_MAX_RESULT_ROWS": "3"}) as server:
        yield Console(console.home, server)


def test_the_reviewer_sees_the_failure_and_its_rule_and_no_rows(
    browser: Browser, small: Console
) -> None:
    with small.api("op-bank") as api:
        job = api.post("/v1/jobs?wait=true&timeout=30", json={"sql": OVER}).json()
    assert job["state"] == "awaiting_review" and job.get("rule") is None, job
    b = browser
    sign_in(b, small, "bureau-health")
    go(b, small, "/console/bureau/reviews")
    b.driver.find_element(By.LINK_TEXT, job["id"]).click()
    banner = find(b, "#held-failure")
    assert banner.is_displayed()
    assert "enclave.max_result_rows" in banner.text
    assert "more than 3 rows" in banner.text
    assert not b.driver.find_elements(By.CSS_SELECTOR, "#held-table tbody tr")
    find(b, "#v-approve").click()
    find(b, "#reason").send_keys("the operator may learn that it failed")
    find(b, "#review-submit").click()
    wait(b).until(ec.url_to_be(small.url + "/console/bureau/reviews"))
    assert job["id"] not in text(b)
    with small.api("op-bank") as api:
        ended = api.get(f"/v1/jobs/{job['id']}").json()
    assert ended["state"] == "refused" and ended["rule"] == "enclave.max_result_rows"
