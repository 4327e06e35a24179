"""A failure injected at each step of a rotation, through the local cloud (Key Vault and ARM
faults) or on the database's side (as its admin): the rotation ends Failed with a status that
names the failed step, the error's class and message and every undo with its result; the vault
and the database end consistent (or the status says plainly which undo could not be done while
the fault lasts); and once the fault is lifted, a rerun rotates the secret.

Faults in the local cloud apply to a vault and an operation, not to one secret: the tests of
this module run one after the other on their own stack, so each fault only meets its own test.
Every scenario but the consumer's (its app reads PostgreSQL) runs against PostgreSQL and against
MariaDB (the ``kind`` fixture).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    approve,
    assert_consistent,
    assert_no_value_leaked,
    enabled_pending,
    quiet_expiry_scan,
    rerun,
    seed,
    seed_admin,
    start_rotation,
    undo_detail,
    undo_results,
    value_of,
    versions_of,
    wait_until,
)

from local.cloud.process import AdminClient
from local.scenario import consumer_health, hub_call, seed_consumer_secret, start_consumer, wait_for
from local.stack import (
    CONSUMER_DATABASE,
    CONSUMER_SITE,
    MYSQL,
    POSTGRESQL,
    LocalStack,
    Seeded,
)
from rotation import metadata

# Two attempts per step, half a second apart: each retry is still seen (status "retrying"),
# and a fault that lasts fails the step in seconds (the SDK itself retries 429 three times,
# waiting the Retry-After of one second).
FAST_RETRIES = {
    "ROTATION_RETRY_MAX_ATTEMPTS": "2",
    "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5",
    "ROTATION_CONSUMER_READY_TIMEOUT_SECONDS": "30",
    # Scenarios here land a fault between two steps by slowing the Key Vault reads each step
    # makes before it acts: every step reads, as when each runs in another worker process.
    "ROTATION_KEYVAULT_CACHE_SECONDS": "0",
}
# "Until lifted": more calls than any rotation makes.
LASTING = 1000
ROTATED = ["plan", "stage", "apply", "verify", "promote", "cleanup"]
APPROVAL = {metadata.APPROVAL: "required"}
# What the target's error names when an admin login lacks the right to change passwords.
ADMIN_RIGHT = {POSTGRESQL: "CREATEROLE", MYSQL: "CREATE USER"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), app_settings=FAST_RETRIES) as running:
        # Only the tests start rotations: a NearExpiry event racing them would rotate first.
        quiet_expiry_scan(running)
        yield running


def assert_failed(ended: dict[str, Any], step: str, error_class: str, *message_parts: str) -> None:
    assert ended["runtimeStatus"] == "Failed", ended
    status = ended["status"]
    assert status["step"] == "failed"
    failed = status["failed"]
    assert failed["step"] == step, failed
    assert failed["class"] == error_class, failed
    for part in message_parts:
        assert part in failed["message"], failed


def assert_rotated(stack: LocalStack, seeded: Seeded, old: str, ended: dict[str, Any]) -> None:
    """Exactly one new version, promoted by this rotation; it logs in and the old value does not."""
    assert ended["runtimeStatus"] == "Completed", json.dumps(ended["status"], indent=1)
    assert ended["output"]["result"] == "rotated"
    versions = versions_of(stack, seeded)
    assert len(versions) == 2, versions
    assert set(versions) == {seeded.version, ended["output"]["new_version"]}
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == ended["output"]["new_version"]
    assert (current.properties.tags or {})[metadata.ROTATION_ID] == ended["id"]
    assert not stack.logs_in(seeded, old)
    assert_consistent(stack, seeded)


def assert_nothing_promoted(stack: LocalStack, seeded: Seeded, old: str) -> None:
    """Nothing was promoted and the original value still logs in."""
    assert versions_of(stack, seeded) == [seeded.version]
    assert stack.logs_in(seeded, old)
    assert_consistent(stack, seeded)


# -- plan -----------------------------------------------------------------------------------


def test_plan_fails_while_key_vault_throttles_and_a_rerun_restarts_it(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    # The starter reads the secret too (is it opted in, is the version current?): hold its
    # read back with a latency fault, and throttle every read after it, which the plan makes.
    gate = cloud.inject_fault(kind="latency", target=seeded.vault, operation="get_secret", latency_ms=1500)
    started: list[str] = []
    starter = threading.Thread(target=lambda: started.append(start_rotation(stack, seeded)))
    starter.start()
    try:
        wait_until(lambda: all(f["id"] != gate["id"] for f in cloud.faults()), "the starter's read")
        cloud.inject_fault(kind="throttle", target=seeded.vault, operation="get_secret", count=LASTING)
    finally:
        starter.join()
    assert started == [stack.rotation_id(seeded)]

    failed = wait_for(stack, started[0])
    cloud.clear_faults()

    assert_failed(failed, "plan", "TransientError", seeded.name, "429")
    assert failed["status"]["retrying"]["attempt"] == 2  # retried once, then given up
    assert failed["status"]["stepsDone"] == []
    assert failed["status"]["compensation"] == []
    assert "promoted" not in failed["status"]
    assert_nothing_promoted(stack, seeded, old)

    # Nothing was undone, but the history holds the retry's durable timer, which Azure Storage's
    # rewind does not replay: the rerun starts the rotation again instead; the reason is escaped.
    answer, ended = rerun(stack, started[0], {"reason": "throttled & retried #1; taskHub=Other"})
    assert (answer["mode"], answer["note"]) == (
        "restart",
        "its history holds durable timers, which a rewind does not replay, so the rotation starts again",
    )
    assert ended["status"]["stepsDone"] == ROTATED
    assert_rotated(stack, seeded, old, ended)


# -- stage ----------------------------------------------------------------------------------


def test_stage_fails_while_key_vault_refuses_writes_and_a_rerun_rotates(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    cloud.inject_fault(kind="throttle", target=seeded.vault, operation="set_secret", count=LASTING)

    failed = wait_for(stack, start_rotation(stack, seeded))
    cloud.clear_faults()

    assert_failed(failed, "stage", "TransientError", seeded.name + "-pending", "429")
    assert failed["status"]["stepsDone"] == ["plan"]
    assert undo_results(failed) == {"discard_pending": "done"}
    assert undo_detail(failed, "discard_pending") == "no pending value left"
    assert_nothing_promoted(stack, seeded, old)

    answer, ended = rerun(stack, failed["id"])
    assert answer["mode"] == "restart"  # undos ran: the rerun starts from the beginning
    assert_rotated(stack, seeded, old, ended)


# -- apply ----------------------------------------------------------------------------------


def test_apply_fails_when_the_login_has_expired_and_the_status_says_the_revert_is_impossible(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    """The login's password expired (PostgreSQL: VALID UNTIL in the past; MariaDB: PASSWORD
    EXPIRE) while the rotation waited for its approval: the login cannot change its own password, and while that lasts no undo can prove
    the previous value logs in. After the expiry is lifted, nothing was changed, and a rerun
    rotates."""
    seeded = seed(stack, kind=kind, tags=APPROVAL)
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")

    database = stack.database(kind)
    database.expire_password(seeded.login)
    try:
        approve(stack, rotation_id)
        failed = wait_for(stack, rotation_id)

        assert_failed(failed, "apply", "AuthenticationFailed", seeded.login, "refused")
        assert failed["status"]["stepsDone"] == ["plan", "stage", "approval"]
        assert undo_results(failed) == {"revert_target": "failed", "discard_pending": "done"}
        assert "must be reset by an administrator" in undo_detail(failed, "revert_target")
        assert [u["undo"] for u in failed["status"]["compensation"]] == ["revert_target", "discard_pending"]
        assert enabled_pending(stack, seeded) == []
        assert versions_of(stack, seeded) == [seeded.version]
        assert not stack.current_value_logs_in(seeded.vault, seeded.name)  # what the status warns of
    finally:
        database.expire_password(seeded.login, expired=False)

    assert_nothing_promoted(stack, seeded, old)  # apply changed nothing
    answer, ended = rerun(stack, rotation_id, approve_again=True)
    assert answer["mode"] == "restart"
    assert_rotated(stack, seeded, old, ended)


def test_apply_fails_when_the_admin_may_not_change_passwords_and_the_undo_succeeds(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    """An admin login (``rotation-admin: secret:<name>``) that lost its right to change passwords
    (PostgreSQL: CREATEROLE; MariaDB: CREATE USER): the change is
    refused for good (not retried), the revert finds the previous value still in force."""
    admin = seed_admin(stack, kind=kind)
    seeded = seed(stack, "spoke2-kv", kind=kind, admin=f"secret:{admin.name}")
    old = value_of(stack, seeded.vault, seeded.name)
    stack.database(kind).set_admin(admin.login, allowed=False)
    try:
        failed = wait_for(stack, start_rotation(stack, seeded))
    finally:
        stack.database(kind).set_admin(admin.login, allowed=True)

    assert_failed(failed, "apply", "TargetError", "not permitted", ADMIN_RIGHT[kind])
    assert "retrying" not in failed["status"]
    assert undo_results(failed) == {"revert_target": "done", "discard_pending": "done"}
    assert undo_detail(failed, "revert_target") == "previous credential still works"
    assert_nothing_promoted(stack, seeded, old)

    _, ended = rerun(stack, failed["id"])
    assert_rotated(stack, seeded, old, ended)


# -- verify ---------------------------------------------------------------------------------


def test_verify_fails_when_the_login_is_disabled_and_promote_never_runs(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    """The login is locked out after the approval (PostgreSQL: NOLOGIN; MariaDB: ACCOUNT LOCK): an admin changes the password fine, but the new value cannot
    log in. Promote does not run; the admin restores the previous value, which cannot be
    verified while the fault lasts, and the status says so."""
    admin = seed_admin(stack, kind=kind)
    seeded = seed(stack, "spoke2-kv", kind=kind, admin=f"secret:{admin.name}", tags=APPROVAL)
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")

    stack.database(kind).set_login_allowed(seeded.login, allowed=False)
    try:
        approve(stack, rotation_id)
        failed = wait_for(stack, rotation_id)

        assert_failed(failed, "verify", "VerificationFailed", seeded.login, "refuses the value")
        assert failed["status"]["stepsDone"] == ["plan", "stage", "approval", "apply"]
        assert "promoted" not in failed["status"]
        assert versions_of(stack, seeded) == [seeded.version]  # promote never ran
        assert undo_results(failed) == {"revert_target": "failed", "discard_pending": "done"}
        assert "still does not log in after the revert" in undo_detail(failed, "revert_target")
        assert enabled_pending(stack, seeded) == []
    finally:
        stack.database(kind).set_login_allowed(seeded.login, allowed=True)

    assert_nothing_promoted(stack, seeded, old)  # the admin did restore the previous password
    _, ended = rerun(stack, rotation_id, {"mode": "restart"}, approve_again=True)
    assert_rotated(stack, seeded, old, ended)


def test_verify_fails_for_a_login_that_changes_itself_and_a_rerun_recovers_its_new_password(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    """``rotation-admin: self``: once apply changed the password, only the new value logs in.
    If verify then fails and the revert cannot log in either, the database holds a value the
    vault only keeps as the (disabled) pending one; the status says the undo failed, and the
    rerun after the fault must pick that value up again rather than lock the login out."""
    seeded = seed(stack, kind=kind, tags=APPROVAL)
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")

    # Apply and verify each read two versions before they connect: slow those reads down, so
    # that the fault lands between apply's change and verify's login.
    cloud.inject_fault(
        kind="latency", target=seeded.vault, operation="get_secret", count=LASTING, latency_ms=1500
    )
    approve(stack, rotation_id)
    wait_for(stack, rotation_id, step="verify", timeout=30)
    stack.database(kind).set_login_allowed(seeded.login, allowed=False)
    cloud.clear_faults()
    try:
        failed = wait_for(stack, rotation_id)

        assert_failed(failed, "verify", "VerificationFailed", "refuses the value")
        assert "promoted" not in failed["status"]
        assert versions_of(stack, seeded) == [seeded.version]
        assert undo_results(failed) == {"revert_target": "failed", "discard_pending": "done"}
        assert "must be reset by an administrator" in undo_detail(failed, "revert_target")
        assert enabled_pending(stack, seeded) == []
    finally:
        stack.database(kind).set_login_allowed(seeded.login, allowed=True)

    # As the status said: the login now takes only the value apply set.
    assert not stack.logs_in(seeded, old)
    _, ended = rerun(stack, rotation_id, {"mode": "restart"}, approve_again=True)
    assert_rotated(stack, seeded, old, ended)
    # The rerun carried on with the value the first run staged; it did not stage another.
    companion = stack.secret_client(seeded.vault).list_properties_of_secret_versions(seeded.name + "-pending")
    assert len(list(companion)) == 1


# -- promote --------------------------------------------------------------------------------


def test_promote_fails_while_key_vault_refuses_writes_and_the_target_is_reverted(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    seeded = seed(stack, kind=kind, tags=APPROVAL)
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")  # staged: the next write is promote's

    cloud.inject_fault(kind="throttle", target=seeded.vault, operation="set_secret", count=LASTING)
    approve(stack, rotation_id)
    failed = wait_for(stack, rotation_id)
    cloud.clear_faults()

    assert_failed(failed, "promote", "TransientError", seeded.name, "429")
    assert failed["status"]["stepsDone"] == ["plan", "stage", "approval", "apply", "verify"]
    assert "promoted" not in failed["status"]
    assert undo_results(failed) == {"revert_target": "done", "discard_pending": "done"}
    assert undo_detail(failed, "revert_target") == "previous credential restored and verified"
    assert_nothing_promoted(stack, seeded, old)

    _, ended = rerun(stack, rotation_id, approve_again=True)
    assert_rotated(stack, seeded, old, ended)
    assert_no_value_leaked(stack, seeded)


def test_promote_fails_the_admin_cannot_revert_and_the_working_new_value_is_rolled_forward(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    """Promote cannot write (Key Vault refuses), and the admin lost its right to change passwords
    after apply, so the revert cannot restore the previous value: the database takes only the new
    one. The hub checks that the new value logs in and promotes it instead of leaving the vault
    with a value the database refuses."""
    admin = seed_admin(stack, kind=kind)
    seeded = seed(stack, "spoke2-kv", kind=kind, admin=f"secret:{admin.name}", tags=APPROVAL)
    old = value_of(stack, seeded.vault, seeded.name)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")  # staged: the next write is promote's

    # Reads are slow, so each step is seen; writes are refused, so promote fails.
    cloud.inject_fault(
        kind="latency", target=seeded.vault, operation="get_secret", count=LASTING, latency_ms=700
    )
    cloud.inject_fault(kind="throttle", target=seeded.vault, operation="set_secret", count=LASTING)
    approve(stack, rotation_id)
    wait_for(stack, rotation_id, step="verify", timeout=60)  # apply changed the password
    stack.database(kind).set_admin(admin.login, allowed=False)
    try:

        def reverting() -> bool:
            _, body = hub_call(stack, "GET", f"/api/rotations/{rotation_id}")
            return (body.get("status") or {}).get("compensating") == "revert_target"

        wait_until(reverting, "the revert after promote failed", timeout=60, every=0.1)
        cloud.clear_faults()  # Key Vault takes writes again
        ended = wait_for(stack, rotation_id)
    finally:
        stack.database(kind).set_admin(admin.login, allowed=True)

    assert ended["runtimeStatus"] == "Completed", json.dumps(ended["status"], indent=1)
    assert ended["output"]["result"] == "rolled_forward"
    status = ended["status"]
    assert status["rolledForward"]["failed"]["step"] == "promote"
    assert status["rolledForward"]["undo"]["result"] == "failed"
    assert "so it was promoted" in ended["output"]["detail"]
    # The vault holds the new value, which logs in; the old one no longer does.
    versions = versions_of(stack, seeded)
    assert len(versions) == 2
    assert seeded.version in versions
    assert ended["output"]["new_version"] in versions
    assert_consistent(stack, seeded)
    assert not stack.logs_in(seeded, old)
    assert enabled_pending(stack, seeded) == []
    assert_no_value_leaked(stack, seeded)


# -- restart of a consumer ------------------------------------------------------------------


def test_a_consumer_restart_fails_after_promotion_and_a_rerun_restarts_it(
    stack: LocalStack, cloud: AdminClient
) -> None:
    """Past promote the new value is the truth: the target is not reverted, only the pending
    value is removed, and the status says the secret was promoted. The consumer keeps the old
    value until the rerun restarts it."""
    seeded = seed_consumer_secret(stack)
    old = value_of(stack, seeded.vault, seeded.name)
    assert start_consumer(stack)["ok"]

    cloud.inject_fault(kind="throttle", target=CONSUMER_SITE, operation="restart", count=LASTING)
    failed = wait_for(stack, start_rotation(stack, seeded))
    cloud.clear_faults()

    assert_failed(failed, "restart", "TransientError", "1 consumer(s) not restarted", CONSUMER_SITE)
    assert failed["status"]["promoted"] is True
    assert failed["status"]["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert undo_results(failed) == {"discard_pending": "done"}
    new_version = failed["status"]["newVersion"]
    assert stack.secret_client(seeded.vault).get_secret(seeded.name).properties.version == new_version
    assert not stack.logs_in(seeded, old, database=CONSUMER_DATABASE)
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    assert enabled_pending(stack, seeded) == []
    stale = consumer_health(stack)
    assert not stale["ok"]
    assert stale["version"] == seeded.version

    answer, ended = rerun(stack, failed["id"])
    assert answer["mode"] == "restart"
    assert ended["runtimeStatus"] == "Completed", json.dumps(ended["status"], indent=1)
    assert ended["output"]["new_version"] == new_version  # not promoted a second time
    assert ended["status"]["stepsDone"] == ["plan", "restart", "cleanup"]
    assert sorted(versions_of(stack, seeded)) == sorted([seeded.version, new_version])
    assert consumer_health(stack) == {"ok": True, "version": new_version}
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    assert enabled_pending(stack, seeded) == []


# -- cleanup --------------------------------------------------------------------------------


def test_cleanup_fails_while_key_vault_refuses_updates_and_the_status_says_the_pending_value_is_left(
    stack: LocalStack, cloud: AdminClient, kind: str
) -> None:
    seeded = seed(stack, kind=kind)
    old = value_of(stack, seeded.vault, seeded.name)
    cloud.inject_fault(kind="throttle", target=seeded.vault, operation="update_secret", count=LASTING)

    failed = wait_for(stack, start_rotation(stack, seeded))

    assert_failed(failed, "cleanup", "TransientError", seeded.name + "-pending", "429")
    assert failed["status"]["promoted"] is True
    # The one undo left (disable the pending value) meets the same fault, and says so.
    assert undo_results(failed) == {"discard_pending": "failed"}
    assert "429" in undo_detail(failed, "discard_pending")
    assert len(enabled_pending(stack, seeded)) == 1
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    assert not stack.logs_in(seeded, old)
    cloud.clear_faults()

    answer, ended = rerun(stack, failed["id"])
    assert answer["mode"] == "restart"
    assert ended["status"]["stepsDone"] == ["plan", "cleanup"]
    assert ended["output"]["new_version"] == failed["status"]["newVersion"]
    assert_rotated(stack, seeded, old, ended)
