"""How kvrotate proves itself to the hub: a function key from KVROTATE_FUNCTION_KEY (against a
host that checks function keys, as Azure does), and an Entra token from DefaultAzureCredential
for KVROTATE_SCOPE (here the local cloud's managed identity endpoint answers, as it would on an
Azure VM or in Cloud Shell)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import UNVERIFIED_APPROVER
from e2e_helpers import assert_consistent, quiet_expiry_scan, seed
from kvrotate_runner import kvrotate

from local.host.auth import load_or_create_keys
from local.stack import POSTGRESQL, LocalStack

OK, DENIED = 0, 5
# A scope the local cloud's Entra knows (ARM); a real hub's is its own app id URI.
KNOWN_SCOPE = "https://management.azure.com/.default"
UNKNOWN_SCOPE = "api://00000000-0000-0000-0000-00000000cafe/.default"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        Path(tmp_path_factory.mktemp("stack")),
        app_settings=UNVERIFIED_APPROVER,
        databases=(POSTGRESQL,),
        host_auth_keys=True,
    ) as running:
        quiet_expiry_scan(running)
        yield running


@pytest.fixture(scope="module")
def function_key(stack: LocalStack) -> str:
    assert stack.host is not None
    return load_or_create_keys(stack.host.data_dir).function_default


def token_requests(stack: LocalStack) -> int:
    """Tokens the local cloud's managed identity endpoint has issued so far."""
    assert stack.cloud is not None
    log = stack.cloud.log_file.read_text(errors="replace")
    return sum(1 for line in log.splitlines() if " /msi/token 200 " in line)


def test_without_the_function_key_the_hub_refuses(stack: LocalStack) -> None:
    kvrotate(stack.hub_url, "list").assert_error(DENIED, "function key", "(HTTP 401)")
    kvrotate(stack.hub_url, "list", env={"KVROTATE_FUNCTION_KEY": "not-the-key"}).assert_error(
        DENIED, "(HTTP 401)"
    )


def test_the_function_key_from_the_environment_lets_every_call_through(
    stack: LocalStack, function_key: str
) -> None:
    seeded = seed(stack, prefix="cli-auth")
    key = {"KVROTATE_FUNCTION_KEY": function_key}

    view = kvrotate(stack.hub_url, "rotate", seeded.vault, seeded.name, "--wait", "--json", env=key).json()

    assert view["runtimeStatus"] == "Completed"
    assert view["output"]["result"] == "rotated"
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == view["output"]["new_version"]
    assert_consistent(stack, seeded)
    listed = kvrotate(stack.hub_url, "list", "--vault", seeded.vault, "--json", env=key).json()
    assert view["id"] in {r["id"] for r in listed["rotations"]}


def test_an_entra_token_is_obtained_for_the_scope(stack: LocalStack, function_key: str) -> None:
    before = token_requests(stack)

    run = kvrotate(
        stack.hub_url,
        "list",
        "--json",
        env={"KVROTATE_FUNCTION_KEY": function_key, "KVROTATE_SCOPE": KNOWN_SCOPE},
    )

    assert run.code == OK, run
    assert "rotations" in run.json()
    # DefaultAzureCredential found the managed identity endpoint and got a token from it.
    assert token_requests(stack) > before


def test_no_token_for_the_scope_is_one_error_line(stack: LocalStack, function_key: str) -> None:
    before = token_requests(stack)

    run = kvrotate(
        stack.hub_url,
        "list",
        "--scope",
        UNKNOWN_SCOPE,
        env={"KVROTATE_FUNCTION_KEY": function_key},
    )

    run.assert_error(DENIED, f"no Entra token for {UNKNOWN_SCOPE}")
    assert token_requests(stack) == before
