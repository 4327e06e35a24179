"""An Entra application's client secret rotated end to end: the whole stack (local host running
the app with the real Durable Functions SDK; the local cloud's Key Vault, Event Grid, App Service,
Microsoft Graph and Entra token endpoint through the real Azure SDK clients), driven by a vault
event or the HTTP API as users drive it.

What a user would see is asserted: the application's credentials (the local cloud's admin view:
key ids and labels, never a secret), which value the vault serves and whether Entra accepts it
(azure-identity's ClientSecretCredential, afresh), the consuming site's health, and the
rotation's status. A failure is injected at each step; the rotation ends Failed with a status
that names it, the undo removes what the rotation added, and a rerun rotates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from e2e_helpers import (
    approve,
    assert_consistent,
    assert_no_value_leaked,
    enabled_pending,
    rerun,
    start_rotation,
    value_of,
    versions_of,
)
from entra_helpers import (
    LASTING,
    VAULT,
    advance_host_clock,
    clean_cloud,
    credential_of_current,
    current_value,
    entra_stack,
    keys,
    labels,
    seed,
)

from local import principals
from local.principals import APPROVER
from local.scenario import consumer_health, start_consumer, wait_for
from local.stack import APPLICATION_SECRET, SP_CONSUMER_SITE, LocalStack
from rotation import metadata
from rotation.steps import issued_label


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from entra_stack(tmp_path_factory)


@pytest.fixture(autouse=True)
def _clean(stack: LocalStack) -> Iterator[None]:
    yield from clean_cloud(stack)


def assert_failed_at(ended: dict[str, object], step: str, error_class: str) -> dict[str, str]:
    assert ended["runtimeStatus"] == "Failed", ended
    status = ended["status"]
    assert isinstance(status, dict)
    assert status["failed"]["step"] == step, status["failed"]
    assert status["failed"]["class"] == error_class, status["failed"]
    return {u["undo"]: u["detail"] for u in status["compensation"]}


# -- the happy paths --------------------------------------------------------------------------------


def test_an_event_rotates_the_secret_restarts_the_consumer_and_retires_the_previous_after_the_overlap(
    stack: LocalStack,
) -> None:
    assert stack.cloud is not None
    site_id = str(stack.info["sites"][SP_CONSUMER_SITE]["arm_id"])
    seeded = seed(
        stack,
        name=APPLICATION_SECRET,
        overlap_hours=1,
        record_credential=True,
        tags={metadata.CONSUMERS: site_id},
    )
    old = current_value(stack, seeded)
    [old_id] = keys(stack)
    assert start_consumer(stack, SP_CONSUMER_SITE) == {"ok": True, "version": seeded.version}

    stack.cloud.admin.emit_event(vault=VAULT, secret=seeded.name, event_type="SecretNearExpiry")
    rotation_id = stack.rotation_id(seeded)
    waiting = wait_for(stack, rotation_id, step="retire")

    # Promoted, the consumer restarted onto it; the previous secret still works for the overlap.
    status = waiting["status"]
    assert status["stepsDone"] == ["plan", "stage", "verify", "promote", "cleanup", "restart"]
    new_version = status["newVersion"]
    new = current_value(stack, seeded)
    new_id = credential_of_current(stack, seeded)
    assert labels(stack) == {old_id: "initial", new_id: issued_label(rotation_id)}
    assert stack.app_accepts(seeded.login, new)
    assert stack.app_accepts(seeded.login, old), "the previous secret is valid until the overlap is over"
    assert consumer_health(stack, SP_CONSUMER_SITE) == {"ok": True, "version": new_version}
    assert "retireAt" in status
    assert enabled_pending(stack, seeded) == []

    advance_host_clock(stack, 3600 + 60)
    done = wait_for(stack, rotation_id)

    assert done["runtimeStatus"] == "Completed", done["status"]
    assert done["output"]["steps"] == ["plan", "stage", "verify", "promote", "cleanup", "restart", "retire"]
    assert old_id in done["status"]["retired"]
    assert keys(stack) == {new_id}
    assert not stack.app_accepts(seeded.login, old)
    assert consumer_health(stack, SP_CONSUMER_SITE) == {"ok": True, "version": new_version}
    assert sorted(versions_of(stack, seeded)) == sorted([seeded.version, new_version])
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_an_approved_rotation_without_overlap_retires_at_once(stack: LocalStack) -> None:
    seeded = seed(stack, record_credential=True, tags={metadata.APPROVAL: "required"})
    old = current_value(stack, seeded)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")
    approve(stack, rotation_id)
    done = wait_for(stack, rotation_id)

    assert done["runtimeStatus"] == "Completed", done["status"]
    assert done["output"]["steps"] == ["plan", "stage", "approval", "verify", "promote", "cleanup", "retire"]
    assert done["output"]["decision"]["approver"] == principals.name(APPROVER)
    assert done["output"]["decision"]["verified"] is True
    assert keys(stack) == {credential_of_current(stack, seeded)}
    assert not stack.app_accepts(seeded.login, old)
    assert_consistent(stack, seeded)


def test_a_secret_the_hub_did_not_issue_is_named_not_removed(stack: LocalStack) -> None:
    seeded = seed(stack)  # no rotation-credential-id: the hub cannot know which credential it is
    old = current_value(stack, seeded)
    [old_id] = keys(stack)
    done = wait_for(stack, start_rotation(stack, seeded))

    assert done["runtimeStatus"] == "Completed", done["status"]
    assert done["status"]["notRemoved"] == [f"{old_id} (initial)"]
    assert "not issued by this hub" in done["status"]["retired"]
    assert keys(stack) == {old_id, credential_of_current(stack, seeded)}
    assert stack.app_accepts(seeded.login, old)
    assert_consistent(stack, seeded)


def test_a_slow_propagation_is_waited_for(stack: LocalStack) -> None:
    assert stack.cloud is not None
    stack.cloud.admin.set_entra(propagation_delay_seconds=3)
    seeded = seed(stack, record_credential=True)
    started = time.monotonic()
    done = wait_for(stack, start_rotation(stack, seeded))

    assert done["runtimeStatus"] == "Completed", done["status"]
    assert time.monotonic() - started >= 3, "the new secret was refused for 3 s: verify waited"
    assert keys(stack) == {credential_of_current(stack, seeded)}
    assert_consistent(stack, seeded)


# -- a failure at each step, then a rerun -------------------------------------------------------------


def test_stage_fails_while_graph_throttles_and_a_rerun_rotates(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    before = keys(stack)
    stack.cloud.admin.inject_fault(kind="throttle", target="graph", operation="add_password", count=LASTING)
    failed = wait_for(stack, start_rotation(stack, seeded))
    stack.cloud.admin.clear_faults()

    undos = assert_failed_at(failed, "stage", "TransientError")
    assert "429" in failed["status"]["failed"]["message"]
    assert undos["withdraw_credential"] == "no credential of this rotation is left"
    assert keys(stack) == before
    assert versions_of(stack, seeded) == [seeded.version]

    answer, ended = rerun(stack, failed["id"])
    assert answer["mode"] == "restart"
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert keys(stack) == {credential_of_current(stack, seeded)}
    assert_consistent(stack, seeded)


def test_stage_refused_by_a_lifetime_policy_names_it_and_leaves_nothing(stack: LocalStack) -> None:
    seeded = seed(stack, application="policy-bound-client")
    before = keys(stack, "policy-bound-client")
    failed = wait_for(stack, start_rotation(stack, seeded))

    assert_failed_at(failed, "stage", "TargetError")
    message = failed["status"]["failed"]["message"]
    assert "CredentialInvalidLifetimeAsPerAppPolicy" in message
    assert "3f5a7c9e-1b2d-4c6e-8a0f-4d6f8b0c2e4a" in message
    assert "retrying" not in failed["status"]
    assert keys(stack, "policy-bound-client") == before
    assert versions_of(stack, seeded) == [seeded.version]


def test_verify_fails_when_the_secret_does_not_propagate_in_time_and_the_undo_removes_it(
    stack: LocalStack,
) -> None:
    assert stack.cloud is not None
    stack.cloud.admin.set_entra(propagation_delay_seconds=60)
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    [old_id] = keys(stack)
    failed = wait_for(stack, start_rotation(stack, seeded))

    undos = assert_failed_at(failed, "verify", "VerificationFailed")
    assert "AADSTS7000215" in failed["status"]["failed"]["message"]
    assert undos["withdraw_credential"].startswith("removed the credential(s) this rotation issued")
    assert keys(stack) == {old_id}
    assert versions_of(stack, seeded) == [seeded.version]
    assert stack.app_accepts(seeded.login, old)
    assert enabled_pending(stack, seeded) == []

    stack.cloud.admin.set_entra(propagation_delay_seconds=0)
    _, ended = rerun(stack, failed["id"], {"mode": "restart"})
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert keys(stack) == {credential_of_current(stack, seeded)}
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_promote_fails_while_key_vault_refuses_writes_and_the_new_credential_is_withdrawn(
    stack: LocalStack,
) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True, tags={metadata.APPROVAL: "required"})
    [old_id] = keys(stack)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="approval")  # staged: the next write is promote's
    assert len(keys(stack)) == 2
    stack.cloud.admin.inject_fault(kind="throttle", target=VAULT, operation="set_secret", count=LASTING)
    approve(stack, rotation_id)
    failed = wait_for(stack, rotation_id)
    stack.cloud.admin.clear_faults()

    undos = assert_failed_at(failed, "promote", "TransientError")
    assert undos["withdraw_credential"].startswith("removed")
    assert keys(stack) == {old_id}
    assert versions_of(stack, seeded) == [seeded.version]
    assert_consistent(stack, seeded)

    _, ended = rerun(stack, rotation_id, approve_again=True)
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert keys(stack) == {credential_of_current(stack, seeded)}


def test_a_consumer_restart_fails_after_promotion_and_nothing_is_withdrawn(stack: LocalStack) -> None:
    assert stack.cloud is not None
    site_id = str(stack.info["sites"][SP_CONSUMER_SITE]["arm_id"])
    seeded = seed(stack, name=APPLICATION_SECRET, record_credential=True, tags={metadata.CONSUMERS: site_id})
    old = current_value(stack, seeded)
    assert start_consumer(stack, SP_CONSUMER_SITE)["ok"]
    stack.cloud.admin.inject_fault(
        kind="throttle", target=SP_CONSUMER_SITE, operation="restart", count=LASTING
    )
    failed = wait_for(stack, start_rotation(stack, seeded))
    stack.cloud.admin.clear_faults()

    undos = assert_failed_at(failed, "restart", "TransientError")
    assert failed["status"]["promoted"] is True
    assert set(undos) == {"discard_pending"}, "past promotion the new credential stays"
    new_id = credential_of_current(stack, seeded)
    assert new_id in keys(stack)
    assert stack.app_accepts(seeded.login, old), "not retired: the consumer still uses it"
    # The site was not restarted: it still runs on the previous secret, which still works.
    assert consumer_health(stack, SP_CONSUMER_SITE) == {"ok": True, "version": seeded.version}

    answer, ended = rerun(stack, failed["id"])
    assert answer["mode"] == "restart"
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert ended["status"]["stepsDone"] == ["plan", "restart", "cleanup", "retire"]
    assert consumer_health(stack, SP_CONSUMER_SITE) == {"ok": True, "version": ended["output"]["new_version"]}
    assert keys(stack) == {new_id}
    assert not stack.app_accepts(seeded.login, old)


def test_retire_fails_while_graph_refuses_removals_and_a_rerun_retires(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, record_credential=True)
    old = current_value(stack, seeded)
    [old_id] = keys(stack)
    stack.cloud.admin.inject_fault(
        kind="throttle", target="graph", operation="remove_password", count=LASTING
    )
    failed = wait_for(stack, start_rotation(stack, seeded))
    stack.cloud.admin.clear_faults()

    assert_failed_at(failed, "retire", "TransientError")
    assert failed["status"]["promoted"] is True
    assert failed["status"]["compensation"] == []
    new_id = credential_of_current(stack, seeded)
    assert keys(stack) == {old_id, new_id}
    assert stack.current_value_logs_in(seeded.vault, seeded.name)

    answer, ended = rerun(stack, failed["id"])
    # Nothing was undone, but the history holds the overlap's and the retries' durable timers,
    # which Azure Storage's rewind does not replay: the rotation starts again, and its plan finds
    # the new version promoted, so only the cleanup and the retirement run.
    assert answer["mode"] == "restart"
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    assert ended["status"]["stepsDone"] == ["plan", "cleanup", "retire"]
    assert keys(stack) == {new_id}
    assert not stack.app_accepts(seeded.login, old)
    assert value_of(stack, seeded.vault, seeded.name) != old
