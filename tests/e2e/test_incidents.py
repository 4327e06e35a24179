"""Incidents on the whole stack: ``POST /api/incidents`` rotates every tagged secret in a scope,
within its concurrency bounds, steered by pause, resume and cancel, and survives a SIGKILL.

Each test seeds PostgreSQL logins and their secrets with a tag of its own (``incident-test``) and
gives the incident that tag as its filter, so tests in the module do not rotate each other's
secrets. What is asserted is what an operator sees: the vault (one new version per secret, the
latest logging in, no pending value left), the incident's status through the API, and the local
cloud's request log (when each rotation worked on each vault, and how long the hub waited after
a 429).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    assert_consistent,
    hold_back,
    hub_request,
    instance_ids,
    kill_in_flight,
    quiet_expiry_scan,
    seed,
    unique,
    versions_of,
    wait_until,
)

from local.cloud.process import AdminClient
from local.principals import APPROVER
from local.stack import POSTGRESQL, LocalStack, Seeded
from rotation import metadata

FILTER_TAG = "incident-test"
VAULTS = ("spoke1-kv", "spoke2-kv")
HUB_IDENTITY = "hub-rotation-identity"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), databases=(POSTGRESQL,)) as running:
        # Only the incidents start rotations: a NearExpiry event racing them would rotate first.
        quiet_expiry_scan(running)
        yield running


def seed_group(stack: LocalStack, per_vault: dict[str, int], **tags: str) -> tuple[str, list[Seeded]]:
    """Secrets tagged with a filter value of their own, far from expiry (no event starts them)."""
    group = unique("grp")
    seeded = [
        seed(stack, vault, tags={FILTER_TAG: group, **tags}, expires_in=timedelta(days=300))
        for vault, count in per_vault.items()
        for _ in range(count)
    ]
    return group, seeded


def start_incident(
    stack: LocalStack,
    group: str,
    *,
    vaults: tuple[str, ...] = VAULTS,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> str:
    status, _, answer = hub_request(
        stack,
        "POST",
        "/api/incidents",
        {
            "scope": {"vaults": list(vaults)},
            "reason": "credentials leaked",
            "tags": {FILTER_TAG: group},
            **body,
        },
        headers=headers,
    )
    assert status == 202, answer
    return str(answer["id"])


def incident_status(stack: LocalStack, incident_id: str) -> dict[str, Any]:
    status, _, body = hub_request(stack, "GET", f"/api/incidents/{incident_id}")
    assert status == 200, body
    return dict(body)


def wait_incident(
    stack: LocalStack, incident_id: str, *, timeout: float = 120, **summary: Any
) -> dict[str, Any]:
    """Poll until the incident ended (or its summary holds every ``summary`` field)."""
    last: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal last
        last = incident_status(stack, incident_id)
        if summary:
            shown = last.get("status") or {}
            return all(shown.get(k) == v for k, v in summary.items())
        return last["runtimeStatus"] in ("Completed", "Failed", "Terminated")

    wait_until(reached, f"incident {incident_id} reaching {summary or 'its end'}: {last}", timeout=timeout)
    return last


def steer(
    stack: LocalStack, incident_id: str, action: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, _, body = hub_request(stack, "POST", f"/api/incidents/{incident_id}/{action}", headers=headers)
    return status, body


def assert_rotated_once(stack: LocalStack, seeded: Seeded) -> None:
    versions = versions_of(stack, seeded)
    assert len(versions) == 2, f"{seeded.name}: {len(versions)} versions, expected the original and one new"
    assert seeded.version in versions
    assert_consistent(stack, seeded)


def assert_untouched(stack: LocalStack, seeded: Seeded) -> None:
    assert versions_of(stack, seeded) == [seeded.version], f"{seeded.name} was rotated"


# -- the local cloud's request log ----------------------------------------------------------------

_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO local\.cloud\.requests (?P<method>\w+) "
    r"(?P<host>\S+) (?P<path>\S+) (?P<status>\S+) identity=(?P<identity>\S+) (?P<ms>[\d.]+)ms$"
)


def vault_requests(stack: LocalStack, vault: str, since: datetime) -> list[tuple[float, float, str, str]]:
    """The hub's requests to ``vault`` since ``since`` as (start, end, status, path), in seconds."""
    assert stack.cloud is not None
    found = []
    for line in stack.cloud.log_file.read_text(errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if not match or not match["host"].startswith(vault + ".") or match["identity"] != HUB_IDENTITY:
            continue
        end = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f")
        if end < since:
            continue
        end_s = end.timestamp()
        found.append((end_s - float(match["ms"]) / 1000, end_s, match["status"], match["path"]))
    return sorted(found)


def rotation_spans(
    requests: list[tuple[float, float, str, str]], names: list[str]
) -> list[tuple[float, float]]:
    """Per secret, when its rotation worked on the vault: from the first request about its
    pending companion (the listing never reads companions; plan and stage do) to the last
    request about the secret or its companion (the clean-up)."""
    spans = []
    for name in names:
        mine = [r for r in requests if r[3].split("/")[2:3] in ([name], [name + "-pending"])]
        pending = [r for r in mine if r[3].split("/")[2] == name + "-pending"]
        assert pending, f"{name}: no request about its pending value"
        spans.append((pending[0][0], max(r[1] for r in mine)))
    return spans


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at once."""
    edges = [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans]
    peak = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at one instant
        current += step
        peak = max(peak, current)
    return peak


def now_local() -> datetime:
    return datetime.now() - timedelta(seconds=1)  # the cloud logs local time, to the millisecond


# -- the scenarios ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_incident_over_two_vaults_rotates_each_secret_once_within_bounds_honouring_retry_after(
    stack: LocalStack, cloud: AdminClient
) -> None:
    group, seeded = seed_group(stack, {"spoke1-kv": 3, "spoke2-kv": 3})
    since = now_local()
    # Both vaults throttle: Key Vault's 429 with Retry-After 2 s on writes and reads.
    cloud.inject_fault(
        kind="throttle", target="spoke1-kv", operation="set_secret", count=2, retry_after_seconds=2
    )
    cloud.inject_fault(
        kind="throttle", target="spoke2-kv", operation="get_secret", count=3, retry_after_seconds=2
    )
    incident_id = start_incident(stack, group, maxPerVault=1, maxPerServer=2)

    ended = wait_incident(stack, incident_id, timeout=240)

    assert ended["runtimeStatus"] == "Completed", ended
    summary = ended["status"]
    assert (summary["state"], summary["total"], summary["done"], summary["failed"]) == ("completed", 6, 6, 0)
    assert {v: c["done"] for v, c in summary["perVault"].items()} == {"spoke1-kv": 3, "spoke2-kv": 3}
    for secret in seeded:
        assert_rotated_once(stack, secret)
    rotations = instance_ids(stack, "rotate_")
    assert {stack.rotation_id(s) for s in seeded} <= rotations
    for vault in VAULTS:
        requests = vault_requests(stack, vault, since)
        # One rotation at a time in each vault (maxPerVault 1), as the vault saw them.
        spans = rotation_spans(requests, [s.name for s in seeded if s.vault == vault])
        assert peak_overlap(spans) == 1, f"{vault}: rotations overlapped: {spans}"
        throttled = [r for r in requests if r[2] == "429"]
        assert throttled, f"{vault}: no request was throttled"
        for _, answered, _, path in throttled:
            following = [r for r in requests if r[0] > answered]
            assert following, f"{vault}: nothing after the 429 of {path}"
            waited = following[0][0] - answered
            assert waited >= 2 - 0.01, f"{vault}: retried {waited:.3f}s after a 429 with Retry-After 2"
    assert cloud.faults() == []


def test_pause_starts_no_more_rotations_and_resume_goes_on(stack: LocalStack, cloud: AdminClient) -> None:
    group, seeded = seed_group(stack, {"spoke1-kv": 3})
    hold_back(cloud, "spoke1-kv", "set_secret", seconds=3)  # the first rotation's stage
    incident_id = start_incident(stack, group, vaults=("spoke1-kv",), maxPerVault=1)
    wait_incident(stack, incident_id, running=1)
    status, body = steer(stack, incident_id, "pause")
    assert status == 202, body
    paused = wait_incident(stack, incident_id, state="paused", done=1)
    assert (paused["status"]["running"], paused["status"]["waiting"]) == (0, 2)
    assert paused["status"]["pausedBy"] == "http api"
    time.sleep(2)
    started = {stack.rotation_id(s) for s in seeded} & instance_ids(stack, "rotate_")
    assert len(started) == 1, "a paused incident started another rotation"
    status, body = steer(stack, incident_id, "pause")
    assert status == 409, body
    assert "paused" in body["error"]
    status, body = steer(stack, incident_id, "resume")
    assert status == 202, body
    ended = wait_incident(stack, incident_id)
    assert (ended["status"]["state"], ended["status"]["done"]) == ("completed", 3)
    for secret in seeded:
        assert_rotated_once(stack, secret)


def test_cancel_lets_the_running_rotation_finish_and_starts_no_more(
    stack: LocalStack, cloud: AdminClient
) -> None:
    group, seeded = seed_group(stack, {"spoke2-kv": 3})
    hold_back(cloud, "spoke2-kv", "set_secret", seconds=3)
    incident_id = start_incident(stack, group, vaults=("spoke2-kv",), maxPerVault=1)
    wait_incident(stack, incident_id, running=1)
    status, body = steer(stack, incident_id, "cancel", headers=stack.signed_in(APPROVER))
    assert status == 202, body
    ended = wait_incident(stack, incident_id)
    summary = ended["status"]
    assert (summary["state"], summary["done"], summary["waiting"]) == ("cancelled", 1, 2)
    assert summary["cancelledBy"] == "approver@contoso.example"
    rotated = [s for s in seeded if len(versions_of(stack, s)) == 2]
    assert len(rotated) == 1
    assert_rotated_once(stack, rotated[0])
    for secret in seeded:
        if secret is not rotated[0]:
            assert_untouched(stack, secret)
    status, body = steer(stack, incident_id, "cancel")
    assert status == 409, body


def test_bad_requests_are_refused_clearly_and_start_nothing(stack: LocalStack, cloud: AdminClient) -> None:
    before = instance_ids(stack, "incident_")
    other_subscription = "/subscriptions/99999999-9999-4999-8999-999999999999/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/elsewhere-kv"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"reason": "x"}, 400, "'scope' is required"),
        ({"scope": {}, "reason": "x"}, 400, "'scope' is required"),
        ({"scope": {"vaults": []}, "reason": "x"}, 400, "holds no vault"),
        (
            {"scope": {"subscription": "99999999-9999-4999-8999-999999999999"}, "reason": "x"},
            400,
            "holds no vault",
        ),
        ({"scope": {"vault": other_subscription}, "reason": "x"}, 403, "not on the allowlist"),
        ({"scope": {"vault": "spoke1-kv"}}, 400, "'reason' is required"),
        (
            {"scope": {"vault": "spoke1-kv"}, "reason": "x", "maxPerVault": 0},
            400,
            "'maxPerVault' must be from 1 to 50",
        ),
        (
            {"scope": {"vault": "spoke1-kv"}, "reason": "x", "maxPerServer": 51},
            400,
            "'maxPerServer' must be from 1 to 50",
        ),
        ({"scope": {"vault": "spoke1-kv"}, "reason": "x", "tags": {"a": 1}}, 400, "'tags'"),
        ({"scope": {"all": True}, "reason": "x", "waiveApproval": True}, 403, "App Service authentication"),
    ]
    for body, expected, message in cases:
        status, _, answer = hub_request(stack, "POST", "/api/incidents", body)
        assert status == expected, (body, answer)
        assert message in answer["error"], (body, answer)
    assert instance_ids(stack, "incident_") == before

    # A second incident on an overlapping scope while one runs: refused, naming the running one.
    group, _ = seed_group(stack, {"spoke1-kv": 1})
    hold_back(cloud, "spoke1-kv", "set_secret", seconds=3)
    running = start_incident(stack, group, vaults=("spoke1-kv",))
    status, _, answer = hub_request(
        stack,
        "POST",
        "/api/incidents",
        {"scope": {"all": True}, "reason": "another", "tags": {FILTER_TAG: group}},
    )
    assert status == 409, answer
    assert running in answer["error"]
    assert "spoke1-kv" in answer["error"]
    assert instance_ids(stack, "incident_") == before | {running}
    wait_incident(stack, running)
    status, _, answer = hub_request(stack, "GET", "/api/incidents/incident_nope")
    assert status == 404, answer


def test_overlapping_incidents_requested_at_once_start_one_and_refuse_the_others(
    stack: LocalStack, cloud: AdminClient
) -> None:
    group, seeded = seed_group(stack, {"spoke1-kv": 2})
    hold_back(cloud, "spoke1-kv", "set_secret", seconds=2)
    before = instance_ids(stack, "incident_")
    body = {"reason": "leaked twice", "tags": {FILTER_TAG: group}}
    scopes = [{"vault": "spoke1-kv"}, {"vaults": list(VAULTS)}, {"all": True}, {"vault": "spoke1-kv"}]
    gate = threading.Barrier(len(scopes))

    def post(scope: dict[str, Any]) -> tuple[int, Any]:
        gate.wait()  # every request leaves at once: each may pass the check made before its start
        status, _, answer = hub_request(stack, "POST", "/api/incidents", {"scope": scope, **body})
        return status, answer

    with ThreadPoolExecutor(len(scopes)) as pool:
        answers = list(pool.map(post, scopes))

    started = [answer["id"] for status, answer in answers if status == 202]
    assert len(started) == 1, answers
    winner = started[0]
    ended = wait_incident(stack, winner)
    assert (ended["runtimeStatus"], ended["status"]["done"]) == ("Completed", 2), ended
    # Every other request was refused, naming an incident that overlaps it: the winner, or (when
    # a starter could not learn another's decision in time, on a loaded machine) one that yielded.
    created = instance_ids(stack, "incident_") - before
    refused = [answer for status, answer in answers if status != 202]
    assert len(refused) == len(scopes) - 1, answers
    for answer in refused:
        assert answer["error"].endswith("is still running on an overlapping scope"), answer
        assert any(incident_id in answer["error"] for incident_id in created), answer
    # A refused request either started nothing or yielded before listing anything.
    for incident_id in created - {winner}:
        assert incident_status(stack, incident_id)["runtimeStatus"] == "Terminated"
    for secret in seeded:
        assert_rotated_once(stack, secret)


def test_a_waived_approval_is_recorded_with_the_approver_and_nobody_is_asked(stack: LocalStack) -> None:
    group, seeded = seed_group(stack, {"spoke1-kv": 1}, **{metadata.APPROVAL: "required"})
    # In the same group, a secret whose tags do not parse: named in the status, not rotated.
    broken = seed(stack, "spoke1-kv", tags={FILTER_TAG: group, metadata.VALIDITY_DAYS: "forever"})
    incident_id = start_incident(
        stack, group, vaults=("spoke1-kv",), waiveApproval=True, headers=stack.signed_in(APPROVER)
    )
    ended = wait_incident(stack, incident_id)
    assert (ended["status"]["done"], ended["status"]["approvalWaived"]) == (1, True)
    assert ended["status"]["excluded"] == 1
    [excluded] = ended["status"]["excludedSecrets"]
    assert (excluded["vault_name"], excluded["secret_name"]) == ("spoke1-kv", broken.name)
    assert metadata.VALIDITY_DAYS in excluded["reason"]
    assert_untouched(stack, broken)
    assert ended["status"]["requestedBy"] == "approver@contoso.example"
    status, _, rotation = hub_request(stack, "GET", f"/api/rotations/{stack.rotation_id(seeded[0])}")
    assert status == 200, rotation
    assert rotation["status"]["approvalWaived"] == {
        "by": "approver@contoso.example",
        "reason": "credentials leaked",
    }
    assert "approval" not in rotation["output"]["steps"]
    assert_rotated_once(stack, seeded[0])


@pytest.mark.slow
def test_a_sigkill_during_an_incident_resumes_and_rotates_no_secret_twice(
    stack: LocalStack, cloud: AdminClient
) -> None:
    group, seeded = seed_group(stack, {"spoke1-kv": 2, "spoke2-kv": 2})
    fault = hold_back(cloud, "spoke1-kv", "set_secret", seconds=2)
    incident_id = start_incident(stack, group, maxPerVault=1, maxPerServer=2)
    wait_incident(stack, incident_id, running=2)

    kill_in_flight(stack, cloud, fault, seconds=2)

    ended = wait_incident(stack, incident_id, timeout=180)
    assert ended["runtimeStatus"] == "Completed", ended
    assert (ended["status"]["done"], ended["status"]["failed"]) == (4, 0)
    for secret in seeded:
        assert_rotated_once(stack, secret)
