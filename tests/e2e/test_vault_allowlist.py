"""The allowlist is checked against the subscription a vault is really in (issue 15, item 7).

The hub talks to a vault by its name alone (``https://<vault>.vault.azure.net``), and a vault's
name is unique across Azure. So an event or an API call whose vault id names an allowed
subscription with the name of a vault that lives in another one must be refused: the hub asks
ARM for the vault under the id it was given (``rotation/vault_location.py``).

This module's hub allows spoke-subscription-1 only (``spoke1-kv``); ``spoke2-kv`` lives in
spoke-subscription-2. Its first test runs while the hub has not confirmed any vault yet (the
answer is remembered per process).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_helpers import (
    HostLog,
    assert_untouched,
    current_password,
    event_grid_event,
    hub_request,
    instance_ids,
    module_stack,
    post_events,
    seed,
    unique,
)

from local.cloud.process import AdminClient
from local.scenario import wait_for
from local.stack import POSTGRESQL, LocalStack, Seeded

ALLOWED = "63e78b6b-7e96-4238-947a-2424b17b10be"  # spoke-subscription-1: spoke1-kv
OTHER = "16c76905-99fe-47a7-8c29-cacffae5f3e0"  # spoke-subscription-2: spoke2-kv
SPOKE1 = f"/subscriptions/{ALLOWED}/resourceGroups/rg-spoke1/providers/Microsoft.KeyVault/vaults/spoke1-kv"
HUB_PRINCIPAL = "25f85996-c89e-42d2-a378-d5e4cc20f4bf"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from module_stack(
        tmp_path_factory,
        {"ROTATION_ALLOWED_SUBSCRIPTIONS": ALLOWED, "ROTATION_SWEEP_VAULTS": SPOKE1},
        databases=(POSTGRESQL,),
    )


def disguised(resource_group: str, vault: str = "spoke2-kv") -> str:
    """An ARM id naming the allowed subscription with a vault that lives in the other one."""
    return f"/subscriptions/{ALLOWED}/resourceGroups/{resource_group}/providers/Microsoft.KeyVault/vaults/{vault}"


def _refused_event(stack: LocalStack, seeded: Seeded, topic: str) -> str:
    """Post the secret's NearExpiry event under ``topic``; the warning the hub logged for it."""
    log = HostLog(stack)
    event = event_grid_event(stack, seeded)
    event["topic"] = topic
    status, body = post_events(stack, [event])
    assert status == 202, body  # acknowledged: delivering it again would not change the answer
    needle = f"event {event['id']} refused: "
    return next(line for line in log.wait_for(needle).splitlines() if needle in line)


def test_without_reader_on_the_vault_the_hub_refuses_and_says_which_role_it_needs(
    stack: LocalStack, cloud: AdminClient
) -> None:
    # Before any other test: the hub has confirmed no vault yet.
    seeded = seed(stack, "spoke1-kv")
    password = current_password(stack, seeded)
    cloud.remove_role(identity="hub-rotation-identity", role="Reader", scope="vault:spoke1-kv")
    try:
        line = _refused_event(stack, seeded, SPOKE1)
        status, _, body = hub_request(
            stack, "POST", "/api/rotations", {"vault": SPOKE1, "secret": seeded.name}
        )
    finally:
        cloud.assign_role(identity="hub-rotation-identity", role="Reader", scope="vault:spoke1-kv")
    assert " WARNING " in line
    assert "the hub needs Reader on each spoke vault" in line
    assert status == 403, body
    assert "AuthorizationFailed" in body["error"]
    assert "the hub needs Reader on each spoke vault (Microsoft.KeyVault/vaults/read)" in body["error"]
    assert instance_ids(stack, stack.rotation_id(seeded)) == set()
    assert_untouched(stack, seeded, password)


@pytest.mark.parametrize(
    ("resource_group", "reader_on_subscription", "arm_answer"),
    [
        # The hub may read nothing there: ARM answers 403 before it looks (a caller without rights
        # learns nothing), the hub's own Reader on the real vault notwithstanding.
        ("rg-spoke2", False, "AuthorizationFailed"),
        ("rg-spoke1", False, "AuthorizationFailed"),
        # Reader on the whole allowed subscription: ARM says what is not there.
        ("rg-spoke2", True, "ResourceGroupNotFound"),
        ("rg-spoke1", True, "ResourceNotFound"),
    ],
)
def test_an_event_naming_an_allowed_subscription_for_a_vault_of_another_is_dropped(
    stack: LocalStack, cloud: AdminClient, resource_group: str, reader_on_subscription: bool, arm_answer: str
) -> None:
    seeded = seed(stack, "spoke2-kv")
    password = current_password(stack, seeded)
    before = instance_ids(stack)

    if reader_on_subscription:
        cloud.assign_role(identity="hub-rotation-identity", role="Reader", scope=f"/subscriptions/{ALLOWED}")
    try:
        line = _refused_event(stack, seeded, disguised(resource_group))
    finally:
        if reader_on_subscription:
            cloud.remove_role(
                identity="hub-rotation-identity", role="Reader", scope=f"/subscriptions/{ALLOWED}"
            )

    assert " WARNING " in line
    assert f"vault 'spoke2-kv' in resource group '{resource_group}' of subscription {ALLOWED}" in line
    assert arm_answer in line
    assert instance_ids(stack) == before
    assert_untouched(stack, seeded, password)


def test_api_calls_naming_an_allowed_subscription_for_a_vault_of_another_are_refused(
    stack: LocalStack,
) -> None:
    seeded = seed(stack, "spoke2-kv")
    password = current_password(stack, seeded)
    before = instance_ids(stack, "")
    vault = disguised("rg-spoke2")

    calls = {
        "rotate now": ("/api/rotations", {"vault": vault, "secret": seeded.name}),
        "preflight": ("/api/preflight", {"vault": vault, "secret": seeded.name}),
        "incident": ("/api/incidents", {"scope": {"vaults": [SPOKE1, vault]}, "reason": unique("drill")}),
    }
    for what, (path, body) in calls.items():
        status, _, answer = hub_request(stack, "POST", path, body)
        assert status == 403, f"{what}: {status} {answer}"
        assert "vault 'spoke2-kv' in resource group 'rg-spoke2'" in answer["error"], what
        assert "AuthorizationFailed" in answer["error"], what

    assert instance_ids(stack, "") == before  # no rotation, no incident
    assert_untouched(stack, seeded, password)


def test_a_vault_in_an_allowed_subscription_still_rotates_by_event_and_by_api(stack: LocalStack) -> None:
    by_event, by_api = seed(stack, "spoke1-kv"), seed(stack, "spoke1-kv")

    status, body = post_events(stack, [event_grid_event(stack, by_event)])
    assert status == 202, body
    status, _, answer = hub_request(stack, "POST", "/api/rotations", {"vault": SPOKE1, "secret": by_api.name})
    assert status == 202, answer

    for seeded in (by_event, by_api):
        done = wait_for(stack, stack.rotation_id(seeded))
        assert done["runtimeStatus"] == "Completed", done
        assert done["output"]["result"] == "rotated"
        assert stack.current_value_logs_in(seeded.vault, seeded.name)
