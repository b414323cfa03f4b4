"""The console's pure parts: the catalogs, the chart, the vendored asset, the proof check."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from audit import KeyRing
from audit.keys import public_key_from_b64
from policies.grant_terms import GrantStatus
from sandbox.console.auditor import check_inclusion
from sandbox.console.chart import MAX_BARS, bar_chart
from sandbox.console.i18n import LANGUAGES, catalog, choose, translator
from sandbox.governance.application_states import AppState
from sandbox.jobs.store import JobState

from .conftest import Console

CONSOLE = Path(__file__).resolve().parents[2] / "sandbox" / "console"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
"""sha256 of htmx.org@2.0.11 dist/htmx.min.js: `npm pack htmx.org@2.0.11`, then
`tar xzf htmx.org-2.0.11.tgz && sha256sum package/dist/htmx.min.js`."""


def test_every_key_is_in_both_catalogs() -> None:
    zh, en = catalog("zh"), catalog("en")
    assert set(zh) == set(en), set(zh) ^ set(en)
    assert all(zh[k].strip() and en[k].strip() for k in zh)


def _used_keys() -> set[str]:
    keys = set()
    for template in (CONSOLE / "templates").rglob("*.html"):
        keys |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+)["']""", template.read_text()))
    # Keys built from a value: every value they can take.
    keys |= {f"job.{s.value}" for s in JobState}
    keys |= {f"state.{s.value}" for s in AppState}
    keys |= {f"status.{s.value}" for s in GrantStatus}
    keys |= {f"role.{r}" for r in ("operator", "bureau", "auditor", "admin")}
    keys |= {f"lang.{lang}" for lang in LANGUAGES}
    keys |= {f"col.{f}" for f in ("actor", "role", "action", "target", "dataset")}
    keys |= {f"proof.{s}" for s in ("leaf", "size", "root", "signature", "no_head", "failed")}
    keys |= {"action.ack", "action.resolve"}
    keys |= {f"registrations.{k}" for k in ("accept", "review", "issue")}
    keys |= {f"registrations.verdict.{k}" for k in ("accept", "refuse", "approve", "reject")}
    keys |= {f"lists.kind.{k}" for k in ("prohibited", "limited", "important")}
    dimensions = ("completeness", "validity", "uniqueness", "consistency", "timeliness")
    keys |= {f"quality.{d}" for d in dimensions}
    for module in CONSOLE.glob("*.py"):
        keys |= set(re.findall(r'"(nav\.[a-z_]+)"', module.read_text()))
    return {k for k in keys if not k.endswith(".")}


def test_every_key_the_pages_use_is_in_the_catalogs() -> None:
    missing = _used_keys() - set(catalog("en"))
    assert not missing, sorted(missing)


def test_language_choice_and_fields() -> None:
    assert choose(None, None) == "zh"
    assert choose("en", "zh") == "en"
    assert choose("fr", "en") == "en"
    assert choose("../../etc", None) == "zh"
    assert translator("en")("job.chart", value="claims", label="age") == "claims by age"
    assert translator("zh")("no.such.key") == "no.such.key"


def test_the_chart_of_a_result() -> None:
    rows = [{"age": 20.0, "claims": 10}, {"age": 30.0, "claims": 40}, {"age": 40.0, "claims": -5}]
    chart = bar_chart(["age", "claims"], rows)
    assert chart is not None
    assert (chart.label_column, chart.value_column) == ("age", "claims")
    assert [b.label for b in chart.bars] == ["20.0", "30.0", "40.0"]
    widths = [b.width for b in chart.bars]
    assert widths[1] == max(widths) and widths[0] == pytest.approx(widths[1] / 4, abs=1)
    assert [b.shown for b in chart.bars] == ["10", "40", "-5"]
    assert chart.height == 3 * (chart.bar_height + 6)


def test_no_chart_without_numbers_or_rows() -> None:
    assert bar_chart(["a"], []) is None
    assert bar_chart(["district"], [{"district": "D01"}]) is None
    assert bar_chart(["district", "n"], [{"district": "D01", "n": None}]) is None


def test_the_chart_keeps_the_first_rows() -> None:
    rows = [{"k": f"g{i}", "n": i} for i in range(MAX_BARS + 5)]
    chart = bar_chart(["k", "n"], rows)
    assert chart is not None and len(chart.bars) == MAX_BARS and chart.truncated


def test_the_vendored_htmx_is_the_published_file() -> None:
    text = (CONSOLE / "static" / "htmx.min.js").read_bytes()
    header, _, body = text.partition(b"*/\n")
    assert b"htmx 2.0.11" in header and b"Zero-Clause BSD" in header
    assert hashlib.sha256(body).hexdigest() == HTMX_SHA256


def test_the_proof_check_passes_and_catches_tampering(console: Console) -> None:
    assert console.home.run("audit", "sign").code == 0
    with console.api("auditor") as api:
        proved = api.get("/v1/audit/proofs/inclusion", params={"seq": 2}).json()
        keys = {k: public_key_from_b64(v) for k, v in api.get("/v1/audit/keys").json().items()}
    assert keys.keys() == KeyRing(console.home.home / "keys").public_keys().keys()
    entry, proof, head = proved["entry"], proved["proof"], proved["tree_head"]

    good = check_inclusion(entry, proof, head, keys)
    assert good.ok and [s for s, _ in good.steps] == [
        "proof.leaf",
        "proof.size",
        "proof.root",
        "proof.signature",
    ]

    assert not check_inclusion({**entry, "actor": "someone-else"}, proof, head, keys).ok
    flipped = [("0" if p[0] != "0" else "1") + p[1:] for p in proof["path"]]
    assert not check_inclusion(entry, {**proof, "path": flipped}, head, keys).ok
    forged = {**head, "root_hash": "00" * 32}
    assert not check_inclusion(entry, proof, forged, keys).ok
    assert not check_inclusion(entry, proof, head, {}).ok  # nobody we know signed it
    assert not check_inclusion(entry, proof, None, keys).ok
