"""A version whose rotation ended without rotating it (Failed, Terminated, rejected, timed out)
is not blocked for good: rotate-now (202 with the same rotation id, not 409), the sweep and
Event Grid start it again under the same instance id, and the new run repairs what the ended
one left, down to a vault whose latest version the target no longer took.

Promote and the undos give up as quickly as the other steps here (the stack's
``ROTATION_OUTAGE_RETRY_HOURS=0``): the failures below are the ones an outage longer than
their budget leaves behind (tests/e2e/test_outage.py shows them outlasting a shorter one).
Tests run in file order on one stack: the sweep's counts see only the first test's rotation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import (
    DURABLE_API,
    approve,
    assert_consistent,
    assert_no_value_leaked,
    event_grid_event,
    hub_request,
    module_stack,
    post_events,
    reject,
    run_sweep,
    seed,
    seed_admin,
    start_rotation,
    undo_results,
    value_of,
    versions_of,
    wait_until,
)

from local.cloud.process import AdminClient
from local.scenario import hub_call, rotation, wait_for
from local.stack import POSTGRESQL, LocalStack, Seeded
from rotation import metadata

SETTINGS = {
    "ROTATION_RETRY_MAX_ATTEMPTS": "2",
    "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5",
    # Faults are timed by the Key Vault reads each step makes: every step reads, as when each
    # runs in another worker process.
    "ROTATION_KEYVAULT_CACHE_SECONDS": "0",
}
APPROVAL = {metadata.APPROVAL: "required"}
LASTING = 1000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from module_stack(tmp_path_factory, SETTINGS, databases=(POSTGRESQL,))


def rotate_now(stack: LocalStack, seeded: Seeded) -> tuple[int, dict[str, Any]]:
    code, body = hub_call(stack, "POST", "/api/rotations", {"vault": seeded.vault, "secret": seeded.name})
    return code, dict(body)


def assert_rotated_once(stack: LocalStack, seeded: Seeded, old: str, ended: dict[str, Any]) -> None:
    """The run ended rotated: one new version, current, logging in; the old value does not."""
    assert ended["runtimeStatus"] == "Completed", json.dumps(ended["status"], indent=1)
    assert ended["output"]["result"] == "rotated"
    new_version = ended["output"]["new_version"]
    assert sorted(versions_of(stack, seeded)) == sorted([seeded.version, new_version])
    assert stack.secret_client(seeded.vault).get_secret(seeded.name).properties.version == new_version
    assert_consistent(stack, seeded)
    assert not stack.logs_in(seeded, old)
    assert_no_value_leaked(stack, seeded)


@pytest.mark.slow
def test_the_sweep_restarts_a_failed_rotation_that_left_the_vault_broken_and_repairs_it(
    stack: LocalStack, cloud: AdminClient
) -> None:
    """The issue's case: after apply, Key Vault refuses writes longer than promote retries, and
    the revert cannot restore the previous password (the admin lost its right): the rotation
    ends Failed with the target on the new value and the vault's latest version on the old one.
    The next sweep starts that version's rotation again; it finds the value it staged (the
    target's password now), promotes it, and the vault works again."""
    admin = seed_admin(stack)
    seeded = seed(stack, "spoke2-kv", admin=f"secret:{admin.name}", tags=APPROVAL)
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")  # staged: Key Vault's next write is promote's

    # Reads are slow, so each step is seen; writes of new versions are refused, so promote fails.
    cloud.inject_fault(
        kind="latency", target=seeded.vault, operation="get_secret", count=LASTING, latency_ms=700
    )
    cloud.inject_fault(kind="throttle", target=seeded.vault, operation="set_secret", count=LASTING)
    approve(stack, rotation_id)
    wait_for(stack, rotation_id, step="verify", timeout=60)  # apply changed the password
    stack.database(POSTGRESQL).set_admin(admin.login, allowed=False)
    try:
        failed = wait_for(stack, rotation_id, timeout=90)
    finally:
        stack.database(POSTGRESQL).set_admin(admin.login, allowed=True)
        cloud.clear_faults()

    assert failed["runtimeStatus"] == "Failed", json.dumps(failed["status"], indent=1)
    assert failed["status"]["failed"]["step"] == "promote"
    assert undo_results(failed)["revert_target"] == "failed"
    assert failed["status"]["rollForward"]["result"] == "failed"  # its promote met the same refusal
    # What the issue reproduced: the vault's latest version no longer logs in.
    assert versions_of(stack, seeded) == [seeded.version]
    assert not stack.current_value_logs_in(seeded.vault, seeded.name)

    counts = run_sweep(stack)

    assert counts == {"spoke1-kv": {}, "spoke2-kv": {"restarted": 1}}  # was "duplicate", for good
    waiting = wait_for(stack, rotation_id, step="approval", until=())  # the secret asks again
    assert "failed" not in waiting["status"]
    approve(stack, rotation_id)
    ended = wait_for(stack, rotation_id, timeout=90)

    assert_rotated_once(stack, seeded, old, ended)
    # It promoted the value the first run staged (the one the target took): no second one.
    companion = stack.secret_client(seeded.vault).list_properties_of_secret_versions(seeded.name + "-pending")
    assert len(list(companion)) == 1


def test_rotate_now_restarts_a_failed_rotation_instead_of_answering_409(
    stack: LocalStack, cloud: AdminClient
) -> None:
    admin = seed_admin(stack)
    seeded = seed(stack, "spoke2-kv", admin=f"secret:{admin.name}")
    old = value_of(stack, seeded.vault, seeded.name)
    stack.database(POSTGRESQL).set_admin(admin.login, allowed=False)  # a permanent failure, once
    try:
        failed = wait_for(stack, start_rotation(stack, seeded))
    finally:
        stack.database(POSTGRESQL).set_admin(admin.login, allowed=True)
    assert failed["runtimeStatus"] == "Failed"
    assert failed["status"]["failed"]["step"] == "apply"

    code, answer = rotate_now(stack, seeded)

    assert code == 202, answer
    assert answer["id"] == failed["id"]  # the same rotation id: one rotation per version
    assert "its last run ended Failed" in answer["note"]
    assert answer["links"]["status"].endswith(f"/api/rotations/{failed['id']}")
    ended = wait_for(stack, failed["id"], timeout=90)
    assert_rotated_once(stack, seeded, old, ended)


def test_a_rejected_then_terminated_rotation_is_asked_again_by_rotate_now_and_by_its_event(
    stack: LocalStack, cloud: AdminClient
) -> None:
    seeded = seed(stack, tags=APPROVAL)
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")
    reject(stack, rotation_id, "not this week")
    assert wait_for(stack, rotation_id)["output"]["result"] == "rejected"

    # Rotate-now asks the approvers again (a rejection is "not now", not "never").
    code, answer = rotate_now(stack, seeded)
    assert code == 202, answer
    assert answer["id"] == rotation_id
    assert "its last run ended rejected" in answer["note"]
    waiting = wait_for(stack, rotation_id, step="approval", until=())
    assert "decision" not in waiting["status"]
    # While it runs, asking again is a duplicate (409), as before.
    code, busy = rotate_now(stack, seeded)
    assert code == 409, busy
    assert "still running" in busy["error"]

    # An operator terminates it; the version's NearExpiry event (Event Grid's starter) starts it again.
    code, _, body = hub_request(stack, "POST", f"{DURABLE_API}/instances/{rotation_id}/terminate?reason=test")
    assert code == 202, body
    assert wait_for(stack, rotation_id)["runtimeStatus"] == "Terminated"
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] in (200, 202)
    wait_until(
        lambda: (
            (rotation(stack, rotation_id)["status"] or {}).get("step") == "approval"
            and rotation(stack, rotation_id)["runtimeStatus"] == "Running"
        ),
        "the event's restart waiting for a decision",
    )
    approve(stack, rotation_id)
    ended = wait_for(stack, rotation_id, timeout=90)
    assert_rotated_once(stack, seeded, old, ended)
