"""A throttled call's Retry-After reaches the orchestrator: the real Azure SDK clients against the
local cloud, which answers 429 with the Retry-After an injected fault names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.keyvault.secrets import SecretClient

from local.stack import LocalStack
from orchestrators.saga import StepError
from rotation.errors import TransientError, retry_after_of
from rotation.vault import Vault

VAULT = "spoke1-kv"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), with_host=False, databases=()) as running:
        yield running


def test_a_throttled_key_vault_read_carries_the_retry_after_to_the_step(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeder = stack.secret_client(VAULT)
    seeder.set_secret("throttled-read", "x-value-not-shown")
    # The SDK's own retries honour Retry-After too; without them the step sees the 429 itself.
    client = SecretClient(str(stack.info["vaults"][VAULT]["url"]), stack.credential(), retry_total=0)
    stack.cloud.admin.inject_fault(
        kind="throttle", target=VAULT, operation="get_secret", count=1, retry_after_seconds=7
    )
    with pytest.raises(TransientError) as throttled:
        Vault(client, vault_name=VAULT).current("throttled-read")
    assert "429" in str(throttled.value)
    assert throttled.value.retry_after_seconds == 7
    assert retry_after_of(str(throttled.value)) == 7
    step = StepError.from_exception("plan", Exception(str(throttled.value)))
    assert (step.transient, step.retry_after_seconds) == (True, 7)
    assert "x-value-not-shown" not in str(throttled.value)
