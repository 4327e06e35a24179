"""A Key Vault outage that begins after apply changed the target and lasts longer than a step's
normal retries: promote does not give up (and run undos that would meet the same outage); it
retries on durable timers with back-off, the status says when it tries next, and it promotes
once Key Vault takes writes again. Until then the vault's latest version is the old value, which
the target no longer takes: the window the long retries keep as short as the outage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from e2e_helpers import (
    approve,
    assert_consistent,
    assert_no_value_leaked,
    module_stack,
    seed,
    start_rotation,
    value_of,
    versions_of,
    wait_until,
)

from local.cloud.process import AdminClient
from local.scenario import rotation, wait_for
from local.stack import POSTGRESQL, LocalStack
from rotation import metadata

# A step's normal retries give up after 0.5 s (two attempts); promote and the undos keep trying
# for 90 s, their waits doubling from 0.5 s.
OUTAGE_RETRY_SECONDS = 90
SETTINGS = {
    "ROTATION_RETRY_MAX_ATTEMPTS": "2",
    "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5",
    "ROTATION_OUTAGE_RETRY_HOURS": str(OUTAGE_RETRY_SECONDS / 3600),
}
LASTING = 1000  # more calls than the outage meets


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from module_stack(tmp_path_factory, SETTINGS, databases=(POSTGRESQL,))


@pytest.mark.slow
def test_promote_outlasts_a_key_vault_outage_after_apply_and_promotes_once_it_ends(
    stack: LocalStack, cloud: AdminClient
) -> None:
    seeded = seed(stack, tags={metadata.APPROVAL: "required"})
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")  # staged: Key Vault's next write is promote's

    # Key Vault refuses every write (new versions, updates) from here on.
    for operation in ("set_secret", "update_secret"):
        cloud.inject_fault(kind="unavailable", target=seeded.vault, operation=operation, count=LASTING)
    approve(stack, rotation_id)

    def promote_retrying_past_the_normal_budget() -> bool:
        status = rotation(stack, rotation_id)["status"] or {}
        return status.get("step") == "promote" and (status.get("retrying") or {}).get("attempt", 0) >= 5

    wait_until(promote_retrying_past_the_normal_budget, "promote's fifth attempt", timeout=60, every=0.1)
    during = rotation(stack, rotation_id)
    assert during["runtimeStatus"] == "Running", json.dumps(during, indent=1)
    status = during["status"]
    retrying = status["retrying"]
    assert retrying["step"] == "promote"
    assert retrying["after"]["class"] == "TransientError"
    assert "503" in retrying["after"]["message"]
    promote_began = datetime.fromisoformat(status["stepTimes"]["promote"])
    next_attempt = datetime.fromisoformat(retrying["nextAttemptAt"])
    assert promote_began < next_attempt <= promote_began + timedelta(seconds=OUTAGE_RETRY_SECONDS)
    assert datetime.fromisoformat(retrying["retryUntil"]) == promote_began + timedelta(
        seconds=OUTAGE_RETRY_SECONDS
    )
    assert "compensating" not in status  # no undo runs
    assert "compensation" not in status
    assert status["stepsDone"] == ["plan", "stage", "approval", "apply", "verify"]
    assert versions_of(stack, seeded) == [seeded.version]  # nothing promoted yet

    cloud.clear_faults()  # the outage ends
    ended = wait_for(stack, rotation_id, timeout=90)

    assert ended["runtimeStatus"] == "Completed", json.dumps(ended["status"], indent=1)
    assert ended["output"]["result"] == "rotated"
    assert ended["status"]["stepsDone"] == [
        "plan",
        "stage",
        "approval",
        "apply",
        "verify",
        "promote",
        "cleanup",
    ]
    assert "retrying" not in ended["status"]
    new_version = ended["output"]["new_version"]
    assert sorted(versions_of(stack, seeded)) == sorted([seeded.version, new_version])
    assert stack.secret_client(seeded.vault).get_secret(seeded.name).properties.version == new_version
    assert_consistent(stack, seeded)  # the latest version logs in; no pending value is left
    assert not stack.logs_in(seeded, old)
    assert_no_value_leaked(stack, seeded)
