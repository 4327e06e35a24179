"""``Microsoft.KeyVault/vaults`` in ARM: GET of one vault, as ``KeyVaultManagementClient.vaults.get``
(azure-mgmt-keyvault 14.1) calls it; any api-version.

The hub asks it which subscription a vault is really in (a vault's name is global, its ARM id is
not what the hub talks to). Same order of checks as the other ARM routes: token, api-version,
RBAC (``Microsoft.KeyVault/vaults/read``: Reader grants it; Key Vault Secrets Officer's
``Microsoft.KeyVault/vaults/*/read`` does not here, as "*" stands for at least one path segment's
text: whether Azure reads it the same way is not documented, and the hub is granted Reader), then 404
``SubscriptionNotFound``/``ResourceGroupNotFound``/``ResourceNotFound``: a vault asked for under a
subscription or resource group that does not hold it is not found there, as in Azure.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from local.cloud.arm_common import authorization_failed, container_not_found, fault_answer, resource_not_found
from local.cloud.responses import arm_error, json_response
from local.cloud.state import CloudState
from local.cloud.topology import Vault

VAULT_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.keyvault"
    r"/vaults/(?P<name>[^/]+)/?$"
)
READ_ACTION = "Microsoft.KeyVault/vaults/read"


def vault_document(vault: Vault) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "sku": {"family": "A", "name": "standard"},
        "tenantId": vault.tenant_id,
        "accessPolicies": [],
        "enabledForDeployment": False,
        "enabledForDiskEncryption": False,
        "enabledForTemplateDeployment": False,
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": vault.soft_delete_retention_days,
        "enableRbacAuthorization": True,
        "vaultUri": f"{vault.url}/",
        "provisioningState": "Succeeded",
        "publicNetworkAccess": "Enabled",
    }
    if vault.purge_protection:  # Azure leaves the property out rather than answer false
        properties["enablePurgeProtection"] = True
    return {
        "id": vault.arm_id,
        "name": vault.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": vault.location,
        "tags": {},
        "properties": properties,
    }


async def handle(request: web.Request, state: CloudState, caller: str, match: re.Match[str]) -> web.Response:
    if request.method != "GET":
        return arm_error(
            404,
            "NotSupportedByLocalCloud",
            f"The local cloud does not serve {request.method} {request.path}.",
        )
    sub, rg, name = match["sub"], match["rg"], match["name"]
    refusal = authorization_failed(
        state, caller, request.path.rstrip("/"), READ_ACTION
    ) or container_not_found(state, request, sub, rg)
    if refusal is not None:
        return refusal
    vault = state.topology.vaults.get(name)
    if vault is None or vault.subscription_id != sub or vault.resource_group.lower() != rg:
        return resource_not_found(request, "Microsoft.KeyVault/vaults")
    answer = await fault_answer(request, state.faults.take(vault.name, "get_vault"))
    if answer is not None:
        return answer
    return json_response(200, vault_document(vault))
