"""Admin endpoints (plain HTTP on 127.0.0.1), for tests, the demo and people poking at the cloud.

None of these exist in Azure; they steer what Azure would do on its own schedule: inject faults,
emit an event now, scan for expiry now, change the scan interval and near-expiry window, add or
replace an event subscription, look at deliveries, dead letters and sites, look at applications
and seed their credentials, change Entra ID's propagation delay, look at storage accounts and read
their keys (to seed a vault), list, add and remove role assignments (as an operator would in
Azure; they last as long as the running cloud), look at what the Event Grid custom topics received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from local.cloud import rbac
from local.cloud.applications import DEFAULT_LIFETIME_SECONDS, NoSuchPassword, graph_time
from local.cloud.arm_storage import storage_time
from local.cloud.eventgrid_delivery import ValidationFailed
from local.cloud.eventgrid_events import EXPIRED, NEAR_EXPIRY, NEW_VERSION, secret_event
from local.cloud.faults import FaultSpecError
from local.cloud.kv_store import NoSuchSecret
from local.cloud.responses import json_response
from local.cloud.state import STATE, CloudState
from local.cloud.topology import (
    Application,
    StorageAccount,
    TopologyError,
    event_subscription_from_doc,
    parse_time,
    resolve_scope,
)

EVENT_TYPES = {t.rsplit(".", 1)[-1].lower(): t for t in (NEW_VERSION, NEAR_EXPIRY, EXPIRED)}

# Set by the server: runs one expiry scan now and returns the events it published.
SCAN_NOW: web.AppKey[Callable[[], Awaitable[list[dict[str, Any]]]]] = web.AppKey("scan_now")
WAKE_SCANNER: web.AppKey[Callable[[], None]] = web.AppKey("wake_scanner")


def _bad(message: str, status: int = 400) -> web.Response:
    return json_response(status, {"error": message})


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        doc = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not JSON"}), content_type="application/json"
        ) from exc
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be an object"}), content_type="application/json"
        )
    return doc


def _state(request: web.Request) -> CloudState:
    return request.app[STATE]


async def health(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


async def info(request: web.Request) -> web.Response:
    return json_response(200, _state(request).info)


async def list_faults(request: web.Request) -> web.Response:
    return json_response(200, {"faults": _state(request).faults.listing()})


async def add_fault(request: web.Request) -> web.Response:
    try:
        fault = _state(request).faults.add(await _body(request))
    except (FaultSpecError, ValueError, TypeError) as exc:
        return _bad(str(exc))
    return json_response(201, fault.__dict__)


async def clear_faults(request: web.Request) -> web.Response:
    _state(request).faults.clear()
    return web.Response(status=204)


async def list_subscriptions(request: web.Request) -> web.Response:
    return json_response(200, {"subscriptions": _state(request).events.subscriptions()})


async def put_subscription(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        spec = event_subscription_from_doc(
            await _body(request), state.env, state.topology.vaults, "subscription"
        )
    except (TopologyError, ValueError, TypeError) as exc:
        return _bad(str(exc))
    try:
        await state.events.add_validated(spec)
    except ValidationFailed as exc:
        return _bad(str(exc))
    return json_response(201, {"name": spec.name, "validated": True})


async def delete_subscription(request: web.Request) -> web.Response:
    removed = _state(request).events.remove(request.match_info["name"])
    return web.Response(status=204 if removed else 404)


async def emit(request: web.Request) -> web.Response:
    """Emit one event about a secret's current (or given) version now, to every matching subscription."""
    state = _state(request)
    doc = await _body(request)
    vault = state.topology.vaults.get(str(doc.get("vault", "")).lower())
    if vault is None:
        return _bad(f"unknown vault {doc.get('vault')!r}", 404)
    event_type = EVENT_TYPES.get(str(doc.get("event_type", "")).rsplit(".", 1)[-1].lower())
    if event_type is None:
        return _bad(f"event_type must be one of {', '.join(EVENT_TYPES.values())}")
    try:
        version = state.store.get(vault.name, str(doc.get("secret", "")), doc.get("version"))
    except NoSuchSecret:
        return _bad(f"no secret {doc.get('secret')!r} (version {doc.get('version')}) in {vault.name}", 404)
    event = secret_event(vault, version, event_type)
    matched = state.publish(vault, event)
    return json_response(202, {"event": event, "subscriptions": matched})


async def get_settings(request: web.Request) -> web.Response:
    return json_response(200, _state(request).events.settings.__dict__)


async def put_settings(request: web.Request) -> web.Response:
    state = _state(request)
    doc = await _body(request)
    known = set(state.events.settings.__dict__)
    unknown = set(doc) - known
    if unknown:
        return _bad(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
    try:
        changes = {k: (bool(v) if k == "duplicates" else float(v)) for k, v in doc.items()}
    except (TypeError, ValueError) as exc:
        return _bad(str(exc))
    if changes.get("scan_interval_seconds", 1.0) <= 0 or changes.get("retry_schedule_scale", 1.0) < 0:
        return _bad("scan_interval_seconds must be positive and retry_schedule_scale not negative")
    settings = state.events.update_settings(**changes)
    request.app[WAKE_SCANNER]()
    return json_response(200, settings.__dict__)


async def scan(request: web.Request) -> web.Response:
    events = await request.app[SCAN_NOW]()
    return json_response(200, {"events": events})


async def deliveries(request: web.Request) -> web.Response:
    return json_response(200, {"attempts": [a.as_dict() for a in _state(request).events.attempts]})


async def dead_letters(request: web.Request) -> web.Response:
    path = _state(request).events.dead_letter_path
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return json_response(200, {"dead_letters": [json.loads(line) for line in lines if line.strip()]})


async def validate(request: web.Request) -> web.Response:
    """The validationUrl of a SubscriptionValidation event (manual validation)."""
    ok = _state(request).events.validate_by_url(
        request.query.get("subscription", ""), request.query.get("code", "")
    )
    if not ok:
        return _bad("unknown subscription or wrong validation code", 404)
    return json_response(200, {"validated": True})


async def sites(request: web.Request) -> web.Response:
    state = _state(request)
    result = []
    for runtime in state.sites.runtimes.values():
        result.append(
            {
                "name": runtime.site.name,
                "arm_id": runtime.site.arm_id,
                "port": runtime.port,
                "url": f"http://127.0.0.1:{runtime.port}",
                "pid": runtime.pid,
                "desired": runtime.desired,
                "state": state.sites.state(runtime),
                "healthy": await state.sites.healthy(runtime),
                "restarts": runtime.restarts,
                "log": str(runtime.log_path),
            }
        )
    return json_response(200, {"sites": result})


def _application_doc(state: CloudState, app: Application) -> dict[str, Any]:
    """An application's ids, owners and credentials: never a secret (only Graph's 3-character hint)."""
    return {
        "name": app.name,
        "app_id": app.app_id,
        "object_id": app.object_id,
        "service_principal_id": app.service_principal_id,
        "display_name": app.display_name,
        "sign_in_audience": app.sign_in_audience,
        "password_max_lifetime_days": app.password_max_lifetime_days,
        "owners": [
            {"id": principal, "name": state.identity_name(principal)}
            for principal in state.applications.owners(app)
        ],
        "password_credentials": [p.public() for p in state.applications.passwords(app)],
    }


def _application(request: web.Request) -> Application:
    app = _state(request).topology.applications.get(request.match_info["name"])
    if app is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown application {request.match_info['name']!r}"}),
            content_type="application/json",
        )
    return app


async def applications(request: web.Request) -> web.Response:
    state = _state(request)
    return json_response(
        200, {"applications": [_application_doc(state, a) for a in state.topology.applications.values()]}
    )


async def application(request: web.Request) -> web.Response:
    return json_response(200, _application_doc(_state(request), _application(request)))


async def add_application_password(request: web.Request) -> web.Response:
    """Seed a credential (no Graph checks): its secret text is in this answer only, as with addPassword.

    ``start``/``end``: ISO date-times or days (``start`` from now, ``end`` from the start; default
    now and two years); ``propagated`` (default true): usable at once despite the propagation delay.
    """
    state = _state(request)
    app = _application(request)
    doc = await _body(request)
    try:
        start = parse_time(doc.get("start", 0), time.time(), "start")
        end = parse_time(doc["end"], start, "end") if "end" in doc else start + DEFAULT_LIFETIME_SECONDS
    except TopologyError as exc:
        return _bad(str(exc))
    if end <= start:
        return _bad("end must be after start")
    display_name = doc.get("display_name")
    if display_name is not None and not isinstance(display_name, str):
        return _bad("display_name must be a string")
    password, secret = state.applications.add_password(
        app,
        display_name=display_name,
        start=start,
        end=end,
        origin="admin",
        propagated=bool(doc.get("propagated", True)),
    )
    return json_response(201, {**password.public(), "secret_text": secret})


async def remove_application_password(request: web.Request) -> web.Response:
    try:
        _state(request).applications.remove_password(_application(request), request.match_info["key_id"])
    except NoSuchPassword:
        return _bad(f"no password credential {request.match_info['key_id']}", 404)
    return web.Response(status=204)


async def initial_secret(request: web.Request) -> web.Response:
    """The secret of the first credential the topology seeded that the application still has (for seeding
    a vault in tests and the demo); 404 once every seeded credential is gone."""
    app = _application(request)
    found = _state(request).applications.initial_secret(app)
    if found is None:
        return _bad(f"{app.name} has none of its seeded password credentials left", 404)
    password, secret = found
    return json_response(
        200,
        {
            "key_id": password.key_id,
            "display_name": password.display_name,
            "end": graph_time(password.end),
            "secret_text": secret,
        },
    )


async def reset_application(request: web.Request) -> web.Response:
    state = _state(request)
    app = _application(request)
    state.applications.reset(app)
    return json_response(200, _application_doc(state, app))


async def get_entra(request: web.Request) -> web.Response:
    return json_response(200, _state(request).entra.__dict__)


async def put_entra(request: web.Request) -> web.Response:
    state = _state(request)
    doc = await _body(request)
    unknown = set(doc) - set(state.entra.__dict__)
    if unknown:
        return _bad(f"unknown settings {sorted(unknown)}; known: {sorted(state.entra.__dict__)}")
    try:
        changes = {k: float(v) for k, v in doc.items()}
    except (TypeError, ValueError) as exc:
        return _bad(str(exc))
    if changes.get("propagation_delay_seconds", 0.0) < 0:
        return _bad("propagation_delay_seconds must not be negative")
    state.entra = replace(state.entra, **changes)
    return json_response(200, state.entra.__dict__)


def _storage_account(request: web.Request) -> StorageAccount:
    account = _state(request).topology.storage_accounts.get(request.match_info["name"].lower())
    if account is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown storage account {request.match_info['name']!r}"}),
            content_type="application/json",
        )
    return account


def _storage_account_doc(state: CloudState, account: StorageAccount) -> dict[str, Any]:
    """An account's ids, endpoint, settings and key names with their creation times: never a key."""
    assert state.storage is not None
    return {
        "name": account.name,
        "arm_id": account.arm_id,
        "subscription_id": account.subscription_id,
        "resource_group": account.resource_group,
        "blob_endpoint": account.blob_endpoint,
        "allow_shared_key_access": account.allow_shared_key_access,
        "keys": [
            {"key_name": k.name, "creation_time": storage_time(k.created)}
            for k in state.storage.keys(account.name)
        ],
    }


async def storage_accounts(request: web.Request) -> web.Response:
    state = _state(request)
    accounts = [_storage_account_doc(state, a) for a in state.topology.storage_accounts.values()]
    blob = state.blob
    azurite = (
        None
        if blob is None
        else {
            "running": blob.alive,
            "pid": blob.pid,
            "port": blob.port or None,
            "starts": blob.starts,
            "last_start_seconds": blob.last_start_seconds,
            "last_restart_seconds": blob.last_restart_seconds,
            "log": str(blob.log_path),
        }
    )
    return json_response(200, {"storage_accounts": accounts, "azurite": azurite})


async def storage_account(request: web.Request) -> web.Response:
    return json_response(200, _storage_account_doc(_state(request), _storage_account(request)))


async def storage_keys(request: web.Request) -> web.Response:
    """The account's current key values (the local cloud's own fakes), to seed a vault in tests and the
    demo; the request log shows the path only."""
    state = _state(request)
    account = _storage_account(request)
    assert state.storage is not None
    return json_response(200, {k.name: k.value for k in state.storage.keys(account.name)})


def _assignment_doc(state: CloudState, grant: rbac.Grant) -> dict[str, str]:
    return {
        "principal_id": grant.principal,
        "principal": state.identity_name(grant.principal),
        "role": rbac.ROLES[grant.role_id].name,
        "role_id": grant.role_id,
        "scope": grant.scope,
    }


def _grant(state: CloudState, doc: dict[str, Any]) -> rbac.Grant:
    """The assignment a body names: ``identity`` (or ``application``), ``role`` (name or id) and
    ``scope`` (an ARM id or ``vault:NAME`` / ``site:NAME`` / ``storage:NAME``).

    Raises:
        TopologyError: a name is unknown or missing.
    """
    topology = state.topology
    if ("identity" in doc) == ("application" in doc):
        raise TopologyError("name exactly one of 'identity' or 'application'")
    if "identity" in doc:
        identity = topology.identities.get(str(doc["identity"]))
        if identity is None:
            raise TopologyError(f"unknown identity {doc['identity']!r}")
        principal = identity.principal_id
    else:
        app = topology.applications.get(str(doc["application"]))
        if app is None:
            raise TopologyError(f"unknown application {doc['application']!r}")
        principal = app.service_principal_id
    role = rbac.role_id(str(doc.get("role", "")))
    if role is None:
        raise TopologyError(
            f"unknown role {doc.get('role')!r}; one of {', '.join(r.name for r in rbac.ROLES.values())}"
        )
    scope = resolve_scope(
        str(doc.get("scope", "")),
        topology.vaults,
        topology.sites,
        topology.storage_accounts,
        "scope",
        topology.topics,
    )
    return rbac.Grant(principal=principal, role_id=role, scope=scope)


async def role_assignments(request: web.Request) -> web.Response:
    state = _state(request)
    return json_response(200, {"role_assignments": [_assignment_doc(state, g) for g in state.grants]})


async def add_role_assignment(request: web.Request) -> web.Response:
    """Assign a role (as ``az role assignment create`` does); assigning it twice changes nothing."""
    state = _state(request)
    try:
        grant = _grant(state, await _body(request))
    except TopologyError as exc:
        return _bad(str(exc))
    known = any(_same(g, grant) for g in state.grants)
    if not known:
        state.grants.append(grant)
    return json_response(200 if known else 201, _assignment_doc(state, grant))


async def remove_role_assignment(request: web.Request) -> web.Response:
    """Remove a role assignment (as ``az role assignment delete`` does); 404 when there is none."""
    state = _state(request)
    try:
        grant = _grant(state, await _body(request))
    except TopologyError as exc:
        return _bad(str(exc))
    kept = [g for g in state.grants if not _same(g, grant)]
    if len(kept) == len(state.grants):
        return _bad("no such role assignment", 404)
    state.grants[:] = kept
    return json_response(200, _assignment_doc(state, grant))


def _same(a: rbac.Grant, b: rbac.Grant) -> bool:
    return a.principal == b.principal and a.role_id == b.role_id and a.scope.lower() == b.scope.lower()


def _topic_name(request: web.Request) -> str:
    name = request.match_info["name"].lower()
    if name not in _state(request).topology.topics:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown Event Grid topic {request.match_info['name']!r}"}),
            content_type="application/json",
        )
    return name


async def topics(request: web.Request) -> web.Response:
    state = _state(request)
    return json_response(
        200,
        {
            "topics": [
                {
                    "name": t.name,
                    "arm_id": t.arm_id,
                    "endpoint": t.endpoint,
                    "received": len(state.topic_inbox.of(t.name)),
                }
                for t in state.topology.topics.values()
            ]
        },
    )


async def topic_events(request: web.Request) -> web.Response:
    """What a custom topic accepted, oldest first: ``{"received_at", "identity", "event"}`` each."""
    return json_response(200, {"events": _state(request).topic_inbox.of(_topic_name(request))})


async def clear_topic_events(request: web.Request) -> web.Response:
    _state(request).topic_inbox.clear(_topic_name(request))
    return web.Response(status=204)


def make_app() -> web.Application:
    app = web.Application()
    r = app.router
    r.add_get("/admin/health", health)
    r.add_get("/admin/info", info)
    r.add_get("/admin/faults", list_faults)
    r.add_post("/admin/faults", add_fault)
    r.add_delete("/admin/faults", clear_faults)
    r.add_get("/admin/eventgrid/subscriptions", list_subscriptions)
    r.add_post("/admin/eventgrid/subscriptions", put_subscription)
    r.add_delete("/admin/eventgrid/subscriptions/{name}", delete_subscription)
    r.add_post("/admin/eventgrid/emit", emit)
    r.add_get("/admin/eventgrid/settings", get_settings)
    r.add_put("/admin/eventgrid/settings", put_settings)
    r.add_post("/admin/eventgrid/scan", scan)
    r.add_get("/admin/eventgrid/deliveries", deliveries)
    r.add_get("/admin/eventgrid/deadletters", dead_letters)
    r.add_get("/admin/eventgrid/validate", validate)
    r.add_get("/admin/eventgrid/topics", topics)
    r.add_get("/admin/eventgrid/topics/{name}/events", topic_events)
    r.add_delete("/admin/eventgrid/topics/{name}/events", clear_topic_events)
    r.add_get("/admin/sites", sites)
    r.add_get("/admin/applications", applications)
    r.add_get("/admin/applications/{name}", application)
    r.add_post("/admin/applications/{name}/passwords", add_application_password)
    r.add_delete("/admin/applications/{name}/passwords/{key_id}", remove_application_password)
    r.add_get("/admin/applications/{name}/initial-secret", initial_secret)
    r.add_post("/admin/applications/{name}/reset", reset_application)
    r.add_get("/admin/entra", get_entra)
    r.add_post("/admin/entra", put_entra)
    r.add_put("/admin/entra", put_entra)
    r.add_get("/admin/storage/accounts", storage_accounts)
    r.add_get("/admin/storage/accounts/{name}", storage_account)
    r.add_get("/admin/storage/accounts/{name}/keys", storage_keys)
    r.add_get("/admin/role-assignments", role_assignments)
    r.add_post("/admin/role-assignments", add_role_assignment)
    # A body names the assignment; aiohttp reads a DELETE's body like any other.
    r.add_delete("/admin/role-assignments", remove_role_assignment)
    return app
