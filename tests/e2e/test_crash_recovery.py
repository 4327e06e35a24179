"""The host killed with SIGKILL in the middle of each step, then started again on the same data
dir (each scenario but the consumer's against PostgreSQL and against MariaDB): the rotation completes with exactly one new version of the secret, which logs in, while the
old password does not, and no pending value is left enabled.

"In the middle of a step": the step's call to Key Vault (or ARM) is held back by a latency fault
of the local cloud, and the host is killed while that call is in flight. The cloud finishes a
call whose client has gone (as Key Vault would once the request reached it), so the host is
started again only once that call has landed: the rerun of the step then meets its own earlier
work, which is what each step's check-before-acting is for. For apply, the kill comes while the
password change waits on a lock in the database, and that change lands while the host is down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    approve,
    assert_consistent,
    assert_no_value_leaked,
    enabled_pending,
    hold_back,
    kill_in_flight,
    quiet_expiry_scan,
    seed,
    start_rotation,
    value_of,
    versions_of,
    wait_until,
)

from local.cloud.process import AdminClient
from local.scenario import consumer_health, seed_consumer_secret, start_consumer, wait_for
from local.stack import (
    CONSUMER_SITE,
    LocalStack,
    Seeded,
)
from rotation import metadata

pytestmark = pytest.mark.slow

ROTATED = ["plan", "stage", "apply", "verify", "promote", "cleanup"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack"))) as running:
        # Only the tests start rotations: a NearExpiry event racing them would rotate first.
        quiet_expiry_scan(running)
        yield running


def assert_rotated_once(stack: LocalStack, seeded: Seeded, old: str, ended: dict[str, Any]) -> None:
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert ended["output"]["result"] == "rotated"
    new_version = ended["output"]["new_version"]
    versions = versions_of(stack, seeded)
    assert sorted(versions) == sorted([seeded.version, new_version]), versions  # the original + one
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == new_version
    database = (current.properties.tags or {})[metadata.PROVIDER].rsplit("/", 1)[1]
    assert not stack.logs_in(seeded, old, database=database)
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    assert enabled_pending(stack, seeded) == []


def test_killed_during_plan(stack: LocalStack, cloud: AdminClient, kind: str) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    # The starter's read of the secret, then the plan's.
    fault = hold_back(cloud, seeded.vault, "get_secret", seconds=2, count=2)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="plan", timeout=30)

    kill_in_flight(stack, cloud, fault, seconds=2)

    ended = wait_for(stack, rotation_id)
    assert ended["status"]["stepsDone"] == ROTATED
    assert_rotated_once(stack, seeded, old, ended)


def test_killed_during_stage_reuses_the_pending_value_written_meanwhile(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    fault = hold_back(cloud, seeded.vault, "set_secret", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="stage", timeout=30)

    kill_in_flight(
        stack, cloud, fault, seconds=2, while_down=lambda: _assert_pending_versions(stack, seeded, 1)
    )

    ended = wait_for(stack, rotation_id)
    assert ended["status"]["stepsDone"] == ROTATED
    assert_rotated_once(stack, seeded, old, ended)
    # The value written by the killed attempt is the one that was used: no second one.
    _assert_pending_versions(stack, seeded, 1, enabled=0)


def test_killed_during_apply_while_the_password_change_waits_in_the_database(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    """The change reaches PostgreSQL and lands after the host died: the rerun of apply finds the
    new value already in force."""
    seeded = seed(stack, kind=kind, tags={metadata.APPROVAL: "required"})
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")
    pending = value_of(stack, seeded.vault, seeded.name + "-pending")

    # An admin session holds a lock the login's password change needs (PostgreSQL: the role's
    # catalog row; MariaDB: the global read lock), so the hub's change waits in the database.
    database = stack.database(kind)
    with database.hold_password_changes(seeded.login):
        approve(stack, rotation_id)
        wait_until(lambda: database.password_change_waiting(seeded.login), "the hub's change waiting")
        assert stack.host is not None
        stack.host.kill()
    # The lock is gone: the dead host's change goes through on its own.
    wait_until(lambda: stack.logs_in(seeded, pending), "the orphaned password change")
    assert not stack.logs_in(seeded, old)
    assert versions_of(stack, seeded) == [seeded.version]
    assert stack.host is not None
    stack.host.start()

    ended = wait_for(stack, rotation_id)
    assert ended["status"]["stepsDone"] == [
        "plan",
        "stage",
        "approval",
        "apply",
        "verify",
        "promote",
        "cleanup",
    ]
    assert_rotated_once(stack, seeded, old, ended)
    assert_no_value_leaked(stack, seeded)


def test_killed_during_verify(stack: LocalStack, cloud: AdminClient, kind: str) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    # Every read is slow (the starter's, plan's, apply's, verify's): verify is current for a while.
    hold_back(cloud, seeded.vault, "get_secret", seconds=0.8, count=1000)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="verify", timeout=30)
    time.sleep(0.3)
    assert stack.host is not None
    stack.host.kill()
    cloud.clear_faults()
    time.sleep(1)
    stack.host.start()

    ended = wait_for(stack, rotation_id)
    assert ended["status"]["stepsDone"] == ROTATED
    assert_rotated_once(stack, seeded, old, ended)


def test_killed_during_promote_does_not_promote_twice(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    # Stage's write, then promote's.
    fault = hold_back(cloud, seeded.vault, "set_secret", seconds=2, count=2)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="promote", timeout=30)

    # The promoted version lands while the host is down; the rerun of promote must find it.
    kill_in_flight(stack, cloud, fault, seconds=2, while_down=lambda: _assert_versions(stack, seeded, 2))

    ended = wait_for(stack, rotation_id)
    assert ended["status"]["stepsDone"] == ROTATED
    assert_rotated_once(stack, seeded, old, ended)


def test_killed_during_a_consumer_restart(stack: LocalStack, cloud: AdminClient) -> None:
    seeded = seed_consumer_secret(stack)
    old = value_of(stack, seeded.vault, seeded.name)
    assert start_consumer(stack)["ok"]
    fault = hold_back(cloud, CONSUMER_SITE, "restart", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="restart", timeout=30)

    kill_in_flight(stack, cloud, fault, seconds=2)

    ended = wait_for(stack, rotation_id)
    assert ended["status"]["stepsDone"] == [*ROTATED, "restart"]  # promote's activity cleaned up
    assert_rotated_once(stack, seeded, old, ended)
    assert consumer_health(stack) == {"ok": True, "version": ended["output"]["new_version"]}


def test_killed_during_cleanup(stack: LocalStack, cloud: AdminClient, kind: str) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    fault = hold_back(cloud, seeded.vault, "update_secret", seconds=2)
    rotation_id = start_rotation(stack, seeded)
    # The cleanup is the second half of promote's activity: the status says promote meanwhile.
    wait_for(stack, rotation_id, step="promote", timeout=30)

    # The pending value is disabled while the host is down; the rerun of the activity finds the
    # version promoted (it promotes nothing more) and disables the pending value again.
    kill_in_flight(
        stack,
        cloud,
        fault,
        seconds=2,
        while_down=lambda: _assert_pending_versions(stack, seeded, 1, enabled=0),
    )

    ended = wait_for(stack, rotation_id)
    assert ended["status"]["stepsDone"] == ROTATED
    assert_rotated_once(stack, seeded, old, ended)
    assert_consistent(stack, seeded)


def _assert_versions(stack: LocalStack, seeded: Seeded, count: int) -> None:
    assert len(versions_of(stack, seeded)) == count


def _assert_pending_versions(stack: LocalStack, seeded: Seeded, count: int, *, enabled: int = 1) -> None:
    versions = list(
        stack.secret_client(seeded.vault).list_properties_of_secret_versions(seeded.name + "-pending")
    )
    assert len(versions) == count
    assert len(enabled_pending(stack, seeded)) == enabled
