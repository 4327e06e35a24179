"""The storage-account-key target and its steps, called in sequence in this process against the
local cloud: the real SecretClient, the real StorageManagementClient (ARM: get, listKeys,
regenerateKey, with RBAC) and the real BlobServiceClient against the account's blob endpoint,
served by Azurite, which checks every Shared Key signature itself.

What a user would see is asserted: the account's two keys (the local cloud's admin view), which
key the vault's versions hold, and whether a key lists containers on the blob endpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from local.stack import STORAGE, STORAGE_ACCOUNT, LocalStack, Seeded
from rotation import metadata, steps
from rotation.clients import hub_credential, vault_named
from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    RotationError,
    TargetError,
    TransientError,
    VerificationFailed,
)
from rotation.model import PromoteInput, SecretRef, StageInput, StepInput
from rotation.settings import Settings
from rotation.targets import storage
from rotation.targets.base import SecretValue
from rotation.vault import Vault

VAULT = "spoke1-kv"
VALIDITY_DAYS = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), with_host=False, databases=()) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_cloud(stack: LocalStack) -> Iterator[None]:
    assert stack.cloud is not None
    stack.cloud.admin.clear_faults()
    yield
    stack.cloud.admin.clear_faults()


def settings_for(stack: LocalStack, **extra: str) -> Settings:
    return Settings.from_environ({**os.environ, **stack.app_settings(), **extra})


@pytest.fixture
def settings(stack: LocalStack) -> Settings:
    return settings_for(stack)


@pytest.fixture
def vault(stack: LocalStack, settings: Settings) -> Vault:
    return vault_named(VAULT, settings)


_names = iter(range(1000))


def seed(stack: LocalStack, **kwargs: Any) -> tuple[Seeded, StepInput]:
    seeded = stack.seed_storage_secret(VAULT, f"store-{next(_names)}", **kwargs)
    return seeded, step_for(stack, seeded.name, seeded.version)


def step_for(stack: LocalStack, name: str, version: str) -> StepInput:
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, name)
    return StepInput(secret.rotation_id(version), secret, version)


def stage(step: StepInput, vault: Vault, settings: Settings) -> StepInput:
    staged = steps.stage_pending(
        StageInput(step, STORAGE, 24, VALIDITY_DAYS, 0.0), vault, settings, now=datetime.now(UTC)
    )
    return replace(step, pending_version=staged.pending_version)


def rotate(stack: LocalStack, step: StepInput, vault: Vault, settings: Settings) -> StepInput:
    """Every step of one rotation, in order; returns the step of the version it promoted."""
    assert steps.plan(step, vault, settings).skip_reason is None
    step = stage(step, vault, settings)
    steps.verify_target(step, vault, settings)
    promoted = steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    steps.discard_pending(step, vault)
    steps.retire_previous(step, vault, settings)
    return step_for(stack, step.secret.secret_name, promoted.new_version)


def value_of(stack: LocalStack, name: str, version: str | None = None) -> str:
    return stack.secret_client(VAULT).get_secret(name, version).value or ""


def key_of(value: str) -> str:
    return storage.key_in(SecretValue(value), "connection-string", STORAGE_ACCOUNT)


def assert_clean(exc: BaseException, *values: str) -> None:
    for value in values:
        assert value not in str(exc)
        assert value not in repr(exc)
    assert isinstance(exc, RotationError)


# -- the happy path, each step twice -----------------------------------------------------------------


def test_a_rotation_regenerates_the_key_the_current_version_does_not_hold_each_step_twice(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    seeded, step = seed(stack, key_name="key1")
    before = stack.storage_keys()
    old = value_of(stack, seeded.name)
    assert key_of(old) == before["key1"]

    plan = steps.plan(step, vault, settings)
    assert (plan.target_kind, plan.issues_credentials, plan.issue_after_approval) == (STORAGE, True, True)
    assert plan.overlap_hours == 0.0
    assert stack.storage_keys() == before, "plan changes nothing"

    step = stage(step, vault, settings)
    after_stage = stack.storage_keys()
    assert after_stage["key1"] == before["key1"], "the key the current version holds is never regenerated"
    assert after_stage["key2"] != before["key2"]
    assert stage(step, vault, settings).pending_version == step.pending_version  # reused
    assert stack.storage_keys() == after_stage, "a second stage regenerates nothing"
    pending_info, _ = vault.get(seeded.name + "-pending", step.pending_version)
    assert pending_info.tags[metadata.CREDENTIAL_ID] == "key2"
    new = value_of(stack, seeded.name + "-pending", step.pending_version)
    assert key_of(new) == after_stage["key2"]
    assert stack.key_works(STORAGE_ACCOUNT, key_of(new))
    assert stack.key_works(STORAGE_ACCOUNT, key_of(old)), "consumers of the current version are unaffected"
    assert not stack.key_works(STORAGE_ACCOUNT, before["key2"]), "the regenerated key stops working at once"

    steps.verify_target(step, vault, settings)
    steps.verify_target(step, vault, settings)

    first = steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    again = steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
    assert (first.changed, again.changed, first.new_version) == (True, False, again.new_version)
    current = stack.secret_client(VAULT).get_secret(seeded.name)
    assert current.value == new
    assert (current.properties.tags or {})[metadata.CREDENTIAL_ID] == "key2"
    assert stack.current_value_logs_in(VAULT, seeded.name)

    assert steps.withdraw_issued(step, vault, settings).changed is False
    assert steps.discard_pending(step, vault).changed is True
    retired = steps.retire_previous(step, vault, settings)
    assert (retired.changed, retired.detail) == (False, storage.KEEPS_PREVIOUS)
    assert stack.storage_keys() == after_stage
    assert stack.key_works(STORAGE_ACCOUNT, key_of(old)), (
        "the previous key stays valid until the next rotation"
    )


def test_two_rotations_in_a_row_alternate_the_keys(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    seeded, step = seed(stack, key_name="key1")
    original = stack.storage_keys()

    second = rotate(stack, step, vault, settings)
    after_first = stack.storage_keys()
    assert (after_first["key1"], stack.credential_id(seeded)) == (original["key1"], "key2")

    rotate(stack, second, vault, settings)
    after_second = stack.storage_keys()
    assert stack.credential_id(seeded) == "key1"
    assert after_second["key2"] == after_first["key2"], "the key the current version held stayed"
    assert after_second["key1"] != original["key1"]
    assert key_of(value_of(stack, seeded.name)) == after_second["key1"]
    assert stack.current_value_logs_in(VAULT, seeded.name)
    assert stack.value_logs_in(VAULT, seeded.name, second.version), "the previous version still works"
    assert not stack.value_logs_in(VAULT, seeded.name, step.version), "the one before was regenerated"


def test_a_first_rotation_finds_which_key_a_hand_written_value_holds(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    seeded, step = seed(stack, key_name="key2")
    before = stack.storage_keys()
    rotate(stack, step, vault, settings)
    after = stack.storage_keys()
    assert after["key2"] == before["key2"]
    assert after["key1"] != before["key1"]
    assert stack.credential_id(seeded) == "key1"


def test_the_key_format_holds_the_key_alone(stack: LocalStack, vault: Vault, settings: Settings) -> None:
    seeded, step = seed(stack, key_name="key1", value_format="key")
    rotate(stack, step, vault, settings)
    assert value_of(stack, seeded.name) == stack.storage_keys()["key2"]
    assert stack.current_value_logs_in(VAULT, seeded.name)


def test_a_stage_that_died_after_regenerating_regenerates_the_same_key_again(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    """The first attempt regenerated key2 and died before the vault write (its value is lost):
    the next attempt regenerates key2 again, never the key the current version holds."""
    seeded, step = seed(stack, key_name="key1")
    target = storage.build(
        metadata.parse_tags(seeded.name, vault.current(seeded.name).tags).target,
        settings,
        hub_credential(settings),
        "connection-string",
    )
    _, current = vault.get(seeded.name, seeded.version)
    lost = target.issue(
        label=steps.issued_label(step.rotation_id), expires_on=datetime.now(UTC), current=current
    )
    assert lost.credential_id == "key2"
    between = stack.storage_keys()

    step = stage(step, vault, settings)
    after = stack.storage_keys()
    assert after["key1"] == between["key1"]
    assert after["key2"] != between["key2"]
    steps.verify_target(step, vault, settings)


# -- bad input: refused, nothing regenerated --------------------------------------------------------


def refused_by_plan(
    stack: LocalStack, vault: Vault, settings: Settings, step: StepInput, error: type[Exception], match: str
) -> Exception:
    before = {name: stack.storage_keys(name) for name in ("ordersstore01", "legacystore01", "archivestore01")}
    with pytest.raises(error, match=match) as refused:
        steps.plan(step, vault, settings)
    with pytest.raises(error, match=match):
        stage(step, vault, settings)
    assert {name: stack.storage_keys(name) for name in before} == before
    return refused.value


def test_a_value_holding_neither_key_is_refused(stack: LocalStack, vault: Vault, settings: Settings) -> None:
    seeded, step = seed(stack, key_name="key1")
    foreign = stack.storage_value("key1").replace(
        stack.storage_keys()["key1"], stack.storage_keys("archivestore01")["key1"]
    )
    written = stack.secret_client(VAULT).set_secret(
        seeded.name, foreign, tags=vault.current(seeded.name).tags
    )
    step = step_for(stack, seeded.name, str(written.properties.version))
    refused = refused_by_plan(stack, vault, settings, step, InvalidRequest, "holds neither key")
    assert_clean(refused, foreign, stack.storage_keys("archivestore01")["key1"])


def test_an_account_refusing_shared_key_is_refused_with_that_reason(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    _, step = seed(stack, account="legacystore01")
    refused_by_plan(stack, vault, settings, step, TargetError, "allowSharedKeyAccess false")


def test_a_hub_without_the_key_operator_role_is_refused_naming_it(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    _, step = seed(stack, account="archivestore01")
    refused_by_plan(
        stack, vault, settings, step, AuthenticationFailed, "Storage Account Key Operator Service Role"
    )


def test_an_account_that_does_not_exist_is_refused(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    seeded, step = seed(stack)
    tags = dict(vault.current(seeded.name).tags)
    tags[metadata.CREDENTIAL] = stack.storage_account_id().replace(STORAGE_ACCOUNT, "nosuchstore01")
    stack.secret_client(VAULT).update_secret_properties(seeded.name, seeded.version, tags=tags)
    # ARM answers 403, not 404, when the caller holds no role where the account would be.
    refused_by_plan(stack, vault, settings, step, AuthenticationFailed, "nosuchstore01.*does not exist")


def test_an_account_outside_the_allowed_subscriptions_is_refused(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    _, step = seed(stack)
    only_spoke2 = settings_for(stack, ROTATION_ALLOWED_SUBSCRIPTIONS=stack.subscription_of("spoke2-kv"))
    refused_by_plan(stack, vault, only_spoke2, step, InvalidRequest, "not on ROTATION_ALLOWED_SUBSCRIPTIONS")


# -- failures -----------------------------------------------------------------------------------------


def test_arm_throttling_is_transient_and_regenerates_nothing(
    stack: LocalStack, vault: Vault, settings: Settings
) -> None:
    assert stack.cloud is not None
    _, step = seed(stack)
    before = stack.storage_keys()
    # The SDK retries a 429 itself (after its Retry-After); past its attempts the step fails.
    stack.cloud.admin.inject_fault(
        kind="throttle", target=STORAGE_ACCOUNT, operation="regenerate_key", count=10
    )
    with pytest.raises(TransientError, match="regenerating key2"):
        stage(step, vault, settings)
    assert stack.storage_keys() == before
    stack.cloud.admin.clear_faults()
    # The orchestrator retries the step: it regenerates key2, once.
    step = stage(step, vault, settings)
    after = stack.storage_keys()
    assert (after["key1"], after["key2"] != before["key2"]) == (before["key1"], True)
    stack.cloud.admin.inject_fault(kind="throttle", target=STORAGE_ACCOUNT, operation="list_keys", count=10)
    with pytest.raises(TransientError, match="listing the keys"):
        steps.plan(step, vault, settings)


def test_a_key_the_endpoint_refuses_fails_verification_and_the_current_version_keeps_working(
    stack: LocalStack, vault: Vault, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    seeded, step = seed(stack)
    step = stage(step, vault, settings)
    # Someone regenerates the new key behind the hub's back before it is verified.
    staged = value_of(stack, seeded.name + "-pending", step.pending_version)
    stack.storage_keys()  # (the admin view is read-only: regenerate through ARM as the hub would)
    target = storage.build(
        metadata.parse_tags(seeded.name, vault.current(seeded.name).tags).target,
        settings,
        hub_credential(settings),
        "connection-string",
    )
    target.issue(
        label="by hand", expires_on=datetime.now(UTC), current=SecretValue(value_of(stack, seeded.name))
    )
    quick = settings_for(stack, ROTATION_STORAGE_VERIFY_TIMEOUT_SECONDS="2")
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(VerificationFailed, match="does not accept the new key") as failed,
    ):
        steps.verify_target(step, vault, quick)
    assert_clean(failed.value, staged, key_of(staged))

    undo = steps.withdraw_issued(step, vault, settings)
    assert (undo.changed, undo.detail) == (False, storage.IRREVERSIBLE)
    steps.discard_pending(step, vault)
    assert stack.current_value_logs_in(VAULT, seeded.name), "the current version still works"
    for key in stack.storage_keys().values():
        assert key not in caplog.text


def test_no_key_reaches_the_logs_or_the_step_results(
    stack: LocalStack, vault: Vault, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _, step = seed(stack)
    original = stack.storage_keys()
    with caplog.at_level(logging.DEBUG):
        plan = steps.plan(step, vault, settings)
        staged = steps.stage_pending(
            StageInput(step, STORAGE, 24, VALIDITY_DAYS, 0.0), vault, settings, now=datetime.now(UTC)
        )
        step = replace(step, pending_version=staged.pending_version)
        verified = steps.verify_target(step, vault, settings)
        promoted = steps.promote(PromoteInput(step, VALIDITY_DAYS), vault, now=datetime.now(UTC))
        retired = steps.retire_previous(step, vault, settings)
    results = repr((plan, staged, verified, promoted, retired))
    for key in {*original.values(), *stack.storage_keys().values()}:
        assert key not in caplog.text
        assert key not in results
    assert "key2" in caplog.text  # the key's name is logged, never its value
