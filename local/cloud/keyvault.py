"""The Key Vault secrets data plane, for every vault of the topology, told apart by Host header.

Routes, JSON shapes, status codes and error bodies follow what azure-keyvault-secrets 4.12
sends and expects (see shared/reference/azure-facts.md). Each request goes through: the vault by
host, the challenge (401 without a token), token checks, injected faults, RBAC, then the operation.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from local.cloud import rbac
from local.cloud.eventgrid_events import NEW_VERSION, secret_event
from local.cloud.faults import Fault, apply_latency, drop_connection
from local.cloud.kv_backup import InvalidBackup
from local.cloud.kv_store import Deletion, NoSuchSecret, SecretExists, SecretIsDeleted, SecretVersion
from local.cloud.requestlog import IDENTITY_KEY
from local.cloud.responses import json_response, keyvault_error
from local.cloud.state import STATE, CloudState
from local.cloud.tokens import VAULT_AUDIENCES, TokenExpired, TokenInvalid, bearer_token, canonical_audience
from local.cloud.topology import Vault

SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION = re.compile(r"^[0-9a-fA-F]{32}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
PAGE_MAX = 25
ACTION_PREFIX = "Microsoft.KeyVault/vaults/secrets/"

# operation -> the data action RBAC checks (names as in Azure's permission list)
ACTIONS = {
    "set_secret": "setSecret/action",
    "get_secret": "getSecret/action",
    "list_secrets": "readMetadata/action",
    "list_versions": "readMetadata/action",
    "update_secret": "update/action",
    "delete_secret": "delete",
    "get_deleted_secret": "readMetadata/action",
    "list_deleted_secrets": "readMetadata/action",
    "recover_deleted_secret": "recover/action",
    "purge_deleted_secret": "purge/action",
    "backup_secret": "backup/action",
    "restore_secret": "restore/action",
}


class BadRequest(Exception):
    """A Key Vault 400 BadParameter with this message."""


@dataclass(frozen=True)
class Call:
    operation: str
    name: str | None = None
    version: str | None = None


def route(method: str, path: str) -> Call | None:
    """Which operation a method and path are, or None for a path Key Vault does not serve."""
    parts = path.split("/")[1:]  # "/secrets/x/" -> ["secrets", "x", ""]
    if not parts:
        return None
    head, rest = parts[0].lower(), parts[1:]
    if head == "secrets":
        if rest in ([], [""]):
            return Call("list_secrets") if method == "GET" else None
        name, tail = rest[0], rest[1:]
        if tail in ([], [""]):
            if name.lower() == "restore" and method == "POST" and not tail:
                return Call("restore_secret")
            return {
                "PUT": Call("set_secret", name),
                "GET": Call("get_secret", name),
                "DELETE": Call("delete_secret", name),
                "PATCH": Call("update_secret", name),
            }.get(method)
        if len(tail) == 1:
            if tail[0].lower() == "versions" and method == "GET":
                return Call("list_versions", name)
            if tail[0].lower() == "backup" and method == "POST":
                return Call("backup_secret", name)
            return {
                "GET": Call("get_secret", name, tail[0]),
                "PATCH": Call("update_secret", name, tail[0]),
            }.get(method)
        return None
    if head == "deletedsecrets":
        if rest in ([], [""]):
            return Call("list_deleted_secrets") if method == "GET" else None
        name, tail = rest[0], rest[1:]
        if tail in ([], [""]):
            return {
                "GET": Call("get_deleted_secret", name),
                "DELETE": Call("purge_deleted_secret", name),
            }.get(method)
        if tail == ["recover"] and method == "POST":
            return Call("recover_deleted_secret", name)
    return None


# -- JSON shapes ------------------------------------------------------------------------------


def _attributes(vault: Vault, v: SecretVersion) -> dict[str, Any]:
    attrs: dict[str, Any] = {"enabled": v.enabled}
    if v.nbf is not None:
        attrs["nbf"] = v.nbf
    if v.exp is not None:
        attrs["exp"] = v.exp
    attrs.update(
        created=v.created,
        updated=v.updated,
        recoveryLevel=vault.recovery_level,
        recoverableDays=vault.soft_delete_retention_days,
    )
    return attrs


def _bundle(vault: Vault, v: SecretVersion, *, with_value: bool, versioned_id: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if with_value:
        doc["value"] = v.value
    doc["id"] = f"{vault.url}/secrets/{v.name}" + (f"/{v.version}" if versioned_id else "")
    if v.content_type is not None:
        doc["contentType"] = v.content_type
    if v.tags is not None:
        doc["tags"] = v.tags
    doc["attributes"] = _attributes(vault, v)
    return doc


def _deleted_bundle(
    vault: Vault, v: SecretVersion, d: Deletion, *, versioned_id: bool = True
) -> dict[str, Any]:
    return {
        **_bundle(vault, v, with_value=False, versioned_id=versioned_id),
        "recoveryId": f"{vault.url}/deletedsecrets/{v.name}",
        "deletedDate": d.deleted_date,
        "scheduledPurgeDate": d.scheduled_purge_date,
    }


def _not_found(name: str) -> web.Response:
    return keyvault_error(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret "
        "you may be able to recover it using the correct recovery command. For help resolving this issue, "
        "please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def _deleted_not_found(name: str) -> web.Response:
    return keyvault_error(404, "SecretNotFound", f"Deleted Secret not found: {name}")


# -- request parsing --------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        doc = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The request body is not valid JSON.") from exc
    if not isinstance(doc, dict):
        raise BadRequest("The request body must be a JSON object.")
    return doc


def _int_or_none(attrs: dict[str, Any], key: str) -> int | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"Property '{key}' has invalid value")
    return int(value)


def _parse_properties(doc: dict[str, Any]) -> dict[str, Any]:
    """contentType, tags and attributes of a set or update body, only those present."""
    changes: dict[str, Any] = {}
    if "contentType" in doc:
        content_type = doc["contentType"]
        if content_type is not None and (not isinstance(content_type, str) or len(content_type) > 255):
            raise BadRequest("Property 'contentType' has invalid value")
        changes["content_type"] = content_type
    if "tags" in doc:
        tags = doc["tags"]
        if tags is not None:
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                raise BadRequest("Property 'tags' has invalid value")
            if len(tags) > MAX_TAGS:
                raise BadRequest(f"The number of tags exceeds the maximum of {MAX_TAGS}.")
            if any(len(k) > 512 or len(v) > 256 for k, v in tags.items()):
                raise BadRequest("A tag name exceeds 512 characters or a tag value exceeds 256 characters.")
        changes["tags"] = tags
    attrs = doc.get("attributes")
    if attrs is not None:
        if not isinstance(attrs, dict):
            raise BadRequest("Property 'attributes' has invalid value")
        if "enabled" in attrs and attrs["enabled"] is not None:
            if not isinstance(attrs["enabled"], bool):
                raise BadRequest("Property 'enabled' has invalid value")
            changes["enabled"] = attrs["enabled"]
        for key in ("nbf", "exp"):
            if key in attrs:
                changes[key] = _int_or_none(attrs, key)
    return changes


def _paging(request: web.Request) -> tuple[int, dict[str, Any]]:
    raw_max = request.query.get("maxresults")
    try:
        maxresults = int(raw_max) if raw_max is not None else PAGE_MAX
    except ValueError as exc:
        raise BadRequest(f"Invalid value for maxresults: {raw_max}") from exc
    if not 1 <= maxresults <= PAGE_MAX:
        raise BadRequest(
            f"The value {maxresults} for maxresults is out of range. It must be between 1 and 25."
        )
    token = request.query.get("$skiptoken")
    cursor: dict[str, Any] = {}
    if token:
        try:
            cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            assert isinstance(cursor, dict)
        except (ValueError, AssertionError) as exc:
            raise BadRequest("The $skiptoken is invalid.") from exc
    return maxresults, cursor


def _next_link(request: web.Request, vault: Vault, maxresults: int, cursor: dict[str, Any]) -> str:
    token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).rstrip(b"=").decode()
    api = request.query.get("api-version", "")
    # Key Vault writes the port into its links; the SDK copes with ":443".
    return (
        f"https://{vault.host}:443{request.path}?api-version={api}&$skiptoken={token}&maxresults={maxresults}"
    )


def _page(
    request: web.Request,
    vault: Vault,
    items: list[Any],
    maxresults: int,
    render: Callable[[Any], dict[str, Any]],
    cursor_of: Callable[[Any], dict[str, Any]],
) -> web.Response:
    body: dict[str, Any] = {"value": [render(i) for i in items[:maxresults]], "nextLink": None}
    if len(items) > maxresults:
        body["nextLink"] = _next_link(request, vault, maxresults, cursor_of(items[maxresults - 1]))
    return json_response(200, body)


# -- operations -------------------------------------------------------------------------------


async def _operate(request: web.Request, state: CloudState, vault: Vault, call: Call) -> web.Response:
    store, name, op = state.store, call.name or "", call.operation
    if op == "set_secret":
        doc = await _json_body(request)
        value = doc.get("value")
        if not isinstance(value, str):
            raise BadRequest("Property 'value' is required and must be a string.")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise BadRequest(f"Secret value exceeds the maximum allowed size of {MAX_VALUE_BYTES} bytes.")
        props = _parse_properties(doc)
        try:
            version = store.set(
                vault.name,
                name,
                value=value,
                content_type=props.get("content_type"),
                tags=props.get("tags"),
                enabled=props.get("enabled", True),
                nbf=props.get("nbf"),
                exp=props.get("exp"),
            )
        except SecretIsDeleted:
            return keyvault_error(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
                "in this state, the secret can only be recovered or purged.",
                inner="ObjectIsDeletedButRecoverable",
            )
        state.publish(vault, secret_event(vault, version, NEW_VERSION))
        return json_response(200, _bundle(vault, version, with_value=True))

    if op == "get_secret":
        try:
            version = store.get(vault.name, name, call.version or None)
        except NoSuchSecret:
            return _not_found(f"{name}/{call.version}" if call.version else name)
        if not version.enabled:
            return keyvault_error(
                403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled"
            )
        return json_response(200, _bundle(vault, version, with_value=True))

    if op == "update_secret":
        doc = await _json_body(request)
        try:
            version = store.update(vault.name, name, call.version or None, _parse_properties(doc))
        except NoSuchSecret:
            return _not_found(f"{name}/{call.version}" if call.version else name)
        return json_response(200, _bundle(vault, version, with_value=False))

    if op == "list_secrets":
        maxresults, cursor = _paging(request)
        items = store.list_current(vault.name, str(cursor.get("k", "")), maxresults + 1)
        return _page(
            request,
            vault,
            items,
            maxresults,
            lambda v: _bundle(vault, v, with_value=False, versioned_id=False),
            lambda v: {"k": v.name.lower()},
        )

    if op == "list_versions":
        maxresults, cursor = _paging(request)
        try:
            items = store.list_versions(vault.name, name, int(cursor.get("s", 0)), maxresults + 1)
        except NoSuchSecret:
            return _not_found(name)
        return _page(
            request,
            vault,
            items,
            maxresults,
            lambda v: _bundle(vault, v, with_value=False),
            lambda v: {"s": v.seq},
        )

    if op == "delete_secret":
        try:
            current, deletion = store.delete(vault.name, name, vault.soft_delete_retention_days)
        except NoSuchSecret:
            return _not_found(name)
        return json_response(200, _deleted_bundle(vault, current, deletion))

    if op == "get_deleted_secret":
        try:
            current, deletion = store.get_deleted(vault.name, name)
        except NoSuchSecret:
            return _deleted_not_found(name)
        return json_response(200, _deleted_bundle(vault, current, deletion))

    if op == "list_deleted_secrets":
        maxresults, cursor = _paging(request)
        deleted = store.list_deleted(vault.name, str(cursor.get("k", "")), maxresults + 1)
        return _page(
            request,
            vault,
            deleted,
            maxresults,
            lambda pair: _deleted_bundle(vault, pair[0], pair[1], versioned_id=False),
            lambda pair: {"k": pair[0].name.lower()},
        )

    if op == "recover_deleted_secret":
        try:
            current = store.recover(vault.name, name)
        except NoSuchSecret:
            return _deleted_not_found(name)
        return json_response(200, _bundle(vault, current, with_value=False))

    if op == "purge_deleted_secret":
        if vault.purge_protection:
            return keyvault_error(
                403,
                "Forbidden",
                'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault '
                "service will automatically purge it after the retention period has passed.",
            )
        try:
            store.purge(vault.name, name)
        except NoSuchSecret:
            return _deleted_not_found(name)
        return web.Response(status=204, headers={"x-ms-keyvault-service-version": "local"})

    if op == "backup_secret":
        try:
            backup = store.backup(vault.name, name)
        except NoSuchSecret:
            return _not_found(name)
        return json_response(200, {"value": state.backups.encode(backup)})

    if op == "restore_secret":
        doc = await _json_body(request)
        blob = doc.get("value")
        if not isinstance(blob, str) or not blob:
            raise BadRequest("Property 'value' is required and must be a base64url string.")
        try:
            backup = state.backups.decode(blob)
        except InvalidBackup as exc:
            raise BadRequest("Backup blob contents are invalid.") from exc
        try:
            current = store.restore(vault.name, backup)
        except SecretExists:
            return keyvault_error(409, "Conflict", f"Secret {backup.name} already exists.")
        return json_response(200, _bundle(vault, current, with_value=False))

    raise AssertionError(f"unrouted operation {op}")  # route() only returns the operations above


# -- the pipeline -----------------------------------------------------------------------------


def _challenge(vault: Vault) -> dict[str, str]:
    return {
        "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{vault.tenant_id}", '
        'resource="https://vault.azure.net"'
    }


def _unauthorized(vault: Vault, message: str) -> web.Response:
    return keyvault_error(401, "Unauthorized", message, headers=_challenge(vault))


def _fault_response(request: web.Request, fault: Fault) -> web.Response:
    if fault.kind == "throttle":
        return keyvault_error(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            headers={"Retry-After": str(fault.retry_after_seconds)},
        )
    if fault.kind == "unavailable":
        return keyvault_error(
            503, "ServiceUnavailable", "The service is temporarily unavailable. Please retry the request."
        )
    raise drop_connection(request.transport)


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    vault = state.topology.vault_by_host(request.host.split(":")[0])
    if vault is None:
        # The proxy refuses unknown vault hosts before TLS; this answers direct connections only.
        return keyvault_error(404, "VaultNotFound", f"No vault answers for host {request.host}.")

    call = route(request.method, request.path)
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        # The SDK's first request to a vault is this bodiless probe; answer the challenge first.
        return _unauthorized(vault, "AKV10000: Request is missing a Bearer or PoP token.")
    try:
        claims = state.issuer.verify(token)
    except TokenExpired:
        return _unauthorized(vault, "[TokenExpired] Error validating token: 'S2S12086'.")
    except TokenInvalid:
        return _unauthorized(vault, "AKV10046: Unable to resolve the key used for signature validation.")
    if canonical_audience(claims.audience) not in VAULT_AUDIENCES:
        return _unauthorized(
            vault,
            f"AKV10022: Invalid audience. Expected https://vault.azure.net or "
            f"cfa8b339-82a2-471a-a3c9-0fc0be7a4093, found: {claims.audience}.",
        )
    if claims.tenant_id != vault.tenant_id:
        return _unauthorized(
            vault,
            f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{vault.tenant_id}/, "
            f"found {claims.issuer}.",
        )
    request[IDENTITY_KEY] = state.identity_name(claims.object_id)

    if call is None:
        return keyvault_error(
            400, "BadParameter", f"Method {request.method} does not allow operation '{request.path}'."
        )
    if "api-version" not in request.query:
        return keyvault_error(400, "BadParameter", "The api-version parameter is missing.")
    if call.name is not None and not SECRET_NAME.match(call.name):
        return keyvault_error(400, "BadParameter", f"The request URI contains an invalid name: {call.name}")
    if call.version is not None and call.version and not VERSION.match(call.version):
        return _not_found(f"{call.name}/{call.version}")

    # Key Vault works on a request once it has arrived: a client that goes away while a latency
    # fault holds the call back must not undo it, so the body is read (and kept) before the wait.
    if request.can_read_body:
        await request.read()
    failing = await apply_latency(state.faults.take(vault.name, call.operation))
    if failing:
        return _fault_response(request, failing[0])

    resource = f"{vault.arm_id}/secrets/{call.name}" if call.name else vault.arm_id
    action = ACTION_PREFIX + ACTIONS[call.operation]
    if not rbac.is_allowed(state.grants, claims.object_id, vault.arm_id, action, data=True):
        return keyvault_error(
            403,
            "Forbidden",
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, please observe "
            "propagation time.\r\n"
            f"Caller: appid={claims.app_id};oid={claims.object_id};iss={claims.issuer}\r\n"
            f"Action: '{action}'\r\n"
            f"Resource: '{resource.lower()}'\r\n"
            "Assignment: (not found)\r\n"
            "DenyAssignmentId: null\r\n"
            "DecisionReason: null \r\n"
            f"Vault: {vault.name};location={vault.location}\r\n",
            inner="ForbiddenByRbac",
        )
    try:
        return await _operate(request, state, vault, call)
    except BadRequest as exc:
        return keyvault_error(400, "BadParameter", str(exc))
