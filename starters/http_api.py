"""The operators' HTTP API: rotate now, status, list, approve, reject, rerun.

Every error is JSON ``{"error": message}``: 400 for bad input, 403 for a vault outside the
allowlist, 404 for an unknown rotation or secret, 409 when the rotation's state forbids the
action, 503 when Key Vault or the task hub does not answer now.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import quote, urlsplit

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from rotation.errors import Disabled, InvalidRequest, NotAllowed, NotFound, RotationError, TransientError
from rotation.model import SecretRef, VaultId, check_secret_name, check_vault_name
from rotation.notifications import STATUS_ROUTE
from rotation.settings import Settings, current_settings
from rotation.vault_location import confirm_vault
from starters.decisions import decide, decider_for, find_rotation
from starters.http_errors import MAX_TEXT, HttpError
from starters.launcher import ACTIVE, launch
from starters.principal import trusted_principal

logger = logging.getLogger(__name__)

bp = df.Blueprint()

MAX_BODY = 16 * 1024


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, mimetype="application/json", headers=headers
    )


Handler = Callable[[func.HttpRequest, df.DurableOrchestrationClient], Awaitable[func.HttpResponse]]


def json_errors(handler: Handler) -> Handler:
    """Turn the errors a handler raises into the API's JSON error responses."""

    @wraps(handler)
    async def wrapped(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
        try:
            return await handler(req, client)
        except HttpError as exc:
            return json_response(exc.status, {"error": exc.message})
        except NotAllowed as exc:
            return json_response(403, {"error": exc.detail})
        except NotFound as exc:
            return json_response(404, {"error": exc.detail})
        except Disabled as exc:  # the secret's state forbids it, as for a rotation's state
            return json_response(409, {"error": exc.detail})
        except InvalidRequest as exc:
            return json_response(400, {"error": exc.detail})
        except TransientError as exc:
            return json_response(503, {"error": exc.detail}, {"Retry-After": "10"})
        except RotationError as exc:
            return json_response(502, {"error": exc.detail})

    return wrapped


def request_body(req: func.HttpRequest) -> dict[str, Any]:
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY:
        raise HttpError(413, f"the body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, *, required: bool) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise HttpError(400, f"'{name}' must be a string")
    value = value.strip()
    if required and not value:
        raise HttpError(400, f"'{name}' is required")
    if len(value) > MAX_TEXT:
        raise HttpError(400, f"'{name}' is longer than {MAX_TEXT} characters")
    return value


def resolve_vault(value: str, settings: Settings) -> VaultId:
    """A vault given by ARM id, or by the name of one of the configured vaults.

    Raises:
        InvalidRequest: neither.
    """
    if value.startswith("/"):
        return VaultId.parse(value, what="vault")
    name = check_vault_name(value)
    for vault in settings.sweep_vaults:
        if vault.vault_name == name:
            return vault
    raise InvalidRequest(
        f"vault {value!r} is not configured in ROTATION_SWEEP_VAULTS; give its ARM id instead"
    )


async def require_allowed(vault: VaultId, settings: Settings) -> None:
    """Return when the vault is really in a subscription on the allowlist (ARM says so, not only
    the id the caller gave: ``rotation.vault_location``).

    Raises:
        HttpError: 403, saying why.
        TransientError: ARM does not answer now (503).
    """
    try:
        await asyncio.to_thread(confirm_vault, vault, settings)
    except NotAllowed as exc:
        raise HttpError(403, exc.detail) from None


def rotation_view(status: DurableOrchestrationStatus) -> dict[str, Any]:
    return {
        "id": status.instance_id,
        "runtimeStatus": status.runtime_status.value if status.runtime_status else None,
        "createdTime": status.created_time.isoformat() if status.created_time else None,
        "lastUpdatedTime": status.last_updated_time.isoformat() if status.last_updated_time else None,
        "status": status.custom_status,
        "output": status.output,
    }


async def _has_timers(client: df.DurableOrchestrationClient, instance_id: str) -> bool:
    full = await client.get_status(instance_id, show_history=True)
    # The SDK keeps the answer's "historyEvents" as an attribute of that name (its ``history``
    # field is for another spelling), so read both.
    events = getattr(full, "historyEvents", None) or full.history or []
    return any(isinstance(event, dict) and event.get("EventType") == "TimerCreated" for event in events)


def rotation_links(request_url: str, rotation_id: str) -> dict[str, str]:
    """This API's own routes for one rotation, on the host the caller reached. Never the Durable
    HTTP API's management URLs: those carry the task hub's system key, which must not reach a
    caller who only holds a function key."""
    parts = urlsplit(request_url)
    status = f"{parts.scheme}://{parts.netloc}{STATUS_ROUTE}{quote(rotation_id, safe='')}"
    return {
        "status": status,
        "approve": f"{status}/approve",
        "reject": f"{status}/reject",
        "rerun": f"{status}/rerun",
    }


async def _existing(client: df.DurableOrchestrationClient, rotation_id: str) -> DurableOrchestrationStatus:
    return await find_rotation(client, rotation_id)


@bp.route(route="rotations", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def start_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    settings = current_settings()
    body = request_body(req)
    vault = resolve_vault(text_field(body, "vault", required=True), settings)
    name = check_secret_name(text_field(body, "secret", required=True))
    await require_allowed(vault, settings)
    secret = SecretRef(subscription_id=vault.subscription_id, vault_name=vault.vault_name, secret_name=name)
    # Recorded so that this principal cannot approve the rotation it asked for.
    principal = trusted_principal(req.headers, settings)
    result = await launch(
        client,
        secret,
        version=None,
        trigger="manual",
        requested_by=principal.name if principal else "http api",
        requested_by_id=principal.id if principal else None,
        settings=settings,
    )
    if result.started and result.rotation_id:
        links = rotation_links(req.url, result.rotation_id)
        answer: dict[str, Any] = {"id": result.rotation_id, "links": links}
        if result.outcome == "restarted":  # its last run ended unfinished (launcher.ended_unfinished)
            answer["note"] = result.reason
        return json_response(202, answer, {"Location": links["status"]})
    if result.outcome in ("duplicate", "busy") and result.rotation_id:
        hint = ""
        if result.outcome == "duplicate":
            existing = await _existing(client, result.rotation_id)
            running = existing.runtime_status in ACTIVE
            hint = (
                "; it is still running" if running else "; use POST /api/rotations/{id}/rerun to run it again"
            )
        return json_response(409, {"error": result.reason + hint, "id": result.rotation_id})
    return json_response(400, {"error": result.reason})


@bp.route(route="rotations/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def get_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return json_response(200, rotation_view(await _existing(client, req.route_params["id"])))


@bp.route(route="rotations", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def list_rotations(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    statuses: list[OrchestrationRuntimeStatus] | None = None
    if req.params.get("status"):
        try:
            statuses = [
                OrchestrationRuntimeStatus(s.strip()) for s in req.params["status"].split(",") if s.strip()
            ]
        except ValueError:
            known = ", ".join(s.value for s in OrchestrationRuntimeStatus)
            raise HttpError(400, f"'status' must be one or more of {known}") from None
    prefix = "rotate_"
    if req.params.get("vault"):
        prefix += check_vault_name(req.params["vault"].strip()) + "_"
    found = await client.get_status_by(runtime_status=statuses, instance_id_prefix=prefix)
    rotations = sorted((rotation_view(s) for s in found), key=lambda r: r["createdTime"] or "", reverse=True)
    return json_response(200, {"rotations": rotations})


async def _decide(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, *, approved: bool
) -> func.HttpResponse:
    settings = current_settings()
    body = request_body(req)
    principal = trusted_principal(req.headers, settings)
    # The body's "approver" only counts when unverified decisions are allowed and nobody signed in.
    named = "" if principal else text_field(body, "approver", required=False)
    decider = decider_for(principal, named, settings)
    decided = await decide(
        client,
        req.route_params["id"],
        approved=approved,
        decider=decider,
        reason=text_field(body, "reason", required=False),
    )
    answer = {"id": decided.rotation_id, "decision": decided.decision.to_dict(), "recorded": decided.recorded}
    # 200: the decision took effect; 202: sent, and the rotation has not recorded it yet.
    return json_response(200 if decided.recorded else 202, answer)


@bp.route(route="rotations/{id}/approve", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def approve_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _decide(req, client, approved=True)


@bp.route(route="rotations/{id}/reject", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def reject_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _decide(req, client, approved=False)


@bp.route(route="rotations/{id}/rerun", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def rerun_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = request_body(req)
    mode = text_field(body, "mode", required=False) or "rewind"
    if mode not in ("rewind", "restart"):
        raise HttpError(400, "'mode' must be 'rewind' or 'restart'")
    status = await _existing(client, req.route_params["id"])
    if status.runtime_status in ACTIVE:
        raise HttpError(
            409, f"rotation is still {status.runtime_status.value if status.runtime_status else 'active'}"
        )
    note = ""
    if mode == "rewind":
        if status.runtime_status != OrchestrationRuntimeStatus.Failed:
            raise HttpError(409, 'only a failed rotation can be rewound; use {"mode": "restart"}')
        undos = status.custom_status.get("compensation") if isinstance(status.custom_status, dict) else None
        if undos:
            # Rewind replays the history with the failed step run again, but this rotation
            # already ran undos after it: the replay would take their results for later steps.
            # Every step is idempotent, so starting from the beginning is the faithful rerun.
            mode = "restart"
            note = "undos ran after the failure, so the rotation starts again from the beginning"
        elif await _has_timers(client, status.instance_id):
            # Azure Storage's rewind does not rewrite durable timers (retry back-off, waits).
            mode = "restart"
            note = "its history holds durable timers, which a rewind does not replay, so the rotation starts again"
    reason = text_field(body, "reason", required=False) or "rerun through the HTTP API"
    if mode == "rewind":
        # The SDK puts the reason into the rewind URL's query as it is: escaped here, so a reason
        # cannot add parameters (another taskHub, a connection) to the host's management call.
        await client.rewind(status.instance_id, quote(reason, safe=""))
    else:
        await client.restart(status.instance_id, restart_with_new_instance_id=False)
    logger.info("rotation %s rerun (%s)", status.instance_id, mode)
    return json_response(202, {"id": status.instance_id, "mode": mode, "note": note})
