"""The negative list and the important-data catalog in the console, over HTTP: the admin
adds and removes, a bureau adds for its own datasets only, every role reads."""

from __future__ import annotations

from .conftest import Console, csrf_of

ITEM = "transport.trips.board_station"


def test_the_lists_from_the_console(console: Console) -> None:
    with console.session("admin") as admin:
        token = csrf_of(admin.get("/console/lists").text)
        added = admin.post(
            "/console/lists/negative",
            data={"csrf": token, "item": ITEM, "kind": "limited", "reason": "<i>station</i> ids"},
        )
        assert added.status_code == 303, added.text
    with console.session("op-planner") as operator:
        shown = operator.get("/console/lists")
        assert shown.status_code == 200
        table = shown.text.split('id="negative-table"', 1)[1].split("</table>", 1)[0]
        assert ITEM in table and "&lt;i&gt;station&lt;/i&gt; ids" in table
        assert 'action="/console/lists/negative"' not in shown.text  # no form to add
        refused = operator.post(
            "/console/lists/negative",
            data={"csrf": csrf_of(shown.text), "item": ITEM, "kind": "limited", "reason": "x"},
        )
        assert refused.status_code == 403
    with console.session("bureau-health") as bureau:
        page = bureau.get("/console/lists")
        others = bureau.post(
            "/console/lists/important",
            data={"csrf": csrf_of(page.text), "item": "transport.trips", "reason": "not mine"},
        )
        assert others.status_code == 403 and 'class="rule"' in others.text
    with console.session("admin") as admin:
        page = admin.get("/console/lists")
        item_id = page.text.split(f"<code>{ITEM}</code>", 1)[1].split("/remove", 1)[0]
        item_id = item_id.rsplit("/", 1)[-1]
        removed = admin.post(
            f"/console/lists/negative/{item_id}/remove",
            data={"csrf": csrf_of(page.text), "reason": "reviewed: not sensitive"},
        )
        assert removed.status_code == 303, removed.text
        after = admin.get("/console/lists").text.split('id="negative-table"', 1)[1]
        assert ITEM not in after.split("</table>", 1)[0]
