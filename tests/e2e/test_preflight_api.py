"""``POST /api/preflight`` through the local host running the app, as an operator (or the CLI
written against its answer) calls it: the exact shape of the answer, a healthy vault, a broken
secret named with its failing check, nothing changed, and the errors of the API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import HostLog, hub_request, instance_ids, quiet_expiry_scan, seed, versions_of

from local.stack import LocalStack, Seeded
from rotation import metadata

HEALTHY_VAULT = "spoke2-kv"  # only healthy secrets are seeded here
VAULT = "spoke1-kv"
LASTING = 1000


# A near-expiry window of one day: the secrets seeded here (ten days by default) are not due, so
# the sweep run below starts no rotation; they are preflighted, as their window opens within 14.
NEAR_EXPIRY_DAYS = 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        Path(tmp_path_factory.mktemp("stack")),
        databases=(),
        app_settings={"ROTATION_NEAR_EXPIRY_DAYS": str(NEAR_EXPIRY_DAYS)},
    ) as running:
        quiet_expiry_scan(running)
        yield running


@pytest.fixture(autouse=True)
def no_faults(stack: LocalStack) -> Iterator[None]:
    assert stack.cloud is not None
    yield
    stack.cloud.admin.clear_faults()


def preflight(stack: LocalStack, body: object = None, *, raw: bytes | None = None) -> tuple[int, Any]:
    status, _, answer = hub_request(stack, "POST", "/api/preflight", body, raw=raw)
    return status, answer


def assert_shape(answer: Any) -> None:
    """The answer's exact shape, which the CLI is written against."""
    assert set(answer) == {"vault", "ok", "secrets"}
    assert isinstance(answer["vault"], str)
    assert isinstance(answer["ok"], bool)
    for secret in answer["secrets"]:
        assert set(secret) == {"secret", "target", "ok", "checks"}
        assert secret["target"] is None or isinstance(secret["target"], str)
        assert [c["name"] for c in secret["checks"]] == ["tags", "vault-access", "target", "consumers"]
        for check in secret["checks"]:
            assert set(check) == {"name", "ok", "detail"}
            assert isinstance(check["ok"], bool)
            assert isinstance(check["detail"], str)
            assert check["detail"]
        assert secret["ok"] == all(c["ok"] for c in secret["checks"])
    assert answer["ok"] == all(s["ok"] for s in answer["secrets"])


def test_a_healthy_vault_answers_all_ok_and_nothing_changes(stack: LocalStack) -> None:
    seeded = [
        seed(stack, HEALTHY_VAULT, prefix="pf"),
        seed(
            stack,
            HEALTHY_VAULT,
            prefix="pf",
            tags={metadata.CONSUMERS: stack.info["sites"]["consumer-app"]["arm_id"]},
        ),
        stack.seed_storage_secret(HEALTHY_VAULT, "pf-store"),
    ]
    before = {s.name: versions_of(stack, s) for s in seeded}
    names_before = {p.name for p in stack.secret_client(HEALTHY_VAULT).list_properties_of_secrets()}

    status, answer = preflight(stack, {"vault": HEALTHY_VAULT})

    assert status == 200, answer
    assert_shape(answer)
    assert answer["vault"] == HEALTHY_VAULT
    assert answer["ok"] is True
    assert {s["secret"] for s in answer["secrets"]} == {s.name for s in seeded}
    assert {s["secret"]: s["target"] for s in answer["secrets"]} == {s.name: s.kind for s in seeded}
    assert {s.name: versions_of(stack, s) for s in seeded} == before
    assert {p.name for p in stack.secret_client(HEALTHY_VAULT).list_properties_of_secrets()} == names_before
    for s in seeded:
        value = stack.secret_client(HEALTHY_VAULT).get_secret(s.name).value or ""
        assert value not in json.dumps(answer)


def test_one_broken_secret_by_vault_arm_id_names_its_failing_check(stack: LocalStack) -> None:
    broken: Seeded = seed(stack, VAULT, prefix="pf", tags={metadata.APPROVAL: "maybe"})

    status, answer = preflight(stack, {"vault": stack.vault_arm_id(VAULT), "secret": broken.name})

    assert status == 200, answer
    assert_shape(answer)
    assert answer["vault"] == VAULT
    assert answer["ok"] is False
    [secret] = answer["secrets"]
    assert secret["secret"] == broken.name
    assert secret["target"] == broken.kind
    failing = {c["name"]: c["detail"] for c in secret["checks"] if not c["ok"]}
    assert set(failing) == {"tags", "target", "consumers"}
    assert "rotation-approval must be 'required' or absent, got 'maybe'" in failing["tags"]
    assert failing["target"] == "not checked: the tags do not parse"
    assert versions_of(stack, broken) == [broken.version]


def test_companions_are_left_out_of_a_whole_vault_run(stack: LocalStack) -> None:
    """Companions are never preflighted as secrets of their own, even when they carry the tags."""
    broken = seed(stack, VAULT, prefix="pf")
    client = stack.secret_client(VAULT)
    client.set_secret(
        f"{broken.name}-pending",
        "pending",
        tags={**(client.get_secret(broken.name).properties.tags or {}), metadata.PENDING_OF: broken.name},
    )

    status, answer = preflight(stack, {"vault": VAULT})

    assert status == 200, answer
    assert_shape(answer)
    names = {s["secret"] for s in answer["secrets"]}
    assert broken.name in names
    assert f"{broken.name}-pending" not in names


@pytest.mark.parametrize(
    ("body", "raw", "says"),
    [
        (None, b"{not json", "not valid JSON"),
        ([], None, "must be a JSON object"),
        ({}, None, "'vault' is required"),
        ({"vault": 7}, None, "'vault' must be a string"),
        ({"vault": "spoke1-kv", "secret": "no_such name!"}, None, "is not a valid secret name"),
        ({"vault": "other-kv"}, None, "is not configured in ROTATION_SWEEP_VAULTS"),
        (
            {"vault": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Web/sites/app"},
            None,
            "not a Key Vault ARM id",
        ),
    ],
)
def test_bad_input_is_400(stack: LocalStack, body: object, raw: bytes | None, says: str) -> None:
    status, answer = preflight(stack, body, raw=raw)
    assert status == 400, answer
    assert says in answer["error"]


def test_a_vault_outside_the_allowlist_is_403(stack: LocalStack) -> None:
    elsewhere = (
        "/subscriptions/0badc0de-0000-4000-8000-000000000000/resourceGroups/rg"
        "/providers/Microsoft.KeyVault/vaults/elsewhere-kv"
    )
    status, answer = preflight(stack, {"vault": elsewhere})
    assert status == 403, answer
    assert "0badc0de-0000-4000-8000-000000000000" in answer["error"]


def test_an_unknown_secret_is_404(stack: LocalStack) -> None:
    status, answer = preflight(stack, {"vault": VAULT, "secret": "pf-never-written"})
    assert status == 404, answer
    assert "pf-never-written" in answer["error"]


def test_key_vault_not_answering_is_503(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, VAULT, prefix="pf")
    stack.cloud.admin.inject_fault(kind="unavailable", target=VAULT, operation="get_secret", count=LASTING)
    started = time.monotonic()

    status, headers, answer = hub_request(
        stack, "POST", "/api/preflight", {"vault": VAULT, "secret": seeded.name}
    )

    assert status == 503, answer
    assert "503" in answer["error"]
    assert headers.get("Retry-After") == "10"
    assert time.monotonic() - started < 60


def test_the_daily_sweep_warns_of_a_secret_whose_window_opens_within_14_days(stack: LocalStack) -> None:
    soon = seed(
        stack,
        VAULT,
        prefix="pf",
        expires_in=timedelta(days=NEAR_EXPIRY_DAYS + 7),
        tags={metadata.APPROVAL: "perhaps"},
    )
    later = seed(
        stack,
        VAULT,
        prefix="pf",
        expires_in=timedelta(days=NEAR_EXPIRY_DAYS + 20),
        tags={metadata.APPROVAL: "perhaps"},
    )
    password = stack.secret_client(VAULT).get_secret(soon.name).value or ""
    before = instance_ids(stack)
    log = HostLog(stack)

    status, _, body = hub_request(stack, "POST", "/admin/functions/sweep", {})

    assert status == 202, body
    text = log.wait_for("secret(s) would not rotate")  # the summary, after every secret's warning
    [warning] = [line for line in text.splitlines() if f"{VAULT}/{soon.name} would not rotate" in line]
    assert "WARNING" in warning
    assert "tags: rotation-approval must be 'required' or absent, got 'perhaps'" in warning
    assert "target: not checked: the tags do not parse" in warning
    summary = [line for line in text.splitlines() if "secret(s) would not rotate" in line]
    assert summary
    assert f"{VAULT}/{soon.name}" in summary[-1]
    assert later.name not in text, "its window opens in 20 days, beyond the 14 days ahead"
    assert password not in text
    assert instance_ids(stack) == before, "the sweep started no rotation"
    assert versions_of(stack, soon) == [soon.version]
    # Those who run the hub are told too: one PreflightFailed CloudEvent on the notification
    # topic for the broken secret, with the failing checks' reasons and never its value.
    told = [
        e
        for e in wait_for_topic(stack, soon.name)
        if e["type"] == "KeyVaultRotationHub.PreflightFailed" and e["data"]["vault"] == VAULT
    ]
    assert [e["data"]["secret"] for e in told] == [soon.name]
    assert "rotation-approval must be 'required' or absent" in told[0]["data"]["detail"]
    assert told[0]["subject"].endswith(f"/secrets/{soon.name}")
    assert not [e for e in stack.topic_events() if e["data"].get("secret") == later.name]
    assert password not in json.dumps(stack.topic_events())


def wait_for_topic(stack: LocalStack, secret: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The topic's events about ``secret``, once there is one (the sweep notifies after its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        about = [e for e in stack.topic_events() if e["data"].get("secret") == secret]
        if about:
            return about
        time.sleep(0.2)
    raise AssertionError(f"no notification about {secret} on the topic within {timeout:g} s")
