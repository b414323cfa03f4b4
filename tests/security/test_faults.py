"""Fault tests (issue 7, assurance): SIGKILL the server in the middle of a burst of work.

Client threads fire queries (synchronous and queued jobs, explains) while a bureau
suspends, resumes and narrows a grant and the admin freezes and unfreezes an
operator; the whole process group is killed with SIGKILL at a random moment, then
the server is started again.  What must hold after every restart, judged from the
outside (the API and an offline-verified export):

- the audit trail verifies, live and offline;
- every acknowledged action has its audit entry: an explain or a refusal by its
  request id, a grant change or a freeze by its unique reason, a job by its id;
- every job is in a consistent state: nothing stays queued or running, a job that
  was running is ``failed`` with a rule and message (``job.interrupted``, audited),
  and a succeeded job's receipt points at its audit entry and matches its rows.

The ENOSPC tests are in ``test_faults_disk.py``, the start-up checks in
``test_faults_startup.py``.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.client import ConnectionFailed, SandboxClient
from sandbox.core.errors import SandboxError
from sandbox.query.release import result_sha256
from tests.security.conftest import SecurityServer, start_security_server
from tests.security.faults import Trail, all_jobs, export_trail, settle

OPERATOR_SQL = (
    "SELECT gender, count(*) AS n FROM health.claims WHERE age >= {x} GROUP BY 1",
    "SELECT age, count(*) AS n FROM health.claims WHERE age < {x} GROUP BY 1",
    "SELECT diagnosis_code, count(*) AS n FROM health.claims WHERE age <> {x} GROUP BY 1",
)
"""Queries the demo grants allow; ``x`` varies so most are fresh releases, some cached."""


@dataclass
class Acks:
    """What the server acknowledged (answered), with what identifies its audit entry."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_request: dict[str, str] = field(default_factory=dict)  # request id -> what
    by_reason: dict[str, tuple[str, str]] = field(default_factory=dict)  # reason -> action, target
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> state when answered
    lost: int = 0  # requests whose answer never came (killed in flight)

    def count(self) -> int:
        with self.lock:
            return len(self.by_request) + len(self.by_reason) + len(self.jobs)


@dataclass
class Burst:
    server: SecurityServer
    acks: Acks
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def run(self, name: str, loop: Any, *args: Any) -> threading.Thread:
        def body() -> None:
            try:
                loop(*args)
            except BaseException as exc:  # surfaced by the test, not swallowed
                self.errors.append(exc)

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread

    def call(self, client: SandboxClient, method: str, path: str, **kw: Any) -> Any:
        """One request; returns (status, body or error), or None if no answer came."""
        try:
            response = client.request(method, path, **kw)
        except ConnectionFailed:
            with self.acks.lock:
                self.acks.lost += 1
            self.stop.wait(0.05)  # the server is gone: do not spin
            return None
        except SandboxError as exc:
            return exc.status, exc
        return response.status_code, response.json()

    # -- the actors ------------------------------------------------------------------------

    def operator(self, who: str) -> None:
        rng = random.Random(self.rng.random())
        with self.server.client(who) as client:
            while not self.stop.is_set():
                sql = rng.choice(OPERATOR_SQL).format(x=rng.randint(0, 60))
                rid = "rq" + uuid.uuid4().hex
                headers = {"X-Request-ID": rid}
                kind = rng.random()
                if kind < 0.25:
                    got = self.call(
                        client, "POST", "/v1/explain", json={"sql": sql}, headers=headers
                    )
                    if got is not None and got[0] in (200, 403, 422):
                        with self.acks.lock:
                            self.acks.by_request[rid] = "explain"
                    continue
                params = {"wait": "true", "timeout": 5} if kind < 0.65 else None
                got = self.call(
                    client, "POST", "/v1/jobs", json={"sql": sql}, params=params, headers=headers
                )
                if got is None:
                    continue
                status, body = got
                with self.acks.lock:
                    if status in (200, 201, 202):
                        self.acks.jobs[body["id"]] = body["state"]
                    elif status in (403, 422):  # refused at submission: audited, no job
                        self.acks.by_request[rid] = f"refusal {body.code}"

    def bureau(self, grant_id: str, valid_until: datetime) -> None:
        """Suspend, resume and narrow one grant (valid_until an hour earlier each time)."""
        rng = random.Random(self.rng.random())
        with self.server.client("bureau-health") as client:
            status = client.grant(grant_id)["grant"]["status"]
            hours = 0
            while not self.stop.is_set():
                reason = "fault-" + uuid.uuid4().hex
                if rng.random() < 0.5:
                    change = "suspend" if status == "active" else "resume"
                    path, body = f"/v1/grants/{grant_id}/{change}", {"reason": reason}
                    action = f"grant.{change}"
                else:
                    hours += 1
                    until = valid_until - timedelta(hours=hours)
                    path = f"/v1/grants/{grant_id}/narrow"
                    body = {"valid_until": until.isoformat(), "reason": reason}
                    action = "grant.narrow"
                got = self.call(client, "POST", path, json=body)
                if got is None:
                    continue
                if got[0] == 200:
                    status = got[1]["status"]
                    with self.acks.lock:
                        self.acks.by_reason[reason] = (action, f"grant:{grant_id}")
                else:  # out of step (a change committed whose answer was lost): look again
                    seen = self.call(client, "GET", f"/v1/grants/{grant_id}")
                    if seen is not None and seen[0] == 200:
                        status = seen[1]["grant"]["status"]
                self.stop.wait(rng.random() * 0.05)

    def admin(self, operator: str) -> None:
        rng = random.Random(self.rng.random())
        with self.server.client("admin") as client:
            frozen = False
            while not self.stop.is_set():
                reason = "fault-" + uuid.uuid4().hex
                verb = "unfreeze" if frozen else "freeze"
                got = self.call(
                    client,
                    "POST",
                    f"/v1/admin/{verb}",
                    json={"operator": operator, "reason": reason},
                )
                if got is not None and got[0] == 200:
                    frozen = not frozen
                    with self.acks.lock:
                        self.acks.by_reason[reason] = (f"operator.{verb}", f"account:{operator}")
                self.stop.wait(rng.random() * 0.1)


# -- the checks ---------------------------------------------------------------------------


def check_acknowledged(acks: Acks, trail: Trail) -> None:
    """Every acknowledged action has its entry in the verified export."""
    missing = [(rid, what) for rid, what in acks.by_request.items() if rid not in trail.by_request]
    assert not missing, f"{len(missing)} acknowledged request(s) without an entry: {missing[:3]}"
    for reason, (action, target) in acks.by_reason.items():
        found = [
            e
            for e in trail.by_reason.get(reason, [])
            if (e["action"], e["target"], e["decision"]) == (action, target, "allow")
        ]
        assert len(found) == 1, f"acknowledged {action} on {target} has {len(found)} entries"


def check_jobs(clients: dict[str, SandboxClient], acks: Acks, trail: Trail) -> dict[str, int]:
    """Every job, acknowledged or not, is in a consistent final state; returns state counts."""
    states: dict[str, int] = {}
    seen: set[str] = set()
    for who, client in clients.items():
        for job in all_jobs(client):
            seen.add(job["id"])
            state = job["state"]
            key = f"{state} {job['rule']}" if job["rule"] else state
            states[key] = states.get(key, 0) + 1
            final = ("succeeded", "failed", "refused", "cancelled", "awaiting_review")
            assert state in final, (job["id"], state)
            entries = [
                e for e in trail.by_request.get(job["id"], []) if e["action"] == "dataset.query"
            ]
            if state == "awaiting_review":  # op-bank's reviewed grants: computed, held, recorded
                held = [e for e in entries if (e.get("details") or {}).get("held_for_review")]
                # or its run failed (interrupted by the kill): that failure is held for its
                # bureau (runner._hold_failure), its deny entry in the trail
                failed = [e for e in entries if e["decision"] == "deny" and e["rule"]]
                assert (held and held[-1]["decision"] == "allow") or failed, (job["id"], entries)
                assert job.get("result") is None, job["id"]
            elif state == "succeeded":
                check_release(client, job, entries, trail)
            else:  # it says why; a refusal or an interruption is in the trail too
                assert job["rule"] and job["message"], (job["id"], state)
                assert job["rule"] != "job.internal", f"{job['id']} hit a bug: see the server log"
                if state == "refused" or job["rule"] == "job.interrupted":
                    denials = [e["rule"] for e in entries if e["decision"] == "deny"]
                    assert denials[-1:] == [job["rule"]], (job["id"], job["rule"], denials)
            if job["operator"] != who:
                raise AssertionError(f"{who} sees a job of {job['operator']}")
    lost = sorted(set(acks.jobs) - seen)
    assert not lost, f"acknowledged jobs missing after restart: {lost[:3]}"
    return states


def check_release(
    client: SandboxClient, job: dict[str, Any], entries: list[dict[str, Any]], trail: Trail
) -> None:
    """A succeeded job: its receipt names its audit entry, and its rows match the receipt."""
    receipt = client.receipt(job["id"])["receipt"]
    own = {e["seq"] for e in entries if e["decision"] == "allow"}
    assert own, f"succeeded job {job['id']} has no release entry"
    # The receipt names its entry by hash (no seq: it would count others' activity); the
    # release entry is the allow entry of its request that is not a cached repeat.
    (seq,) = [
        i
        for i, e in enumerate(trail.entries)
        if e["request_id"] == receipt["request_id"]
        and (e["action"], e["decision"]) == ("dataset.query", "allow")
        and not e["details"].get("cache")
    ]
    if seq + 1 < len(trail.entries):  # the next entry's link is the receipt's entry hash
        assert trail.entries[seq + 1]["prev"] == receipt["audit"]["entry_hash"], job["id"]
    if not job["meta"].get("cached"):  # a cached answer carries the first release's receipt
        assert receipt["request_id"] == job["id"] and seq in own, job["id"]
    assert receipt["result_sha256"] == job["meta"]["result_sha256"]
    assert result_sha256(client.result(job["id"])) == receipt["result_sha256"], job["id"]


def crash_rounds(tmp_path: Path, rounds: int) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    server = start_security_server(tmp_path / "home")
    acks = Acks()
    try:
        with server.client("bureau-health") as bureau:
            grant = next(
                g
                for g in bureau.grants()
                if (g["operator"], g["dataset"]) == ("op-bank", "health.claims")
            )
        valid_until = datetime.fromisoformat(grant["valid_until"].replace("Z", "+00:00"))
        summary = []
        for round_ in range(rounds):
            burst = Burst(server, acks, rng)
            before = acks.count()
            threads = [
                burst.run("op-bank-1", burst.operator, "op-bank"),
                burst.run("op-bank-2", burst.operator, "op-bank"),
                burst.run("op-insurer", burst.operator, "op-insurer"),
                burst.run("bureau", burst.bureau, grant["id"], valid_until),
                burst.run("admin", burst.admin, "op-insurer"),
            ]
            # Kill after a random number of acknowledged actions, at a random moment after.
            target = before + rng.randint(10, 80)
            deadline = time.monotonic() + 20
            while acks.count() < target and time.monotonic() < deadline and not burst.errors:
                time.sleep(0.005)
            time.sleep(rng.random() * 0.3)
            server.live.kill()
            burst.stop.set()
            for thread in threads:
                thread.join(timeout=60)
            assert not burst.errors, f"seed {seed} round {round_}: {burst.errors[0]!r}"
            assert acks.count() > before, f"round {round_}: nothing was acknowledged"
            server.live.start(workers=2 if round_ % 2 else 1)
            clients = {who: server.client(who) for who in ("op-bank", "op-insurer")}
            with server.client("auditor") as auditor:
                bureaus: dict[str, SandboxClient] = {}

                def bureau(domain: str, found: dict[str, SandboxClient] = bureaus) -> Any:
                    if domain not in found:
                        found[domain] = server.client(f"bureau-{domain}")
                    return found[domain]

                settle(clients.values(), bureau=bureau)
                for each in bureaus.values():
                    each.close()
                report = auditor.audit_verify()
                assert report["ok"], f"seed {seed} round {round_}: {report}"
                trail = export_trail(auditor, tmp_path / f"export-{round_}")
            check_acknowledged(acks, trail)
            states = check_jobs(clients, acks, trail)
            for client in clients.values():
                client.close()
            summary.append((round_, acks.count() - before, states))
        print(f"seed {seed}; per round (acknowledged, job states): {summary}; lost {acks.lost}")
        assert server.assert_no_leaks() > 0
    finally:
        server.live.stop()


def test_sigkill_during_a_burst_loses_nothing_acknowledged(tmp_path: Path) -> None:
    crash_rounds(tmp_path, rounds=2)  # one process, then two


@pytest.mark.slow
def test_sigkill_during_a_burst_many_rounds(tmp_path: Path) -> None:
    crash_rounds(tmp_path, rounds=10)
