"""The entra-app-secret target and its steps, called in sequence in this process against the local
cloud: the real SecretClient, the hub's thin Graph client on azure-core with the real
ManagedIdentityCredential, and azure-identity's ClientSecretCredential for every "does this
secret work" (the hub's verify and the test's own checks alike), all through the HTTPS proxy.

What a user would see is asserted: which credentials the application holds (the local cloud's
admin view: ids and labels, never a secret), which value the vault serves, whether it logs in.
Every step and undo also runs twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from local.stack import APPLICATION, ENTRA, LocalStack, Seeded
from rotation import metadata, steps
from rotation.clients import vault_named
from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    RotationError,
    TargetError,
    TransientError,
    VerificationFailed,
)
from rotation.model import PromoteInput, SecretRef, StageInput, StepInput
from rotation.settings import Settings
from rotation.vault import Vault

VAULT = "spoke1-kv"
VALIDITY_DAYS = 30.0
OVERLAP_HOURS = 24.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), with_host=False, databases=()) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_cloud(stack: LocalStack) -> Iterator[None]:
    assert stack.cloud is not None
    stack.cloud.admin.clear_faults()
    stack.cloud.admin.set_entra(propagation_delay_seconds=0)
    yield
    stack.cloud.admin.clear_faults()
    stack.cloud.admin.set_entra(propagation_delay_seconds=0)


def settings_for(stack: LocalStack, **extra: str) -> Settings:
    return Settings.from_environ({**os.environ, **stack.app_settings(), **extra})


@pytest.fixture
def settings(stack: LocalStack) -> Settings:
    return settings_for(stack)


@pytest.fixture
def vault(stack: LocalStack, settings: Settings) -> Vault:
    return vault_named(VAULT, settings)


_names = iter(range(1000))


def seed(stack: LocalStack, application: str = APPLICATION, **kwargs: Any) -> tuple[Seeded, StepInput]:
    seeded = stack.seed_app_secret(VAULT, f"app-secret-{next(_names)}", application=application, **kwargs)
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    return seeded, StepInput(secret.rotation_id(seeded.version), secret, seeded.version)


def stage(step: StepInput, vault: Vault, settings: Settings) -> StepInput:
    staged = steps.stage_pending(
        StageInput(step, ENTRA, 24, VALIDITY_DAYS, OVERLAP_HOURS), vault, settings, now=datetime.now(UTC)
    )
    return replace(step, pending_version=staged.pending_version)


def value_of(stack: LocalStack, name: str, version: str | None = None) -> str:
    return stack.secret_client(VAULT).get_secret(name, version).value or ""


def credentials(stack: LocalStack, application: str = APPLICATION) -> dict[str, str]:
    """The application's credentials as the local cloud holds them: {key id: label}."""
    app = stack.application(application)
    return {c["key_id"]: c["display_name"] for c in app["password_credentials"]}


def label(step: StepInput) -> str:
    return steps.issued_label(step.rotation_id)


def assert_clean(exc: BaseException, *values: str) -> None:
    for value in values:
        assert value not in str(exc)
        assert value not in repr(exc)
    assert isinstance(exc, RotationError)


# -- the happy path, each step twice -----------------------------------------------------------------


def test_a_rotation_step_by_step_each_step_twice(stack: LocalStack, vault: Vault, settings: Settings) -> None:
    seeded, step = seed(stack, overlap_hours=OVERLAP_HOURS, tags={metadata.VALIDITY_DAYS: "45"})
    old = value_of(stack, seeded.name)
    [old_id] = credentials(stack)

    plan = steps.plan(step, vault, Settings.from_environ({**os.environ}))
    assert (plan.target_kind, plan.issues_credentials, plan.overlap_hours) == (ENTRA, True, OVERLAP_HOURS)

    step = stage(step, vault, settings)
    assert stage(step, vault, settings).pending_version == step.pending_version  # reused
    held = credentials(stack)
    [new_id] = set(held) - {old_id}
    assert held[new_id] == label(step), "the credential is labelled with the rotation"
    pending_info, _ = vault.get(seeded.name + "-pending", step.pending_version)
    assert pending_info.tags[metadata.CREDENTIAL_ID] == new_id
    new = value_of(stack, seeded.name + "-pending", step.pending_version)
    assert new != old
    assert stack.app_accepts(seeded.login, new)
    assert stack.app_accepts(seeded.login, old), "the previous secret stays valid beside the new one"

    steps.verify_target(step, vault, settings)
    steps.verify_target(step, vault, settings)

    first = steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    again = steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    assert (first.changed, again.changed, first.new_version) == (True, False, again.new_version)
    assert first.promoted_on is not None
    current = stack.secret_client(VAULT).get_secret(seeded.name)
    assert current.value == new
    assert (current.properties.tags or {})[metadata.CREDENTIAL_ID] == new_id

    # Promoted: the undo of stage keeps the new credential.
    assert steps.withdraw_issued(step, vault, settings).changed is False
    assert new_id in credentials(stack)
    assert steps.discard_pending(step, vault).changed is True

    # The version replaced recorded no credential (it was not issued by the hub): named, kept.
    retired = steps.retire_previous(step, vault, settings)
    assert retired.changed is False
    assert retired.not_removed == (f"{old_id} (initial)",)
    assert set(credentials(stack)) == {old_id, new_id}
    assert stack.app_accepts(seeded.login, old)


def test_the_next_rotation_retires_exactly_the_credential_the_hub_issued_before(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    seeded, step = seed(stack)
    [initial_id] = credentials(stack)
    step = stage(step, vault, settings)
    steps.verify_target(step, vault, settings)
    promoted = steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    steps.discard_pending(step, vault)
    first_value = value_of(stack, seeded.name)
    [first_id] = set(credentials(stack)) - {initial_id}

    # The second rotation replaces the version the hub promoted, which says which credential it holds.
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    second = StepInput(secret.rotation_id(promoted.new_version), secret, promoted.new_version)
    second = stage(second, vault, settings)
    steps.verify_target(second, vault, settings)
    steps.promote(PromoteInput(second, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    steps.discard_pending(second, vault)
    [second_id] = set(credentials(stack)) - {initial_id, first_id}

    retired = steps.retire_previous(second, vault, settings)
    assert retired.changed is True
    assert first_id in retired.detail
    assert set(credentials(stack)) == {initial_id, second_id}, "exactly the previous one went"
    assert not stack.app_accepts(seeded.login, first_value)
    assert stack.current_value_logs_in(VAULT, seeded.name)
    again = steps.retire_previous(second, vault, settings)
    assert again.changed is False
    assert "already gone" in again.detail


def test_a_first_rotation_retires_the_credential_an_operator_tagged_if_its_hint_agrees(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    """An operator may say which credential an existing secret holds (``rotation-credential-id``):
    the first rotation then retires it, once Graph's hint (its first characters) agrees with the
    value the vault held. A tag that names another credential removes nothing."""
    seeded, step = seed(stack, record_credential=True)
    old = value_of(stack, seeded.name)
    [old_id] = credentials(stack)
    step = stage(step, vault, settings)
    steps.verify_target(step, vault, settings)
    steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    retired = steps.retire_previous(step, vault, settings)
    assert retired.changed is True
    assert old_id not in credentials(stack)
    assert not stack.app_accepts(seeded.login, old)

    assert stack.cloud is not None
    seeded, step = seed(stack)
    wrong = stack.cloud.admin.add_application_password(APPLICATION, display_name="someone else's")
    client = stack.secret_client(VAULT)
    tags = client.get_secret(seeded.name).properties.tags or {}
    client.update_secret_properties(
        seeded.name, seeded.version, tags={**tags, metadata.CREDENTIAL_ID: str(wrong["key_id"])}
    )
    step = stage(step, vault, settings)
    steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    kept = steps.retire_previous(step, vault, settings)
    assert kept.changed is False
    assert "hint differs" in kept.detail
    assert str(wrong["key_id"]) in credentials(stack)


# -- undos and interruptions ------------------------------------------------------------------------


def test_the_undo_of_stage_withdraws_what_this_rotation_issued_and_runs_twice(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    seeded, step = seed(stack)
    [old_id] = credentials(stack)
    step = stage(step, vault, settings)
    new = value_of(stack, seeded.name + "-pending", step.pending_version)

    undone = steps.withdraw_issued(step, vault, settings)
    assert undone.changed is True
    assert steps.withdraw_issued(step, vault, settings).changed is False
    steps.discard_pending(step, vault)
    assert set(credentials(stack)) == {old_id}
    assert not stack.app_accepts(seeded.login, new)
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_a_stage_that_died_after_graph_answered_leaves_no_second_credential(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    """Graph created the credential, then the Key Vault write failed: its text is lost for good.
    The next attempt finds it by its label, removes it and issues one more: exactly one new
    credential remains, and it is the one the vault holds."""
    assert stack.cloud is not None
    seeded, step = seed(stack)
    [old_id] = credentials(stack)
    stack.cloud.admin.inject_fault(kind="unavailable", target=VAULT, operation="set_secret", count=10)
    with pytest.raises(TransientError):
        stage(step, vault, settings)
    stack.cloud.admin.clear_faults()
    orphans = set(credentials(stack)) - {old_id}
    assert len(orphans) == 1, "Graph's credential exists, its value nowhere"

    step = stage(step, vault, settings)
    held = credentials(stack)
    [new_id] = set(held) - {old_id}
    assert new_id not in orphans
    pending = value_of(stack, seeded.name + "-pending", step.pending_version)
    assert stack.app_accepts(seeded.login, pending)
    steps.verify_target(step, vault, settings)


# -- verification and propagation ------------------------------------------------------------------


def test_verify_waits_for_a_new_secret_to_propagate(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    assert stack.cloud is not None
    stack.cloud.admin.set_entra(propagation_delay_seconds=3)
    _, step = seed(stack)
    step = stage(step, vault, settings)
    started = time.monotonic()
    steps.verify_target(step, vault, settings)
    assert time.monotonic() - started >= 3


def test_a_secret_that_does_not_propagate_in_time_fails_verification_and_is_withdrawn(
    stack: LocalStack, vault: Vault
) -> None:
    assert stack.cloud is not None
    stack.cloud.admin.set_entra(propagation_delay_seconds=60)
    impatient = settings_for(stack, ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS="3")
    seeded, step = seed(stack)
    [old_id] = credentials(stack)
    step = stage(step, vault, impatient)
    with pytest.raises(VerificationFailed) as failed:
        steps.verify_target(step, vault, impatient)
    assert "AADSTS7000215" in str(failed.value)
    assert seeded.login in str(failed.value)
    steps.withdraw_issued(step, vault, impatient)
    assert set(credentials(stack)) == {old_id}


# -- refusals: a clear error, and nothing left behind --------------------------------------------------


def test_an_application_the_hub_does_not_own_is_refused_naming_what_is_missing(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    _, step = seed(stack, application="legacy-reports-client")
    before = credentials(stack, "legacy-reports-client")
    with pytest.raises(AuthenticationFailed) as refused:
        stage(step, vault, settings)
    assert "Application.ReadWrite.OwnedBy" in str(refused.value)
    assert "Authorization_RequestDenied" in str(refused.value)
    assert credentials(stack, "legacy-reports-client") == before


def test_an_application_that_does_not_exist_is_refused(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    missing = "0badc0de-0000-4000-8000-000000000000"
    _, step = seed(stack, tags={metadata.CREDENTIAL: missing})
    with pytest.raises(NotFound) as refused:
        stage(step, vault, settings)
    assert missing in str(refused.value)
    assert "Request_ResourceNotFound" in str(refused.value)


def test_another_tenant_is_refused_before_anything_changes(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    other = "0c0ffee0-0000-4000-8000-000000000000"
    _, step = seed(stack, tags={metadata.PROVIDER: other})
    before = credentials(stack)
    with pytest.raises(InvalidRequest) as refused:
        stage(step, vault, settings)
    assert "rotation-provider" in str(refused.value)
    assert other in str(refused.value)
    assert credentials(stack) == before


def test_a_lifetime_policy_is_named_and_nothing_changes(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    """The tenant caps this application's secrets at 30 days; validity 30 + overlap 24 h exceeds it."""
    _, step = seed(stack, application="policy-bound-client")
    before = credentials(stack, "policy-bound-client")
    with pytest.raises(TargetError) as refused:
        stage(step, vault, settings)
    assert "CredentialInvalidLifetimeAsPerAppPolicy" in str(refused.value)
    assert "3f5a7c9e-1b2d-4c6e-8a0f-4d6f8b0c2e4a" in str(refused.value), "the policy is named"
    assert credentials(stack, "policy-bound-client") == before


def test_the_two_secret_limit_of_personal_account_apps_is_checked_first(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    assert stack.cloud is not None
    _, step = seed(stack, application="consumer-portal-client")
    stack.cloud.admin.add_application_password("consumer-portal-client", display_name="second, by hand")
    before = credentials(stack, "consumer-portal-client")
    with pytest.raises(TargetError) as refused:
        stage(step, vault, settings)
    assert "may hold 2 client secrets" in str(refused.value)
    assert credentials(stack, "consumer-portal-client") == before


def test_graph_throttling_is_transient(stack: LocalStack, vault: Vault, settings: Settings) -> None:
    assert stack.cloud is not None
    _, step = seed(stack)
    before = credentials(stack)
    stack.cloud.admin.inject_fault(kind="throttle", target="graph", operation="add_password", count=5)
    with pytest.raises(TransientError) as throttled:
        stage(step, vault, settings)
    assert "429" in str(throttled.value)
    # The fault's Retry-After (1 s by default) travels with the error to the orchestrator.
    assert throttled.value.retry_after_seconds == 1
    assert credentials(stack) == before


def test_no_secret_text_reaches_the_log_or_an_error(
    stack: LocalStack, vault: Vault, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert stack.cloud is not None
    seeded, step = seed(stack)
    old = value_of(stack, seeded.name)
    step = stage(step, vault, settings)
    new = value_of(stack, seeded.name + "-pending", step.pending_version)
    stack.cloud.admin.set_entra(propagation_delay_seconds=60)
    impatient = settings_for(stack, ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS="1")
    with pytest.raises(VerificationFailed) as failed:
        steps.verify_target(step, vault, impatient)
    assert_clean(failed.value, old, new)
    steps.withdraw_issued(step, vault, settings)
    assert caplog.records
    cloud_log = stack.cloud.log_file.read_text(errors="replace")
    for value in (old, new):
        assert value not in caplog.text
        assert value not in cloud_log
