"""Who may decide (ROTATION_APPROVERS): a principal listed by object id, or a member of a listed
Entra group (the groups claims App Service authentication passes on); anyone else signed in is
refused, and the refusal changes nothing. This module's hub lists the approvers' group and the
requester's object id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import (
    assert_consistent,
    current_password,
    event_grid_event,
    hub_request,
    post_events,
    quiet_expiry_scan,
    seed,
    versions_of,
)

from local import principals
from local.principals import APPROVERS_GROUP, OUTSIDER, REQUESTER, SECOND_APPROVER
from local.scenario import wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    approvers = f"{APPROVERS_GROUP},{principals.object_id(REQUESTER).upper()}"
    with LocalStack(
        tmp_path_factory.mktemp("stack"), app_settings={"ROTATION_APPROVERS": approvers}, databases=()
    ) as running:
        quiet_expiry_scan(running)
        yield running


def waiting(stack: LocalStack) -> tuple[Seeded, str]:
    seeded = seed(stack, "spoke1-kv", tags={metadata.APPROVAL: "required"})
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    rotation_id = stack.rotation_id(seeded)
    wait_for(stack, rotation_id, step="approval", until=())
    return seeded, rotation_id


def decide(stack: LocalStack, rotation_id: str, verb: str, body: object, principal: str) -> tuple[int, Any]:
    status, _, answer = hub_request(
        stack, "POST", f"/api/rotations/{rotation_id}/{verb}", body, headers=stack.signed_in(principal)
    )
    return status, answer


def test_a_principal_outside_the_list_is_refused_and_a_group_member_decides(stack: LocalStack) -> None:
    seeded, rotation_id = waiting(stack)
    password = current_password(stack, seeded)

    for verb in ("approve", "reject"):
        status, body = decide(stack, rotation_id, verb, {"reason": "mine"}, OUTSIDER)
        assert status == 403, body
        assert body["error"] == (
            f"{principals.name(OUTSIDER)} ({principals.object_id(OUTSIDER)}) is not in "
            "ROTATION_APPROVERS, neither by object id nor by a group"
        )
    still = wait_for(stack, rotation_id, step="approval", until=())
    assert "decision" not in still["status"]
    assert versions_of(stack, seeded) == [seeded.version]
    assert stack.logs_in(seeded, password)

    # A member of the listed group (its second group claim) may.
    status, body = decide(stack, rotation_id, "approve", {}, SECOND_APPROVER)
    assert status == 200, body
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rotated"
    decision = done["output"]["decision"]
    assert (decision["approver"], decision["approver_id"], decision["verified"]) == (
        principals.name(SECOND_APPROVER),
        principals.object_id(SECOND_APPROVER),
        True,
    )
    assert not stack.logs_in(seeded, password)
    assert_consistent(stack, seeded)


def test_a_principal_listed_by_object_id_decides(stack: LocalStack) -> None:
    seeded, rotation_id = waiting(stack)
    password = current_password(stack, seeded)

    # Listed by its object id (in upper case in the setting: ids compare case-insensitively).
    status, body = decide(stack, rotation_id, "reject", {"reason": "not this week"}, REQUESTER)

    assert status == 200, body
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rejected"
    assert done["output"]["decision"]["approver_id"] == principals.object_id(REQUESTER)
    assert versions_of(stack, seeded) == [seeded.version]
    assert stack.logs_in(seeded, password)
