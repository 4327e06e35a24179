"""The incidents API: rotate everything in a scope now, and steer it.

``POST /api/incidents`` starts one ``incident`` orchestration (orchestrators/incident.py);
``GET /api/incidents/{id}`` shows its summary; ``POST /api/incidents/{id}/pause|resume|cancel``
steer it. Errors are JSON ``{"error": message}`` as in the rotations API: 400 bad input (an
empty scope, a concurrency bound out of range, a malformed filter), 403 a vault outside the
allowlist or a waiver by someone who may not approve, 404 no such incident, 409 another incident
running on an overlapping scope (named) or a state the action does not apply to. A refused
request starts nothing.

The body of ``POST /api/incidents``::

    {"scope": {"vault": "<name or ARM id>"} | {"vaults": [...]} | {"subscription": "<id>"}
               | {"all": true},
     "reason": "...", "tags": {"name": "value"}, "targets": ["postgresql-login"],
     "servers": ["db1.example.com:5432"], "waiveApproval": false,
     "maxPerVault": 4, "maxPerServer": 2}

A subscription or ``all`` means the vaults configured in ``ROTATION_SWEEP_VAULTS`` (in that
subscription); every vault's subscription must be on ``ROTATION_ALLOWED_SUBSCRIPTIONS``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from rotation.errors import InvalidRequest, NotAllowed
from rotation.events import check_allowed
from rotation.incidents import (
    ADMISSION_WAIT_SECONDS,
    ADMIT_EVENT,
    ADMITTING,
    CONTROL_EVENT,
    INCIDENT_PREFIX,
    IncidentRequest,
    IncidentScope,
    parse_tag_filter,
)
from rotation.model import VaultId, check_subscription_id
from rotation.settings import Settings, SettingsError, current_settings, incident_concurrency
from starters.decisions import decider_for, rotation_input
from starters.http_api import (
    json_errors,
    json_response,
    request_body,
    require_allowed,
    resolve_vault,
    rotation_view,
    text_field,
)
from starters.http_errors import HttpError
from starters.launcher import ACTIVE, policy_from
from starters.principal import trusted_principal

logger = logging.getLogger(__name__)

bp = df.Blueprint()

ORCHESTRATOR = "incident"
MAX_VAULTS = 200
MAX_FILTER_ITEMS = 20
# Vaults named in the scope's text (the status shows it; the input holds them all).
NAMED_VAULTS = 10


def _vaults_of(scope: object, settings: Settings) -> tuple[tuple[VaultId, ...], str]:
    """The vaults a scope names, and how to call the scope. Raises HttpError / InvalidRequest."""
    if not isinstance(scope, dict) or not scope:
        raise HttpError(400, "'scope' is required: {vault}, {vaults}, {subscription} or {all: true}")
    if len(scope) != 1:
        raise HttpError(400, "'scope' takes exactly one of vault, vaults, subscription, all")
    [(kind, value)] = scope.items()
    if kind == "vault":
        if not isinstance(value, str) or not value.strip():
            raise HttpError(400, "'scope.vault' must be a vault name or ARM id")
        vault = resolve_vault(value.strip(), settings)
        return (vault,), f"vault {vault.vault_name}"
    if kind == "vaults":
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise HttpError(400, "'scope.vaults' must be a list of vault names or ARM ids")
        if len(value) > MAX_VAULTS:
            raise HttpError(400, f"'scope.vaults' names more than {MAX_VAULTS} vaults")
        vaults = tuple(dict.fromkeys(resolve_vault(v.strip(), settings) for v in value))
        names = [v.vault_name for v in vaults]
        more = f" and {len(names) - NAMED_VAULTS} more" if len(names) > NAMED_VAULTS else ""
        return vaults, "vaults " + ", ".join(names[:NAMED_VAULTS]) + more
    if kind == "subscription":
        if not isinstance(value, str):
            raise HttpError(400, "'scope.subscription' must be a subscription id")
        subscription = check_subscription_id(value.strip())
        vaults = tuple(v for v in settings.sweep_vaults if v.subscription_id == subscription)
        return vaults, f"subscription {subscription}"
    if kind == "all":
        if value is not True:
            raise HttpError(400, "'scope.all' must be true")
        return settings.sweep_vaults, "all configured vaults"
    raise HttpError(400, f"'scope' does not take {kind!r}: vault, vaults, subscription or all")


def _strings(body: dict[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise HttpError(400, f"'{name}' must be a list of non-empty strings")
    if len(value) > MAX_FILTER_ITEMS:
        raise HttpError(400, f"'{name}' holds more than {MAX_FILTER_ITEMS} items")
    return tuple(v.strip().lower() for v in value)


def _tags(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("tags", {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise HttpError(400, "'tags' must be an object of tag names and values")
    if len(value) > MAX_FILTER_ITEMS:
        raise HttpError(400, f"'tags' holds more than {MAX_FILTER_ITEMS} tags")
    pairs = tuple(f"{k.strip()}={v.strip()}" for k, v in value.items())
    parse_tag_filter(pairs)
    return pairs


def _bound(body: dict[str, Any], name: str, default: int) -> int:
    if name not in body:
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"'{name}' must be a whole number")
    try:
        return incident_concurrency(f"'{name}'", str(value))
    except SettingsError as exc:
        raise HttpError(400, str(exc)) from None


async def _overlapping(
    client: df.DurableOrchestrationClient, vaults: tuple[VaultId, ...], *, besides: str = ""
) -> list[tuple[DurableOrchestrationStatus, str]]:
    """The running incidents (other than ``besides``) whose scope shares a vault with ``vaults``,
    oldest first, each with a shared vault's name."""
    wanted = {v.arm_id.lower() for v in vaults}
    running = await client.get_status_by(runtime_status=ACTIVE, instance_id_prefix=INCIDENT_PREFIX)
    found: list[tuple[DurableOrchestrationStatus, str]] = []
    for listed in sorted(running, key=functools.cmp_to_key(_age_order)):
        if listed.instance_id == besides:
            continue
        status = await client.get_status(listed.instance_id, show_input=True)
        try:
            other = IncidentRequest.from_dict(rotation_input(status))
        except InvalidRequest:
            continue
        shared = wanted & {v.lower() for v in other.scope.vaults}
        if shared:
            found.append((listed, VaultId.parse(sorted(shared)[0]).vault_name))
    return found


def _named(found: tuple[DurableOrchestrationStatus, str]) -> str:
    return f"{found[0].instance_id} (vault {found[1]})"


def _age_order(one: DurableOrchestrationStatus, other: DurableOrchestrationStatus) -> int:
    return -1 if _created_before(one, other) else (1 if _created_before(other, one) else 0)


def _created_before(one: DurableOrchestrationStatus, other: DurableOrchestrationStatus) -> bool:
    """One order every starter sees alike: the task hub's creation time, then the id."""
    if one.instance_id == other.instance_id:
        return False
    if one.created_time is None or other.created_time is None:
        return bool(one.instance_id < other.instance_id)
    return bool((one.created_time, one.instance_id) < (other.created_time, other.instance_id))


async def _decision_of(client: df.DurableOrchestrationClient, incident_id: str) -> str:
    """Whether another new incident was admitted or refused, waiting for its starter to decide
    (it does within milliseconds); "admitted" when it takes too long, to stay on the safe side."""
    deadline = time.monotonic() + ADMISSION_WAIT_SECONDS
    while time.monotonic() < deadline:
        status = await client.get_status(incident_id)
        if status is None or status.runtime_status not in ACTIVE:
            return "refused"
        custom = status.custom_status if isinstance(status.custom_status, dict) else {}
        if custom.get("state") not in (None, ADMITTING):
            return "admitted"
        await asyncio.sleep(0.05)
    return "admitted"


async def _admit(
    client: df.DurableOrchestrationClient, incident_id: str, vaults: tuple[VaultId, ...]
) -> None:
    """Let the new incident go on unless another overlaps it. Requests arriving at once all
    pass the check before their start; after it, each looks again. Creation times come in whole
    seconds and an instance may become visible after a younger one checked, so: an older one
    seen means yield; a younger one seen may not have seen this one, so wait for its starter's
    decision and yield if it was admitted. Waits only go from older to younger: none is circular.
    A refused instance ends Terminated, having listed nothing.

    Raises:
        HttpError: 409, naming the incident that goes on.
    """
    me = await client.get_status(incident_id)
    others = await _overlapping(client, vaults, besides=incident_id)
    winner = next((o for o in others if _created_before(o[0], me)), None)
    for other in others:
        if winner is not None:
            break
        if await _decision_of(client, other[0].instance_id) == "admitted":
            winner = other
    if winner is not None:
        await client.terminate(
            incident_id, f"refused: incident {_named(winner)} runs on an overlapping scope"
        )
        raise HttpError(409, f"incident {_named(winner)} is still running on an overlapping scope")
    await client.raise_event(incident_id, ADMIT_EVENT, {"admitted": True})


async def _require_all_allowed(vaults: tuple[VaultId, ...], settings: Settings) -> None:
    """Every vault of the scope on the allowlist, as ARM knows it; the ids first (no request for
    a scope refused anyway), then ARM for all at once. Raises HttpError(403) naming the first refused."""
    for vault in vaults:
        try:
            check_allowed(vault.subscription_id, settings)
        except NotAllowed as exc:
            raise HttpError(403, f"vault {vault.vault_name}: {exc.detail}") from None
    await asyncio.gather(*(require_allowed(vault, settings) for vault in vaults))


@bp.route(route="incidents", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def start_incident(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    settings = current_settings()
    body = request_body(req)
    vaults, scope_text = _vaults_of(body.get("scope"), settings)
    if not vaults:
        raise HttpError(400, f"the scope ({scope_text}) holds no vault: nothing to rotate")
    await _require_all_allowed(vaults, settings)
    reason = text_field(body, "reason", required=True)
    waive = body.get("waiveApproval", False)
    if not isinstance(waive, bool):
        raise HttpError(400, "'waiveApproval' must be true or false")
    scope = IncidentScope(
        vaults=tuple(v.arm_id for v in vaults),
        tags=_tags(body),
        target_kinds=_strings(body, "targets"),
        servers=_strings(body, "servers"),
    )
    max_per_vault = _bound(body, "maxPerVault", settings.incident_max_per_vault)
    max_per_server = _bound(body, "maxPerServer", settings.incident_max_per_server)
    principal = trusted_principal(req.headers, settings)
    requested_by = principal.name if principal else "http api"
    if waive:
        # Waiving an approval is an approver's decision, made in advance for the whole scope.
        requested_by = decider_for(principal, text_field(body, "requester", required=False), settings).name
    running = await _overlapping(client, vaults)
    if running:
        raise HttpError(409, f"incident {_named(running[0])} is still running on an overlapping scope")
    request = IncidentRequest(
        scope=scope,
        scope_text=scope_text,
        reason=reason,
        requested_by=requested_by,
        requested_by_id=principal.id if principal else None,
        policy=policy_from(settings),
        max_per_vault=max_per_vault,
        max_per_server=max_per_server,
        waive_approval=waive,
    )
    incident_id = INCIDENT_PREFIX + uuid.uuid4().hex
    await client.start_new(ORCHESTRATOR, incident_id, request.to_dict())
    await _admit(client, incident_id, vaults)
    logger.warning(
        "incident %s started by %s on %s (approval %s): %s",
        incident_id,
        requested_by,
        scope_text,
        "waived" if waive else "honoured",
        reason,
    )
    return json_response(202, {"id": incident_id, "scope": scope_text, "approvalWaived": waive})


async def _incident(client: df.DurableOrchestrationClient, incident_id: str) -> DurableOrchestrationStatus:
    if not incident_id.startswith(INCIDENT_PREFIX) or len(incident_id) > 64:
        raise HttpError(404, f"no incident {incident_id!r}")
    status = await client.get_status(incident_id)
    if not status or status.runtime_status is None:
        raise HttpError(404, f"no incident {incident_id!r}")
    return status


@bp.route(route="incidents/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def get_incident(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return json_response(200, rotation_view(await _incident(client, req.route_params["id"])))


# The incident states (custom status "state") each action applies to.
_APPLIES = {"pause": ("running",), "resume": ("paused",), "cancel": ("running", "paused", "listing")}


@bp.route(route="incidents/{id}/{action}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def steer_incident(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    action = req.route_params["action"]
    if action not in _APPLIES:
        raise HttpError(404, f"no action {action!r}: pause, resume or cancel")
    settings = current_settings()
    status = await _incident(client, req.route_params["id"])
    state = (status.custom_status or {}).get("state") if isinstance(status.custom_status, dict) else None
    if status.runtime_status not in ACTIVE or state not in _APPLIES[action]:
        shown = state or (status.runtime_status.value if status.runtime_status else "unknown")
        raise HttpError(409, f"incident {status.instance_id} is {shown}; {action} does not apply")
    principal = trusted_principal(req.headers, settings)
    by = principal.name if principal else "http api"
    await client.raise_event(status.instance_id, CONTROL_EVENT, {"action": action, "by": by})
    logger.warning("incident %s: %s requested by %s", status.instance_id, action, by)
    return json_response(202, {"id": status.instance_id, "action": action, "by": by})
