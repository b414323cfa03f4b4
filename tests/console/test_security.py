"""The console's security properties against the live server.

XSS payloads in a dataset's title and descriptions, a grant application's purpose,
SQL and a rule's message render as text (checked in Chromium: no element, no script
run); a form without its CSRF token is refused (``console.csrf``) and changes
nothing; one role's pages are refused for another (``console.role``) and the refusal
is audited; the cookies' flags; the Content-Security-Policy; nothing is loaded from
outside the host.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import Browser, Console, csrf_of

ROOT = Path(__file__).resolve().parents[2]
XSS_TITLE = '<img src=x onerror="window.__xss=1">Visits'
XSS_TEXT = "<script>window.__xss=2</script>one row per visit"
XSS_PURPOSE = '<svg onload="window.__xss=3"></svg>planning'
XSS_COLUMN = '"<b id=xss>x</b>"'


@pytest.fixture(scope="module")
def hostile(console: Console) -> dict[str, str]:
    """A dataset whose title and descriptions, an application whose purpose, and a job
    whose SQL carry markup; returns the job's id."""
    toml = (ROOT / "examples" / "visits.toml").read_text()
    toml = toml.replace(
        'title = "Outpatient visits (门诊就诊, example)"', f"title = '{XSS_TITLE}'"
    ).replace(
        'description = "One row per outpatient visit: who, which district, what it cost."',
        f"description = '{XSS_TEXT}'",
    )
    toml = toml.replace('description = "Visit number"', f"description = '{XSS_TEXT}'")
    assert XSS_TITLE in toml
    # The host console registers it (over HTTP a dataset goes through the registration
    # procedure; its title and descriptions end up in the same catalog either way).
    path = console.home.home.parent / "hostile-visits.toml"
    path.write_text(toml)
    made = console.home.run(
        "dataset", "register", str(path), "--source", str(ROOT / "examples" / "visits.csv")
    )
    assert made.code == 0, str(made)
    with console.api("op-insurer") as operator:
        applied = operator.post(
            "/v1/grant-applications",
            json={
                "dataset": "health.visits",
                "purpose_code": "xss-check",
                "purpose_text": XSS_PURPOSE,
                "columns": ["district"],
                "duration_days": 30,
                "use": "public_interest",
            },
        )
        assert applied.status_code == 201, applied.text
        sql = (
            "SELECT gender, count(*) AS claims FROM health.claims "
            "WHERE diagnosis_code <> '<script>window.__xss=4</script>' GROUP BY 1"
        )
        job = operator.post("/v1/jobs", json={"sql": sql})
        assert job.status_code == 202, job.text
    return {"job": job.json()["id"]}


def _sign_in(b: Browser, console: Console, account: str) -> None:
    b.driver.delete_all_cookies()
    b.driver.get(console.url + "/console/sign-in")
    b.driver.find_element(By.ID, "token").send_keys(console.token(account))
    b.driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    WebDriverWait(b.driver, 30).until(lambda d: "/console/sign-in" not in d.current_url)


def _inert(b: Browser, path: str, *literals: str) -> None:
    """The page shows each payload as text, and none became an element or ran."""
    b.driver.get(b.base + path)  # type: ignore[attr-defined]
    body = b.driver.find_element(By.TAG_NAME, "body").text
    for literal in literals:
        assert literal in body, (path, literal)
    d = b.driver
    assert d.execute_script("return window.__xss === undefined"), path
    assert not d.find_elements(By.CSS_SELECTOR, "main img, main script, #xss, main svg[onload]")
    scripts = [s.get_attribute("src") for s in d.find_elements(By.TAG_NAME, "script")]
    assert scripts == [b.base + "/console/static/htmx.min.js"], scripts  # type: ignore[attr-defined]


def test_payloads_render_as_text(
    browser: Browser, console: Console, hostile: dict[str, str]
) -> None:
    b = browser
    b.base = console.url  # type: ignore[attr-defined]
    _sign_in(b, console, "op-insurer")
    _inert(b, "/console/operator", XSS_TITLE, XSS_TEXT)
    _inert(b, "/console/operator/catalog/health.visits", XSS_TITLE, XSS_TEXT)
    _inert(b, "/console/operator/applications", XSS_PURPOSE)
    _inert(b, f"/console/operator/jobs/{hostile['job']}", "<script>window.__xss=4</script>")
    # A rule's message naming what the SQL asked for (htmx puts the verdict in the page).
    b.driver.get(console.url + "/console/operator/query")
    b.driver.find_element(By.ID, "sql").send_keys(
        f"SELECT {XSS_COLUMN}, count(*) FROM health.claims GROUP BY 1"
    )
    b.driver.find_element(By.ID, "explain-button").click()
    verdict = WebDriverWait(b.driver, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#verdict.refused"))
    )
    assert "<b id=xss>x</b>" in verdict.text
    assert not b.driver.find_elements(By.ID, "xss")
    # A refusal of the request itself comes into the page too, with its rule.
    b.driver.find_element(By.ID, "epsilon").send_keys("<b id=xss>lots</b>")
    b.driver.find_element(By.ID, "explain-button").click()
    refusal = WebDriverWait(b.driver, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#explain #refusal"))
    )
    assert "api.schema" in refusal.text and "epsilon" in refusal.text
    assert not b.driver.find_elements(By.ID, "xss") and "lots" not in refusal.text
    _sign_in(b, console, "bureau-health")
    _inert(b, "/console/bureau", XSS_PURPOSE)
    _inert(b, "/console/bureau/datasets", XSS_TITLE, XSS_TEXT)


def test_a_form_without_its_csrf_token_is_refused(console: Console) -> None:
    with console.session("op-insurer") as web:
        before = web.get("/console/operator/jobs").text.count("job_")
        sql = "SELECT gender, count(*) AS claims FROM health.claims GROUP BY 1"
        for form in ({"sql": sql}, {"sql": sql, "csrf": "0" * 32}):
            refused = web.post("/console/operator/jobs", data=form)
            assert refused.status_code == 403
            assert (
                "console.csrf" in refused.text and "<form" not in refused.text.split("</header>")[1]
            )
        assert web.get("/console/operator/jobs").text.count("job_") == before
        # The same form with the session's token goes through.
        token = csrf_of(web.get("/console/operator/query").text)
        assert (
            web.post("/console/operator/jobs", data={"sql": sql, "csrf": token}).status_code == 303
        )
        # A token of another session does not.
        with console.session("op-bank") as other:
            theirs = csrf_of(other.get("/console/operator/query").text)
        assert theirs != token
        assert (
            web.post("/console/operator/jobs", data={"sql": sql, "csrf": theirs}).status_code == 403
        )
    # The sign-in form is protected too (its token comes with a pre-session cookie).
    with console.session("op-insurer") as web:
        web.cookies.clear()
        refused = web.post("/console/sign-in", data={"token": console.token("op-insurer")})
        assert refused.status_code == 403 and "console.csrf" in refused.text
        assert "sbx_console" not in refused.headers.get("set-cookie", "")


PAGES = {
    "operator": "/console/operator",
    "bureau": "/console/bureau",
    "auditor": "/console/auditor",
    "admin": "/console/admin",
}
ACCOUNTS = {
    "operator": "op-bank",
    "bureau": "bureau-health",
    "auditor": "auditor",
    "admin": "admin",
}


@pytest.mark.parametrize("role", sorted(ACCOUNTS))
def test_one_roles_pages_are_refused_for_another(console: Console, role: str) -> None:
    with console.session(ACCOUNTS[role]) as web:
        own = web.get(PAGES[role])
        assert own.status_code == 200
        for other, path in PAGES.items():
            if other == role:
                continue
            refused = web.get(path)
            assert refused.status_code == 403, (role, path)
            assert "console.role" in refused.text
            # Nor is another role's menu offered.
            assert f'href="{path}"' not in own.text


def test_a_refused_page_is_in_the_audit_trail(console: Console) -> None:
    """The refusal of another role's page is a ``deny`` entry: who, which page, the rule."""
    with console.session("op-bank") as web:
        refused = web.get("/console/admin/settings")
    assert refused.status_code == 403 and "console.role" in refused.text
    request_id = refused.headers["x-request-id"]
    with console.api("auditor") as api:
        found = api.get(
            "/v1/audit/entries",
            params={"action": "console.page", "actor": "op-bank", "newest_first": "true"},
        ).json()["entries"]
    entry = next(e for e in found if e["request_id"] == request_id)
    assert entry["role"] == "operator" and entry["decision"] == "deny"
    assert entry["rule"] == "console.role"
    assert entry["target"] == "console:/console/admin/settings"
    assert "admin console" in entry["details"]["reason"]
    with console.session("admin") as web:  # the own role's page is not refused, nor recorded
        allowed = web.get("/console/admin/settings")
    assert allowed.status_code == 200
    with console.api("auditor") as api:
        after = api.get(
            "/v1/audit/entries", params={"action": "console.page", "actor": "admin"}
        ).json()["entries"]
    assert allowed.headers["x-request-id"] not in {e["request_id"] for e in after}


def test_without_a_session_pages_send_to_sign_in(console: Console) -> None:
    with console.session("auditor") as web:
        web.cookies.clear()
        for path in (*PAGES.values(), "/console/auditor/entries/1", "/console/operator/jobs"):
            answer = web.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"
        polled = web.get("/console/operator/jobs/job_x/status", headers={"HX-Request": "true"})
        assert polled.status_code == 200 and polled.headers["HX-Redirect"] == "/console/sign-in"
        web.cookies.set("sbx_console", "sbx_not-a-real-token-at-all-000000000", path="/console")
        assert web.get("/console/admin").headers["location"] == "/console/sign-in"
        # A wrong token at the sign-in form is refused with its rule, and no session starts.
        page = web.get("/console/sign-in")
        refused = web.post(
            "/console/sign-in", data={"csrf": csrf_of(page.text), "token": "sbx_wrong-token"}
        )
        assert refused.status_code == 401 and "sbx_console=" not in refused.headers.get(
            "set-cookie", ""
        )


def test_the_cookies_flags(console: Console) -> None:
    import httpx

    with httpx.Client(base_url=console.url) as web:
        first = web.get("/console/sign-in")
        signed = web.post(
            "/console/sign-in",
            data={"csrf": csrf_of(first.text), "token": console.token("op-bank")},
        )
    for answer, name in ((first, "sbx_console_pre"), (signed, "sbx_console")):
        headers = [h for h in answer.headers.get_list("set-cookie") if h.startswith(name + "=")]
        assert len(headers) == 1, answer.headers
        jar = SimpleCookie(headers[0])
        morsel = jar[name]
        assert morsel["httponly"] is True
        assert morsel["samesite"].lower() == "strict"
        assert morsel["path"] == "/console"
        assert not morsel["secure"]  # plain http here; https below
        assert not morsel["expires"] and not morsel["max-age"]  # a session cookie
    assert signed.cookies.get("sbx_console") == console.token("op-bank")


def test_the_cookie_is_secure_over_https() -> None:
    from starlette.requests import Request
    from starlette.responses import Response

    from sandbox.console.session import set_cookie

    cases = (
        ("https", [], True),
        ("http", [], False),
        ("http", [(b"x-forwarded-proto", b"https")], True),  # behind a TLS proxy
        ("http", [(b"x-forwarded-proto", b"http")], False),
    )
    for scheme, headers, secure in cases:
        request = Request({"type": "http", "scheme": scheme, "path": "/", "headers": headers})
        response = Response()
        set_cookie(request, response, "sbx_console", "value")
        header = response.headers["set-cookie"].lower()
        assert ("; secure" in header) is secure
        assert "httponly" in header and "samesite=strict" in header


def test_every_page_has_the_strict_policy_and_loads_only_from_the_host(console: Console) -> None:
    paths = [
        ("op-insurer", "/console/operator"),
        ("op-insurer", "/console/operator/query"),
        ("bureau-health", "/console/bureau/grants"),
        ("auditor", "/console/auditor/verify"),
        ("admin", "/console/admin/settings"),
    ]
    for account, path in paths:
        with console.session(account) as web:
            answer = web.get(path)
        assert answer.status_code == 200
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', answer.text):
            assert url.startswith(("/", "#", "?")) or url == "", (path, url)
        assert "style=" not in answer.text  # inline styles would need 'unsafe-inline'
