"""Storage account keys rotated end to end: Key Vault's event through the real Event Grid delivery
to the hub's host, the orchestration's activities calling ARM (StorageManagementClient) and the
account's blob endpoint (BlobServiceClient against Azurite, which checks every Shared Key
signature), and blob-consumer-app, a site that writes a blob with the connection string it read
from Key Vault at start.

What a user would see is asserted: the account's keys, which key each version holds and whether
it lists containers, the consumer's health, the rotation's status; and that no key reaches the
task hub, the host's log, the cloud's log or Azurite's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from e2e_helpers import (
    approve,
    assert_consistent,
    assert_no_value_leaked,
    enabled_pending,
    event_grid_event,
    hold_back,
    instance_ids,
    post_events,
    reject,
    rerun,
    start_rotation,
    versions_of,
    wait_until,
)
from storage_helpers import (
    VAULT,
    assert_rotated_once,
    clean_cloud,
    key_held,
    key_name_of_current,
    keys,
    seed,
    storage_stack,
)

from local.scenario import consumer_health, start_consumer, wait_for
from local.stack import BLOB_CONSUMER_SECRET, BLOB_CONSUMER_SITE, STORAGE_ACCOUNT, LocalStack
from rotation import metadata
from rotation.targets.storage import IRREVERSIBLE, KEEPS_PREVIOUS


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from storage_stack(tmp_path_factory)


@pytest.fixture(autouse=True)
def _clean(stack: LocalStack) -> Iterator[None]:
    yield from clean_cloud(stack)


def test_two_events_rotate_key2_then_key1_and_the_consumer_keeps_writing_blobs(stack: LocalStack) -> None:
    assert stack.cloud is not None
    site_id = str(stack.info["sites"][BLOB_CONSUMER_SITE]["arm_id"])
    seeded = seed(stack, name=BLOB_CONSUMER_SECRET, tags={metadata.CONSUMERS: site_id})
    original = keys(stack)
    assert start_consumer(stack, BLOB_CONSUMER_SITE) == {"ok": True, "version": seeded.version}

    stack.cloud.admin.emit_event(vault=VAULT, secret=seeded.name, event_type="SecretNearExpiry")
    first = wait_for(stack, stack.rotation_id(seeded))
    assert first["runtimeStatus"] == "Completed", first["status"]
    assert first["output"]["steps"] == ["plan", "stage", "verify", "promote", "cleanup", "restart", "retire"]
    assert first["status"]["retired"] == KEEPS_PREVIOUS
    first_version = first["output"]["new_version"]
    after_first = keys(stack)
    assert (after_first["key1"], key_name_of_current(stack, seeded)) == (original["key1"], "key2")
    assert consumer_health(stack, BLOB_CONSUMER_SITE) == {"ok": True, "version": first_version}

    # The next near-expiry event is about the version the first rotation promoted.
    stack.cloud.admin.emit_event(
        vault=VAULT, secret=seeded.name, event_type="SecretNearExpiry", version=first_version
    )
    second = wait_for(stack, stack.rotation_id(replace(seeded, version=first_version)))
    assert second["runtimeStatus"] == "Completed", second["status"]
    after_second = keys(stack)
    assert key_name_of_current(stack, seeded) == "key1"
    assert after_second["key2"] == after_first["key2"], "the key the current version held stayed"
    assert after_second["key1"] != original["key1"]
    assert key_held(stack, seeded) == after_second["key1"]
    assert consumer_health(stack, BLOB_CONSUMER_SITE) == {
        "ok": True,
        "version": second["output"]["new_version"],
    }

    # The previous version's key works until the next rotation; the one before no longer does.
    assert stack.key_works(STORAGE_ACCOUNT, key_held(stack, seeded, first_version))
    assert not stack.key_works(STORAGE_ACCOUNT, original["key1"])
    assert len(versions_of(stack, seeded)) == 3
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_duplicate_events_and_a_rerun_never_regenerate_a_key_again(stack: LocalStack) -> None:
    seeded = seed(stack)
    before = keys(stack)
    event = event_grid_event(stack, seeded)
    assert post_events(stack, [event])[0] == 202
    rotation_id = stack.rotation_id(seeded)
    wait_until(lambda: rotation_id in instance_ids(stack), "the rotation started")
    ended = wait_for(stack, rotation_id)
    assert_rotated_once(stack, seeded, before, ended)
    rotated = keys(stack)

    # Event Grid delivers at least once: the same event again, and another about the old version.
    assert post_events(stack, [event])[0] == 202
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    assert instance_ids(stack, rotation_id) == {rotation_id}

    # An operator reruns the finished rotation: it finds its version promoted and changes no key.
    _, again = rerun(stack, rotation_id, {"mode": "restart"})
    assert again["runtimeStatus"] == "Completed", again["status"]
    assert again["output"]["new_version"] == ended["output"]["new_version"]
    assert keys(stack) == rotated
    assert len(versions_of(stack, seeded)) == 2
    assert_consistent(stack, seeded)


def test_the_approval_comes_before_any_key_is_regenerated(stack: LocalStack) -> None:
    rejected = seed(stack, tags={metadata.APPROVAL: "required"})
    before = keys(stack)
    rotation_id = start_rotation(stack, rejected)
    waiting = wait_for(stack, rotation_id, step="approval")
    assert waiting["status"]["stepsDone"] == ["plan"]
    assert keys(stack) == before, "nothing is regenerated before the decision"
    reject(stack, rotation_id, "no")
    ended = wait_for(stack, rotation_id)
    assert (ended["output"]["result"], ended["output"]["detail"]) == ("rejected", "nothing was changed")
    assert keys(stack) == before
    assert versions_of(stack, rejected) == [rejected.version]

    approved = seed(stack, tags={metadata.APPROVAL: "required"})
    rotation_id = start_rotation(stack, approved)
    wait_for(stack, rotation_id, step="approval")
    approve(stack, rotation_id)
    ended = wait_for(stack, rotation_id)
    assert ended["output"]["steps"][:3] == ["plan", "approval", "stage"]
    assert_rotated_once(stack, approved, before, ended)


def test_a_key_regenerated_behind_the_hub_s_back_fails_verify_and_the_current_version_keeps_working(
    stack: LocalStack,
) -> None:
    """Someone regenerates the new key between the stage and the verify: the rotation fails at
    verify, says the regenerated key cannot be restored, and the vault still serves key1."""
    assert stack.cloud is not None
    seeded = seed(stack)
    before = keys(stack)
    # The stage's pending write is held back; meanwhile key2 is regenerated again by someone else.
    fault = hold_back(stack.cloud.admin, VAULT, "set_secret", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    wait_until(lambda: all(f["id"] != fault for f in stack.cloud.admin.faults()), "the pending write")
    staged_key = keys(stack)["key2"]
    stack.regenerate_key("key2")
    assert keys(stack)["key2"] != staged_key

    ended = wait_for(stack, rotation_id)
    assert ended["runtimeStatus"] == "Failed", ended
    assert (ended["status"]["failed"]["step"], ended["status"]["failed"]["class"]) == (
        "verify",
        "VerificationFailed",
    )
    undos = {u["undo"]: u["detail"] for u in ended["status"]["compensation"]}
    assert undos["withdraw_credential"] == IRREVERSIBLE
    assert versions_of(stack, seeded) == [seeded.version]
    assert keys(stack)["key1"] == before["key1"]
    assert stack.current_value_logs_in(VAULT, seeded.name)
    assert enabled_pending(stack, seeded) == []
    assert_no_value_leaked(stack, seeded)


def test_an_account_refusing_shared_key_ends_failed_at_plan_with_the_reason(stack: LocalStack) -> None:
    seeded = seed(stack, account="legacystore01")
    before = keys(stack), stack.storage_keys("legacystore01")
    ended = wait_for(stack, start_rotation(stack, seeded))
    assert ended["runtimeStatus"] == "Failed", ended
    assert ended["status"]["failed"]["step"] == "plan"
    assert "allowSharedKeyAccess false" in ended["status"]["failed"]["message"]
    assert (keys(stack), stack.storage_keys("legacystore01")) == before
    assert versions_of(stack, seeded) == [seeded.version]
