"""Key Vault's Event Grid events, in the Event Grid schema (or as CloudEvents 1.0), and the expiry scan.

SecretNewVersionCreated is raised by the Key Vault routes on every new version; SecretNearExpiry
and SecretExpired come from a periodic scan of every vault's current versions, each sent once
per version (the flags live with the version in the vault store, so a restart does not repeat them).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from local.cloud.kv_store import KeyVaultStore, SecretVersion
from local.cloud.topology import Vault

NEW_VERSION = "Microsoft.KeyVault.SecretNewVersionCreated"
NEAR_EXPIRY = "Microsoft.KeyVault.SecretNearExpiry"
EXPIRED = "Microsoft.KeyVault.SecretExpired"


def event_time(at: float | None = None) -> str:
    """ISO 8601 in UTC with 7 fractional digits, as Event Grid writes its timestamps."""
    moment = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def secret_event(vault: Vault, version: SecretVersion, event_type: str) -> dict[str, Any]:
    """One event about one secret version, as Event Grid delivers it."""
    return {
        "id": str(uuid.uuid4()),
        "topic": vault.arm_id,
        "subject": version.name,
        "eventType": event_type,
        "eventTime": event_time(),
        "data": {
            "Id": f"{vault.url}/secrets/{version.name}/{version.version}",
            "VaultName": vault.name,
            "ObjectType": "Secret",
            "ObjectName": version.name,
            "Version": version.version,
            "NBF": version.nbf,
            "EXP": version.exp,
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def as_cloud_event(event: dict[str, Any]) -> dict[str, Any]:
    """The same event in the CloudEvents 1.0 schema, as Event Grid delivers a Key Vault event in it.

    Azure's mapping (the Key Vault event schema page, "Cloud event schema" tab): ``topic`` becomes
    ``source``, ``eventType`` ``type``, ``eventTime`` ``time``; ``id``, ``subject`` and ``data``
    stay as they are; ``dataVersion``/``metadataVersion`` give way to ``specversion: "1.0"``. No
    ``datacontenttype``: Azure's sample has none, and a JSON-format CloudEvent without it means
    ``application/json`` (CloudEvents JSON format 3.1).
    """
    return {
        "id": event["id"],
        "source": event["topic"],
        "subject": event["subject"],
        "type": event["eventType"],
        "time": event["eventTime"],
        "data": event["data"],
        "specversion": "1.0",
    }


def scan_for_expiry(
    store: KeyVaultStore, vaults: dict[str, Vault], window_seconds: float
) -> list[tuple[Vault, dict[str, Any]]]:
    """Events due now; each is marked sent before it is returned (delivery is at least once from here)."""
    now = int(time.time())
    due: list[tuple[Vault, dict[str, Any]]] = []
    for vault_name, version, near_due, expired_due in store.expiry_candidates(now, int(window_seconds)):
        vault = vaults.get(vault_name)
        if vault is None:
            continue
        if expired_due:
            store.mark_expiry_sent(vault_name, version.name, version.version, expired=True)
            due.append((vault, secret_event(vault, version, EXPIRED)))
        elif near_due:
            store.mark_expiry_sent(vault_name, version.name, version.version, expired=False)
            due.append((vault, secret_event(vault, version, NEAR_EXPIRY)))
    return due
