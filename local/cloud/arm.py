"""Azure Resource Manager at management.azure.com: ``Microsoft.Web/sites``, ``Microsoft.Storage/storageAccounts``,
``Microsoft.KeyVault/vaults`` (GET, ``arm_keyvault.py``) and the caller's permissions at any scope.

Sites: GET, POST restart, stop and start, GET config/web (the site's configuration, with its
health check path), and the app settings (POST config/appsettings/list, PUT
config/appsettings: replaces them all, restarts the site and fetches its Key Vault references
afresh), as ``WebSiteManagementClient.web_apps`` calls them.
Storage accounts: see ``arm_storage.py``; permissions: ``arm_permissions.py``. ARM's order of checks is kept: token, api-version, RBAC
on the requested scope, then whether the subscription, resource group and resource exist (so a
caller without rights learns nothing).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from aiohttp import web

from local.cloud import arm_keyvault, arm_permissions, arm_storage
from local.cloud.arm_common import (
    authenticate,
    authorization_failed,
    container_not_found,
    fault_answer,
    resource_not_found,
)
from local.cloud.responses import arm_error, json_response
from local.cloud.sites import SiteRuntime
from local.cloud.state import STATE, CloudState

_SITE_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.web/sites/(?P<name>[^/]+)"
    r"(?:/(?P<verb>restart|stop|start|config/appsettings/list|config/appsettings|config/web))?/?$"
)
_OPERATIONS = {
    (None, "GET"): ("get_site", "Microsoft.Web/sites/read"),
    ("restart", "POST"): ("restart", "Microsoft.Web/sites/restart/action"),
    ("stop", "POST"): ("stop", "Microsoft.Web/sites/stop/action"),
    ("start", "POST"): ("start", "Microsoft.Web/sites/start/action"),
    # web_apps.list_application_settings / update_application_settings
    ("config/appsettings/list", "POST"): ("list_app_settings", "Microsoft.Web/sites/config/list/action"),
    ("config/appsettings", "PUT"): ("update_app_settings", "Microsoft.Web/sites/config/write"),
    # web_apps.get_configuration: the site's configuration, healthCheckPath among it
    ("config/web", "GET"): ("get_site_config", "Microsoft.Web/sites/config/read"),
}
SYNCHRONOUS_RESTART_TIMEOUT = 30.0


async def _site_document(state: CloudState, runtime: SiteRuntime) -> dict[str, Any]:
    site = runtime.site
    host = site.host
    status = state.sites.state(runtime)
    identities = {
        state.topology.identities[n].arm_id: {
            "principalId": state.topology.identities[n].principal_id,
            "clientId": state.topology.identities[n].client_id,
        }
        for n in site.identities
    }
    doc: dict[str, Any] = {
        "id": site.arm_id,
        "name": site.name,
        "type": "Microsoft.Web/sites",
        "kind": "app,linux",
        "location": site.location,
        "tags": {},
        "properties": {
            "name": site.name,
            "state": status,
            "hostNames": [host],
            "enabledHostNames": [host, host.replace(".", ".scm.", 1)],
            "defaultHostName": host,
            "repositorySiteName": site.name,
            "usageState": "Normal",
            "enabled": True,
            "availabilityState": "Normal",
            "resourceGroup": site.resource_group,
            "reserved": True,
            "httpsOnly": True,
            "lastModifiedTimeUtc": dt.datetime.fromtimestamp(runtime.started_at or 0, dt.UTC).isoformat(),
            # A site's GET carries siteConfig with most fields null, healthCheckPath among them:
            # the configuration is read from config/web (web_apps.get_configuration).
            "siteConfig": {"healthCheckPath": None, "linuxFxVersion": "PYTHON|3.11"},
        },
    }
    if identities:
        doc["identity"] = {"type": "UserAssigned", "userAssignedIdentities": identities}
    return doc


def _config_document(runtime: SiteRuntime) -> dict[str, Any]:
    """``config/web`` (SiteConfigResource): what ``web_apps.get_configuration`` reads, with the
    health check path App Service probes (null when none is set, as Azure answers)."""
    site = runtime.site
    return {
        "id": f"{site.arm_id}/config/web",
        "name": site.name,
        "type": "Microsoft.Web/sites/config",
        "location": site.location,
        "properties": {
            "numberOfWorkers": 1,
            "linuxFxVersion": "PYTHON|3.11",
            "alwaysOn": False,
            "http20Enabled": False,
            "minTlsVersion": "1.2",
            "ftpsState": "Disabled",
            "healthCheckPath": site.health_check_path,
        },
    }


def _settings_document(runtime: SiteRuntime, settings: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"{runtime.site.arm_id}/config/appsettings",
        "name": "appsettings",
        "type": "Microsoft.Web/sites/config",
        "location": runtime.site.location,
        "properties": dict(settings),
    }


async def _settings_body(request: web.Request) -> dict[str, str] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    properties = body.get("properties") if isinstance(body, dict) else None
    if not isinstance(properties, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in properties.items()
    ):
        return None
    return dict(properties)


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    caller, refusal = authenticate(request, state)
    if refusal is not None:
        return refusal
    if "api-version" not in request.query:
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    path = request.path.lower()
    if (permissions := arm_permissions.match(path)) is not None:
        return await arm_permissions.handle(request, state, caller, permissions)
    if (account := arm_storage.ACCOUNT_PATH.match(path)) is not None:
        return await arm_storage.handle(request, state, caller, account)
    if (vault := arm_keyvault.VAULT_PATH.match(path)) is not None:
        return await arm_keyvault.handle(request, state, caller, vault)
    match = _SITE_PATH.match(path)
    operation = _OPERATIONS.get((match["verb"], request.method)) if match else None
    if match is None or operation is None:
        return arm_error(
            404,
            "NotSupportedByLocalCloud",
            f"The local cloud does not serve {request.method} {request.path}.",
        )
    return await _handle_site(request, state, caller, match, operation)


async def _handle_site(
    request: web.Request, state: CloudState, caller: str, match: re.Match[str], operation: tuple[str, str]
) -> web.StreamResponse:
    op_name, action = operation
    sub, rg, name = match["sub"], match["rg"], match["name"]
    # Echo the caller's spelling of the scope, as ARM does in its messages.
    scope = re.sub(
        r"/(restart|stop|start|config/appsettings/list|config/appsettings|config/web)/?$",
        "",
        request.path,
        flags=re.IGNORECASE,
    ).rstrip("/")
    refusal = authorization_failed(state, caller, scope, action) or container_not_found(
        state, request, sub, rg
    )
    if refusal is not None:
        return refusal
    runtime = state.sites.runtimes.get(name)
    if runtime is None or runtime.site.subscription_id != sub or runtime.site.resource_group.lower() != rg:
        return resource_not_found(request, "Microsoft.Web/sites")

    answer = await fault_answer(request, state.faults.take(runtime.site.name, op_name))
    if answer is not None:
        return answer

    if op_name == "get_site":
        return json_response(200, await _site_document(state, runtime))
    if op_name == "get_site_config":
        return json_response(200, _config_document(runtime))
    if op_name == "list_app_settings":
        return json_response(200, _settings_document(runtime, runtime.settings))
    if op_name == "update_app_settings":
        settings = await _settings_body(request)
        if settings is None:
            return arm_error(
                400, "BadRequest", 'The request body must be {"properties": {name: string value}}.'
            )
        await state.sites.update_settings(runtime, settings)
        return json_response(200, _settings_document(runtime, settings))
    if op_name == "stop":
        await state.sites.do_stop(runtime)
    elif op_name == "start":
        await state.sites.do_start(runtime)
    else:
        await state.sites.do_restart(runtime)
        if request.query.get("synchronous", "").lower() == "true":
            await state.sites.wait_started(runtime, SYNCHRONOUS_RESTART_TIMEOUT)
    return web.Response(status=200)
