"""One journey per role, end to end in headless Chromium against a live server.

The operator applies for a grant, the bureau approves it (and reviews a held
result, and suspends and resumes a grant), the operator explains, runs, charts and
downloads a query (and cancels a held one), the auditor finds the entries and checks
an inclusion proof in the page, verifies the live trail and downloads an export, and
the admin freezes and unfreezes an operator.  Each role's main page is photographed
at 1280 px and 390 px (under the test's tmp dir; with CONSOLE_SCREENSHOTS also for
the README) and must not scroll sideways at 390 px.  The tests run in file order
and build on each other (one server, one browser).
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import Browser, Console, readme_shots

WAIT_S = 30
SQL = "SELECT age, count(*) AS claims FROM health.claims GROUP BY 1 ORDER BY 1"
HELD_SQL = "SELECT gender, count(*) AS claims FROM health.claims GROUP BY 1 ORDER BY 1"
CANCEL_SQL = "SELECT diagnosis_code, count(*) AS claims FROM health.claims GROUP BY 1"


def wait(b: Browser):
    return WebDriverWait(b.driver, WAIT_S)


def gone(element: WebElement) -> Callable[[object], bool]:
    """A wait condition: ``element`` left the document (the page was replaced).

    Selenium's ``staleness_of`` expects StaleElementReferenceException; during a navigation
    chromedriver may instead answer "Node with given id does not belong to the document"
    (a plain WebDriverException), which means the same thing here.
    """

    def check(_driver: object) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one
            return True
        return False

    return check


def go(b: Browser, console: Console, path: str) -> None:
    b.driver.get(console.url + path)


def find(b: Browser, css: str):
    return wait(b).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def text(b: Browser) -> str:
    return b.driver.find_element(By.TAG_NAME, "body").text


def sign_in(b: Browser, console: Console, account: str) -> None:
    b.driver.delete_all_cookies()
    go(b, console, "/console/sign-in")
    find(b, "#token").send_keys(console.token(account))
    b.driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    wait(b).until(lambda d: f"{account} · " in d.find_element(By.CSS_SELECTOR, ".account").text)


def submit(b: Browser, form_css: str) -> None:
    form = find(b, form_css)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def reload_after(b: Browser, button) -> None:  # type: ignore[no-untyped-def]
    """Click a button whose form reloads the page, and wait until it has."""
    button.click()
    wait(b).until(gone(button))


A11Y = (Path(__file__).parent / "a11y.js").read_text()


def main_page(b: Browser, role: str) -> None:
    """Screenshots of a role's main page at 1280 px and 390 px; nothing wider than 390 px;
    every control labelled, every text at 4.5:1 contrast; the keyboard reaches the content."""
    driver = b.driver
    driver.save_screenshot(str(b.shots / f"{role}-1280.png"))
    target = readme_shots()
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(target / f"console-{role}.png"))
    driver.set_window_size(390, 844)
    try:
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        driver.save_screenshot(str(b.shots / f"{role}-390.png"))
        assert overflow <= 0, f"the {role} page scrolls sideways by {overflow}px at 390 px"
    finally:
        driver.set_window_size(1280, 900)
    assert driver.execute_script(A11Y) == []
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the first stop is the skip link, and it leads to the content
    skip = driver.switch_to.active_element
    assert skip.get_attribute("class") == "skip"
    skip.send_keys(Keys.ENTER)
    assert driver.switch_to.active_element.get_attribute("id") == "main"


def test_operator_applies_for_a_grant(browser: Browser, console: Console) -> None:
    b = browser
    sign_in(b, console, "op-planner")
    assert "数据目录" in text(b)  # Chinese by default
    main_page(b, "operator")
    b.driver.find_element(By.LINK_TEXT, "health.claims").click()
    find(b, "#purpose_code").send_keys("clinic-planning")
    find(b, "#purpose_text").send_keys("城市门诊规划: claims by age band")
    find(b, "#columns").send_keys("age, gender")
    find(b, "#groupable").send_keys("age gender")
    Select(find(b, "#use")).select_by_value("public_interest")
    submit(b, "form[action$='/apply']")
    wait(b).until(ec.url_contains("/console/operator/applications"))
    row = find(b, "tbody tr")
    assert "health.claims" in row.text and "已提交" in row.text


def test_bureau_approves_reviews_and_suspends(browser: Browser, console: Console) -> None:
    b = browser
    with console.api("op-bank") as api:  # a held job, to review (op-bank's grant is reviewed)
        held = api.post("/v1/jobs?wait=true&timeout=20", json={"sql": HELD_SQL}).json()
    assert held["state"] == "awaiting_review", held
    sign_in(b, console, "bureau-health")
    assert "op-planner" in text(b)
    main_page(b, "bureau")
    # op-planner's application of the first journey (the console's other test files, which
    # share its server, may have left applications of their own before it in the list)
    row = _row(b, "clinic-planning")
    Select(row.find_element(By.CSS_SELECTOR, "select[name=release_mode]")).select_by_value("dp")
    row.find_element(By.CSS_SELECTOR, "form[action$='/approve'] button").click()
    wait(b).until(ec.url_contains("/console/bureau/grants"))
    assert "有效" in _row(b, "op-planner").text

    go(b, console, "/console/bureau/reviews")
    b.driver.find_element(By.LINK_TEXT, held["id"]).click()
    assert len(find(b, "#held-table").find_elements(By.CSS_SELECTOR, "tbody tr")) == 2
    find(b, "#v-approve").click()
    find(b, "#reason").send_keys("gender totals are fine")
    find(b, "#review-submit").click()
    wait(b).until(ec.url_to_be(console.url + "/console/bureau/reviews"))
    assert held["id"] not in text(b)

    go(b, console, "/console/bureau/grants")
    for verb, reason, status in (
        ("suspend", "checking a complaint", "已暂停"),
        ("resume", "complaint unfounded", "有效"),
    ):
        row = _row(b, "op-insurer")
        form = row.find_element(By.CSS_SELECTOR, f"form[action$='/{verb}']")
        form.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys(reason)
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait(b).until(gone(row))
        assert status in _row(b, "op-insurer").text
    _row(b, "op-insurer").find_element(By.LINK_TEXT, "收窄").click()
    find(b, "#queries_per_day").send_keys("500")
    find(b, "#reason").send_keys("a daily cap")
    submit(b, "form[action$='/narrow']")
    wait(b).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "dl.facts"), "500"))

    go(b, console, "/console/bureau/grants")  # and a grant issued directly
    find(b, "#g-operator").send_keys("op-bank")
    find(b, "#g-purpose_code").send_keys("console-issued")
    find(b, "#g-purpose_text").send_keys("district totals for branch planning")
    b.driver.execute_script("arguments[0].value = '2027-06-30'", find(b, "#g-valid_until"))
    find(b, "#g-groupable").send_keys("gender")
    reload_after(b, find(b, "#issue-button"))
    assert "console-issued" in _row(b, "console-issued").text


def _row(b: Browser, word: str):
    """The first table row that mentions ``word``, once the page shows one."""

    def row(driver):  # type: ignore[no-untyped-def]
        found = [r for r in driver.find_elements(By.CSS_SELECTOR, "tbody tr") if word in r.text]
        return found[0] if found else False

    return wait(b).until(row)


def test_operator_explains_runs_charts_and_downloads(browser: Browser, console: Console) -> None:
    b = browser
    sign_in(b, console, "op-planner")
    go(b, console, "/console/operator/query")
    find(b, "#sql").send_keys(SQL)
    find(b, "#explain-button").click()  # htmx: the verdict comes into the page
    verdict = find(b, "#verdict.accepted")
    assert b.driver.current_url.endswith("/console/operator/query")
    assert float(find(b, "#explain-epsilon").text) > 0
    assert "half_width" in verdict.text
    find(b, "#run-button").click()
    wait(b).until(ec.url_contains("/console/operator/jobs/job_"))
    find(b, "#result-table")  # htmx polls the state and reloads once released
    rows = b.driver.find_elements(By.CSS_SELECTOR, "#result-table tbody tr")
    assert rows, "the released table is empty"
    bars = b.driver.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")
    assert len(bars) == len(rows)
    job_id = b.driver.current_url.rsplit("/", 1)[-1]
    find(b, "#download-csv").click()
    path = _downloaded(b.downloads, f"{job_id}.csv")
    table = list(csv.DictReader(io.StringIO(path.read_text())))
    assert list(table[0]) == ["age", "claims"] and len(table) == len(rows)
    cookie = b.driver.get_cookie("sbx_console")
    with console.api("op-planner") as api:
        api.cookies.set("sbx_console", cookie["value"], path="/console")
        for fmt, magic in (("parquet", b"PAR1"), ("arrow", b"\xff\xff\xff\xff")):
            got = api.get(f"/console/operator/jobs/{job_id}/download?format={fmt}")
            assert got.status_code == 200 and got.content[:4] == magic, fmt
        signed = api.get(f"/console/operator/jobs/{job_id}/receipt")
        assert signed.status_code == 200 and signed.json()["signature"], signed.text

    # A held job can be cancelled from its page.
    sign_in(b, console, "op-bank")
    go(b, console, "/console/operator/query")
    find(b, "#sql").send_keys(CANCEL_SQL)
    find(b, "#run-button").click()
    # Held: the page reloads once the state settles (the poll's fragment says so first).
    reload_after(b, find(b, "#job[data-state='awaiting_review'] #cancel-button"))
    wait(b).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#job-state"), "已取消"))


def _downloaded(directory: Path, name: str) -> Path:
    path = directory / name
    deadline = time.monotonic() + WAIT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), (
        f"{name} was not downloaded: {sorted(p.name for p in directory.iterdir())}"
    )
    return path


def test_auditor_finds_the_entries_and_checks_a_proof(browser: Browser, console: Console) -> None:
    b = browser
    signed = console.home.run("audit", "sign")  # the host console signs a tree head now
    assert signed.code == 0, str(signed)
    sign_in(b, console, "auditor")
    main_page(b, "auditor")
    find(b, "#f-actor").send_keys("op-planner")
    find(b, "#f-action").send_keys("dataset.query")
    Select(find(b, "#f-decision")).select_by_value("allow")
    find(b, "#filter-button").click()
    wait(b).until(ec.url_contains("actor=op-planner"))
    actors = b.driver.find_elements(By.CSS_SELECTOR, "#trail-table tbody td:nth-child(3)")
    assert actors and {a.text for a in actors} == {"op-planner"}
    actions = b.driver.find_elements(By.CSS_SELECTOR, "#trail-table tbody td:nth-child(5)")
    assert {a.text for a in actions} == {"dataset.query"}
    b.driver.find_elements(By.CSS_SELECTOR, "#trail-table tbody td:first-child a")[-1].click()
    proof = find(b, "#proof-result")
    assert "ok" in proof.get_attribute("class").split()
    assert proof.text.count("✔") == 4 and "✘" not in proof.text

    go(b, console, "/console/auditor/verify")
    find(b, "#verify-button").click()
    assert "ok" in find(b, "#verify-result").get_attribute("class").split()
    find(b, "#export-link").click()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        done = [p for p in b.downloads.iterdir() if p.name.endswith(".tar.gz")]
        if done:
            break
        time.sleep(0.1)
    assert done, "no export was downloaded"


def test_admin_freezes_and_unfreezes_an_operator(browser: Browser, console: Console) -> None:
    b = browser
    sign_in(b, console, "admin")
    assert "op-planner" in find(b, "#accounts-table").text
    main_page(b, "admin")
    go(b, console, "/console/admin/freeze")
    Select(find(b, "#target")).select_by_value("operator:op-insurer")
    find(b, "#verb-freeze").click()
    find(b, "#reason").send_keys("suspected scraping")
    reload_after(b, find(b, "#freeze-button"))
    assert "op-insurer" in find(b, "#frozen-list").text
    with console.api("op-insurer") as api:
        refused = api.post("/v1/explain", json={"sql": SQL})
    assert refused.json()["rule"] == "operator.frozen", refused.text
    Select(find(b, "#target")).select_by_value("operator:op-insurer")
    find(b, "#verb-unfreeze").click()
    find(b, "#reason").send_keys("cleared")
    reload_after(b, find(b, "#freeze-button"))
    assert "op-insurer" not in find(b, "#frozen-list").text

    # A new operator account, its enrolment code shown once, redeemed by its holder.
    go(b, console, "/console/admin")
    find(b, "#a-name").send_keys("op-console")
    Select(find(b, "#a-role")).select_by_value("operator")
    find(b, "#a-organisation").send_keys("Console Test Analytics")
    find(b, "#a-licence_number").send_keys("SZ-OP-CONSOLE-2026")
    b.driver.execute_script("arguments[0].value = '2027-12-31'", find(b, "#a-licence_until"))
    reload_after(b, find(b, "#create-button"))
    row = _row(b, "op-console")
    reload_after(b, row.find_element(By.CSS_SELECTOR, "form[action$='/enrolments'] button"))
    code = find(b, "#enrolment-code").text
    assert code.startswith("sbe_")
    # An admin's code needs a second administrator: the holder makes its own token and
    # sends its hash, the host console approves with the fingerprint the holder reads out.
    token = "sbx_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    with httpx.Client(base_url=console.url) as anyone:
        enrolled = anyone.post("/v1/enrol", json={"code": code, "token_sha256": digest})
    assert enrolled.status_code == 202, enrolled.text
    pending = enrolled.json()
    approved = console.home.run(
        "token", "approve", pending["enrolment"], "--fingerprint", pending["fingerprint"]
    )
    assert approved.code == 0, str(approved)
    console.home.tokens["op-console"] = token
    sign_in(b, console, "op-console")
    assert b.driver.current_url.endswith("/console/operator")


def test_english_and_signing_out(browser: Browser, console: Console) -> None:
    b = browser
    sign_in(b, console, "op-planner")
    b.driver.find_element(By.LINK_TEXT, "English").click()
    wait(b).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Data catalog"))
    go(b, console, "/console/operator/jobs")  # the choice is kept
    assert find(b, "h1").text == "Jobs"
    # The session cookie is out of the page's reach.
    assert "sbx_console" not in b.driver.execute_script("return document.cookie")
    find(b, "form[action='/console/sign-out'] button").click()
    wait(b).until(ec.url_contains("/console/sign-in"))
    go(b, console, "/console/operator")
    wait(b).until(ec.url_contains("/console/sign-in"))


def test_bureau_publishes_a_product_and_the_admin_rotates_the_key(
    browser: Browser, console: Console
) -> None:
    """One browser step on each of the pages added last: the bureau's products page and
    registration form, the admin's applications and settings (labels and contrast too)."""
    b = browser
    sign_in(b, console, "bureau-health")
    go(b, console, "/console/bureau/products")
    find(b, "#publish-product").find_element(By.XPATH, "..").find_element(
        By.TAG_NAME, "summary"
    ).click()
    for css, value in (
        ("#p-dataset", "health.claims"),
        ("#p-title", "Claims per district (browser)"),
        ("#p-description", "count of claims per district"),
        ("#p-template", "SELECT district, count(*) AS n FROM health.claims GROUP BY district"),
        ("#p-columns", "district"),
    ):
        find(b, css).send_keys(value)
    reload_after(b, find(b, "#publish-product button[type=submit]"))
    assert "Claims per district (browser)" in text(b)
    assert b.driver.execute_script(A11Y) == []
    go(b, console, "/console/bureau/registrations")
    assert find(b, "#apply-registration").get_attribute("method") == "post"
    assert b.driver.execute_script(A11Y) == []
    sign_in(b, console, "admin")
    go(b, console, "/console/admin/applications")
    assert b.driver.execute_script(A11Y) == []
    go(b, console, "/console/admin/settings")
    reload_after(b, find(b, "#rotate-key button"))
    assert find(b, "#active-key").text


@pytest.fixture(autouse=True)
def _no_console_errors(browser: Browser) -> None:
    """No page of a journey logs a script error or a CSP violation in the browser."""
    yield
    logs = browser.driver.get_log("browser")
    bad = [e["message"] for e in logs if e["level"] == "SEVERE"]
    assert not bad, bad
