"""Records crossing the durable boundary: round trips, and clear errors for malformed payloads."""

from __future__ import annotations

import pytest

from rotation.errors import InvalidRequest
from rotation.model import RotationPolicy, RotationRequest, SecretRef, StepInput, VaultId

SUB = "11111111-1111-1111-1111-111111111111"
VERSION = "0123456789abcdef0123456789abcdef"


def request() -> RotationRequest:
    return RotationRequest(
        secret=SecretRef(SUB, "Spoke1-KV", "db-password"),
        version=VERSION.upper(),
        trigger="manual",
        policy=RotationPolicy(5, 5.0, 72.0, 300.0),
    )


def test_a_request_survives_the_round_trip_through_a_dict() -> None:
    original = request()
    assert RotationRequest.from_dict(original.to_dict()) == original
    assert original.secret.vault_name == "spoke1-kv"
    assert original.version == VERSION


def test_the_rotation_id_is_one_per_secret_version() -> None:
    secret = SecretRef(SUB, "spoke1-kv", "DB-Password")
    assert secret.rotation_id(VERSION) == f"rotate_spoke1-kv_db-password_{VERSION}"
    assert secret.rotation_id(VERSION).startswith(secret.rotation_id_prefix())
    assert secret.pending_name == "DB-Password-pending"


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda d: d.pop("secret"), "RotationRequest.secret is missing"),
        (lambda d: d.update(version=7), "RotationRequest.version must be of type str"),
        (lambda d: d["policy"].update(retry_max_attempts="5"), "retry_max_attempts"),
        (lambda d: d["secret"].update(vault_name="a_b"), "not a valid Key Vault name"),
        (lambda d: d["secret"].update(subscription_id="nope"), "not a subscription id"),
        (lambda d: d.update(version="xyz"), "not a Key Vault secret version"),
    ],
)
def test_malformed_payloads_are_refused_with_the_field_named(mutate, says: str) -> None:  # type: ignore[no-untyped-def]
    data = request().to_dict()
    mutate(data)
    with pytest.raises(InvalidRequest, match=says):
        RotationRequest.from_dict(data)


def test_optional_fields_default() -> None:
    step = StepInput.from_dict(
        {
            "rotation_id": "r",
            "secret": {"subscription_id": SUB, "vault_name": "kv1", "secret_name": "s"},
            "version": VERSION,
        }
    )
    assert step.pending_version is None


def test_vault_ids_are_parsed_and_printed() -> None:
    arm = f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.KeyVault/vaults/spoke1-kv"
    vault = VaultId.parse(arm)
    assert (vault.subscription_id, vault.resource_group, vault.vault_name) == (SUB, "rg-1", "spoke1-kv")
    assert vault.arm_id == arm
    with pytest.raises(InvalidRequest):
        VaultId.parse("/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv")
