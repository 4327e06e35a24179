"""The host SIGKILLed in each step of an Entra application secret's rotation, then started again on
the same data dir: the rotation completes with exactly one new client secret, which the vault
holds and Entra accepts, and the previous one is retired.

As in test_crash_recovery.py, "in the middle of a step" means while the step's call to Graph or
Key Vault is held back by a latency fault of the local cloud; the cloud finishes a call whose
client has gone, so the host is started again once the call has landed. The hardest case is the
kill between Graph's addPassword and the Key Vault write: the secret text Graph returned once is
lost with the process, and the rerun of the step must remove that credential and issue another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import (
    assert_consistent,
    assert_no_value_leaked,
    enabled_pending,
    hold_back,
    kill_in_flight,
    start_rotation,
    versions_of,
)
from entra_helpers import (
    VAULT,
    advance_host_clock,
    clean_cloud,
    credential_of_current,
    current_value,
    entra_stack,
    keys,
    seed,
)

from local.scenario import wait_for
from local.stack import LocalStack, Seeded

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from entra_stack(tmp_path_factory)


@pytest.fixture(autouse=True)
def _clean(stack: LocalStack) -> Iterator[None]:
    yield from clean_cloud(stack)


def assert_rotated_once(stack: LocalStack, seeded: Seeded, old: str, ended: dict[str, Any]) -> None:
    """One new version, holding the one credential the application has now; the old one is gone."""
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    new_version = ended["output"]["new_version"]
    assert sorted(versions_of(stack, seeded)) == sorted([seeded.version, new_version])
    assert keys(stack) == {credential_of_current(stack, seeded)}, "exactly one credential: the new one"
    assert not stack.app_accepts(seeded.login, old)
    assert enabled_pending(stack, seeded) == []
    assert_consistent(stack, seeded)


def test_killed_between_graph_adding_the_secret_and_the_vault_storing_it(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    [old_id] = keys(stack)
    fault = hold_back(stack.cloud.admin, "graph", "add_password", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    orphans: set[str] = set()

    def the_secret_text_is_lost() -> None:
        # Graph added the credential; nobody holds its text: no pending version exists.
        orphans.update(keys(stack) - {old_id})
        assert len(orphans) == 1
        assert enabled_pending(stack, seeded) == []

    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2, while_down=the_secret_text_is_lost)
    ended = wait_for(stack, rotation_id)

    assert_rotated_once(stack, seeded, old, ended)
    assert credential_of_current(stack, seeded) not in orphans, "the orphan was removed, not used"
    assert_no_value_leaked(stack, seeded)


def test_killed_while_the_vault_stores_the_new_secret(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    fault = hold_back(stack.cloud.admin, VAULT, "set_secret", seconds=2)
    rotation_id = start_rotation(stack, seeded)

    # The pending write lands while the host is down; the rerun of stage reuses it.
    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2)
    ended = wait_for(stack, rotation_id)
    assert_rotated_once(stack, seeded, old, ended)


def test_killed_while_verify_waits_for_the_new_secret(stack: LocalStack) -> None:
    assert stack.cloud is not None
    stack.cloud.admin.set_entra(propagation_delay_seconds=4)
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="verify", timeout=30)
    assert stack.host is not None
    stack.host.kill()
    stack.host.start()

    ended = wait_for(stack, rotation_id)
    assert_rotated_once(stack, seeded, old, ended)


def test_killed_during_the_overlap_wait(stack: LocalStack) -> None:
    seeded = seed(stack, record_credential=True, overlap_hours=2)
    old = current_value(stack, seeded)
    rotation_id = start_rotation(stack, seeded)
    waiting = wait_for(stack, rotation_id, step="retire", timeout=60)
    assert stack.app_accepts(seeded.login, old)
    assert stack.host is not None
    stack.host.kill()
    stack.host.start()

    # The durable timer outlives the process: still waiting, for the same moment.
    again = wait_for(stack, rotation_id, step="retire", timeout=30)
    assert again["status"]["retireAt"] == waiting["status"]["retireAt"]
    advance_host_clock(stack, 2 * 3600 + 60)
    ended = wait_for(stack, rotation_id)
    assert_rotated_once(stack, seeded, old, ended)


def test_killed_while_graph_removes_the_previous_secret(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    [old_id] = keys(stack)
    fault = hold_back(stack.cloud.admin, "graph", "remove_password", seconds=2)
    rotation_id = start_rotation(stack, seeded)

    def removed_while_down() -> None:
        assert old_id not in keys(stack)

    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2, while_down=removed_while_down)
    ended = wait_for(stack, rotation_id)
    assert_rotated_once(stack, seeded, old, ended)
    assert "already gone" in ended["status"]["retired"]


def test_killed_during_plan(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    # The starter's read of the secret, then the plan's.
    fault = hold_back(stack.cloud.admin, VAULT, "get_secret", seconds=2, count=2)
    rotation_id = start_rotation(stack, seeded)
    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2)
    assert_rotated_once(stack, seeded, old, wait_for(stack, rotation_id))


def test_killed_during_promote_does_not_promote_twice(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    # Stage's write of the pending value, then promote's.
    fault = hold_back(stack.cloud.admin, VAULT, "set_secret", seconds=2, count=2)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="promote", timeout=30)

    def promoted_while_down() -> None:
        assert len(versions_of(stack, seeded)) == 2

    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2, while_down=promoted_while_down)
    assert_rotated_once(stack, seeded, old, wait_for(stack, rotation_id))


def test_killed_during_cleanup(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    fault = hold_back(stack.cloud.admin, VAULT, "update_secret", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    # The cleanup is the second half of promote's activity: the status says promote meanwhile.
    wait_for(stack, rotation_id, step="promote", timeout=30)
    kill_in_flight(stack, stack.cloud.admin, fault, seconds=2)
    assert_rotated_once(stack, seeded, old, wait_for(stack, rotation_id))
