"""The App Service managed identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``).

``GET /msi/token?api-version=2019-08-01&resource=...&client_id=...`` with ``X-IDENTITY-HEADER``,
as MSAL's ManagedIdentityClient sends it; the answer carries ``access_token`` and ``expires_on``
(epoch seconds, as a string, as App Service writes it). Errors have App Service's
``{"statusCode", "message", "correlationId"}`` shape, which MSAL turns into
CredentialUnavailableError. Each ``IDENTITY_HEADER`` value is bound to the identities of one
"host": the client environment's header may use every identity of the topology (it stands for
the developer's machine), a site's header only that site's identities.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from local.cloud.faults import apply_latency
from local.cloud.requestlog import IDENTITY_KEY
from local.cloud.responses import json_response
from local.cloud.state import STATE, CloudState
from local.cloud.tokens import GRAPH_AUDIENCES, KNOWN_RESOURCES, canonical_audience
from local.cloud.topology import Identity

API_VERSIONS = frozenset({"2019-08-01"})


def _error(status: int, message: str) -> web.Response:
    return json_response(
        status, {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
    )


def _allowed_identities(state: CloudState, header: str) -> list[Identity] | None:
    if header == state.client_identity_header:
        return list(state.topology.identities.values())
    names = state.sites.identity_headers().get(header)
    if names is None:
        return None
    return [state.topology.identities[n] for n in names]


def _choose(identities: list[Identity], query: dict[str, str]) -> Identity | None:
    client_id = query.get("client_id") or query.get("clientid")
    object_id = query.get("object_id") or query.get("principal_id")
    resource_id = query.get("mi_res_id")
    for identity in identities:
        if client_id and identity.client_id == client_id.lower():
            return identity
        if object_id and identity.principal_id == object_id.lower():
            return identity
        if resource_id and identity.arm_id.lower() == resource_id.lower():
            return identity
    if not (client_id or object_id or resource_id) and len(identities) == 1:
        return identities[0]  # the one identity of a site stands in for its system identity
    return None


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    failing = await apply_latency(state.faults.take("identity", "get_token"))
    if failing:
        if failing[0].kind == "throttle":
            return _error(429, "Too many requests to the managed identity endpoint.")
        return _error(503, "The managed identity endpoint is temporarily unavailable.")
    header = request.headers.get("X-IDENTITY-HEADER")
    if not header:
        return _error(400, "Required metadata header not specified or not correct")
    allowed = _allowed_identities(state, header)
    if allowed is None:
        return _error(401, "The X-IDENTITY-HEADER value is not valid for this endpoint.")
    query = dict(request.query)
    if query.get("api-version") not in API_VERSIONS:
        return _error(400, f"Invalid api-version '{query.get('api-version')}'. Supported: 2019-08-01.")
    resource = query.get("resource")
    if not resource:
        return _error(400, "Required query parameter 'resource' is missing.")
    if canonical_audience(resource) not in KNOWN_RESOURCES:
        return _error(
            400,
            f"AADSTS500011: The resource principal named {resource} was not found in the tenant named "
            f"{state.topology.tenant_id}.",
        )
    identity = _choose(allowed, query)
    if identity is None:
        if not any(k in query for k in ("client_id", "clientid", "object_id", "principal_id", "mi_res_id")):
            return _error(400, "No MSI found for specified ClientId/ResourceId.")
        return _error(
            400,
            "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
        )
    request[IDENTITY_KEY] = identity.name
    # Entra ID puts the Microsoft Graph application permissions granted to the principal in
    # tokens for Graph (and only there); Graph authorises by them.
    roles = (
        state.topology.graph_roles_of(identity.principal_id)
        if canonical_audience(resource) in GRAPH_AUDIENCES
        else ()
    )
    access_token, expires_on = state.issuer.issue(
        identity, resource, state.topology.token_lifetime_seconds, roles=roles
    )
    return json_response(
        200,
        {
            "access_token": access_token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        },
    )


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/msi/token", token)
    app.router.add_get("/msi/token/", token)
    return app
