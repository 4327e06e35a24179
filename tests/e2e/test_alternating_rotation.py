"""Alternating logins end to end, for PostgreSQL and MariaDB: the whole stack driven by vault
events and the HTTP API, each rotation changing the login the current version does not hold.

What a user would see is asserted: the login and password the vault serves (read as consumers
read the JSON or connection string), which passwords the server's own client accepts, the
rotation's status; a failure leaves the current version's login working, a crash ends with one
new version, and no password (alone or inside its value) is in the task hub or any log.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    approve,
    assert_no_value_leaked,
    enabled_pending,
    quiet_expiry_scan,
    rerun,
    start_rotation,
    versions_of,
    wait_until,
)

from local.cloud.process import AdminClient
from local.scenario import wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata
from rotation.login_values import Held, LoginShape
from rotation.targets.base import SecretValue

VAULT = "spoke2-kv"
FAST_RETRIES = {"ROTATION_RETRY_MAX_ATTEMPTS": "2", "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5"}
_names = itertools.count()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), app_settings=FAST_RETRIES) as running:
        quiet_expiry_scan(running)
        yield running


def seed(stack: LocalStack, kind: str, **tags: str) -> tuple[Seeded, dict[str, str], str]:
    """Two logins in one group role, the secret holding the first; returns it, the passwords,
    and the admin login."""
    n = next(_names)
    admin = stack.seed_admin_secret(VAULT, f"alt-admin-{n}", login=f"alt_adm_{n}", kind=kind)
    seeded, passwords = stack.seed_alternating_secret(
        VAULT, f"alt-{n}", kind=kind, logins=(f"alt_a_{n}", f"alt_b_{n}"), admin_secret=admin.name, tags=tags
    )
    return seeded, passwords, admin.login


def held(stack: LocalStack, seeded: Seeded, version: str | None = None) -> Held:
    client = stack.secret_client(seeded.vault)
    shape = LoginShape.of(metadata.parse_tags(seeded.name, client.get_secret(seeded.name).properties.tags))
    return shape.read(SecretValue(client.get_secret(seeded.name, version).value or ""))


def logs_in(stack: LocalStack, kind: str, login: str, password: str) -> bool:
    return stack.database(kind).can_login(login, password)


def the_other(passwords: dict[str, str], login: str) -> str:
    return next(other for other in passwords if other != login)


def test_two_rotations_alternate_and_a_consumer_that_never_restarts_keeps_working(
    stack: LocalStack, kind: str
) -> None:
    assert stack.cloud is not None
    seeded, passwords, _ = seed(stack, kind)
    first = held(stack, seeded)
    b = the_other(passwords, first.credential)

    stack.cloud.admin.emit_event(vault=VAULT, secret=seeded.name, event_type="SecretNearExpiry")
    done = wait_for(stack, stack.rotation_id(seeded))
    assert done["runtimeStatus"] == "Completed", done["status"]
    second = held(stack, seeded)
    assert second.credential == b
    assert logs_in(stack, kind, first.credential, first.password.reveal()), "the consumer's login untouched"
    assert logs_in(stack, kind, b, second.password.reveal())

    again = wait_for(
        stack, start_rotation(stack, Seeded(VAULT, seeded.name, done["output"]["new_version"], b, kind))
    )
    assert again["runtimeStatus"] == "Completed", again["status"]
    third = held(stack, seeded)
    assert third.credential == first.credential
    assert not logs_in(stack, kind, first.credential, first.password.reveal())
    assert logs_in(stack, kind, b, second.password.reveal())
    assert stack.current_value_logs_in(VAULT, seeded.name)
    assert enabled_pending(stack, seeded) == []
    assert_no_value_leaked(stack, seeded)


def test_logins_whose_grants_differ_fail_at_plan_and_nothing_changes(stack: LocalStack, kind: str) -> None:
    seeded, passwords, _ = seed(stack, kind)
    b = the_other(passwords, seeded.login)
    stack.database(kind).grant_own_privilege(b)
    failed = wait_for(stack, start_rotation(stack, seeded))

    assert failed["runtimeStatus"] == "Failed"
    assert failed["status"]["failed"]["step"] == "plan"
    assert failed["status"]["failed"]["class"] == "InvalidRequest"
    assert "cannot alternate" in failed["status"]["failed"]["message"]
    assert b in failed["status"]["failed"]["message"]
    assert versions_of(stack, seeded) == [seeded.version]
    assert enabled_pending(stack, seeded) == []
    for login, password in passwords.items():
        assert logs_in(stack, kind, login, password)


def test_apply_fails_when_the_admin_may_not_change_passwords_and_the_current_login_still_works(
    stack: LocalStack, kind: str, cloud: AdminClient
) -> None:
    seeded, passwords, admin = seed(stack, kind)
    current = held(stack, seeded)
    stack.database(kind).set_admin(admin, allowed=False)
    try:
        failed = wait_for(stack, start_rotation(stack, seeded))
    finally:
        stack.database(kind).set_admin(admin, allowed=True)

    assert failed["runtimeStatus"] == "Failed"
    assert failed["status"]["failed"]["step"] == "apply"
    undos = {u["undo"]: u for u in failed["status"]["compensation"]}
    assert undos["revert_target"]["result"] == "done"
    assert current.credential in undos["revert_target"]["detail"]
    assert logs_in(stack, kind, current.credential, current.password.reveal())
    assert versions_of(stack, seeded) == [seeded.version]

    _, ended = rerun(stack, failed["id"])
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert held(stack, seeded).credential == the_other(passwords, current.credential)
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_killed_while_the_admins_change_waits_in_the_database(
    stack: LocalStack, kind: str, cloud: AdminClient
) -> None:
    seeded, passwords, _ = seed(stack, kind, **{metadata.APPROVAL: "required"})
    current = held(stack, seeded)
    b = the_other(passwords, current.credential)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")
    database = stack.database(kind)
    with database.hold_password_changes(b):
        approve(stack, rotation_id)
        wait_until(lambda: database.password_change_waiting(b), "the admin's change waiting")
        assert stack.host is not None
        stack.host.kill()
    stack.host.start()

    ended = wait_for(stack, rotation_id)
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert sorted(versions_of(stack, seeded)) == sorted([seeded.version, ended["output"]["new_version"]])
    new = held(stack, seeded)
    assert new.credential == b
    assert logs_in(stack, kind, b, new.password.reveal())
    assert logs_in(stack, kind, current.credential, current.password.reveal())
    assert enabled_pending(stack, seeded) == []
