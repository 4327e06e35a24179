"""The domain core's steps and undos, called in sequence in this process against the local
cloud (real SecretClient through the HTTPS proxy) and real database servers: every scenario that
takes ``kind`` runs against PostgreSQL and against MariaDB.

Each scenario checks what a user would see: which value the vault serves, whether it logs in,
whether a pending value is left enabled. Every step also runs twice, to prove it is safe to.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks.rotation import request_lines
from local.stack import MYSQL, POSTGRESQL, LocalStack, Seeded
from rotation import clients, metadata, steps
from rotation.clients import vault_named
from rotation.errors import (
    AuthenticationFailed,
    Disabled,
    InvalidRequest,
    TargetError,
    TransientError,
    VerificationFailed,
)
from rotation.model import PromoteInput, SecretRef, StageInput, StepInput
from rotation.settings import Settings
from rotation.targets import postgresql
from rotation.targets.base import SecretValue
from rotation.vault import Vault

VAULT = "spoke1-kv"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # No host: these tests call the steps themselves. A host would also receive the local cloud's
    # NearExpiry events for the secrets seeded here (10 days to expiry) and rotate them beside the
    # test, spending the faults a test injects (this made the 503 test flaky under load).
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), with_host=False) as running:
        yield running


@pytest.fixture
def settings(stack: LocalStack) -> Settings:
    return stack.settings()


@pytest.fixture
def vault(stack: LocalStack, settings: Settings) -> Vault:
    return vault_named(VAULT, settings)


_counter = iter(range(1000))


@pytest.fixture(params=[POSTGRESQL, MYSQL], ids=["postgresql", "mysql"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def seed(stack: LocalStack, kind: str = POSTGRESQL, **kwargs: Any) -> tuple[Seeded, StepInput]:
    n = next(_counter)
    seeded = stack.seed_login_secret(VAULT, f"db-password-{n}", login=f"app_{n}", kind=kind, **kwargs)
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    return seeded, StepInput(
        rotation_id=secret.rotation_id(seeded.version), secret=secret, version=seeded.version
    )


def value_of(stack: LocalStack, name: str, version: str | None = None) -> str:
    return stack.secret_client(VAULT).get_secret(name, version).value or ""


def enabled_pending(stack: LocalStack, name: str) -> list[str]:
    client = stack.secret_client(VAULT)
    try:
        return [
            p.version or "" for p in client.list_properties_of_secret_versions(name + "-pending") if p.enabled
        ]
    except Exception:  # the companion does not exist at all
        return []


def stage(step: StepInput, vault: Vault, kind: str = POSTGRESQL) -> StepInput:
    staged = steps.stage_pending(
        StageInput(step, kind, 24), vault, Settings.from_environ({}), now=datetime.now(UTC)
    )
    return replace(step, pending_version=staged.pending_version)


def test_a_rotation_step_by_step_each_step_twice(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    seeded, step = seed(stack, kind, tags={metadata.VALIDITY_DAYS: "45", "team": "payments"})
    old = value_of(stack, seeded.name)

    plan = steps.plan(step, vault, Settings.from_environ({**os.environ}))
    assert (plan.target_kind, plan.validity_days, plan.skip_reason) == (kind, 45, None)

    step = stage(step, vault, kind)
    assert stage(step, vault, kind).pending_version == step.pending_version  # reused, not a second value
    assert len(enabled_pending(stack, seeded.name)) == 1
    new = value_of(stack, seeded.name + "-pending", step.pending_version)
    assert new != old
    assert len(new) == 32

    assert steps.apply_target(step, vault, settings).changed is True
    assert steps.apply_target(step, vault, settings).changed is False
    assert stack.logs_in(seeded, new)
    assert not stack.logs_in(seeded, old)
    steps.verify_target(step, vault, settings)

    now = datetime.now(UTC)
    first = steps.promote(PromoteInput(step, plan.validity_days), vault, now=now)
    again = steps.promote(PromoteInput(step, plan.validity_days), vault, now=now)
    assert first.changed
    assert not again.changed
    assert first.new_version == again.new_version

    current = stack.secret_client(VAULT).get_secret(seeded.name)
    assert current.properties.version == first.new_version
    assert current.value == new
    tags = current.properties.tags or {}
    assert tags[metadata.ROTATION_ID] == step.rotation_id
    assert tags[metadata.PREVIOUS_VERSION] == seeded.version
    assert tags["team"] == "payments"
    assert tags[metadata.TARGET] == kind
    expires = current.properties.expires_on
    assert expires is not None
    assert abs((expires - (now + timedelta(days=45))).total_seconds()) < 5

    assert steps.discard_pending(step, vault).changed is True
    assert steps.discard_pending(step, vault).changed is False
    assert enabled_pending(stack, seeded.name) == []
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_revert_restores_the_previous_password_and_runs_twice(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    seeded, step = seed(stack, kind)
    old = value_of(stack, seeded.name)
    step = stage(step, vault, kind)
    steps.apply_target(step, vault, settings)

    assert steps.revert_target(step, vault, settings).changed is True
    assert steps.revert_target(step, vault, settings).changed is False
    assert stack.logs_in(seeded, old)
    assert not stack.logs_in(seeded, value_of(stack, seeded.name + "-pending", step.pending_version))
    steps.discard_pending(step, vault)
    assert enabled_pending(stack, seeded.name) == []
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_revert_after_promotion_keeps_the_new_password(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    seeded, step = seed(stack, kind)
    step = stage(step, vault, kind)
    steps.apply_target(step, vault, settings)
    steps.promote(PromoteInput(step, 60), vault, now=datetime.now(UTC))

    result = steps.revert_target(step, vault, settings)
    assert result.changed is False
    assert "promoted" in result.detail
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_an_admin_secret_changes_the_login(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    admin = stack.seed_admin_secret(VAULT, f"db-admin-steps-{kind}", login=f"rot_admin_{kind[:5]}", kind=kind)
    login = f"app_with_admin_{kind[:5]}"
    real = stack.create_login(login, kind=kind)
    # With an admin the login's own password is not needed: the vault's copy is even wrong.
    seeded = stack.seed_login_secret(
        VAULT,
        f"db-password-admin-{kind}",
        login=login,
        kind=kind,
        admin=f"secret:{admin.name}",
        password="stale",
    )
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    step = stage(StepInput(secret.rotation_id(seeded.version), secret, seeded.version), vault, kind)
    assert steps.apply_target(step, vault, settings).changed is True
    steps.verify_target(step, vault, settings)
    assert not stack.logs_in(seeded, real)
    # The undo restores what the vault held before: the target and the vault agree again.
    assert steps.revert_target(step, vault, settings).changed is True
    assert stack.logs_in(seeded, "stale")
    assert stack.current_value_logs_in(VAULT, seeded.name)


class _Listener:
    """A TCP port that records whether anyone connects (the host a hostile tag would name)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = int(self.socket.getsockname()[1])

    def connected(self) -> bool:
        try:
            conn, _ = self.socket.accept()
        except TimeoutError:
            return False
        conn.close()
        return True


def test_an_admin_password_goes_only_to_the_server_its_own_secret_names(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    """Whoever may tag a secret must not be able to send an admin password to a host of their
    choice: the admin secret names its server (rotation-provider), and plan, the preflight and
    every change refuse a target on another server, before anything connects or changes."""
    admin = stack.seed_admin_secret(
        VAULT, f"db-admin-bound-{kind}", login=f"bound_admin_{kind[:5]}", kind=kind
    )
    elsewhere = _Listener()
    with elsewhere.socket:
        seeded, step = seed(
            stack,
            kind,
            admin=f"secret:{admin.name}",
            tags={metadata.PROVIDER: f"127.0.0.1:{elsewhere.port}/{stack.database(kind).default_database}"},
        )
        expected = rf"the admin secret '{admin.name}' belongs to 127\.0\.0\.1:{stack.database(kind).port} .*not to 127\.0\.0\.1:{elsewhere.port}"
        with pytest.raises(InvalidRequest, match=expected):
            steps.plan(step, vault, settings)
        with pytest.raises(InvalidRequest, match=expected):
            steps.check_target(step, vault, settings)
        staged = stage(step, vault, kind)  # as if the tag changed after plan
        with pytest.raises(InvalidRequest, match=expected):
            steps.apply_target(staged, vault, settings)
        assert not elsewhere.connected(), "the hub connected to the host the tag named"

    # An admin secret that names no server is refused the same way, naming the tag to add.
    stack.secret_client(VAULT).update_secret_properties(admin.name, tags={metadata.CREDENTIAL: admin.login})
    seeded, step = seed(stack, kind, admin=f"secret:{admin.name}")
    with pytest.raises(InvalidRequest, match=rf"'{admin.name}' has no rotation-provider tag"):
        steps.plan(step, vault, settings)
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_the_hub_identity_changes_the_login_with_its_token(stack: LocalStack, vault: Vault) -> None:
    """``rotation-admin: managed-identity``: the hub logs in to PostgreSQL as its Entra role with
    the identity's token as the password, as Azure Database for PostgreSQL flexible server takes
    it. Azure's check of the token is not here: the local server's role simply has the token the
    local cloud issued as its password, which proves the hub asks for the right audience and logs
    in with that token under the configured role."""
    role = "hub-identity"
    settings = Settings.from_environ(
        {**os.environ, **stack.app_settings(), "ROTATION_POSTGRESQL_ENTRA_ROLE": role}
    )
    token = clients.access_token(postgresql.ENTRA_SCOPE, settings)  # cached: the step gets the same one
    stack.pg.create_role(role, token.reveal(), createrole=True)
    login = "app_with_identity"
    stack.create_login(login)
    seeded = stack.seed_login_secret(
        VAULT, "db-password-identity", login=login, admin="managed-identity", password="stale"
    )
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    step = stage(StepInput(secret.rotation_id(seeded.version), secret, seeded.version), vault)

    assert steps.apply_target(step, vault, settings).changed is True
    assert steps.apply_target(step, vault, settings).changed is False
    steps.verify_target(step, vault, settings)
    assert stack.logs_in(seeded, value_of(stack, seeded.name + "-pending", step.pending_version))
    assert steps.revert_target(step, vault, settings).changed is True
    assert steps.revert_target(step, vault, settings).changed is False
    assert stack.current_value_logs_in(VAULT, seeded.name)
    assert token.reveal() not in stack.pg.server_log()

    # Without the role setting the step says which setting is missing, and changes nothing.
    with pytest.raises(TargetError, match="ROTATION_POSTGRESQL_ENTRA_ROLE"):
        steps.apply_target(step, vault, stack.settings())
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_verify_refuses_a_value_the_target_never_got(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    _, step = seed(stack, kind)
    step = stage(step, vault, kind)
    with pytest.raises(VerificationFailed) as failed:
        steps.verify_target(step, vault, settings)
    assert "[permanent]" in str(failed.value)


def test_a_wrong_current_password_changes_nothing(
    stack: LocalStack, vault: Vault, settings: Settings, kind: str
) -> None:
    login = f"app_wrong_current_{kind[:5]}"
    real = stack.create_login(login, kind=kind)
    seeded = stack.seed_login_secret(
        VAULT, f"db-password-wrong-{kind}", login=login, kind=kind, password="not-the-password"
    )
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    step = stage(StepInput(secret.rotation_id(seeded.version), secret, seeded.version), vault, kind)
    with pytest.raises(AuthenticationFailed):
        steps.apply_target(step, vault, settings)
    assert stack.logs_in(seeded, real)


def test_stage_disables_a_pending_value_left_by_another_rotation(stack: LocalStack, vault: Vault) -> None:
    seeded, step = seed(stack)
    leftover = stage(replace(step, rotation_id=step.rotation_id + "-old"), vault)
    mine = stage(step, vault)
    assert enabled_pending(stack, seeded.name) == [mine.pending_version]
    assert leftover.pending_version != mine.pending_version


def test_stage_refuses_and_leaves_alone_another_secret_that_took_the_companion_name(
    stack: LocalStack, vault: Vault
) -> None:
    seeded, step = seed(stack)
    client = stack.secret_client(VAULT)
    # Someone's own secret happens to be called "<name>-pending": not a companion of this hub.
    theirs = client.set_secret(seeded.name + "-pending", "their-value", tags={"owner": "team-x"})

    with pytest.raises(InvalidRequest, match="is not this hub's pending companion"):
        steps.stage_pending(
            StageInput(step, POSTGRESQL, 24),
            vault,
            Settings.from_environ({**os.environ}),
            now=datetime.now(UTC),
        )

    kept = client.get_secret(seeded.name + "-pending")
    assert (kept.properties.version, kept.properties.enabled) == (theirs.properties.version, True)
    assert kept.value == "their-value"
    assert [p.version for p in client.list_properties_of_secret_versions(seeded.name + "-pending")] == [
        theirs.properties.version
    ]
    assert value_of(stack, seeded.name) == value_of(stack, seeded.name, seeded.version)  # untouched


def test_plan_refuses_a_validity_that_ends_inside_the_near_expiry_window(
    stack: LocalStack, vault: Vault
) -> None:
    """At or below ROTATION_NEAR_EXPIRY_DAYS (30 here) each new version would be near expiry at
    once, and every sweep would rotate it again: refused before anything changes."""
    seeded, step = seed(stack, tags={metadata.VALIDITY_DAYS: "30"})
    with pytest.raises(
        InvalidRequest,
        match=r"rotation-validity-days of .* is 30, not more than ROTATION_NEAR_EXPIRY_DAYS \(30\)",
    ):
        steps.plan(step, vault, Settings.from_environ({**os.environ, "ROTATION_NEAR_EXPIRY_DAYS": "30"}))
    assert enabled_pending(stack, seeded.name) == []
    assert value_of(stack, seeded.name) == value_of(stack, seeded.name, seeded.version)
    # The same tag is fine where the window is shorter.
    plan = steps.plan(step, vault, Settings.from_environ({**os.environ, "ROTATION_NEAR_EXPIRY_DAYS": "14"}))
    assert (plan.validity_days, plan.skip_reason) == (30, None)


def test_plan_skips_a_version_that_is_no_longer_current(stack: LocalStack, vault: Vault) -> None:
    seeded, step = seed(stack)
    stack.seed_login_secret(VAULT, seeded.name, login=seeded.login, password=value_of(stack, seeded.name))
    plan = steps.plan(step, vault, Settings.from_environ({**os.environ}))
    assert plan.skip_reason is not None
    assert "no longer current" in plan.skip_reason


def test_key_vault_unavailable_is_transient(stack: LocalStack, vault: Vault) -> None:
    _seeded, step = seed(stack)
    assert stack.cloud is not None
    # More 503s than the SDK's own retry policy absorbs (3 status retries); the rest is cleared.
    stack.cloud.admin.inject_fault(kind="unavailable", target=VAULT, operation="get_secret", count=10)
    try:
        with pytest.raises(TransientError):
            steps.plan(step, vault, Settings.from_environ({**os.environ}))
    finally:
        stack.cloud.admin.clear_faults()
    assert steps.plan(step, vault, Settings.from_environ({**os.environ})).skip_reason is None


def test_no_value_reaches_the_log_nor_the_database_server_log(
    stack: LocalStack, vault: Vault, settings: Settings, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    seeded, step = seed(stack, kind)
    old = value_of(stack, seeded.name)
    step = stage(step, vault, kind)
    steps.apply_target(step, vault, settings)
    steps.verify_target(step, vault, settings)
    steps.promote(PromoteInput(step, 60), vault, now=datetime.now(UTC))
    steps.discard_pending(step, vault)
    new = value_of(stack, seeded.name)
    assert caplog.records, "the steps should log what they did"
    server_log = stack.database(kind).server_log()
    assert seeded.login in server_log, "the server logs the statements that changed the login"
    for value in (old, new):
        assert value not in caplog.text
        assert value not in server_log


def hub_reads(stack: LocalStack, start: int, path: str) -> list[str]:
    """The hub's Key Vault reads since ``start`` whose path begins with ``path``."""
    return [
        line
        for line in request_lines(stack, start)
        if "identity=hub-rotation-identity" in line and f" GET {VAULT}.vault.azure.net {path}" in line
    ]


def test_a_memoizing_vault_reads_a_version_once_and_forgets_what_it_changes(
    stack: LocalStack, settings: Settings
) -> None:
    """What each activity uses (``activities._adapter.vault_of``): the hub's requests, as the
    local cloud's request log shows them. Without versions shared between activities, so that
    only the activity's own memory is seen."""
    seeded, _ = seed(stack)
    assert stack.cloud is not None
    start = stack.cloud.log_file.stat().st_size
    vault = vault_named(VAULT, replace(settings, keyvault_cache_seconds=0))
    memo = vault.memoizing()

    latest = memo.current(seeded.name)
    _, value = memo.get(seeded.name, seeded.version)  # the latest is that version: no request
    assert memo.current(seeded.name) == latest
    assert value.reveal() == seeded_value(stack, seeded)
    written = memo.write(
        seeded.name,
        SecretValue("next"),
        tags=dict(latest.tags),
        expires_on=datetime.now(UTC) + timedelta(days=1),
    )
    assert memo.current(seeded.name).version == written.version  # read again after the write
    memo.disable(seeded.name, written.version)
    with pytest.raises(Disabled, match="SecretDisabled"):  # read again, refused now
        memo.get(seeded.name, written.version)

    reads = hub_reads(stack, start, f"/secrets/{seeded.name}/")
    assert len(reads) == 3, "\n".join(reads)  # the latest, the latest after the write, the disabled one
    # Another activity, and a plain vault, read every time.
    vault.memoizing().get(seeded.name, seeded.version)
    vault.get(seeded.name, seeded.version)
    vault.get(seeded.name, seeded.version)
    assert len(hub_reads(stack, start, f"/secrets/{seeded.name}/{seeded.version} ")) == 3


def test_a_vault_client_keeps_the_proxy_it_was_built_with(
    stack: LocalStack, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Key Vault client reads HTTPS_PROXY and the CA bundle once (``clients._environment_read_once``),
    not on every request: after the variables change, it still reaches the vault through the proxy
    it was built with (were it reading them per request, the request would go to the dead proxy)."""
    seeded, _ = seed(stack)
    expected = seeded_value(stack, seeded)  # read by the test's own client, before the change
    # A timeout no other test uses: a client of its own, built now.
    vault = vault_named(VAULT, replace(settings, keyvault_timeout_seconds=29.5, keyvault_cache_seconds=0))
    vault.current(seeded.name)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}"
    monkeypatch.setenv("HTTPS_PROXY", dead)
    monkeypatch.setenv("https_proxy", dead)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")

    _, value = vault.get(seeded.name, seeded.version)

    assert value.reveal() == expected


def test_the_activities_of_one_process_share_the_versions_they_read_or_wrote_by_id(
    stack: LocalStack, settings: Settings
) -> None:
    """ROTATION_KEYVAULT_CACHE_SECONDS: what a version id names never changes, so a later
    activity takes it from memory; the latest is always asked for, and a version this hub
    disabled is asked for again (Key Vault refuses it)."""
    seeded, _ = seed(stack)
    assert stack.cloud is not None
    start = stack.cloud.log_file.stat().st_size
    shared = replace(settings, keyvault_cache_seconds=600)
    # A cache of its own, as a new worker process has.
    clients._version_cache.cache_clear()

    plan = vault_named(VAULT, shared).memoizing()
    latest = plan.current(seeded.name)
    written = plan.write(
        seeded.name + "-pending",
        SecretValue("staged"),
        tags={},
        expires_on=datetime.now(UTC) + timedelta(days=1),
    )
    apply = vault_named(VAULT, shared).memoizing()  # the next activity
    _, current = apply.get(seeded.name, latest.version)
    _, pending = apply.get(seeded.name + "-pending", written.version)
    assert current.reveal() == seeded_value(stack, seeded)
    assert pending.reveal() == "staged"
    assert apply.current(seeded.name).version == latest.version  # the latest: asked for

    assert len(hub_reads(stack, start, f"/secrets/{seeded.name}/")) == 2  # both latest reads
    assert hub_reads(stack, start, f"/secrets/{seeded.name}-pending/") == []

    vault_named(VAULT, shared).memoizing().disable(seeded.name + "-pending", written.version)
    with pytest.raises(Disabled):
        vault_named(VAULT, shared).memoizing().get(seeded.name + "-pending", written.version)
    # Asked for again after the disable (and refused), never before.
    assert len(hub_reads(stack, start, f"/secrets/{seeded.name}-pending/{written.version} ")) == 1


def seeded_value(stack: LocalStack, seeded: Seeded) -> str:
    return value_of(stack, seeded.name, seeded.version)
