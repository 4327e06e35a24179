"""Event parsing: tolerant of the documented quirks, trusting nothing the payload says."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rotation.errors import InvalidRequest
from rotation.events import Ignored, parse_event
from rotation.settings import Settings

SUB = "11111111-1111-1111-1111-111111111111"
OTHER_SUB = "22222222-2222-2222-2222-222222222222"
VERSION = "0123456789abcdef0123456789abcdef"
SETTINGS = Settings.from_environ({"ROTATION_ALLOWED_SUBSCRIPTIONS": SUB})


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "e1",
        "topic": f"/subscriptions/{SUB}/resourceGroups/rg-spoke/providers/Microsoft.KeyVault/vaults/spoke1-kv",
        "subject": "db-password",
        "eventType": "Microsoft.KeyVault.SecretNearExpiry",
        "eventTime": "2026-11-25T10:00:00Z",
        "data": {
            "Id": f"https://spoke1-kv.vault.azure.net/secrets/db-password/{VERSION}",
            "VaultName": "spoke1-kv",
            "ObjectType": "Secret",
            "ObjectName": "db-password",
            "Version": VERSION,
            "NBF": None,
            "EXP": 1767225600,
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    }
    merged = copy.deepcopy(base)
    data = overrides.pop("data", None)
    merged.update(overrides)
    if data is not None:
        merged["data"].update(data)
    return merged


def test_a_documented_event_names_the_secret_version() -> None:
    parsed = parse_event(event(), SETTINGS)
    assert parsed.secret.vault_name == "spoke1-kv"
    assert parsed.secret.secret_name == "db-password"
    assert parsed.secret.subscription_id == SUB
    assert parsed.version == VERSION
    assert parsed.event_type == "SecretNearExpiry"
    assert parsed.expires_at == 1767225600.0


def test_the_docs_sample_quirks_are_tolerated() -> None:
    # The documentation's own sample: string numbers, a key with a trailing space, a padded value.
    quirky = event()
    quirky["data"] = {
        "Id": f"https://spoke1-kv.vault.azure.net/secrets/db-password/{VERSION}",
        "VaultName": "spoke1-kv",
        "ObjectType": "Secret",
        "ObjectName ": "db-password",
        "Version": f" {VERSION}",
        "NBF": "1559081980",
        "EXP": "1559081980",
    }
    parsed = parse_event(quirky, SETTINGS)
    assert parsed.version == VERSION
    assert parsed.expires_at == 1559081980.0


def test_the_cloudevents_schema_is_understood() -> None:
    cloud = {
        "id": "c1",
        "source": f"/subscriptions/{SUB}/resourceGroups/rg-spoke/providers/Microsoft.KeyVault/vaults/spoke1-kv",
        "subject": "db-password",
        "type": "Microsoft.KeyVault.SecretExpired",
        "specversion": "1.0",
        "data": {"ObjectType": "Secret", "ObjectName": "db-password", "Version": VERSION},
    }
    parsed = parse_event(cloud, SETTINGS)
    assert parsed.event_type == "SecretExpired"
    assert parsed.expires_at is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"eventType": "Microsoft.KeyVault.SecretNewVersionCreated"},
        {"eventType": "Microsoft.KeyVault.KeyNearExpiry"},
        {"data": {"ObjectType": "Key"}},
        {"subject": "db-password-pending", "data": {"ObjectName": "db-password-pending", "Id": None}},
    ],
)
def test_events_the_hub_does_not_act_on_are_ignored(overrides: dict[str, Any]) -> None:
    with pytest.raises(Ignored):
        parse_event(event(**overrides), SETTINGS)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            {
                "topic": f"/subscriptions/{OTHER_SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/spoke1-kv"
            },
            "allowlist",
        ),
        (
            {"topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"},
            "ARM id",
        ),
        ({"topic": None}, "ARM id"),
        ({"data": {"Id": f"https://evil.example.com/secrets/db-password/{VERSION}"}}, "points at"),
        ({"data": {"Id": f"https://spoke2-kv.vault.azure.net/secrets/db-password/{VERSION}"}}, "points at"),
        ({"data": {"Id": f"http://spoke1-kv.vault.azure.net/secrets/db-password/{VERSION}"}}, "points at"),
        ({"data": {"Id": f"https://spoke1-kv.vault.azure.net/secrets/other/{VERSION}"}}, "same secret"),
        ({"data": {"VaultName": "spoke2-kv"}}, "VaultName"),
        ({"subject": "other-secret"}, "disagree"),
        ({"subject": "bad name!", "data": {"ObjectName": "bad name!"}}, "not a valid secret name"),
        ({"data": {"Version": "not-a-version"}}, "version"),
        ({"data": {"Version": 42}}, "version"),
        ({"data": {"ObjectName": ["a"]}, "subject": ""}, "valid secret name"),
        (
            {"topic": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/x"},
            "Key Vault name",
        ),
    ],
)
def test_malformed_or_hostile_events_are_refused_with_a_reason(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_event(event(**overrides), SETTINGS)
    assert says in str(raised.value)


def test_an_event_without_data_is_refused() -> None:
    broken = event()
    broken["data"] = "not an object"
    with pytest.raises(InvalidRequest, match="no data object"):
        parse_event(broken, SETTINGS)


def test_an_empty_allowlist_trusts_no_subscription() -> None:
    with pytest.raises(InvalidRequest, match="allowlist"):
        parse_event(event(), Settings.from_environ({}))
