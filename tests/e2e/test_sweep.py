"""The timer-triggered sweep (the backstop for lost events), run now through the host's admin
API: it starts one rotation for each tagged secret inside the near-expiry window in both vaults,
none for the others, and a second run starts nothing new. A rotation that was rejected is
started again by each run while its version is due (its approvers are asked again).

The local cloud's expiry scan is off for this module, so every rotation here is the sweep's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from e2e_helpers import (
    assert_consistent,
    assert_no_value_leaked,
    assert_untouched,
    current_password,
    event_grid_event,
    instance_ids,
    post_events,
    quiet_expiry_scan,
    reject,
    run_sweep,
    seed,
    unique,
    versions_of,
)

from local.scenario import wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata
from rotation.model import SecretRef

VAULTS = ("spoke1-kv", "spoke2-kv")


@pytest.fixture(scope="module", autouse=True)
def _only_the_sweep(stack: LocalStack) -> None:
    quiet_expiry_scan(stack)


def prefix_of(stack: LocalStack, seeded: Seeded) -> str:
    return SecretRef(stack.subscription_of(seeded.vault), seeded.vault, seeded.name).rotation_id_prefix()


def reject_again(stack: LocalStack, seeded: Seeded) -> None:
    """The sweep started the rejected rotation of ``seeded`` again: it waits for a decision
    afresh (the earlier one is gone from its status); reject it once more."""
    rotation_id = stack.rotation_id(seeded)
    waiting = wait_for(stack, rotation_id, step="approval", until=())
    assert "decision" not in waiting["status"]
    reject(stack, rotation_id, "still not now")
    assert wait_for(stack, rotation_id)["output"]["result"] == "rejected"


def untagged_secret(stack: LocalStack, vault: str) -> Seeded:
    name = unique("untagged")
    written = stack.secret_client(vault).set_secret(
        name, "not-rotated", tags={"owner": "team-a"}, expires_on=datetime.now(UTC) + timedelta(days=5)
    )
    return Seeded(vault, name, str(written.properties.version), login="nobody")


def test_the_sweep_starts_what_is_due_once(stack: LocalStack) -> None:
    # Due: tagged, inside the 30-day window (or past it), in both vaults.
    due = [
        seed(stack, "spoke1-kv", expires_in=timedelta(days=10)),
        seed(stack, "spoke1-kv", expires_in=timedelta(days=-1)),
        seed(stack, "spoke2-kv", expires_in=timedelta(days=29)),
    ]
    # Not due, or not ours to start.
    far = seed(stack, "spoke2-kv", expires_in=timedelta(days=45))
    untagged = untagged_secret(stack, "spoke1-kv")
    disabled = seed(stack, "spoke2-kv")
    stack.secret_client(disabled.vault).update_secret_properties(
        disabled.name, disabled.version, enabled=False
    )
    rotated = seed(stack, "spoke2-kv")  # rotated by its event before the sweep runs
    assert post_events(stack, [event_grid_event(stack, rotated)])[0] == 202
    assert wait_for(stack, stack.rotation_id(rotated))["output"]["result"] == "rotated"
    refused = seed(stack, "spoke1-kv", tags={metadata.APPROVAL: "required"})  # its rotation was rejected
    assert post_events(stack, [event_grid_event(stack, refused)])[0] == 202
    wait_for(stack, stack.rotation_id(refused), step="approval", until=())
    reject(stack, stack.rotation_id(refused), "not now")
    assert wait_for(stack, stack.rotation_id(refused))["output"]["result"] == "rejected"
    passwords = {s.name: current_password(stack, s) for s in [*due, far, refused]}
    before = instance_ids(stack)

    counts = run_sweep(stack)

    # The rejected rotation's version is still due: the sweep asks its approvers again.
    assert counts == {"spoke1-kv": {"started": 2, "restarted": 1}, "spoke2-kv": {"started": 1}}
    started = instance_ids(stack) - before
    assert started == {stack.rotation_id(s) for s in due}
    reject_again(stack, refused)
    for seeded in due:
        done = wait_for(stack, stack.rotation_id(seeded))
        assert done["runtimeStatus"] == "Completed", done
        assert done["output"]["result"] == "rotated"
        assert len(versions_of(stack, seeded)) == 2
        assert not stack.logs_in(seeded, passwords[seeded.name])
    assert instance_ids(stack, prefix_of(stack, rotated)) == {stack.rotation_id(rotated)}
    assert instance_ids(stack, prefix_of(stack, refused)) == {stack.rotation_id(refused)}
    for left_alone in (far, untagged, disabled):
        assert instance_ids(stack, prefix_of(stack, left_alone)) == set()
    assert_untouched(stack, far, passwords[far.name])
    assert versions_of(stack, untagged) == [untagged.version]
    assert versions_of(stack, disabled) == [disabled.version]
    assert_untouched(stack, refused, passwords[refused.name])

    # Again: everything due was rotated out of the window; only the rejected one is asked again.
    before = instance_ids(stack)
    assert run_sweep(stack) == {"spoke1-kv": {"restarted": 1}, "spoke2-kv": {}}
    assert instance_ids(stack) == before
    reject_again(stack, refused)
    for seeded in [*due, rotated, refused]:
        assert_consistent(stack, seeded)
        assert_no_value_leaked(stack, seeded)
