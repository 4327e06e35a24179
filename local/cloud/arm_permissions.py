"""ARM's permissions API: ``GET {scope}/providers/Microsoft.Authorization/permissions``.

What the caller may do at a scope (a subscription, a resource group or a resource), answered
from the local cloud's RBAC model (``rbac.py``), as Azure answers it: one entry per role the
caller holds there (assigned on the scope or above it), each with the role's ``actions`` and
``dataActions``. Any authenticated caller may ask about itself, so no role is needed; the
subscription and resource group must exist (ARM's 404s otherwise), the resource need not (ARM
evaluates the assignments on the scope as written). Clients such as azure-mgmt-authorization
send an empty parent resource path as ``//``, which ARM accepts: so does this route.
"""

from __future__ import annotations

import re

from aiohttp import web

from local.cloud import rbac
from local.cloud.arm_common import container_not_found, fault_answer
from local.cloud.responses import json_response
from local.cloud.state import CloudState

PERMISSIONS_PATH = re.compile(
    r"^(?P<scope>/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+)(?P<resource>/providers/.+?)?)?)"
    r"/providers/microsoft\.authorization/permissions/?$"
)


def match(path: str) -> re.Match[str] | None:
    """The permissions route's match for a lower-case request path (``//`` folded), else None."""
    return PERMISSIONS_PATH.match(re.sub(r"/{2,}", "/", path))


async def handle(
    request: web.Request, state: CloudState, caller: str, found: re.Match[str]
) -> web.StreamResponse:
    if request.method != "GET":
        return json_response(
            405, {"error": {"code": "MethodNotAllowed", "message": "Only GET lists permissions."}}
        )
    sub, rg = found["sub"], found["rg"]
    # A subscription-wide scope has no resource group to check: only the subscription.
    refusal = container_not_found(state, request, sub, rg if rg is not None else "")
    if refusal is not None and (rg is not None or sub not in state.topology.subscriptions):
        return refusal
    name = found["scope"].rstrip("/").rsplit("/", 1)[-1]
    answer = await fault_answer(request, state.faults.take(name, "list_permissions"))
    if answer is not None:
        return answer
    roles = rbac.permissions(state.grants, caller, found["scope"])
    return json_response(
        200,
        {
            "value": [
                {
                    "actions": list(role.actions),
                    "notActions": [],
                    "dataActions": list(role.data_actions),
                    "notDataActions": [],
                }
                for role in roles
            ]
        },
    )
