"""Deciding an approval: who may, on which rotation, and whether the decision took effect.

One piece serves the HTTP API (``POST /api/rotations/{id}/approve|reject``) and the approval
page (``/api/approvals``), so both refuse and record exactly alike:

- the decider is the principal App Service authentication signed in (``starters/principal.py``);
  without one, only ``ROTATION_ALLOW_UNVERIFIED_APPROVER`` lets a key holder decide under a name
  it gives, recorded as unverified;
- ``ROTATION_APPROVERS`` (object ids or group ids) limits who may decide;
- the principal that started a rotation through the API may not approve it (it may reject it);
- a rotation decides once: a second decision, one on a rotation not waiting, or one that lost the
  race against the deadline is refused with 409 and changes nothing.

After raising the event, ``decide`` waits (briefly) for the orchestration to record which decision
took effect, and compares that with its own by ``decision_id``: a 202 from the task hub only says
the event was queued, not that it won (the timer may have fired first, or another decision).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from orchestrators.rotate_secret import DECISION_EVENT, TIMEOUT_APPROVER
from rotation.errors import InvalidRequest
from rotation.model import Decision
from rotation.settings import Settings
from starters.http_errors import MAX_TEXT, HttpError
from starters.principal import Principal

logger = logging.getLogger(__name__)

# How long a decision waits for the orchestration to record it before answering "sent".
RECORD_WAIT_SECONDS = 15.0
_POLL_SECONDS = 0.2


class Refused(HttpError):
    """A decision refused; ``code`` names the reason for the approval page's fixed messages."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


@dataclass(frozen=True)
class Decider:
    """Who decides: a verified principal, or (only when allowed) a name a key holder gave."""

    name: str
    principal: Principal | None

    @property
    def verified(self) -> bool:
        return self.principal is not None


@dataclass(frozen=True)
class Decided:
    """A decision this call made; ``recorded`` once the orchestration shows it took effect."""

    rotation_id: str
    decision: Decision
    recorded: bool


# rotate_<vault>_<secret, lower case>_<version> (SecretRef.rotation_id): nothing else reaches the
# task hub's URLs.
_ROTATION_ID = re.compile(r"rotate_[a-z0-9-]{3,24}_[a-z0-9-]{1,127}_[0-9a-f]{32}")


def is_rotation_id(rotation_id: str) -> bool:
    return _ROTATION_ID.fullmatch(rotation_id) is not None


async def find_rotation(
    client: df.DurableOrchestrationClient, rotation_id: str, *, show_input: bool = False
) -> DurableOrchestrationStatus:
    """Raises HttpError 404 unless the rotation exists."""
    if not is_rotation_id(rotation_id):
        raise Refused(404, "not-found", f"no rotation {rotation_id!r}")
    status = await client.get_status(rotation_id, show_input=show_input)
    if not status or status.runtime_status is None:
        raise Refused(404, "not-found", f"no rotation {rotation_id!r}")
    return status


def decider_for(principal: Principal | None, named_approver: str, settings: Settings) -> Decider:
    """Who is deciding, or why nobody may.

    Raises:
        Refused: 403 without a principal (unless unverified decisions are allowed), or for a
            principal outside ROTATION_APPROVERS; 400 for an unverified decision without a name.
    """
    if principal is not None:
        if settings.approvers and not principal.is_one_of(settings.approvers):
            raise Refused(
                403,
                "not-an-approver",
                f"{principal.name} ({principal.id}) is not in ROTATION_APPROVERS, "
                "neither by object id nor by a group",
            )
        return Decider(name=principal.name, principal=principal)
    if not settings.allow_unverified_approver:
        why = (
            "no principal is signed in"
            if settings.app_service_auth_enabled
            else "App Service authentication is off for this app"
        )
        raise Refused(
            403,
            "no-principal",
            f"a decision needs a principal signed in by App Service authentication ({why}); "
            "ROTATION_ALLOW_UNVERIFIED_APPROVER is off",
        )
    if settings.approvers:
        raise Refused(
            403,
            "unverified-refused",
            "ROTATION_APPROVERS is set, and a name given with a function key cannot be matched "
            "against it: sign in through App Service authentication",
        )
    if not named_approver:
        raise Refused(400, "approver-required", "'approver' is required")
    return Decider(name=named_approver, principal=None)


def waiting_for_decision(status: DurableOrchestrationStatus) -> bool:
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    return (
        status.runtime_status == OrchestrationRuntimeStatus.Running
        and custom.get("step") == "approval"
        and not custom.get("decision")
    )


def recorded_decision(status: DurableOrchestrationStatus) -> Decision | None:
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    try:
        return Decision.from_dict(custom["decision"]) if custom.get("decision") else None
    except InvalidRequest:
        return None


def rotation_input(status: DurableOrchestrationStatus) -> dict[str, Any]:
    """The orchestration's input (RotationRequest as a dict), or {} when it cannot be read.

    The Python durable client JSON-encodes the input it starts an instance with, so the task hub
    may hand it back as that JSON text."""
    raw: Any = status.input_
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _not_waiting(status: DurableOrchestrationStatus) -> Refused:
    """The 409 for a rotation that takes no decision now, saying why."""
    earlier = recorded_decision(status)
    if earlier is not None:
        when = f" at {earlier.decided_at}" if earlier.decided_at else ""
        if earlier.approver == TIMEOUT_APPROVER:
            return Refused(409, "timed-out", f"already decided: the approval timed out{when}")
        verb = "approved" if earlier.approved else "rejected"
        return Refused(409, "already-decided", f"already decided: {verb} by {earlier.approver}{when}")
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    state = status.runtime_status.value if status.runtime_status else "unknown"
    return Refused(
        409,
        "not-waiting",
        f"rotation is not waiting for a decision (it is {state}, step {custom.get('step')})",
    )


async def decide(
    client: df.DurableOrchestrationClient,
    rotation_id: str,
    *,
    approved: bool,
    decider: Decider,
    reason: str,
    record_wait_seconds: float = RECORD_WAIT_SECONDS,
) -> Decided:
    """Raise ``decider``'s decision at the rotation, once every check passed.

    Raises:
        Refused: 400 a rejection without a reason; 404 no such rotation; 403 the requester
            approving its own rotation; 409 not waiting, already decided, timed out, or the
            rotation ended or decided otherwise between the check and the raise.
    """
    reason = reason.strip()
    if not approved and not reason:
        raise Refused(400, "reason-required", "'reason' is required")
    if len(reason) > MAX_TEXT:
        raise Refused(400, "reason-too-long", f"'reason' is longer than {MAX_TEXT} characters")
    status = await find_rotation(client, rotation_id, show_input=True)
    if not waiting_for_decision(status):
        raise _not_waiting(status)
    requester_id = rotation_input(status).get("requested_by_id")
    principal = decider.principal
    if approved and principal is not None and str(requester_id or "").lower() == principal.id:
        raise Refused(
            403,
            "requester",
            f"{principal.name} requested this rotation and may not approve it (separation of "
            "duties); another approver must",
        )
    decision = Decision(
        approved=approved,
        approver=decider.name,
        reason=reason,
        approver_id=principal.id if principal else None,
        verified=decider.verified,
        decision_id=uuid.uuid4().hex,
    )
    try:
        await client.raise_event(rotation_id, DECISION_EVENT, decision.to_dict())
    except Exception:
        # The task hub refuses events for ended instances (410): the rotation ended (timed out,
        # was terminated) between the check above and now.
        now = await find_rotation(client, rotation_id)
        if not waiting_for_decision(now):
            raise _not_waiting(now) from None
        raise
    logger.info(
        "rotation %s: %s by %s (%s), waiting for it to take effect",
        rotation_id,
        "approval" if approved else "rejection",
        decider.name,
        "verified" if decider.verified else "unverified",
    )
    return await _taken(client, rotation_id, decision, record_wait_seconds)


async def _taken(
    client: df.DurableOrchestrationClient, rotation_id: str, decision: Decision, wait_seconds: float
) -> Decided:
    """Wait until the orchestration records a decision; ours, or a 409 saying whose won."""
    deadline = time.monotonic() + wait_seconds
    while True:
        status = await find_rotation(client, rotation_id)
        recorded = recorded_decision(status)
        if recorded is not None:
            if recorded.decision_id == decision.decision_id:
                return Decided(rotation_id, recorded, recorded=True)
            raise _not_waiting(status)
        if status.runtime_status not in (
            OrchestrationRuntimeStatus.Running,
            OrchestrationRuntimeStatus.Pending,
        ):
            raise _not_waiting(status)
        if time.monotonic() >= deadline:
            return Decided(rotation_id, decision, recorded=False)
        await asyncio.sleep(_POLL_SECONDS)
