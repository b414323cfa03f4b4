"""Each role's tour from the README, over real HTTP with the client; every refusal audited."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from audit import InclusionProof, verify_export
from audit.keys import public_key_from_b64
from sandbox.client import SandboxClient
from sandbox.core.errors import Forbidden, NotFound, QueryRefused, SandboxError
from sandbox.query.receipts import verify_receipt
from tests.api.conftest import register
from tests.enrolling import enrol

BY_DISTRICT = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"


def last_entry(server, **filters):
    with server.client("auditor") as auditor:
        return auditor.audit_entries(newest_first=True, limit=1, **filters)[0]


def test_operator_tour(server) -> None:
    with server.client("op-bank") as bank:
        grants = {g["dataset"]: g for g in bank.grants()}
        assert grants["health.claims"]["usage"]["queries_remaining"] == 1000
        datasets = {d["id"]: d for d in bank.datasets()}
        claims = datasets["health.claims"]
        id_number = claims["columns"]["id_number"]
        assert (id_number["level"], id_number["role"], id_number["granted"]) == (
            "L4",
            "identifier",
            False,
        )
        assert set(id_number) <= {"level", "role", "type", "description", "granted"}
        assert claims["source"] is None and "rows" not in claims
        verdict = bank.explain(BY_DISTRICT)
        assert verdict["accepted"] and verdict["k"] == 10
        refused = bank.explain("SELECT name FROM health.claims")
        assert not refused["accepted"] and refused["rule"].startswith("guard.")

        # op-bank's grants are reviewed: held until the bureau's recorded approval.
        held = bank.submit(BY_DISTRICT, wait=True)
        assert held["state"] == "awaiting_review" and held["result"] is None
    with server.client("bureau-health") as bureau:
        assert bureau.approve(held["id"], "district counts")["state"] == "succeeded"
    with server.client("op-bank") as bank:
        job = bank.job(held["id"])
        assert job["state"] == "succeeded" and job["progress"] == 1.0
        table = bank.result(job["id"])
        assert table.column_names == ["district", "n"]
        assert set(table.column("district").to_pylist()) >= {"D01", "D02"}
        # The same release in every format.
        as_csv = pacsv.read_csv(io.BytesIO(bank.result_bytes(job["id"], "csv")))
        as_parquet = pq.read_table(io.BytesIO(bank.result_bytes(job["id"], "parquet")))
        assert as_csv.to_pylist() == table.to_pylist() == as_parquet.to_pylist()
        receipt = bank.receipt(job["id"])
        keys = {
            key_id: public_key_from_b64(b64)
            for key_id, b64 in bank.request("GET", "/v1/audit/keys").json().items()
        }
        body = verify_receipt(receipt, keys)
        assert body["result_sha256"] == job["meta"]["result_sha256"]
        assert [j["id"] for j in bank.jobs(limit=1)] == [job["id"]]
        usage = bank.usage()
        assert any(row["dataset"] == "health.claims" and row["queries"] >= 1 for row in usage)
        assert "TOTAL" in bank.statement(job["created_at"][:7])


def test_budgeted_operator_sees_epsilon(server) -> None:
    with server.client("op-insurer") as insurer:
        before = insurer.grants()[0]["usage"]["epsilon_remaining"]
        job = insurer.submit(
            "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1", wait=True
        )
        assert job["state"] == "succeeded" and job["meta"]["epsilon_spent"] == pytest.approx(1.0)
        after = insurer.grants()[0]["usage"]["epsilon_remaining"]
        assert after == pytest.approx(before - 1.0)
        again = insurer.submit(
            "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1", wait=True
        )
        assert again["meta"]["cached"] and again["result"] == job["result"]


def test_refusals_are_errors_of_one_shape_and_audited(server) -> None:
    raw = httpx.get(f"{server.url}/v1/jobs", headers={"Authorization": "Bearer sbx_nope"})
    assert raw.status_code == 401 and raw.headers["WWW-Authenticate"] == "Bearer"
    assert raw.json() == {
        "code": "unauthenticated",
        "message": "authentication failed: unknown token",
        "rule": "auth.token_unknown",
    }
    assert last_entry(server, action="auth.authenticate")["rule"] == "auth.token_unknown"
    missing = httpx.get(f"{server.url}/v1/me")
    assert missing.status_code == 401 and missing.json()["code"] == "unauthenticated"

    with server.client("op-bank") as bank:
        with pytest.raises(Forbidden) as info:
            bank.accounts()
        assert info.value.rule == "role.not_permitted"
        assert last_entry(server, actor="op-bank", decision="deny")["action"] == "account.list"
        with pytest.raises(QueryRefused) as refused:
            bank.submit("SELECT name, count(*) FROM health.claims GROUP BY 1")
        assert refused.value.rule == "guard.identifier"
        entry = last_entry(server, actor="op-bank", decision="deny")
        assert (entry["action"], entry["rule"]) == ("dataset.query", "guard.identifier")
        invalid = httpx.post(
            f"{server.url}/v1/jobs", json={"sq": "x"}, headers=_auth(server, "op-bank")
        )
        assert invalid.status_code == 422 and invalid.json()["rule"] == "api.schema"
    with server.client("bureau-health") as bureau:
        with pytest.raises(SandboxError) as info:
            bureau.submit(BY_DISTRICT)
        assert info.value.status == 403 and info.value.rule == "role.not_permitted"
    with server.client("admin") as admin, pytest.raises(Forbidden):
        admin.jobs()
    with server.client("op-planner") as planner:
        # Another operator's job is answered as one that does not exist (404); the
        # trail records the real reason.
        other = _some_job(server)
        with pytest.raises(NotFound) as info:
            planner.job(other)
        with pytest.raises(NotFound) as missing:
            planner.job("job_" + "0" * 24)
        assert (info.value.rule, info.value.message) == ("job.unknown", f"no job {other}")
        assert missing.value.rule == "job.unknown"
        entry = last_entry(server, actor="op-planner", decision="deny")
        assert (entry["action"], entry["rule"]) == ("job.read", "owner.mismatch")
    for response in (
        httpx.get(f"{server.url}/nowhere"),
        httpx.delete(f"{server.url}/v1/me", headers=_auth(server, "op-bank")),
    ):
        assert set(response.json()) == {"code", "message", "rule"}


def _auth(server, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[who]}"}


def _some_job(server) -> str:
    """One of op-bank's jobs: the newest, or a new one if it has none (a test run alone)."""
    with server.client("op-bank") as bank:
        jobs = bank.jobs(limit=1)
        return jobs[0]["id"] if jobs else bank.submit(BY_DISTRICT)["id"]


def test_bureau_tour(server, tmp_path: Path) -> None:
    visits = tmp_path / "visits.csv"
    visits.write_text(
        "visit_id,person_id,district,cost\n"
        + "".join(f"v{i},p{i % 40},D{i % 3:02d},{i % 50}\n" for i in range(400))
    )
    toml = """
[dataset]
id = "health.visits"
title = "Outpatient visits"
entity_key = "person_id"
[columns.visit_id]
level = "L3"
role = "identifier"
[columns.person_id]
level = "L3"
role = "identifier"
[columns.district]
level = "L1"
role = "dimension"
[columns.cost]
level = "L2"
role = "measure"
bounds = [0, 100]
"""
    with server.client("bureau-health") as bureau:
        upload = bureau.upload(visits, domain="health")
        assert upload["bytes"] == visits.stat().st_size
        # The direct path is closed: a bureau registers through the procedure.
        with pytest.raises(Forbidden) as info:
            bureau.register(toml, upload_id=upload["upload_id"])
        assert info.value.rule == "registration.procedure"
        reg = register(server, "bureau-health", toml, upload_id=upload["upload_id"])
        assert reg["dataset"]["id"] == "health.visits" and reg["dataset"]["row_count"] == 400
        assert reg["certificate"]["certificate"]["version"] == 1
        reclassified = bureau.classify(
            "health.visits",
            toml.replace('[columns.district]\nlevel = "L1"', '[columns.district]\nlevel = "L2"'),
        )
        assert reclassified["dataset"]["version"] == 2
        assert reclassified["dataset"]["columns"]["district"]["level"] == "L2"
        grant = bureau.issue_grant(
            dataset="health.visits",
            operator="op-planner",
            purpose_code="clinic-planning",
            purpose_text="visits per district",
            valid_until="2030-01-01T00:00:00Z",
            max_level="L2",
            release_mode="reviewed",
            reason="tour",
        )
        assert grant["status"] == "active" and grant["release_mode"] == "reviewed"
        narrowed = bureau.narrow_grant(grant["id"], k=20, reason="tighter")
        assert narrowed["k"] == 20 and narrowed["version"] == 2
        imports = server.home / "imports"
        (imports / "visits-2.csv").write_text(visits.read_text())
        by_path = register(server, "bureau-health", toml, path="visits-2.csv")
        assert by_path["replaced"] and by_path["dataset"]["version"] == 3
        with pytest.raises(SandboxError) as info:
            register(server, "bureau-health", toml, path="../control.db")
        assert info.value.rule == "api.import_path"
        with pytest.raises(Forbidden) as info:
            register(
                server,
                "bureau-health",
                toml.replace("health.visits", "market.visits"),
                upload_id="up_" + "0" * 24,
            )
        assert info.value.rule == "domain.outside"
    with server.client("op-planner") as planner:
        job = planner.submit(
            "SELECT district, sum(cost) AS total FROM health.visits GROUP BY 1", wait=True
        )
        assert job["state"] == "awaiting_review"
    with server.client("bureau-health") as bureau:
        assert bureau.approve(job["id"], "district totals")["state"] == "succeeded"
    with server.client("op-planner") as planner:
        assert planner.result(job["id"]).num_rows == 3
    with server.client("bureau-health") as bureau:
        assert bureau.grant_status(grant["id"], "revoke", "tour over")["status"] == "revoked"
    with server.client("op-planner") as planner, pytest.raises(Forbidden) as info:
        planner.submit("SELECT district, count(*) FROM health.visits GROUP BY 1")
    assert info.value.rule == "grant.revoked"


def test_auditor_tour(server, tmp_path: Path) -> None:
    with server.client("auditor") as auditor:
        page = auditor.audit_entries(action="dataset.query", decision="allow", limit=5)
        assert page and all(e["action"] == "dataset.query" for e in page)
        report = auditor.audit_verify()
        assert report["ok"] and report["entries"] > 10
        head = auditor.tree_head()
        proof = auditor.inclusion_proof(0)
        InclusionProof.from_dict(proof["proof"]).verify(
            bytes.fromhex(proof["tree_head"]["root_hash"])
        )
        consistency = auditor.consistency_proof(1, head["tree_size"])
        assert consistency["proof"]["size2"] == head["tree_size"]
        archive = auditor.audit_export(tmp_path / "export.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path / "x", filter="data")
        (exported,) = (tmp_path / "x").iterdir()
        assert verify_export(exported).ok
        with pytest.raises(Forbidden):
            auditor.submit(BY_DISTRICT)


def test_admin_tour(server) -> None:
    with server.client("admin") as admin:
        created = admin.create_account(
            name="op-lab",
            role="operator",
            organisation="A lab",
            licence={"number": "LAB-1", "valid_until": "2030-01-01T00:00:00Z"},
        )
        assert created["licence"]["status"] == "active"
        with pytest.raises(Forbidden) as refused:  # never another account's token
            admin.issue_token("op-lab", days=1, label="tour")
        assert refused.value.rule == "token.not_own"
        enrolment = admin.enrol("op-lab", days=1, label="tour")
        assert enrolment["code"].startswith("sbe_") and "token" not in enrolment
        assert enrolment["needs_approval"]  # an admin account's code: two administrators
    pending = SandboxClient.redeem(server.url, enrolment["code"], token_sha256="ab" * 32)
    assert pending["status"] == "pending" and pending["account"] == "op-lab"
    with server.client("admin") as admin, pytest.raises(Forbidden) as refused:
        admin.approve_enrolment(pending["enrolment"], pending["fingerprint"])
    assert refused.value.rule == "enrolment.same_admin"
    lab_token = enrol(server.url, server.tokens["admin"], server.home, "op-lab")
    with SandboxClient(server.url, lab_token) as lab:
        issued = {"id": lab.me()["token_id"]}
    with server.client("admin") as admin:
        assert admin.freeze(dataset="transport.trips", reason="drill")["changed"]
    with server.client("op-planner") as planner, pytest.raises(Forbidden) as info:
        planner.submit("SELECT board_station, count(*) FROM transport.trips GROUP BY 1")
    assert info.value.rule == "dataset.frozen"
    with server.client("admin") as admin:
        admin.unfreeze(dataset="transport.trips", reason="drill over")
        old = admin.rotate_key()
        assert old["key_id"] != old["previous_key_id"]
        settings = admin.update_settings(k_floor=12)
        assert settings["k_floor"] == 12 and settings["overrides"]["k_floor"] == 12
        admin.update_settings(k_floor=10)
        # The declared bounds and run-time flags: k_floor=1 is refused here as at start.
        with pytest.raises(SandboxError) as refused:
            admin.update_settings(k_floor=1, threads=4)
        assert (refused.value.status, refused.value.rule) == (422, "api.schema")
        assert "k_floor" in refused.value.message and "threads" in refused.value.message
        shown = admin.settings()
        assert shown["k_floor"] == 10 and "home" not in shown and "control_db_url" not in shown
        admin.revoke_token(issued["id"])
        with pytest.raises(Forbidden):
            admin.result(_some_job(server))
    with server.client("op-planner") as planner:
        job = planner.submit(
            "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1", wait=True
        )
        keys = {
            k: public_key_from_b64(v)
            for k, v in planner.request("GET", "/v1/audit/keys").json().items()
        }
        assert verify_receipt(planner.receipt(job["id"]), keys)["operator"] == "op-planner"
        assert planner.receipt(job["id"])["key_id"] == old["key_id"]


def test_results_stream_in_each_format(server) -> None:
    with server.client("op-bank") as bank:
        job = bank.submit(BY_DISTRICT, wait=True)
        for fmt, media in (
            ("json", "application/json"),
            ("csv", "text/csv; charset=utf-8"),
            ("parquet", "application/vnd.apache.parquet"),
            ("arrow", "application/vnd.apache.arrow.stream"),
        ):
            response = bank.request("GET", f"/v1/jobs/{job['id']}/result", params={"format": fmt})
            assert response.headers["content-type"] == media
        arrow = pa.ipc.open_stream(
            pa.BufferReader(bank.result_bytes(job["id"], "arrow"))
        ).read_all()
        assert arrow.num_rows == len(job["result"]["rows"])


def test_administrative_entries_carry_the_request_id_and_client(server) -> None:
    """A freeze's and a grant change's entries name the HTTP request that made them."""
    with server.client("admin") as admin:
        admin.request(
            "POST",
            "/v1/admin/freeze",
            json={"dataset": "transport.trips", "reason": "drill"},
            headers={"X-Request-ID": "drill-freeze-1"},
        )
        admin.request(
            "POST",
            "/v1/admin/unfreeze",
            json={"dataset": "transport.trips", "reason": "drill over"},
            headers={"X-Request-ID": "drill-unfreeze-1"},
        )
    with server.client("bureau-transport") as bureau:
        (grant,) = bureau.grants()
        bureau.request(
            "POST",
            f"/v1/grants/{grant['id']}/narrow",
            json={"k": grant["k"] + 1, "reason": "drill"},
            headers={"X-Request-ID": "drill-narrow-1"},
        )
    for action, rid in (
        ("dataset.freeze", "drill-freeze-1"),
        ("dataset.unfreeze", "drill-unfreeze-1"),
        ("grant.narrow", "drill-narrow-1"),
    ):
        entry = last_entry(server, action=action)
        assert (entry["request_id"], entry["client"]) == (rid, "127.0.0.1"), action
