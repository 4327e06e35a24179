"""Microsoft Graph v1.0 at graph.microsoft.com, for the topology's applications only.

``GET /v1.0/applications/{id}`` (and by ``applications(appId='…')``, with ``$select``),
``POST …/addPassword``, ``POST …/removePassword``, ``GET …/owners``, ``POST …/owners/$ref`` and
``DELETE …/owners/{id}/$ref``, as an ``azure.core`` pipeline with a bearer token policy (or the
Graph SDKs) call them. Each request goes through: the token (401 ``InvalidAuthenticationToken``),
the route, the caller's Graph application permissions (the token's ``roles``, 403
``Authorization_RequestDenied`` without any), the application (404 ``Request_ResourceNotFound``),
injected faults, ownership for ``Application.ReadWrite.OwnedBy`` (403), then the operation.
Bodies and error shapes are Graph's (see the local cloud README for what differs).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from local.cloud.applications import DEFAULT_LIFETIME_SECONDS, NoSuchPassword, StoredPassword, graph_time
from local.cloud.faults import Fault, apply_latency, drop_connection
from local.cloud.requestlog import IDENTITY_KEY
from local.cloud.responses import graph_error, graph_ids, graph_json
from local.cloud.state import STATE, CloudState
from local.cloud.tokens import GRAPH_AUDIENCES, TokenExpired, TokenInvalid, bearer_token, canonical_audience
from local.cloud.topology import Application

BASE = "https://graph.microsoft.com/v1.0"
READ_ALL = "Application.Read.All"
OWNED_BY = "Application.ReadWrite.OwnedBy"
READWRITE_ALL = "Application.ReadWrite.All"
APPLICATION_ROLES = frozenset({READ_ALL, OWNED_BY, READWRITE_ALL})

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BY_APP_ID = re.compile(r"^applications\(appid=(?:'|%27)([^')%]*)(?:'|%27)\)$", re.IGNORECASE)
_VERSIONS = ("v1.0", "beta")

# operation -> (roles that allow it on every application, roles that allow it on owned ones)
_PERMISSIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "get_application": (frozenset({READ_ALL, READWRITE_ALL}), frozenset({OWNED_BY})),
    "list_owners": (frozenset({READ_ALL, READWRITE_ALL}), frozenset({OWNED_BY})),
    "add_password": (frozenset({READWRITE_ALL}), frozenset({OWNED_BY})),
    "remove_password": (frozenset({READWRITE_ALL}), frozenset({OWNED_BY})),
    # "Application.ReadWrite.OwnedBy isn't sufficient to add another owner" (Graph's docs).
    "add_owner": (frozenset({READWRITE_ALL}), frozenset()),
    "remove_owner": (frozenset({READWRITE_ALL}), frozenset()),
}

# Properties of an application the local Graph has, in Graph's order, for $select.
_PROPERTIES = (
    "id",
    "deletedDateTime",
    "appId",
    "applicationTemplateId",
    "displayName",
    "description",
    "signInAudience",
    "tags",
    "identifierUris",
    "keyCredentials",
    "passwordCredentials",
)


class GraphRefusal(Exception):
    """A Graph error answer: status, code, message."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass(frozen=True)
class Call:
    operation: str
    object_id: str | None = None  # the application addressed by id ...
    app_id: str | None = None  # ... or by appId
    owner_id: str | None = None  # remove_owner


def route(method: str, path: str) -> Call:
    """The operation a method and path are.

    Raises:
        GraphRefusal: an unknown version, segment or method, or a malformed object id.
    """
    parts = path.split("/")[1:]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not parts or parts[0].lower() not in _VERSIONS:
        raise GraphRefusal(400, "BadRequest", f"Invalid version: {parts[0] if parts else ''}")
    segments = parts[1:]
    if not segments:
        raise GraphRefusal(400, "BadRequest", "Resource not found for the segment ''.")
    by_app_id = _BY_APP_ID.match(segments[0])
    if by_app_id:
        target: dict[str, str | None] = {"app_id": by_app_id.group(1)}
        tail = segments[1:]
    elif segments[0].lower() == "applications" and len(segments) >= 2:
        target = {"object_id": segments[1]}
        tail = segments[2:]
    else:
        raise GraphRefusal(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")
    key = [t.lower().removeprefix("microsoft.graph.") for t in tail]
    operation: str | None = None
    owner_id: str | None = None
    if key == []:
        operation = "get_application" if method == "GET" else None
    elif key == ["addpassword"]:
        operation = "add_password" if method == "POST" else None
    elif key == ["removepassword"]:
        operation = "remove_password" if method == "POST" else None
    elif key == ["owners"]:
        operation = "list_owners" if method == "GET" else None
    elif key == ["owners", "$ref"]:
        operation = "add_owner" if method == "POST" else None
    elif len(key) == 3 and key[0] == "owners" and key[2] == "$ref":
        operation, owner_id = ("remove_owner" if method == "DELETE" else None), tail[1]
    else:
        raise GraphRefusal(400, "BadRequest", f"Resource not found for the segment '{tail[-1]}'.")
    if operation is None:
        raise GraphRefusal(405, "Request_BadRequest", f"The request method '{method}' is not allowed here.")
    identifier = target.get("object_id") or target.get("app_id") or ""
    if not _GUID.match(identifier):
        raise GraphRefusal(400, "Request_BadRequest", f"Invalid object identifier '{identifier}'.")
    return Call(
        operation=operation,
        object_id=(target.get("object_id") or "").lower() or None,
        app_id=(target.get("app_id") or "").lower() or None,
        owner_id=owner_id,
    )


def _not_found(identifier: str) -> GraphRefusal:
    return GraphRefusal(
        404,
        "Request_ResourceNotFound",
        f"Resource '{identifier}' does not exist or one of its queried reference-property objects are not "
        "present.",
    )


def _denied() -> GraphRefusal:
    return GraphRefusal(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


# -- JSON shapes ------------------------------------------------------------------------------


def password_json(password: StoredPassword, secret_text: str | None = None) -> dict[str, Any]:
    return {
        "customKeyIdentifier": None,
        "displayName": password.display_name,
        "endDateTime": graph_time(password.end),
        "hint": password.hint,
        "keyId": password.key_id,
        "secretText": secret_text,
        "startDateTime": graph_time(password.start),
    }


def _application_json(state: CloudState, app: Application) -> dict[str, Any]:
    return {
        "id": app.object_id,
        "deletedDateTime": None,
        "appId": app.app_id,
        "applicationTemplateId": None,
        "displayName": app.display_name,
        "description": None,
        "signInAudience": app.sign_in_audience,
        "tags": [],
        "identifierUris": [],
        "keyCredentials": [],
        "passwordCredentials": [password_json(p) for p in state.applications.passwords(app)],
    }


def _select(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    raw = request.query.get("$select") or request.query.get("select")
    if not raw:
        return {"@odata.context": f"{BASE}/$metadata#applications/$entity", **doc}
    by_lower = {p.lower(): p for p in _PROPERTIES}
    wanted: list[str] = []
    for name in (n.strip() for n in raw.split(",") if n.strip()):
        if name.lower() not in by_lower:
            raise GraphRefusal(
                400,
                "Request_BadRequest",
                f"Could not find a property named '{name}' on type 'microsoft.graph.application'.",
            )
        wanted.append(by_lower[name.lower()])
    context = f"{BASE}/$metadata#applications({','.join(wanted)})/$entity"
    return {"@odata.context": context, **{k: doc[k] for k in _PROPERTIES if k in wanted}}


def _directory_object(state: CloudState, principal_id: str) -> dict[str, Any]:
    for identity in state.topology.identities.values():
        if identity.principal_id == principal_id:
            return {
                "@odata.type": "#microsoft.graph.servicePrincipal",
                "id": principal_id,
                "deletedDateTime": None,
                "accountEnabled": True,
                "alternativeNames": ["isExplicit=True", identity.arm_id],
                "appDisplayName": None,
                "appId": identity.client_id,
                "displayName": identity.name,
                "servicePrincipalNames": [identity.client_id, identity.arm_id],
                "servicePrincipalType": "ManagedIdentity",
            }
    app = state.topology.application_by_principal_id(principal_id)
    if app is not None:
        return {
            "@odata.type": "#microsoft.graph.servicePrincipal",
            "id": principal_id,
            "deletedDateTime": None,
            "accountEnabled": True,
            "alternativeNames": [],
            "appDisplayName": app.display_name,
            "appId": app.app_id,
            "displayName": app.display_name,
            "servicePrincipalNames": [app.app_id],
            "servicePrincipalType": "Application",
        }
    return {"@odata.type": "#microsoft.graph.directoryObject", "id": principal_id, "deletedDateTime": None}


def _known_principal(state: CloudState, principal_id: str) -> bool:
    return any(i.principal_id == principal_id for i in state.topology.identities.values()) or (
        state.topology.application_by_principal_id(principal_id) is not None
    )


# -- request parsing --------------------------------------------------------------------------


def _json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GraphRefusal(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of "
            "valid JSON format.",
        ) from exc
    if not isinstance(doc, dict):
        raise GraphRefusal(400, "BadRequest", "The request payload must be a JSON object.")
    return doc


def _time(value: Any, prop: str) -> float:
    if not isinstance(value, str):
        raise GraphRefusal(
            400,
            "Request_BadRequest",
            f"Invalid value specified for property '{prop}' of resource 'PasswordCredential'.",
        )
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise GraphRefusal(
            400,
            "Request_BadRequest",
            f"Invalid value specified for property '{prop}' of resource 'PasswordCredential'.",
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


# -- operations -------------------------------------------------------------------------------


def _add_password(state: CloudState, app: Application, body: dict[str, Any]) -> dict[str, Any]:
    credential = body.get("passwordCredential") or {}
    if not isinstance(credential, dict):
        raise GraphRefusal(
            400, "BadRequest", "The parameter 'passwordCredential' is not a PasswordCredential."
        )
    display_name = credential.get("displayName")
    if display_name is not None and not isinstance(display_name, str):
        raise GraphRefusal(
            400,
            "Request_BadRequest",
            "Invalid value specified for property 'displayName' of resource 'PasswordCredential'.",
        )
    now = time.time()
    start = _time(credential["startDateTime"], "startDateTime") if credential.get("startDateTime") else now
    end = (
        _time(credential["endDateTime"], "endDateTime")
        if credential.get("endDateTime")
        else start + DEFAULT_LIFETIME_SECONDS
    )
    if end <= start:
        raise GraphRefusal(
            400,
            "Request_BadRequest",
            "Invalid value specified for property 'endDateTime' of resource 'PasswordCredential'.",
        )
    if app.password_max_lifetime_days is not None and end - start > app.password_max_lifetime_days * 86400:
        message = (
            f"Credential lifetime exceeds the max value allowed as per assigned policy '{app.policy_id}'."
        )
        raise GraphRefusal(
            400,
            "CredentialInvalidLifetimeAsPerAppPolicy",
            message,
            [{"code": "InvalidKeyEndDate", "message": message, "target": "EndDate"}],
        )
    limit = app.password_limit
    existing = len(state.applications.passwords(app))
    if limit is not None and existing >= limit:
        raise GraphRefusal(
            400,
            "TooManyAppPasswords",
            f"Not allowed to add {existing + 1} passwords. You can only add a maximum of {limit} passwords.",
            [{"target": "passwordCredentials", "code": "TooManyAppPasswords"}],
        )
    password, secret = state.applications.add_password(
        app, display_name=display_name, start=start, end=end, origin="graph"
    )
    return {
        "@odata.context": f"{BASE}/$metadata#microsoft.graph.passwordCredential",
        **password_json(password, secret_text=secret),
    }


def _remove_password(state: CloudState, app: Application, body: dict[str, Any]) -> None:
    key_id = body.get("keyId")
    if not isinstance(key_id, str) or not _GUID.match(key_id):
        raise GraphRefusal(
            400, "Request_BadRequest", f"Invalid value specified for property 'keyId': '{key_id}'."
        )
    try:
        state.applications.remove_password(app, key_id)
    except NoSuchPassword as exc:
        # What Graph answers (400, this message) as seen by clients that match on it; the code is a guess.
        raise GraphRefusal(
            400, "Request_BadRequest", f"No password credential found with keyId {key_id}."
        ) from exc


def _add_owner(state: CloudState, app: Application, body: dict[str, Any]) -> None:
    reference = body.get("@odata.id")
    if not isinstance(reference, str) or not reference.strip():
        raise GraphRefusal(400, "Request_BadRequest", "The request body must contain '@odata.id'.")
    principal_id = reference.rstrip("/").rsplit("/", 1)[-1].strip("{}").lower()
    if not _GUID.match(principal_id) or not _known_principal(state, principal_id):
        raise _not_found(principal_id)
    if not state.applications.add_owner(app, principal_id):
        raise GraphRefusal(
            400,
            "Request_BadRequest",
            "One or more added object references already exist for the following modified properties: 'owners'.",
        )


async def _operate(
    request: web.Request, state: CloudState, app: Application, call: Call, raw: bytes
) -> web.Response:
    ids = request["graph_ids"]
    if call.operation == "get_application":
        return graph_json(200, _select(request, _application_json(state, app)), ids)
    if call.operation == "list_owners":
        owners = [_directory_object(state, p) for p in state.applications.owners(app)]
        return graph_json(200, {"@odata.context": f"{BASE}/$metadata#directoryObjects", "value": owners}, ids)
    if call.operation == "add_password":
        return graph_json(200, _add_password(state, app, _json_body(raw)), ids)
    if call.operation == "remove_password":
        _remove_password(state, app, _json_body(raw))
    elif call.operation == "add_owner":
        _add_owner(state, app, _json_body(raw))
    elif call.operation == "remove_owner" and not state.applications.remove_owner(
        app, (call.owner_id or "").lower()
    ):
        raise _not_found(call.owner_id or "")
    return web.Response(status=204, headers=ids)


# -- the pipeline -----------------------------------------------------------------------------


def _unauthorized(message: str, ids: dict[str, str]) -> web.Response:
    return graph_error(
        401,
        "InvalidAuthenticationToken",
        message,
        ids,
        headers={
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        },
    )


def _fault_response(request: web.Request, fault: Fault, ids: dict[str, str]) -> web.Response:
    if fault.kind == "throttle":
        return graph_error(
            429,
            "TooManyRequests",
            "Too many requests. Please retry again later.",
            ids,
            headers={"Retry-After": str(fault.retry_after_seconds)},
        )
    if fault.kind == "unavailable":
        return graph_error(503, "serviceNotAvailable", "The service is temporarily unavailable.", ids)
    raise drop_connection(request.transport)


def _resolve(state: CloudState, call: Call) -> Application:
    app = (
        state.topology.application_by_object_id(call.object_id)
        if call.object_id
        else state.topology.application_by_app_id(call.app_id or "")
    )
    if app is None:
        raise _not_found(call.object_id or call.app_id or "")
    return app


def _authorize(state: CloudState, roles: set[str], caller: str, app: Application, operation: str) -> None:
    every, owned = _PERMISSIONS[operation]
    if roles & every:
        return
    if roles & owned and caller in state.applications.owners(app):
        return
    raise _denied()


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    ids = graph_ids(request.headers)
    request["graph_ids"] = ids
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return _unauthorized("Access token is empty.", ids)
    try:
        claims = state.issuer.verify(token)
    except TokenExpired:
        return _unauthorized("Lifetime validation failed, the token is expired.", ids)
    except TokenInvalid:
        return _unauthorized("Access token validation failure.", ids)
    if canonical_audience(claims.audience) not in GRAPH_AUDIENCES:
        return _unauthorized("Access token validation failure. Invalid audience.", ids)
    if claims.tenant_id != state.topology.tenant_id:
        return _unauthorized("Access token validation failure. Invalid issuer.", ids)
    request[IDENTITY_KEY] = state.identity_name(claims.object_id)
    try:
        call = route(request.method, request.path)
        roles = set(claims.roles) & APPLICATION_ROLES
        if not roles:
            raise _denied()
        app = _resolve(state, call)
        # Graph works on a request once it has arrived: a client that goes away while a latency
        # fault holds the call back must not undo it, so the body is read before the wait.
        raw = await request.read() if request.can_read_body else b""
        failing = await apply_latency(state.faults.take("graph", call.operation, app.name))
        if failing:
            return _fault_response(request, failing[0], ids)
        _authorize(state, roles, claims.object_id, app, call.operation)
        return await _operate(request, state, app, call, raw)
    except GraphRefusal as refusal:
        return graph_error(refusal.status, refusal.code, refusal.message, ids, details=refusal.details)
