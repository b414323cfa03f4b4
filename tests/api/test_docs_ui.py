"""/docs and /redoc work on an air-gapped host: every asset comes from the server itself."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlparse

import httpx
import pytest

from tests.api.conftest import LiveServer

ABSOLUTE = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+[^\s"'<>)]*""")
REFERENCED = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']"""
)


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_documentation_pages_load_only_local_assets(
    server: LiveServer, page: str, script: str
) -> None:
    answer = httpx.get(f"{server.url}{page}", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    outside = [u for u in ABSOLUTE.findall(html) if urlparse(u).hostname not in (None, "127.0.0.1")]
    assert not outside, f"{page} references {outside}"
    urls = {a or b for a, b in REFERENCED.findall(html)}
    assert any(u.endswith(script) for u in urls), urls
    assert "/openapi.json" in urls
    for url in sorted(urls):
        fetched = httpx.get(urljoin(f"{server.url}{page}", url), timeout=30)
        assert fetched.status_code == 200, url
        if url.endswith(".js"):
            assert "javascript" in fetched.headers["content-type"], url
            assert len(fetched.content) > 100_000, url  # the real bundle, not a stub
        elif url.endswith(".css"):
            assert fetched.headers["content-type"].startswith("text/css"), url


def test_the_vendored_assets_keep_their_licences(server: LiveServer) -> None:
    for path in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert httpx.get(f"{server.url}/static/{path}", timeout=30).status_code == 200, path
    assert "validatorUrl" in httpx.get(f"{server.url}/docs", timeout=30).text
