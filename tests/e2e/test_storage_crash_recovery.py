"""The host SIGKILLed in each step of a storage key's rotation, then started again on the same data
dir: the rotation completes with key2 regenerated and held by the new version, and key1, which
the replaced version holds, is never regenerated and keeps working.

As in test_crash_recovery.py, "in the middle of a step" means while the step's call to ARM or Key
Vault is held back by a latency fault of the local cloud; the cloud finishes a call whose client
has gone, so the host is started again once the call has landed. The hardest case is the kill
between ARM's regenerateKey and the Key Vault write: the new key2 is lost with the process, and
the rerun of the step regenerates key2 again (never key1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_helpers import (
    assert_no_value_leaked,
    enabled_pending,
    hold_back,
    kill_in_flight,
    start_rotation,
    versions_of,
)
from storage_helpers import VAULT, assert_rotated_once, clean_cloud, keys, seed, storage_stack

from local.scenario import consumer_health, wait_for
from local.stack import BLOB_CONSUMER_SECRET, BLOB_CONSUMER_SITE, STORAGE_ACCOUNT, LocalStack
from rotation import metadata

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from storage_stack(tmp_path_factory)


@pytest.fixture(autouse=True)
def _clean(stack: LocalStack) -> Iterator[None]:
    yield from clean_cloud(stack)


def test_killed_between_arm_regenerating_key2_and_the_vault_storing_it(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack)
    before = keys(stack)
    fault = hold_back(stack.cloud.admin, STORAGE_ACCOUNT, "regenerate_key", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    lost: list[str] = []

    def the_new_key_is_lost() -> None:
        # ARM regenerated key2; nobody holds it: no pending version exists.
        now = keys(stack)
        assert (now["key1"], now["key2"] != before["key2"]) == (before["key1"], True)
        assert enabled_pending(stack, seeded) == []
        lost.append(now["key2"])

    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2, while_down=the_new_key_is_lost)
    ended = wait_for(stack, rotation_id)

    assert_rotated_once(stack, seeded, before, ended)
    assert keys(stack)["key2"] != lost[0], "key2 was regenerated again, not guessed"
    assert_no_value_leaked(stack, seeded)


@pytest.mark.parametrize(
    ("target", "operation", "count", "step"),
    [
        # The starter's read of the secret, then the plan's.
        (VAULT, "get_secret", 2, "plan"),
        # The plan reads the account's settings, then the stage.
        (STORAGE_ACCOUNT, "get_storage_account", 2, "stage"),
        # The stage's pending write.
        (VAULT, "set_secret", 1, "stage"),
        # Verify of a key alone reads the blob endpoint from the account (plan, stage, verify).
        (STORAGE_ACCOUNT, "get_storage_account", 3, "verify"),
        # The stage's pending write, then promote's.
        (VAULT, "set_secret", 2, "promote"),
        # Cleanup disables the pending version.
        (VAULT, "update_secret", 1, "cleanup"),
    ],
    ids=["plan", "stage-reads-the-account", "stage-writes-the-vault", "verify", "promote", "cleanup"],
)
def test_killed_in_a_step_the_rerun_completes_without_touching_key1(
    stack: LocalStack, target: str, operation: str, count: int, step: str
) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, value_format="key")
    before = keys(stack)
    fault = hold_back(stack.cloud.admin, target, operation, seconds=2, count=count)
    rotation_id = start_rotation(stack, seeded)
    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2)
    ended = wait_for(stack, rotation_id)
    assert_rotated_once(stack, seeded, before, ended)
    assert len(versions_of(stack, seeded)) == 2, f"killed in {step}: promoted once"


def test_killed_while_the_consumer_restarts(stack: LocalStack) -> None:
    assert stack.cloud is not None
    site_id = str(stack.info["sites"][BLOB_CONSUMER_SITE]["arm_id"])
    seeded = seed(stack, name=BLOB_CONSUMER_SECRET, tags={metadata.CONSUMERS: site_id})
    before = keys(stack)
    fault = hold_back(stack.cloud.admin, BLOB_CONSUMER_SITE, "restart", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2)
    ended = wait_for(stack, rotation_id)
    assert_rotated_once(stack, seeded, before, ended)
    assert "restart" in ended["output"]["steps"]
    assert consumer_health(stack, BLOB_CONSUMER_SITE) == {
        "ok": True,
        "version": ended["output"]["new_version"],
    }
