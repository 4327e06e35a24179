"""Key Vault writes that get no answer in time but land afterwards (the local cloud keeps working
on a request whose client went away, as Key Vault does). Key Vault has no conditional writes, so a
retry that checked too early would write a second time: the hub waits ``ROTATION_WRITE_SETTLE_SECONDS``
after an unanswered request before it checks again, and the SDK never resends a write."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from e2e_helpers import (
    assert_consistent,
    assert_no_value_leaked,
    enabled_pending,
    module_stack,
    seed,
    start_rotation,
    value_of,
    versions_of,
)

from local.cloud.process import AdminClient
from local.scenario import wait_for
from local.stack import POSTGRESQL, LocalStack

SETTINGS = {
    "ROTATION_RETRY_MAX_ATTEMPTS": "2",
    "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5",
    # Key Vault's answer is awaited 1 s; a write held 3 s lands 2 s after the hub gave up on it.
    "ROTATION_KEYVAULT_TIMEOUT_SECONDS": "1",
    "ROTATION_WRITE_SETTLE_SECONDS": "5",
}
HELD_MS = 3000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from module_stack(tmp_path_factory, SETTINGS, databases=(POSTGRESQL,))


@pytest.mark.slow
def test_writes_that_land_after_the_hub_gave_up_on_them_are_not_made_twice(
    stack: LocalStack, cloud: AdminClient
) -> None:
    seeded = seed(stack)
    old = value_of(stack, seeded.vault, seeded.name)
    # Both of the rotation's writes (the pending value, the new version) are answered too late.
    cloud.inject_fault(
        kind="latency", target=seeded.vault, operation="set_secret", count=2, latency_ms=HELD_MS
    )

    rotation_id = start_rotation(stack, seeded)
    ended = wait_for(stack, rotation_id, timeout=90)

    assert ended["runtimeStatus"] == "Completed", json.dumps(ended["status"], indent=1)
    assert ended["output"]["result"] == "rotated"
    # One pending value and one new version: each retry found what the unanswered write left.
    client = stack.secret_client(seeded.vault)
    assert len(list(client.list_properties_of_secret_versions(seeded.name + "-pending"))) == 1
    versions = versions_of(stack, seeded)
    assert len(versions) == 2, versions
    assert ended["output"]["new_version"] in versions
    assert_consistent(stack, seeded)
    assert not stack.logs_in(seeded, old)
    assert enabled_pending(stack, seeded) == []
    assert_no_value_leaked(stack, seeded)
