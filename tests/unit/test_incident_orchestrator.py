"""The incident orchestrator through the real Durable Functions SDK replay, on the local host.

Real: orchestrators/incident.py and orchestrators/rotate_secret.py (as sub-orchestrations), the
SDK replaying both, the local host's sub-orchestrations, external events and timers. Scripted:
the activities (tests/apps/scripted_incident: the listing from a file, the rotation steps from
tests/apps/scripted_rotation's per-rotation scripts). Each rotation's plan step waits on a gate
file, so a test decides when each rotation may end and sees which ones the incident started.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_rotate_secret_orchestrator import (
    POLICY,
    TIME_SCALE,
    Hub,
    events,
    parse_time,
    plan,
    stop_hub,
    wait_until,
)

from local.host.process import HostProcess
from rotation.incidents import (
    ADMISSION_TIMEOUT_MINUTES,
    ADMIT_EVENT,
    CONTROL_EVENT,
    IncidentItem,
    IncidentRequest,
    IncidentScope,
)
from rotation.model import RotationRequest, SecretRef

APP = Path(__file__).resolve().parents[1] / "apps" / "scripted_incident"
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
GATE = "go"
ENDED = ("Completed", "Failed", "Terminated")


def version_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def arm_id(vault: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{vault}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("scripted-incident")
    scripts = base / "scripts"
    scripts.mkdir()
    process = HostProcess(
        script_root=APP,
        data_dir=base / "host",
        env={"SCRIPTED_ROTATION_DIR": str(scripts)},
        time_scale=TIME_SCALE,
    )
    try:
        process.start()
    except BaseException:
        process.kill()
        raise
    started = Hub(process, scripts)
    yield started
    stop_hub(started)


class Incident:
    """One incident started through the Durable HTTP API, its secrets and their gates."""

    def __init__(self, hub: Hub, name: str, secrets: dict[str, list[tuple[str, str]]], **fields: Any) -> None:
        self.hub = hub
        self.id = f"incident_{name}"
        self.items: list[IncidentItem] = []
        for vault, listed in secrets.items():
            vault_items = [
                IncidentItem(
                    SUBSCRIPTION, vault, secret, version_of(vault + secret), "postgresql-login", server
                )
                for secret, server in listed
            ]
            (hub.scripts / f"listing-{vault}.json").write_text(
                json.dumps([i.to_dict() for i in vault_items]), encoding="utf-8"
            )
            self.items += vault_items
        self.request = IncidentRequest(
            scope=IncidentScope(vaults=tuple(arm_id(v) for v in secrets)),
            scope_text="test",
            reason="leaked credentials",
            requested_by="alice@example.com",
            policy=POLICY,
            **({"max_per_vault": 2, "max_per_server": 2} | fields),
        )

    def script(self, item: IncidentItem, script: dict[str, Any]) -> None:
        folder = self.hub.scripts / item.rotation_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "script.json").write_text(json.dumps(script), encoding="utf-8")

    def gate_all(self, **plan_fields: Any) -> None:
        for item in self.items:
            self.script(item, {"plan_rotation": [{"wait_for": GATE, **plan(**plan_fields)}]})

    def start(self, *, admit: bool = True) -> None:
        """Start it as POST /api/incidents does: create the instance, then admit it."""
        status, body = self.hub.call(
            "POST", f"/runtime/webhooks/durabletask/orchestrators/incident/{self.id}", self.request.to_dict()
        )
        assert status == 202, body
        if admit:
            status, body = self.hub.call(
                "POST",
                f"/runtime/webhooks/durabletask/instances/{self.id}/raiseEvent/{ADMIT_EVENT}",
                {"admitted": True},
            )
            assert status == 202, body

    def open(self, item: IncidentItem) -> None:
        (self.hub.scripts / item.rotation_id / GATE).touch()

    def started(self) -> list[IncidentItem]:
        """The items whose rotation has called plan_rotation (the incident started them)."""
        return [i for i in self.items if (self.hub.scripts / i.rotation_id / "calls.jsonl").exists()]

    def plan_calls(self, item: IncidentItem) -> int:
        log = self.hub.scripts / item.rotation_id / "calls.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        return sum(1 for line in lines if json.loads(line)["activity"] == "plan_rotation")

    def ended(self, item: IncidentItem) -> bool:
        return rotation_status(self.hub, item.rotation_id).get("runtimeStatus") in ENDED

    def status(self, *, history: bool = False) -> dict[str, Any]:
        query = "?showHistory=true&showHistoryOutput=true" if history else ""
        code, body = self.hub.call("GET", f"/runtime/webhooks/durabletask/instances/{self.id}{query}")
        assert code in (200, 202), body
        return dict(body)

    def summary(self) -> dict[str, Any]:
        return dict(self.status().get("customStatus") or {})

    def wait_summary(self, what: str, predicate: Any, timeout: float = 20) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def holds() -> bool:
            nonlocal last
            last = self.summary()
            return bool(predicate(last))

        wait_until(holds, timeout, lambda: f"{self.id}: {what}: {last}")
        return last

    def wait(self, timeout: float = 30) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def done() -> bool:
            nonlocal last
            last = self.status(history=True)
            return last["runtimeStatus"] in ENDED

        wait_until(done, timeout, lambda: f"{self.id} did not end: {last}")
        return last

    def control(self, action: str, by: str = "bob@example.com") -> None:
        status, body = self.hub.call(
            "POST",
            f"/runtime/webhooks/durabletask/instances/{self.id}/raiseEvent/{CONTROL_EVENT}",
            {"action": action, "by": by},
        )
        assert status == 202, body


def rotation_status(hub: Hub, instance_id: str, *, show_input: bool = False) -> dict[str, Any]:
    query = "?showInput=true" if show_input else ""
    code, body = hub.call("GET", f"/runtime/webhooks/durabletask/instances/{instance_id}{query}")
    return dict(body) if code in (200, 202) and body else {}


def in_flight(incident: Incident) -> dict[str, int]:
    """Rotations started and not ended, per vault and per server (from the rotations themselves)."""
    counts: dict[str, int] = {}
    for item in incident.started():
        if not incident.ended(item):
            counts[item.vault_name] = counts.get(item.vault_name, 0) + 1
            counts["server " + item.server] = counts.get("server " + item.server, 0) + 1
    return counts


def test_rotations_run_within_the_per_vault_and_per_server_bounds_and_each_once(hub: Hub) -> None:
    # Vault a: five secrets on five servers (the vault bound of 2 limits it); vault b: four
    # secrets on one server (the server bound of 1 limits it).
    incident = Incident(
        hub,
        "bounds",
        {
            "inc-bounds-a": [(f"a{n}", f"srv-a{n}:5432") for n in range(5)],
            "inc-bounds-b": [(f"b{n}", "srv-b:5432") for n in range(4)],
        },
        max_per_vault=2,
        max_per_server=1,
    )
    incident.gate_all()
    incident.start()
    peak: dict[str, int] = {}
    while len(incident.started()) < len(incident.items) or any(not incident.ended(i) for i in incident.items):
        # Quiescent: every running rotation waits at its gate; the incident filled what it may.
        expected = min(
            2, sum(1 for i in incident.items if i.vault_name == "inc-bounds-a" and not incident.ended(i))
        )
        expected += min(
            1, sum(1 for i in incident.items if i.vault_name == "inc-bounds-b" and not incident.ended(i))
        )
        wait_until(
            lambda n=expected: (
                sum(in_flight(incident).get(v, 0) for v in ("inc-bounds-a", "inc-bounds-b")) == n
            ),
            20,
            lambda n=expected: f"expected {n} running: {in_flight(incident)}",
        )
        time.sleep(0.3)  # nothing more starts while nothing ends
        flying = in_flight(incident)
        for key, count in flying.items():
            peak[key] = max(peak.get(key, 0), count)
        assert flying.get("inc-bounds-a", 0) <= 2, flying
        assert flying.get("inc-bounds-b", 0) <= 1, flying
        assert all(count <= 1 for key, count in flying.items() if key.startswith("server ")), flying
        summary = incident.summary()
        assert summary["running"] == expected, summary
        oldest = next(i for i in incident.started() if not incident.ended(i))
        incident.open(oldest)
        wait_until(lambda i=oldest: incident.ended(i), 20, lambda i=oldest: f"{i.rotation_id} did not end")
    ended = incident.wait()
    assert ended["runtimeStatus"] == "Completed", ended
    assert peak == {"inc-bounds-a": 2, "inc-bounds-b": 1} | {k: 1 for k in peak if k.startswith("server ")}
    assert all(incident.plan_calls(item) == 1 for item in incident.items)
    summary = ended["customStatus"]
    assert summary["state"] == "completed"
    assert (summary["total"], summary["done"], summary["failed"], summary["waiting"], summary["running"]) == (
        9,
        9,
        0,
        0,
        0,
    )
    assert summary["perVault"]["inc-bounds-a"]["done"] == 5
    assert summary["perVault"]["inc-bounds-b"]["done"] == 4
    completed = events(ended, "SubOrchestrationInstanceCompleted")
    assert [e["FunctionName"] for e in completed] == ["rotate_secret"] * 9
    for item in incident.items:
        rotation = rotation_status(hub, item.rotation_id, show_input=True)
        assert rotation["output"]["result"] == "rotated"
        # Each rotation ran under the incident, with an input naming the requester.
        # The extension keeps a sub-orchestration's input as the JSON text the parent sent.
        raw = rotation["input"]
        request = RotationRequest.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
        assert (request.trigger, request.requested_by, request.version) == (
            "incident",
            "alice@example.com",
            item.version,
        )
        assert request.approval_waived_by is None


def test_pause_starts_nothing_more_and_resume_goes_on(hub: Hub) -> None:
    incident = Incident(
        hub, "pause", {"inc-pause": [(f"p{n}", "srv:5432") for n in range(3)]}, max_per_vault=1
    )
    incident.gate_all()
    incident.start()
    wait_until(lambda: len(incident.started()) == 1, 20, lambda: "the first rotation did not start")
    incident.control("pause")
    incident.wait_summary(
        "paused", lambda s: s.get("state") == "paused" and s.get("pausedBy") == "bob@example.com"
    )
    first = incident.started()[0]
    incident.open(first)
    summary = incident.wait_summary("the first counted while paused", lambda s: s.get("done") == 1)
    assert (summary["running"], summary["waiting"], summary["state"]) == (0, 2, "paused")
    time.sleep(0.5)
    assert incident.started() == [first], "a paused incident started a rotation"
    incident.control("resume")
    wait_until(lambda: len(incident.started()) == 2, 20, lambda: "resume started nothing")
    for item in incident.items:
        incident.open(item)
    ended = incident.wait()
    assert (ended["customStatus"]["done"], ended["customStatus"]["state"]) == (3, "completed")
    assert "pausedBy" not in ended["customStatus"]


def test_cancel_lets_running_rotations_finish_and_starts_no_more(hub: Hub) -> None:
    incident = Incident(
        hub, "cancel", {"inc-cancel": [(f"c{n}", "srv:5432") for n in range(4)]}, max_per_vault=1
    )
    incident.gate_all()
    incident.start()
    wait_until(lambda: len(incident.started()) == 1, 20, lambda: "the first rotation did not start")
    incident.control("cancel", by="carol@example.com")
    incident.wait_summary("cancelling", lambda s: s.get("state") == "cancelling")
    first = incident.started()[0]
    assert not incident.ended(first), "cancel stopped the running rotation"
    incident.open(first)
    ended = incident.wait()
    assert ended["runtimeStatus"] == "Completed"
    summary = ended["customStatus"]
    assert (summary["state"], summary["cancelledBy"], summary["done"], summary["waiting"]) == (
        "cancelled",
        "carol@example.com",
        1,
        3,
    )
    assert incident.started() == [first]
    assert len(ended["output"]["notStarted"]) == 3


def test_waived_approval_skips_the_wait_and_is_recorded_in_the_rotation(hub: Hub) -> None:
    incident = Incident(hub, "waived", {"inc-waived": [("w0", "srv:5432")]}, waive_approval=True)
    incident.script(incident.items[0], {"plan_rotation": [plan(approval_required=True)]})
    incident.start()
    ended = incident.wait()
    assert (ended["customStatus"]["done"], ended["customStatus"]["approvalWaived"]) == (1, True)
    rotation = rotation_status(hub, incident.items[0].rotation_id)
    assert rotation["output"]["result"] == "rotated"
    assert rotation["customStatus"]["approvalWaived"] == {
        "by": "alice@example.com",
        "reason": "leaked credentials",
    }
    assert "approval" not in rotation["output"]["steps"]


def test_approval_tags_are_honoured_unless_waived(hub: Hub) -> None:
    incident = Incident(hub, "honoured", {"inc-honoured": [("h0", "srv:5432")]})
    incident.script(incident.items[0], {"plan_rotation": [plan(approval_required=True)]})
    incident.start()
    item = incident.items[0]
    wait_until(
        lambda: (rotation_status(hub, item.rotation_id).get("customStatus") or {}).get("step") == "approval",
        20,
        lambda: f"no approval wait: {rotation_status(hub, item.rotation_id)}",
    )
    assert "approvalWaived" not in rotation_status(hub, item.rotation_id)["customStatus"]
    code, body = hub.call(
        "POST",
        f"/runtime/webhooks/durabletask/instances/{item.rotation_id}/raiseEvent/RotationDecision",
        {"approved": False, "approver": "dave", "reason": "not now"},
    )
    assert code == 202, body
    ended = incident.wait()
    summary = ended["customStatus"]
    assert (summary["done"], summary["failed"]) == (0, 1)
    assert summary["failures"][0]["result"] == "rejected"


def test_a_rotation_already_running_is_not_started_twice(hub: Hub) -> None:
    incident = Incident(hub, "dup", {"inc-dup": [("d0", "srv:5432"), ("d1", "srv:5432")]})
    incident.gate_all()
    busy = incident.items[0]
    request = RotationRequest(
        secret=SecretRef(SUBSCRIPTION, busy.vault_name, busy.secret_name),
        version=busy.version,
        trigger="event",
        policy=POLICY,
    )
    code, body = hub.call(
        "POST",
        f"/runtime/webhooks/durabletask/orchestrators/rotate_secret/{busy.rotation_id}",
        request.to_dict(),
    )
    assert code == 202, body
    wait_until(lambda: incident.plan_calls(busy) == 1, 20, lambda: "the event's rotation did not start")
    incident.start()
    summary = incident.wait_summary("the busy one skipped", lambda s: s.get("skipped") == 1)
    assert summary["running"] == 1
    for item in incident.items:
        incident.open(item)
    ended = incident.wait()
    assert (ended["customStatus"]["done"], ended["customStatus"]["skipped"]) == (1, 1)
    assert incident.plan_calls(busy) == 1
    # The rotation the event started is the one that rotated it (the incident did not wait for it).
    wait_until(lambda: incident.ended(busy), 20, lambda: f"{busy.rotation_id} did not end")
    assert rotation_status(hub, busy.rotation_id)["output"]["result"] == "rotated"


def test_a_failing_rotation_is_counted_and_named_and_the_others_go_on(hub: Hub) -> None:
    incident = Incident(hub, "fails", {"inc-fails": [("f0", "srv:5432"), ("f1", "srv:5432")]})
    incident.script(
        incident.items[0], {"apply_target": [{"raise": "TargetError", "message": "refused by the server"}]}
    )
    incident.start()
    ended = incident.wait()
    summary = ended["customStatus"]
    assert (summary["total"], summary["done"], summary["failed"]) == (2, 1, 1)
    [failure] = summary["failures"]
    assert (failure["secret_name"], failure["result"]) == ("f0", "failed")
    assert "refused by the server" in failure["detail"]


def test_a_throttled_step_waits_at_least_the_retry_after_the_service_asked(hub: Hub) -> None:
    incident = Incident(hub, "throttled", {"inc-throttled": [("t0", "srv:5432")]})
    throttled = {"raise": "TransientError", "message": "Key Vault answered 429 Throttled [retry-after=30s]"}
    incident.script(incident.items[0], {"stage_pending": [throttled, {}]})
    incident.start()
    incident.wait()
    _, rotation = hub.call(
        "GET",
        f"/runtime/webhooks/durabletask/instances/{incident.items[0].rotation_id}?showHistory=true",
    )
    assert rotation["output"]["result"] == "rotated", rotation
    failed = [e for e in events(rotation, "TaskFailed")]
    [timer] = events(rotation, "TimerCreated")
    # POLICY's first back-off is 2 s; the service asked for 30 s, so the timer waits 30 s.
    waited = parse_time(timer["FireAt"]) - parse_time(failed[0]["Timestamp"])
    assert 30 <= waited.total_seconds() < 32, waited


def test_an_empty_scope_completes_with_nothing_started(hub: Hub) -> None:
    incident = Incident(hub, "empty", {"inc-empty": []})
    incident.start()
    ended = incident.wait()
    assert ended["runtimeStatus"] == "Completed"
    assert (ended["customStatus"]["total"], ended["customStatus"]["state"]) == (0, "completed")


def test_a_large_incident_continues_as_new_carrying_its_summary(hub: Hub) -> None:
    # One at a time, two completions per execution: k0, k1 in the first, k2, k3 in the second.
    incident = Incident(
        hub,
        "continued",
        {"inc-cont": [(f"k{n}", f"s{n}:5432") for n in range(4)]},
        max_per_vault=1,
        completions_per_execution=2,
    )
    incident.script(incident.items[0], {"apply_target": [{"raise": "TargetError", "message": "refused"}]})
    incident.start()
    ended = incident.wait()
    assert ended["runtimeStatus"] == "Completed", ended
    summary = ended["customStatus"]
    assert summary["executions"] == 2
    assert (summary["total"], summary["done"], summary["failed"], summary["waiting"]) == (4, 3, 1, 0)
    assert summary["perVault"]["inc-cont"] == {
        "total": 4,
        "done": 3,
        "failed": 1,
        "skipped": 0,
        "running": 0,
        "waiting": 0,
    }
    assert [f["secret_name"] for f in summary["failures"]] == ["k0"]
    assert all(incident.plan_calls(item) == 1 for item in incident.items)
    # The fresh history holds only the second execution's rotations.
    completed = events(ended, "SubOrchestrationInstanceCompleted", "SubOrchestrationInstanceFailed")
    assert len(completed) == 2


def test_an_incident_the_starter_never_admits_ends_without_listing_anything(hub: Hub) -> None:
    incident = Incident(hub, "never-admitted", {"kv-a": [("s1", "db1:5432")]})
    incident.gate_all()
    incident.start(admit=False)
    time.sleep(1)
    assert incident.status()["runtimeStatus"] == "Running"  # waiting for the starter's word
    assert incident.started() == []

    hub.advance_clock(ADMISSION_TIMEOUT_MINUTES * 60 + 30)
    ended = incident.wait()

    assert ended["runtimeStatus"] == "Completed", ended
    assert ended["output"] == {"state": "not admitted", "notStarted": []}
    assert ended["customStatus"]["state"] == "not admitted"
    assert incident.started() == []
    assert not any(e.get("FunctionName") == "list_incident_secrets" for e in ended["historyEvents"])
