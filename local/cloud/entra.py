"""Entra ID's token service at login.microsoftonline.com, for the client-credentials flow of applications.

What azure-identity's ``ClientSecretCredential`` (MSAL underneath) asks for, in this order:

1. ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (MSAL's tenant discovery; no instance
   discovery first, since login.microsoftonline.com is a host MSAL knows);
2. ``POST /{tenant}/oauth2/v2.0/token`` with ``client_id``, ``client_secret``, ``scope``
   (``…/.default``), ``grant_type=client_credentials`` and ``client_info=1``, form-encoded;
3. only after an error answer: ``GET /common/discovery/instance?api-version=1.1&authorization_endpoint=…``
   (MSAL looks up the host's aliases to search its cache under them).

The asynchronous credential (``azure.identity.aio``) posts to the same token endpoint directly.
Errors have Entra's shape (``error``, ``error_description`` starting with the AADSTS code,
``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``, ``error_uri``). Tokens are signed
like managed identity tokens; the application's service principal id is their ``oid``.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus, urlparse

from aiohttp import web

from local.cloud.applications import StoredPassword
from local.cloud.faults import apply_latency, drop_connection
from local.cloud.requestlog import IDENTITY_KEY
from local.cloud.responses import entra_error, json_response
from local.cloud.state import STATE, CloudState
from local.cloud.tokens import GRAPH_AUDIENCES, KNOWN_RESOURCES, canonical_audience
from local.cloud.topology import Application

Handler = Callable[[web.Request, str, bool], Awaitable[web.StreamResponse]]

HOST = "login.microsoftonline.com"
AUTHORITY = f"https://{HOST}"
# Entra ID issues client-credentials tokens for about an hour.
CLIENT_CREDENTIALS_LIFETIME = 3599
_MULTI_TENANT = ("common", "organizations", "consumers")

# The answer of https://login.microsoftonline.com/common/discovery/instance (api-version 1.1).
_INSTANCE_METADATA = [
    {
        "preferred_network": "login.microsoftonline.com",
        "preferred_cache": "login.windows.net",
        "aliases": [
            "login.microsoftonline.com",
            "login.windows.net",
            "login.microsoft.com",
            "sts.windows.net",
        ],
    },
    {
        "preferred_network": "login.partner.microsoftonline.cn",
        "preferred_cache": "login.partner.microsoftonline.cn",
        "aliases": ["login.partner.microsoftonline.cn", "login.chinacloudapi.cn"],
    },
    {
        "preferred_network": "login.microsoftonline.de",
        "preferred_cache": "login.microsoftonline.de",
        "aliases": ["login.microsoftonline.de"],
    },
    {
        "preferred_network": "login.microsoftonline.us",
        "preferred_cache": "login.microsoftonline.us",
        "aliases": ["login.microsoftonline.us", "login.usgovcloudapi.net"],
    },
    {
        "preferred_network": "login-us.microsoftonline.com",
        "preferred_cache": "login-us.microsoftonline.com",
        "aliases": ["login-us.microsoftonline.com"],
    },
]


def _correlation(request: web.Request) -> str | None:
    return request.headers.get("client-request-id")


def _tenant_known(state: CloudState, tenant: str) -> bool:
    return tenant.lower() == state.topology.tenant_id


def _tenant_not_found(request: web.Request, tenant: str, error: str) -> web.Response:
    return entra_error(
        400,
        error,
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant.",
        _correlation(request),
    )


async def instance_discovery(request: web.Request, tenant: str, v2: bool) -> web.StreamResponse:
    endpoint = request.query.get("authorization_endpoint", f"{AUTHORITY}/common/oauth2/authorize")
    segments = [s for s in urlparse(endpoint).path.split("/") if s]
    tenant = segments[0] if segments else "common"
    return json_response(
        200,
        {
            "tenant_discovery_endpoint": f"{AUTHORITY}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": _INSTANCE_METADATA,
        },
    )


async def openid_configuration(request: web.Request, tenant: str, v2: bool) -> web.StreamResponse:
    state = request.app[STATE]
    if tenant.lower() in _MULTI_TENANT:
        issuer_tenant = "{tenantid}"
    elif _tenant_known(state, tenant):
        tenant = issuer_tenant = state.topology.tenant_id
    else:
        return _tenant_not_found(request, tenant, "invalid_tenant")
    base = f"{AUTHORITY}/{tenant}"
    return json_response(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{AUTHORITY}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "tid",
                "ver",
            ],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        },
    )


async def keys(request: web.Request, tenant: str, v2: bool) -> web.StreamResponse:
    # The local cloud signs with a symmetric key, which is not published (see the README).
    return json_response(200, {"keys": []})


def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
    """client_id and client_secret from the body (client_secret_post) or Basic auth (client_secret_basic)."""
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return client_id, secret
        client_id = client_id or unquote_plus(user)
        secret = secret or unquote_plus(password)
    return client_id, secret


def _check_secret(state: CloudState, app: Application, secret: str) -> str | None:
    """None when ``secret`` is a valid, replicated credential of ``app``; else why it is refused."""
    now = time.time()
    found: StoredPassword | None = next(
        (p for p in state.applications.passwords(app) if p.matches(secret)), None
    )
    if found is None or found.start > now:
        return "invalid"
    if found.end <= now:
        return "expired"
    if found.added_at and now - found.added_at < state.entra.propagation_delay_seconds:
        return "invalid"  # not replicated yet: Entra ID does not know it, exactly like a wrong secret
    return None


async def token(request: web.Request, tenant: str, version: bool) -> web.StreamResponse:
    state = request.app[STATE]
    correlation = _correlation(request)
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}

    failing = await apply_latency(state.faults.take("entra", "get_token"))
    if failing:
        fault = failing[0]
        if fault.kind == "throttle":
            return entra_error(
                429,
                "temporarily_unavailable",
                90055,
                "The request was throttled (a fault injected into the local cloud).",
                correlation,
                {"Retry-After": str(fault.retry_after_seconds)},
            )
        if fault.kind == "unavailable":
            return entra_error(
                503,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
                correlation,
            )
        raise drop_connection(request.transport)

    if not _tenant_known(state, tenant):
        return _tenant_not_found(request, tenant, "invalid_request")
    grant_type = form.get("grant_type")
    if not grant_type:
        return _missing(request, "grant_type")
    if grant_type != "client_credentials":
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
            correlation,
        )
    client_id, secret = _client_credentials(request, form)
    if not client_id:
        return _missing(request, "client_id")
    app = state.topology.application_by_app_id(client_id)
    if app is None:
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{state.topology.tenant_id}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You may have sent your "
            "authentication request to the wrong tenant.",
            correlation,
        )
    request[IDENTITY_KEY] = app.name
    if not secret:
        return entra_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            correlation,
        )
    refusal = _check_secret(state, app, secret)
    if refusal == "expired":
        return entra_error(
            401,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{app.app_id}' are expired. Visit the Azure portal to create "
            "new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for "
            "added security: https://aka.ms/certCreds.",
            correlation,
        )
    if refusal is not None:
        return entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{app.app_id}'.",
            correlation,
        )

    if version:  # v2.0: scope=<resource>/.default
        scope = form.get("scope", "").strip()
        if not scope:
            return _missing(request, "scope")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
                correlation,
            )
        resource = scopes[0]
    else:  # v1.0: resource=<resource>
        resource = form.get("resource", "").strip()
        if not resource:
            return _missing(request, "resource")
    audience = canonical_audience(resource)
    if audience not in KNOWN_RESOURCES:
        return entra_error(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {audience} was not found in the tenant named {state.topology.tenant_id}. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You might have sent your authentication request to the wrong "
            "tenant.",
            correlation,
        )
    roles = state.topology.graph_roles_of(app.service_principal_id) if audience in GRAPH_AUDIENCES else ()
    lifetime = min(CLIENT_CREDENTIALS_LIFETIME, state.topology.token_lifetime_seconds)
    access_token, expires_on = state.issuer.issue_for(
        client_id=app.app_id,
        principal_id=app.service_principal_id,
        resource=audience,
        lifetime_seconds=lifetime,
        roles=roles,
    )
    headers = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
    if version:
        body: dict[str, object] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }
    else:
        body = {
            "token_type": "Bearer",
            "expires_in": str(lifetime),
            "ext_expires_in": str(lifetime),
            "expires_on": str(expires_on),
            "not_before": str(expires_on - lifetime),
            "resource": resource,
            "access_token": access_token,
        }
    return json_response(200, body, headers)


def _missing(request: web.Request, parameter: str) -> web.Response:
    return entra_error(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{parameter}'.",
        _correlation(request),
    )


_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"^/(?P<tenant>[^/]+)/discovery/instance/?$", re.IGNORECASE), instance_discovery),
    (
        "GET",
        re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration/?$", re.IGNORECASE),
        openid_configuration,
    ),
    ("GET", re.compile(r"^/(?P<tenant>[^/]+)/discovery/v2\.0/keys/?$", re.IGNORECASE), keys),
    ("POST", re.compile(r"^/(?P<tenant>[^/]+)/oauth2/(?P<version>v2\.0/)?token/?$", re.IGNORECASE), token),
]


async def handle(request: web.Request) -> web.StreamResponse:
    """Dispatch a request to login.microsoftonline.com by method and path."""
    for method, pattern, handler in _ROUTES:
        match = pattern.match(request.path)
        if match and request.method == method:
            return await handler(request, match.group("tenant"), bool(match.groupdict().get("version")))
    return json_response(
        404,
        {
            "error": "not_found",
            "error_description": f"The local cloud does not serve {request.method} {request.path}.",
        },
    )
