"""The console's live server and headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``.ci/run``; nothing is downloaded at run time).

One demo home and one ``sandbox serve`` process for the console's tests (the
installed command, as a user runs it, from tests/blackbox/conftest.py), one browser
per module.  ``CONSOLE_SCREENSHOTS=docs/img`` also writes each role's main page to
that directory (``make console-screenshots``, for the README).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.blackbox.conftest import DemoHome, Server, sandbox, serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Console:
    home: DemoHome
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, account: str) -> str:
        return self.home.tokens[account]

    def api(self, account: str) -> httpx.Client:
        """An API client with the account's bearer token."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(account)}"},
            timeout=60,
        )

    @contextmanager
    def session(self, account: str) -> Iterator[httpx.Client]:
        """A console session (cookies) signed in as ``account``, as a browser would."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            csrf = csrf_of(client.get("/console/sign-in").text)
            token = self.token(account)
            answer = client.post("/console/sign-in", data={"csrf": csrf, "token": token})
            assert answer.status_code == 303, answer.text[:500]
            yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A demo home at scale 0.01 (enough rows for noised groups) served for the session."""
    home = tmp_path_factory.mktemp("console") / "home"
    made = sandbox("--home", str(home), "demo", "--scale", "0.01", timeout=300)
    assert made.code == 0 and "demo home ready" in made.out, str(made)
    demo = DemoHome(home, json.loads((home / "demo-tokens.json").read_text()))
    with serving(demo) as server:
        yield Console(demo, server)


def _chrome(downloads: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "the console's browser tests need Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--lang=zh-CN",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@dataclass
class Browser:
    driver: object
    shots: Path
    downloads: Path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for the module; screenshots and downloads under its tmp dir."""
    base = tmp_path_factory.mktemp("browser")
    (base / "shots").mkdir()
    (base / "downloads").mkdir()
    driver = _chrome(base / "downloads")
    try:
        yield Browser(driver, base / "shots", base / "downloads")
    finally:
        driver.quit()  # type: ignore[attr-defined]


def readme_shots() -> Path | None:
    """Where to write the README's screenshots (``CONSOLE_SCREENSHOTS``), if anywhere."""
    target = os.environ.get("CONSOLE_SCREENSHOTS")
    if not target:
        return None
    path = Path(target)
    return path if path.is_absolute() else ROOT / path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed browser test leaves a screenshot of where it stopped, beside the others."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    found = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and isinstance(found, Browser):
        found.driver.save_screenshot(str(found.shots / f"FAILED-{item.name}.png"))  # type: ignore[attr-defined]
        report.sections.append(("screenshot", str(found.shots / f"FAILED-{item.name}.png")))
