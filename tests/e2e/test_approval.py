"""Rotations of secrets tagged ``rotation-approval: required``: approved, rejected, timed out
(the host's clock made to pass 72 hours), and a malformed decision raised straight through the
Durable HTTP API, which must count as a rejection. On every "no", nothing changed: the vault
serves the old version, the database takes the old password, no pending value is enabled.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from e2e_helpers import (
    DURABLE_API,
    assert_consistent,
    assert_no_value_leaked,
    assert_untouched,
    current_password,
    enabled_pending,
    event_grid_event,
    hub_request,
    post_events,
    quiet_expiry_scan,
    seed,
    versions_of,
)

from local import principals
from local.cloud.tokens import HUB_AUDIENCES
from local.principals import APPROVER, OUTSIDER, REQUESTER, SECOND_APPROVER
from local.scenario import hub_call, wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata

APPROVAL_TIMEOUT = 72 * 3600
[HUB_AUDIENCE] = HUB_AUDIENCES


@pytest.fixture(scope="module", autouse=True)
def _only_our_rotations(stack: LocalStack) -> None:
    quiet_expiry_scan(stack)


def waiting_rotation(stack: LocalStack, vault: str = "spoke1-kv") -> tuple[Seeded, str, dict[str, Any]]:
    """An approval-required secret, its rotation started by a real Event Grid delivery, waiting."""
    seeded = seed(stack, vault, tags={metadata.APPROVAL: "required"})
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    rotation_id = stack.rotation_id(seeded)
    waiting = wait_for(stack, rotation_id, step="approval", until=())
    assert waiting["runtimeStatus"] == "Running"
    return seeded, rotation_id, waiting


def assert_waiting_changed_nothing(stack: LocalStack, seeded: Seeded, password: str) -> None:
    """While it waits: the old version is current and logs in; only the pending value is staged."""
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == seeded.version
    assert stack.logs_in(seeded, password)
    assert len(enabled_pending(stack, seeded)) == 1


def assert_said_no(stack: LocalStack, seeded: Seeded, password: str) -> None:
    """Nothing changed, and the value that was staged is disabled (it existed, so it is checked)."""
    assert_untouched(stack, seeded, password)
    versions = list(
        stack.secret_client(seeded.vault).list_properties_of_secret_versions(seeded.name + "-pending")
    )
    assert len(versions) == 1
    assert not versions[0].enabled
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def decide(
    stack: LocalStack, rotation_id: str, verb: str, body: object, principal: str | None
) -> tuple[int, Any]:
    """POST approve/reject as ``principal`` signed in (None: nobody signed in)."""
    headers = stack.signed_in(principal) if principal else {}
    status, _, answer = hub_request(
        stack, "POST", f"/api/rotations/{rotation_id}/{verb}", body, headers=headers
    )
    return status, answer


def assert_recorded(decision: dict[str, Any], waiting: dict[str, Any], **expected: Any) -> None:
    """The decision as the rotation recorded it: ``expected`` fields, and the orchestrator's time
    within the approval step."""
    assert {k: decision[k] for k in expected} == expected
    decided_at = datetime.fromisoformat(decision["decided_at"])
    assert datetime.fromisoformat(waiting["status"]["stepStartedAt"]) <= decided_at
    assert decided_at <= datetime.fromisoformat(waiting["status"]["awaitingDecisionUntil"])


def test_approved_rotation_completes_and_records_the_approver(stack: LocalStack) -> None:
    seeded, rotation_id, waiting = waiting_rotation(stack)
    old = current_password(stack, seeded)
    assert_waiting_changed_nothing(stack, seeded, old)
    assert waiting["status"]["stepsDone"] == ["plan", "stage"]
    assert waiting["status"]["targetKind"] == "postgresql-login"

    status, body = decide(stack, rotation_id, "approve", {}, APPROVER)

    assert status == 200, body
    assert body["recorded"] is True
    done = wait_for(stack, rotation_id)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert done["output"]["decision"] == body["decision"]
    assert done["status"]["decision"] == body["decision"]
    assert_recorded(
        done["output"]["decision"],
        waiting,
        approved=True,
        approver=principals.name(APPROVER),
        approver_id=principals.object_id(APPROVER),
        verified=True,
        reason="",
    )
    assert done["status"]["stepsDone"] == [
        "plan",
        "stage",
        "approval",
        "apply",
        "verify",
        "promote",
        "cleanup",
    ]
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == done["output"]["new_version"]
    assert current.properties.tags[metadata.PREVIOUS_VERSION] == seeded.version
    assert len(versions_of(stack, seeded)) == 2
    assert not stack.logs_in(seeded, old)
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)

    # A second decision is refused and changes nothing.
    status, body = decide(stack, rotation_id, "reject", {"reason": "second thoughts"}, SECOND_APPROVER)
    assert status == 409, body
    assert body["error"].startswith(f"already decided: approved by {principals.name(APPROVER)} at ")
    assert wait_for(stack, rotation_id) == done


def test_no_principal_no_decision_and_forged_headers_do_not_make_one(stack: LocalStack) -> None:
    seeded, rotation_id, _ = waiting_rotation(stack)
    password = current_password(stack, seeded)
    forged = {
        "X-MS-CLIENT-PRINCIPAL-ID": principals.object_id(APPROVER),
        "X-MS-CLIENT-PRINCIPAL-NAME": principals.name(APPROVER),
        "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    }

    for headers in ({}, forged):
        status, _, body = hub_request(
            stack, "POST", f"/api/rotations/{rotation_id}/approve", {"approver": "mallory"}, headers=headers
        )
        assert status == 403, body
        assert body["error"] == (
            "a decision needs a principal signed in by App Service authentication (no principal is "
            "signed in); ROTATION_ALLOW_UNVERIFIED_APPROVER is off"
        )

    still = wait_for(stack, rotation_id, step="approval", until=())
    assert still["runtimeStatus"] == "Running"
    assert "decision" not in still["status"]
    assert_waiting_changed_nothing(stack, seeded, password)
    status, body = decide(stack, rotation_id, "reject", {"reason": "test over"}, APPROVER)
    assert status == 200, body
    assert wait_for(stack, rotation_id)["output"]["result"] == "rejected"
    assert_said_no(stack, seeded, password)


def test_the_requester_cannot_approve_its_own_rotation(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv", tags={metadata.APPROVAL: "required"})
    password = current_password(stack, seeded)
    code, body = hub_call(
        stack,
        "POST",
        "/api/rotations",
        {"vault": seeded.vault, "secret": seeded.name},
        headers=stack.signed_in(REQUESTER),
    )
    assert code == 202, body
    rotation_id = str(body["id"])
    waiting = wait_for(stack, rotation_id, step="approval", until=())

    status, body = decide(stack, rotation_id, "approve", {}, REQUESTER)

    assert status == 403, body
    assert body["error"] == (
        f"{principals.name(REQUESTER)} requested this rotation and may not approve it (separation of "
        "duties); another approver must"
    )
    assert "decision" not in wait_for(stack, rotation_id, step="approval", until=())["status"]
    assert_waiting_changed_nothing(stack, seeded, password)
    # Another principal may.
    status, body = decide(stack, rotation_id, "approve", {}, APPROVER)
    assert status == 200, body
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rotated"
    assert_recorded(done["output"]["decision"], waiting, approver=principals.name(APPROVER), verified=True)
    assert_consistent(stack, seeded)


def test_rejected_rotation_changes_nothing_and_records_why(stack: LocalStack) -> None:
    seeded, rotation_id, waiting = waiting_rotation(stack, "spoke2-kv")
    password = current_password(stack, seeded)

    status, body = decide(
        stack,
        rotation_id,
        "reject",
        {"approver": "bob", "reason": "the reporting job runs tonight"},
        APPROVER,
    )

    assert status == 200, body
    done = wait_for(stack, rotation_id)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rejected"
    assert done["output"]["new_version"] is None
    assert done["output"]["decision"] == done["status"]["decision"] == body["decision"]
    assert_recorded(
        done["output"]["decision"],
        waiting,
        approved=False,
        approver=principals.name(APPROVER),
        approver_id=principals.object_id(APPROVER),
        verified=True,
        reason="the reporting job runs tonight",
    )
    assert "apply" not in done["output"]["steps"]
    assert_said_no(stack, seeded, password)


def test_a_malformed_decision_raised_through_the_durable_api_counts_as_a_rejection(stack: LocalStack) -> None:
    # Anyone holding the system key can raise any payload; none of these is a decision.
    payloads: list[bytes] = [
        b'{"approved": true}',  # looks like a yes, says nobody's
        b'{"approved": "true", "approver": "mallory"}',  # a yes of the wrong type
        b'"approve"',
        b"true",
    ]
    started = [waiting_rotation(stack) for _ in payloads]
    passwords = [current_password(stack, seeded) for seeded, _, _ in started]
    for (_, rotation_id, _), payload in zip(started, payloads, strict=True):
        status, _, body = hub_request(
            stack, "POST", f"{DURABLE_API}/instances/{rotation_id}/raiseEvent/RotationDecision", raw=payload
        )
        assert status == 202, (payload, body)

    for (seeded, rotation_id, _), payload, password in zip(started, payloads, passwords, strict=True):
        done = wait_for(stack, rotation_id)
        assert done["runtimeStatus"] == "Completed", payload
        assert done["output"]["result"] == "rejected", payload
        decision = done["output"]["decision"]
        assert (decision["approved"], decision["approver"], decision["reason"]) == (
            False,
            "unknown",
            "malformed decision event",
        ), payload
        assert (decision["approver_id"], decision["verified"]) == (None, False), payload
        assert_said_no(stack, seeded, password)


def test_no_decision_within_72_hours_times_out_and_changes_nothing(stack: LocalStack) -> None:
    seeded, rotation_id, waiting = waiting_rotation(stack, "spoke2-kv")
    password = current_password(stack, seeded)
    deadline = datetime.fromisoformat(waiting["status"]["awaitingDecisionUntil"])
    started = datetime.fromisoformat(waiting["status"]["stepStartedAt"])
    assert deadline - started == timedelta(hours=72)

    status, _, clock = hub_request(
        stack, "POST", "/admin/host/clock", {"advanceSeconds": APPROVAL_TIMEOUT + 60}
    )

    assert status == 200, clock
    done = wait_for(stack, rotation_id, timeout=60)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "timed_out"
    assert done["output"]["decision"]["approved"] is False
    assert done["output"]["decision"]["approver"] == "timeout"
    assert done["status"]["decision"] == done["output"]["decision"]
    # Too late: the decision is refused and changes nothing.
    status, body = decide(stack, rotation_id, "approve", {}, APPROVER)
    assert status == 409, body
    assert body["error"].startswith("already decided: the approval timed out at ")
    assert_said_no(stack, seeded, password)


def test_concurrent_decisions_exactly_one_takes_effect(stack: LocalStack) -> None:
    # All of them pass the "still waiting" check before the rotation records any: only the one
    # the rotation took answers 200, the others learn after raising that theirs lost (409).
    seeded, rotation_id, _ = waiting_rotation(stack, "spoke2-kv")
    attempts = [
        ("approve", {}, APPROVER),
        ("reject", {"reason": "no"}, SECOND_APPROVER),
        ("approve", {}, REQUESTER),
        ("reject", {"reason": "not now"}, OUTSIDER),
    ]
    for _, _, principal in attempts:
        stack.signed_in(principal)  # sessions first, so the decisions themselves start together
    with ThreadPoolExecutor(len(attempts)) as pool:
        answers = list(pool.map(lambda a: decide(stack, rotation_id, *a), attempts))

    assert sorted(status for status, _ in answers) == [200, 409, 409, 409], answers
    [(verb, _, principal)] = [a for a, (status, _) in zip(attempts, answers, strict=True) if status == 200]
    taken = next(body["decision"] for status, body in answers if status == 200)
    for status, body in answers:
        if status == 409:
            assert body["error"].startswith("already decided: "), body
    done = wait_for(stack, rotation_id)
    assert done["output"]["decision"] == taken
    assert taken["approver"] == principals.name(principal)
    assert done["output"]["result"] == ("rotated" if verb == "approve" else "rejected")
    assert_consistent(stack, seeded)


def test_a_rotation_that_needs_no_approval_takes_no_decision(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv")
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    rotation_id = stack.rotation_id(seeded)
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rotated"

    status, body = decide(stack, rotation_id, "approve", {}, APPROVER)

    assert status == 409, body
    assert body["error"] == "rotation is not waiting for a decision (it is Completed, step done)"
    assert wait_for(stack, rotation_id) == done


def test_a_decision_racing_the_deadline_is_refused_once_the_timer_won(stack: LocalStack) -> None:
    # The host clock jumps past the deadline and the approval is sent at once: whether it arrives
    # before or after the rotation took the timer, the answer is 409, never a success.
    seeded, rotation_id, _ = waiting_rotation(stack)
    password = current_password(stack, seeded)
    stack.signed_in(APPROVER)
    status, _, clock = hub_request(
        stack, "POST", "/admin/host/clock", {"advanceSeconds": APPROVAL_TIMEOUT + 60}
    )
    assert status == 200, clock

    status, body = decide(stack, rotation_id, "approve", {}, APPROVER)

    assert status == 409, body
    assert body["error"].startswith("already decided: the approval timed out at "), body
    done = wait_for(stack, rotation_id, timeout=60)
    assert done["output"]["result"] == "timed_out"
    assert_said_no(stack, seeded, password)


def test_a_service_principal_decides_with_an_entra_token(stack: LocalStack) -> None:
    # As App Service authentication accepts Entra access tokens for the hub's app registration:
    # a script running as a managed identity approves with a token from the (local) identity endpoint.
    seeded, rotation_id, waiting = waiting_rotation(stack)
    credential = stack.credential()  # seeder-identity, through the local cloud's identity endpoint
    token = credential.get_token(f"{HUB_AUDIENCE}/.default").token
    vault_token = credential.get_token("https://vault.azure.net/.default").token

    # Not for this app, or not a token at all: 401 from the authentication in front, nothing decided.
    for wrong in (vault_token, token[:-4] + "AAAA"):
        status, _, body = hub_request(
            stack,
            "POST",
            f"/api/rotations/{rotation_id}/approve",
            {},
            headers={"Authorization": f"Bearer {wrong}"},
        )
        assert status == 401, body
    status, _, body = hub_request(
        stack,
        "POST",
        f"/api/rotations/{rotation_id}/approve",
        {},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert status == 200, body
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rotated"
    identity = stack.info["identities"]["seeder-identity"]
    assert_recorded(
        done["output"]["decision"],
        waiting,
        approver=identity["client_id"],
        approver_id=identity["principal_id"],
        verified=True,
    )
    assert_consistent(stack, seeded)
