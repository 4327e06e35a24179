"""storage-account-key: its tags, refused before any call to Azure, and its value format.

The calls to ARM and the blob endpoint are tested against the local cloud and Azurite
(tests/integration/test_storage_target.py); here only what needs no service.
"""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient

from rotation.errors import InvalidRequest
from rotation.metadata import parse_tags
from rotation.settings import Settings
from rotation.targets.base import SecretValue
from rotation.targets.storage import KEEPS_PREVIOUS, TARGET_TYPE, connection_string, key_in

SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"
ACCOUNT_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/ordersstore01"
KEY = "c2VjcmV0LWtleS1vbmUtYmFzZTY0LXRleHQtZm9yLXRlc3Rz/+AB=="
ENDPOINTS = {
    "blob": "https://ordersstore01.blob.core.windows.net/",
    "queue": "https://ordersstore01.queue.core.windows.net/",
    "table": "https://ordersstore01.table.core.windows.net/",
    "file": "https://ordersstore01.file.core.windows.net/",
}


def tags(**extra: str) -> dict[str, str]:
    base = {"rotation-target": "storage-account-key", "rotation-credential": ACCOUNT_ID}
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return base


def test_the_account_id_is_all_it_needs_and_the_value_is_a_connection_string_unless_told() -> None:
    meta = parse_tags("orders-storage", tags())
    assert meta.target.credential == ACCOUNT_ID
    assert meta.value_format == "connection-string"
    assert meta.overlap_hours == 0  # it issues its credential: no apply, and no overlap to wait
    assert parse_tags("orders-storage", tags(rotation_format="key")).value_format == "key"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rotation_credential": "ordersstore01"}, "is not a storage account's ARM id"),
        (
            {
                "rotation_credential": ACCOUNT_ID.replace(
                    "Microsoft.Storage/storageAccounts", "Microsoft.Web/sites"
                )
            },
            "is not a storage account's ARM id",
        ),
        ({"rotation_credential": ACCOUNT_ID.replace("ordersstore01", "Orders-Store")}, "3 to 24 lowercase"),
        ({"rotation_credential": ACCOUNT_ID.replace(SUBSCRIPTION, "not-a-guid")}, "rotation-credential"),
        ({"rotation_provider": "ordersstore01.blob.core.windows.net"}, "rotation-provider does not apply"),
        ({"rotation_admin": "secret:storage-admin"}, "not supported for storage-account-key"),
        ({"rotation_format": "json"}, "must be one of connection-string, key"),
        ({"rotation_strategy": "alternating"}, "rotation-strategy does not apply"),
        ({"rotation_overlap_hours": "24"}, "does not apply to storage-account-key"),
    ],
)
def test_bad_tags_are_refused_naming_the_tag(extra: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_tags("orders-storage", tags(**extra))


def test_the_overlap_refusal_says_why() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_tags("orders-storage", tags(rotation_overlap_hours="1"))
    assert KEEPS_PREVIOUS in str(refused.value)


def test_an_account_outside_the_allowed_subscriptions_is_refused_before_any_call() -> None:
    spec = parse_tags("orders-storage", tags()).target
    other = "22222222-2222-2222-2222-222222222222"
    with pytest.raises(InvalidRequest, match="not on ROTATION_ALLOWED_SUBSCRIPTIONS"):
        TARGET_TYPE.build(spec, Settings.from_environ({"ROTATION_ALLOWED_SUBSCRIPTIONS": other}), None, "key")  # type: ignore[arg-type]


def test_a_connection_string_is_the_portal_s_and_the_sdk_reads_it_back() -> None:
    value = connection_string("ordersstore01", SecretValue(KEY), ENDPOINTS)
    assert value.reveal() == (
        f"DefaultEndpointsProtocol=https;AccountName=ordersstore01;AccountKey={KEY};EndpointSuffix=core.windows.net"
    )
    assert key_in(value, "connection-string", "ordersstore01") == KEY
    client = BlobServiceClient.from_connection_string(value.reveal())
    assert client.url == "https://ordersstore01.blob.core.windows.net/"
    assert client.credential.account_key == KEY


def test_endpoints_of_another_form_are_named_one_by_one() -> None:
    zone = {s: f"https://ordersstore01.z7.{s}.storage.azure.net/" for s in ("blob", "queue", "table", "file")}
    value = connection_string("ordersstore01", SecretValue(KEY), zone)
    assert "EndpointSuffix" not in value.reveal()
    assert "BlobEndpoint=https://ordersstore01.z7.blob.storage.azure.net/" in value.reveal()
    client = BlobServiceClient.from_connection_string(value.reveal())
    assert client.url == "https://ordersstore01.z7.blob.storage.azure.net/"
    assert key_in(value, "connection-string", "ordersstore01") == KEY


def test_a_key_alone_is_the_value() -> None:
    assert key_in(SecretValue(f" {KEY}\n"), "key", "ordersstore01") == KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (KEY, "not an Azure Storage connection string"),
        (f"AccountName=otherstore;AccountKey={KEY}", "AccountName is not 'ordersstore01'"),
        ("AccountName=ordersstore01;EndpointSuffix=core.windows.net", "has no AccountKey"),
        (f"AccountName=ordersstore01;AccountKey=;Extra={KEY}", "has no AccountKey"),
    ],
)
def test_a_value_that_is_not_the_account_s_connection_string_is_refused_without_echoing_it(
    text: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as refused:
        key_in(SecretValue(text), "connection-string", "ordersstore01")
    assert KEY not in str(refused.value)
    assert KEY[:8] not in str(refused.value)
