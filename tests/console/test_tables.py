"""The grants and applications tables (``macros.html``: ``list_table``, ``reason_form``):
each row's reason form posts its step over HTTP against the live server (suspend, then
resume, so the shared server's grants stay as the journeys need them); as rendered, a
heading per column and an empty list's row spanning them all."""

from __future__ import annotations

import re

import pytest

from sandbox.console.render import ENV

from .conftest import Console, csrf_of

SUSPEND = re.compile(
    r'<form method="post" action="/console/bureau/grants/([^"/]+)/suspend">\s*'
    r'<input type="hidden" name="csrf" value="([^"]+)">\s*'
    r'<label for="(suspend-\d+)">[^<]+</label>\s*'
    r'<input id="(suspend-\d+)" name="reason" required>'
)


def _columns(html: str) -> int:
    head = re.search(r"<thead>(.*?)</thead>", html, re.S)
    assert head, "no table"
    return head.group(1).count('<th scope="col">')


def test_a_grants_row_suspends_and_resumes_with_a_reason(console: Console) -> None:
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau/grants")
        assert page.status_code == 200 and _columns(page.text) == 9  # eight and actions
        found = SUSPEND.search(page.text)
        assert found, "no suspend form on an active grant"
        grant, csrf, label, field = found.groups()
        assert label == field and csrf == csrf_of(page.text)
        done = web.post(
            f"/console/bureau/grants/{grant}/suspend", data={"csrf": csrf, "reason": "check"}
        )
        assert done.status_code == 303, done.text
        page = web.get("/console/bureau/grants")
        assert f'action="/console/bureau/grants/{grant}/resume"' in page.text
        assert f'action="/console/bureau/grants/{grant}/suspend"' not in page.text
        back = web.post(
            f"/console/bureau/grants/{grant}/resume", data={"csrf": csrf, "reason": "checked"}
        )
        assert back.status_code == 303, back.text
    with console.api("bureau-health") as api:
        shown = api.get(f"/v1/grants/{grant}").json()
    assert shown["grant"]["status"] == "active"
    steps = [(h["change"], h["reason"]) for h in shown["history"]]
    assert steps[-2:] == [("suspend", "check"), ("resume", "checked")], steps


@pytest.mark.parametrize(
    ("template", "items", "actions", "span"),
    [
        ("grants_table.html", "grants", "grant_actions", 9),
        ("applications_table.html", "applications", "decide", 9),
    ],
)
def test_an_empty_list_spans_every_column(
    template: str, items: str, actions: str, span: int
) -> None:
    for acts, columns in ((True, span), (False, span - 1)):
        html = ENV.get_template(template).render(t=str, csrf="x", **{items: [], actions: acts})
        assert _columns(html) == columns
        assert f'<td colspan="{columns}">empty</td>' in html
