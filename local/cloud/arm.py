"""Azure Resource Manager at management.azure.com, for ``Microsoft.Web/sites`` only.

GET a site, POST restart, stop and start, as ``WebSiteManagementClient.web_apps`` calls them.
ARM's order of checks is kept: token, api-version, RBAC on the requested scope, then whether
the subscription, resource group and site exist (so a caller without rights learns nothing).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from aiohttp import web

from local.cloud import rbac
from local.cloud.faults import apply_latency, drop_connection
from local.cloud.requestlog import IDENTITY_KEY
from local.cloud.responses import arm_error, json_response
from local.cloud.sites import SiteRuntime
from local.cloud.state import STATE, CloudState
from local.cloud.tokens import ARM_AUDIENCES, TokenExpired, TokenInvalid, bearer_token, canonical_audience

_SITE_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.web/sites/(?P<name>[^/]+)"
    r"(?:/(?P<verb>restart|stop|start))?/?$"
)
_OPERATIONS = {
    (None, "GET"): ("get_site", "Microsoft.Web/sites/read"),
    ("restart", "POST"): ("restart", "Microsoft.Web/sites/restart/action"),
    ("stop", "POST"): ("stop", "Microsoft.Web/sites/stop/action"),
    ("start", "POST"): ("start", "Microsoft.Web/sites/start/action"),
}
SYNCHRONOUS_RESTART_TIMEOUT = 30.0


def _challenge(description: str) -> dict[str, str]:
    return {
        "WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
        f'error_description="{description}"'
    }


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%m/%d/%Y %H:%M:%S")


def _authenticate(request: web.Request, state: CloudState) -> tuple[str, web.Response | None]:
    """The caller's object id, or the 401 ARM answers."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return "", arm_error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            _challenge("The authentication failed because of missing 'Authorization' header."),
        )
    try:
        claims = state.issuer.verify(token)
    except TokenExpired as exc:
        now = dt.datetime.now(dt.UTC).timestamp()
        return "", arm_error(
            401,
            "ExpiredAuthenticationToken",
            f"The access token expiry UTC time '{_utc(exc.expired_at)}' is earlier than current UTC time "
            f"'{_utc(now)}'.",
            _challenge("The access token has expired."),
        )
    except TokenInvalid:
        return "", arm_error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
            _challenge("The access token is invalid."),
        )
    if canonical_audience(claims.audience) not in ARM_AUDIENCES:
        return "", arm_error(
            401,
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource '{claims.audience}'. It should "
            "exactly match with one of the allowed audiences 'https://management.core.windows.net/',"
            "'https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
            _challenge("The access token has been obtained for wrong audience or resource."),
        )
    if claims.tenant_id != state.topology.tenant_id:
        return "", arm_error(
            401,
            "InvalidAuthenticationTokenTenant",
            f"The access token is from the wrong issuer '{claims.issuer}'.",
            _challenge("The access token is from the wrong issuer."),
        )
    request[IDENTITY_KEY] = state.identity_name(claims.object_id)
    return claims.object_id, None


async def _site_document(state: CloudState, runtime: SiteRuntime) -> dict[str, Any]:
    site = runtime.site
    host = f"{site.name}.azurewebsites.net"
    status = await state.sites.state(runtime)
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
            "enabledHostNames": [host, f"{site.name}.scm.azurewebsites.net"],
            "defaultHostName": host,
            "repositorySiteName": site.name,
            "usageState": "Normal",
            "enabled": True,
            "availabilityState": "Normal",
            "resourceGroup": site.resource_group,
            "reserved": True,
            "httpsOnly": True,
            "lastModifiedTimeUtc": dt.datetime.fromtimestamp(runtime.started_at or 0, dt.UTC).isoformat(),
            "siteConfig": {"healthCheckPath": site.health_check_path, "linuxFxVersion": "PYTHON|3.11"},
        },
    }
    if identities:
        doc["identity"] = {"type": "UserAssigned", "userAssignedIdentities": identities}
    return doc


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    caller, refusal = _authenticate(request, state)
    if refusal is not None:
        return refusal
    if "api-version" not in request.query:
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    match = _SITE_PATH.match(request.path.lower())
    operation = _OPERATIONS.get((match["verb"], request.method)) if match else None
    if match is None or operation is None:
        return arm_error(
            404,
            "NotSupportedByLocalCloud",
            f"The local cloud does not serve {request.method} {request.path}.",
        )
    op_name, action = operation
    sub, rg, name = match["sub"], match["rg"], match["name"]
    # Echo the caller's spelling of the scope, as ARM does in its messages.
    scope = re.sub(r"/(restart|stop|start)/?$", "", request.path, flags=re.IGNORECASE).rstrip("/")
    if not rbac.is_allowed(state.grants, caller, scope, action, data=False):
        return arm_error(
            403,
            "AuthorizationFailed",
            f"The client '{caller}' with object id '{caller}' does not have authorization to perform action "
            f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please "
            "refresh your credentials.",
        )
    if sub not in state.topology.subscriptions:
        return arm_error(
            404, "SubscriptionNotFound", f"The subscription '{match['sub']}' could not be found."
        )
    if (sub, rg) not in state.topology.resource_groups:
        original_rg = request.path.split("/")[4]
        return arm_error(404, "ResourceGroupNotFound", f"Resource group '{original_rg}' could not be found.")
    runtime = state.sites.runtimes.get(name)
    if runtime is None or runtime.site.subscription_id != sub or runtime.site.resource_group.lower() != rg:
        original_rg, original_name = request.path.split("/")[4], request.path.split("/")[8]
        return arm_error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.Web/sites/{original_name}' under resource group '{original_rg}' was not "
            "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )

    failing = await apply_latency(state.faults.take(runtime.site.name, op_name))
    if failing:
        fault = failing[0]
        if fault.kind == "throttle":
            return arm_error(
                429,
                "TooManyRequests",
                "The request is being throttled. Please retry after the interval in the Retry-After header.",
                {"Retry-After": str(fault.retry_after_seconds)},
            )
        if fault.kind == "unavailable":
            return arm_error(503, "ServiceUnavailable", "The service is temporarily unavailable.")
        raise drop_connection(request.transport)

    if op_name == "get_site":
        return json_response(200, await _site_document(state, runtime))
    if op_name == "stop":
        await state.sites.do_stop(runtime)
    elif op_name == "start":
        await state.sites.do_start(runtime)
    else:
        await state.sites.do_restart(runtime)
        if request.query.get("synchronous", "").lower() == "true":
            await state.sites.wait_healthy(runtime, SYNCHRONOUS_RESTART_TIMEOUT)
    return web.Response(status=200)
