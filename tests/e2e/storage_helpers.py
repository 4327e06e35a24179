"""What the end-to-end scenarios of the storage-account-key target share: the stack's settings,
seeding a secret that holds one of ordersstore01's keys, and what the account holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import assert_consistent, enabled_pending, module_stack, unique, value_of, versions_of

from local.stack import STORAGE_ACCOUNT, LocalStack, Seeded
from rotation import metadata
from rotation.targets import storage
from rotation.targets.base import SecretValue

VAULT = "spoke1-kv"
# Two attempts per step, half a second apart; a new key must be accepted within 3 s (Azurite
# accepts it as soon as regenerateKey answers).
SETTINGS = {
    "ROTATION_RETRY_MAX_ATTEMPTS": "2",
    "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5",
    "ROTATION_CONSUMER_READY_TIMEOUT_SECONDS": "30",
    "ROTATION_STORAGE_VERIFY_TIMEOUT_SECONDS": "3",
}


def storage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A module's stack (the module's ``stack`` fixture yields from it)."""
    yield from module_stack(tmp_path_factory, SETTINGS)


def clean_cloud(stack: LocalStack) -> Iterator[None]:
    """No fault is left for the next test, pass or fail; the host runs."""
    assert stack.cloud is not None
    assert stack.host is not None
    stack.cloud.admin.clear_faults()
    try:
        yield
    finally:
        stack.cloud.admin.clear_faults()
        if not stack.host.running:
            stack.host.start()


def seed(stack: LocalStack, *, name: str | None = None, **kwargs: Any) -> Seeded:
    """ordersstore01's key1 (unless ``key_name`` says otherwise) as it is now, stored and tagged."""
    return stack.seed_storage_secret(VAULT, name or unique("store-key"), **kwargs)


def keys(stack: LocalStack) -> dict[str, str]:
    return stack.storage_keys(STORAGE_ACCOUNT)


def key_held(stack: LocalStack, seeded: Seeded, version: str | None = None) -> str:
    """The key a version of the secret (the current one by default) holds."""
    tags = stack.secret_client(seeded.vault).get_secret(seeded.name).properties.tags or {}
    value_format = metadata.parse_tags(seeded.name, tags).value_format
    value = value_of(stack, seeded.vault, seeded.name, version)
    return storage.key_in(SecretValue(value), value_format, STORAGE_ACCOUNT)


def key_name_of_current(stack: LocalStack, seeded: Seeded) -> str:
    """Which key the current version records (``rotation-credential-id``)."""
    tags = stack.secret_client(seeded.vault).get_secret(seeded.name).properties.tags or {}
    return tags[metadata.CREDENTIAL_ID]


def assert_rotated_once(
    stack: LocalStack, seeded: Seeded, before: dict[str, str], ended: dict[str, Any]
) -> None:
    """One new version, holding key2 regenerated (the seeded version held key1, untouched and
    still working); no pending value is left."""
    assert ended["runtimeStatus"] == "Completed", ended["status"]
    new_version = ended["output"]["new_version"]
    assert sorted(versions_of(stack, seeded)) == sorted([seeded.version, new_version])
    now = keys(stack)
    assert now["key1"] == before["key1"], "the key the current version held was never regenerated"
    assert now["key2"] != before["key2"]
    assert key_name_of_current(stack, seeded) == "key2"
    assert key_held(stack, seeded) == now["key2"]
    assert stack.key_works(STORAGE_ACCOUNT, before["key1"]), "the previous key stays valid"
    assert not stack.key_works(STORAGE_ACCOUNT, before["key2"])
    assert enabled_pending(stack, seeded) == []
    assert_consistent(stack, seeded)
