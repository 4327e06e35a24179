"""rotation-strategy 'alternating': two logins, each rotation changing the one the current version
does not hold, against the real PostgreSQL and MariaDB servers and the local cloud's Key Vault,
the steps called in sequence in this process as the activities call them.

Every check of a login goes through the server's own client (psql, mariadb), never the hub's
driver; what a user would see is asserted: which login and password the vault serves (read with
the same format module consumers would mirror), which passwords log in, what a refusal says.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from local.stack import MYSQL, POSTGRESQL, LocalStack, Seeded
from rotation import metadata, steps
from rotation.clients import vault_named
from rotation.errors import InvalidRequest, VerificationFailed
from rotation.login_values import Held, LoginShape
from rotation.model import PromoteInput, SecretRef, StageInput, StepInput
from rotation.settings import Settings
from rotation.targets.base import SecretValue
from rotation.vault import Vault

VAULT = "spoke1-kv"
_names = itertools.count()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), with_host=False) as running:
        yield running


@pytest.fixture
def settings(stack: LocalStack) -> Settings:
    return Settings.from_environ({**os.environ, **stack.app_settings()})


@pytest.fixture
def vault(stack: LocalStack, settings: Settings) -> Vault:
    return vault_named(VAULT, settings)


@pytest.fixture(params=[POSTGRESQL, MYSQL], ids=["postgresql", "mysql"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def seed(
    stack: LocalStack, kind: str, value_format: str = "json"
) -> tuple[Seeded, dict[str, str], StepInput]:
    n = next(_names)
    admin = stack.seed_admin_secret(VAULT, f"alt-admin-{n}", login=f"alt_admin_{n}", kind=kind)
    seeded, passwords = stack.seed_alternating_secret(
        VAULT,
        f"alt-secret-{n}",
        kind=kind,
        logins=(f"alt_a_{n}", f"alt_b_{n}"),
        admin_secret=admin.name,
        value_format=value_format,
    )
    return seeded, passwords, step_of(stack, seeded.name, seeded.version)


def step_of(stack: LocalStack, name: str, version: str) -> StepInput:
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, name)
    return StepInput(secret.rotation_id(version), secret, version)


def held(stack: LocalStack, name: str, version: str | None = None, *, of: str | None = None) -> Held:
    """The login and password a version holds, read as a consumer would read it (``of``: the
    secret whose tags say the format, for a pending companion's version)."""
    client = stack.secret_client(VAULT)
    secret = client.get_secret(name, version)
    owner = of or name
    shape = LoginShape.of(metadata.parse_tags(owner, client.get_secret(owner).properties.tags))
    return shape.read(SecretValue(secret.value or ""))


def logs_in(stack: LocalStack, kind: str, login: str, password: str) -> bool:
    return stack.database(kind).can_login(login, password)


def rotate(stack: LocalStack, step: StepInput, vault: Vault, settings: Settings, kind: str) -> str:
    """Every step of one rotation, as the orchestrator runs them; returns the new version."""
    plan = steps.plan(step, vault, settings)
    assert plan.skip_reason is None
    staged = steps.stage_pending(StageInput(step, kind, 24), vault, settings, now=datetime.now(UTC))
    step = replace(step, pending_version=staged.pending_version)
    steps.apply_target(step, vault, settings)
    steps.verify_target(step, vault, settings)
    promoted = steps.promote(PromoteInput(step, 60), vault, now=datetime.now(UTC))
    steps.discard_pending(step, vault)
    return promoted.new_version


@pytest.mark.parametrize("value_format", ["json", "connection-string"])
def test_two_rotations_alternate_the_logins_and_the_previous_value_keeps_working(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str, value_format: str
) -> None:
    seeded, passwords, step = seed(stack, kind, value_format)
    a, b = seeded.login, next(login for login in passwords if login != seeded.login)
    first = held(stack, seeded.name)
    assert first.credential == a

    version = rotate(stack, step, vault, settings, kind)
    second = held(stack, seeded.name)
    assert second.credential == b, "the first rotation changes the login the current version does not hold"
    assert logs_in(stack, kind, b, second.password.reveal())
    assert not logs_in(stack, kind, b, passwords[b])
    # A consumer that read the first value and never restarts still connects: a was not touched.
    assert logs_in(stack, kind, a, first.password.reveal())

    rotate(stack, step_of(stack, seeded.name, version), vault, settings, kind)
    third = held(stack, seeded.name)
    assert third.credential == a, "the second rotation goes back to the first login"
    assert logs_in(stack, kind, a, third.password.reveal())
    assert not logs_in(stack, kind, a, first.password.reveal())
    assert logs_in(stack, kind, b, second.password.reveal()), "b keeps its password until the next rotation"
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_a_stage_run_twice_stages_one_value_for_the_other_login(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    seeded, _, step = seed(stack, kind)
    staged = steps.stage_pending(StageInput(step, kind, 24), vault, settings, now=datetime.now(UTC))
    again = steps.stage_pending(StageInput(step, kind, 24), vault, settings, now=datetime.now(UTC))
    assert again.pending_version == staged.pending_version
    pending = held(stack, seeded.name + "-pending", staged.pending_version, of=seeded.name)
    assert pending.credential != seeded.login
    step = replace(step, pending_version=staged.pending_version)
    assert steps.apply_target(step, vault, settings).changed is True
    assert steps.apply_target(step, vault, settings).changed is False


def test_logins_that_hold_privileges_of_their_own_are_refused_before_anything_changes(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    seeded, passwords, step = seed(stack, kind)
    b = next(login for login in passwords if login != seeded.login)
    stack.database(kind).grant_own_privilege(b)

    with pytest.raises(InvalidRequest) as refused:
        steps.plan(step, vault, settings)
    message = str(refused.value)
    assert "cannot alternate" in message
    assert b in message
    assert "group role" in message or "role instead" in message, "the message says how to fix it"
    assert vault.versions(seeded.name + "-pending") == []
    for login, password in passwords.items():
        assert logs_in(stack, kind, login, password)


def test_logins_in_different_groups_are_refused(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    seeded, passwords, step = seed(stack, kind)
    b = next(login for login in passwords if login != seeded.login)
    other = f"other_group_{next(_names)}"
    stack.database(kind).create_group(other)
    stack.database(kind).join_group(b, other)

    with pytest.raises(InvalidRequest, match="cannot alternate") as refused:
        steps.plan(step, vault, settings)
    assert other in str(refused.value)


def test_a_login_that_does_not_exist_is_refused(stack: LocalStack, vault: Vault, settings: Settings) -> None:
    seeded, _, step = seed(stack, POSTGRESQL)
    client = stack.secret_client(VAULT)
    tags = dict(client.get_secret(seeded.name).properties.tags or {})
    tags[metadata.CREDENTIAL] = f"{seeded.login},nobody_{next(_names)}"
    client.update_secret_properties(seeded.name, seeded.version, tags=tags)
    with pytest.raises(InvalidRequest, match="does not exist"):
        steps.plan(step, vault, settings)


def test_a_value_holding_a_login_the_tags_do_not_name_is_refused(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    seeded, _, _ = seed(stack, POSTGRESQL)
    client = stack.secret_client(VAULT)
    tags = dict(client.get_secret(seeded.name).properties.tags or {})
    stranger = f"stranger_{next(_names)}"
    stack.create_login(stranger)
    value = '{"username": "%s", "password": "x"}' % stranger  # noqa: UP031 (a JSON text)
    written = client.set_secret(seeded.name, value, tags=tags)
    with pytest.raises(InvalidRequest, match="does not name") as refused:
        steps.plan(step_of(stack, seeded.name, str(written.properties.version)), vault, settings)
    assert stranger in str(refused.value)
    assert '"x"' not in str(refused.value)


def test_a_failure_mid_rotation_leaves_the_current_login_working(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    seeded, passwords, step = seed(stack, kind)
    current = held(stack, seeded.name)
    b = next(login for login in passwords if login != seeded.login)
    staged = steps.stage_pending(StageInput(step, kind, 24), vault, settings, now=datetime.now(UTC))
    step = replace(step, pending_version=staged.pending_version)
    steps.apply_target(step, vault, settings)
    stack.database(kind).set_login_allowed(b, allowed=False)
    try:
        with pytest.raises(VerificationFailed):
            steps.verify_target(step, vault, settings)
        undone = steps.revert_target(step, vault, settings)
    finally:
        stack.database(kind).set_login_allowed(b, allowed=True)
    assert undone.changed is False
    assert current.credential in undone.detail
    steps.discard_pending(step, vault)
    assert logs_in(stack, kind, current.credential, current.password.reveal())
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_no_value_reaches_the_logs(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seeded, passwords, step = seed(stack, kind, "connection-string")
    rotate(stack, step, vault, settings, kind)
    new = held(stack, seeded.name)
    server_log = stack.database(kind).server_log()
    for value in (*passwords.values(), new.password.reveal()):
        assert value not in caplog.text
        assert value not in server_log
