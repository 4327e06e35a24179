"""``Microsoft.Storage/storageAccounts`` in ARM: get, listKeys, regenerateKey.

As ``StorageManagementClient.storage_accounts`` (azure-mgmt-storage 25.3) calls them:
``get_properties`` (GET, optional ``$expand``), ``list_keys`` (POST …/listKeys, ``$expand=kerb``)
and ``regenerate_key`` (POST …/regenerateKey with ``{"keyName": "key1"}``); any api-version.
A regenerated key restarts Azurite with the new keys before the answer goes out, so the old key is
refused and the new one accepted from the moment the client has the answer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from aiohttp import web

from local.cloud.arm_common import authorization_failed, container_not_found, fault_answer, resource_not_found
from local.cloud.azurite import BlobServiceError
from local.cloud.responses import arm_error, json_response
from local.cloud.state import CloudState
from local.cloud.storage import StorageKey, UnknownKeyName
from local.cloud.topology import StorageAccount

logger = logging.getLogger(__name__)

ACCOUNT_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.storage"
    r"/storageaccounts/(?P<name>[^/]+)(?:/(?P<verb>listkeys|regeneratekey))?/?$"
)
# (verb, method) -> (fault operation, RBAC action, the action as ARM's AuthorizationFailed names it)
_OPERATIONS = {
    (None, "GET"): (
        "get_storage_account",
        "Microsoft.Storage/storageAccounts/read",
        "Microsoft.Storage/storageAccounts/read",
    ),
    ("listkeys", "POST"): (
        "list_keys",
        "Microsoft.Storage/storageAccounts/listkeys/action",
        "Microsoft.Storage/storageAccounts/listKeys/action",
    ),
    ("regeneratekey", "POST"): (
        "regenerate_key",
        "Microsoft.Storage/storageAccounts/regeneratekey/action",
        "Microsoft.Storage/storageAccounts/regenerateKey/action",
    ),
}


def storage_time(ts: float) -> str:
    """The storage resource provider's date-times: UTC, seven fractional digits, "Z"."""
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}0Z"


def keys_document(keys: tuple[StorageKey, ...]) -> dict[str, Any]:
    return {
        "keys": [
            {
                "creationTime": storage_time(k.created),
                "keyName": k.name,
                "value": k.value,
                "permissions": "FULL",
            }
            for k in keys
        ]
    }


def account_document(state: CloudState, account: StorageAccount) -> dict[str, Any]:
    """What GET answers: the properties a client reads (no key values, as in Azure)."""
    assert state.storage is not None
    keys = state.storage.keys(account.name)
    created = storage_time(state.storage.account_created(account.name))
    name = account.name
    tier = "Premium" if account.sku.lower().startswith("premium") else "Standard"
    return {
        "sku": {"name": account.sku, "tier": tier},
        "kind": account.kind,
        "id": account.arm_id,
        "name": name,
        "type": "Microsoft.Storage/storageAccounts",
        "location": account.location,
        "tags": {},
        "properties": {
            "keyCreationTime": {k.name: storage_time(k.created) for k in keys},
            "allowCrossTenantReplication": False,
            "privateEndpointConnections": [],
            "minimumTlsVersion": "TLS1_2",
            "allowBlobPublicAccess": False,
            "allowSharedKeyAccess": account.allow_shared_key_access,
            "networkAcls": {
                "bypass": "AzureServices",
                "virtualNetworkRules": [],
                "ipRules": [],
                "defaultAction": "Allow",
            },
            "supportsHttpsTrafficOnly": True,
            "encryption": {
                "services": {
                    "file": {"keyType": "Account", "enabled": True, "lastEnabledTime": created},
                    "blob": {"keyType": "Account", "enabled": True, "lastEnabledTime": created},
                },
                "keySource": "Microsoft.Storage",
            },
            "accessTier": "Hot",
            "provisioningState": "Succeeded",
            "creationTime": created,
            "primaryEndpoints": {
                "dfs": f"https://{name}.dfs.core.windows.net/",
                "web": f"https://{name}.z13.web.core.windows.net/",
                "blob": account.blob_endpoint,
                "queue": f"https://{name}.queue.core.windows.net/",
                "table": f"https://{name}.table.core.windows.net/",
                "file": f"https://{name}.file.core.windows.net/",
            },
            "primaryLocation": account.location,
            "statusOfPrimary": "available",
        },
    }


async def handle(request: web.Request, state: CloudState, caller: str, match: re.Match[str]) -> web.Response:
    operation = _OPERATIONS.get((match["verb"], request.method))
    if operation is None:
        return arm_error(
            404,
            "NotSupportedByLocalCloud",
            f"The local cloud does not serve {request.method} {request.path}.",
        )
    op_name, action, message_action = operation
    sub, rg, name = match["sub"], match["rg"], match["name"]
    # ARM's messages echo the caller's spelling of the scope.
    scope = re.sub(r"/(listkeys|regeneratekey)/?$", "", request.path, flags=re.IGNORECASE).rstrip("/")
    refusal = authorization_failed(state, caller, scope, action, message_action) or container_not_found(
        state, request, sub, rg
    )
    if refusal is not None:
        return refusal
    account = state.topology.storage_accounts.get(name)
    if account is None or account.subscription_id != sub or account.resource_group.lower() != rg:
        return resource_not_found(request, "Microsoft.Storage/storageAccounts")
    assert state.storage is not None
    # The body is read before any latency fault: a client that is gone by then (a killed host)
    # has sent it, and Azure carries out a request whose caller stopped waiting.
    body = await request.read()

    answer = await fault_answer(request, state.faults.take(account.name, op_name))
    if answer is not None:
        return answer

    if op_name == "get_storage_account":
        return json_response(200, account_document(state, account))
    if op_name == "list_keys":
        return json_response(200, keys_document(state.storage.keys(account.name)))
    return await _regenerate(body, state, account)


async def _regenerate(raw: bytes, state: CloudState, account: StorageAccount) -> web.Response:
    assert state.storage is not None
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        return arm_error(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: '{type(exc).__name__}'.",
        )
    key_name = body.get("keyName") if isinstance(body, dict) else None
    if not isinstance(key_name, str):
        return arm_error(
            400, "InvalidValuesForRequestParameters", "Values for request parameters are invalid: keyName."
        )
    try:
        keys = state.storage.regenerate(account.name, key_name)
    except UnknownKeyName:
        return arm_error(
            400, "InvalidValuesForRequestParameters", "Values for request parameters are invalid: keyName."
        )
    logger.info("storage account %s: %s regenerated", account.name, key_name.lower())
    if account.allow_shared_key_access and state.blob is not None:
        # Azurite reads its accounts at start: restart it now, so the client that gets this answer
        # finds the old key refused and the new one accepted.
        try:
            await state.blob.reload()
        except BlobServiceError:
            logger.exception("azurite did not restart with the new keys of %s", account.name)
    return json_response(200, keys_document(keys))
