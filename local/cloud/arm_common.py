"""What every Azure Resource Manager route of the local cloud shares: ARM's token checks, its
AuthorizationFailed and not-found answers, and the answers of injected faults."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from local.cloud import rbac
from local.cloud.faults import Fault, apply_latency, drop_connection
from local.cloud.requestlog import IDENTITY_KEY
from local.cloud.responses import arm_error
from local.cloud.state import CloudState
from local.cloud.tokens import ARM_AUDIENCES, TokenExpired, TokenInvalid, bearer_token, canonical_audience


def _challenge(description: str) -> dict[str, str]:
    return {
        "WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
        f'error_description="{description}"'
    }


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%m/%d/%Y %H:%M:%S")


def authenticate(request: web.Request, state: CloudState) -> tuple[str, web.Response | None]:
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


def authorization_failed(
    state: CloudState, caller: str, scope: str, action: str, message_action: str | None = None
) -> web.Response | None:
    """ARM's 403 when ``caller`` may not perform ``action`` on ``scope`` (the caller's spelling), else None.

    ``message_action``: the action as ARM words it in the message, when that differs in case.
    """
    if rbac.is_allowed(state.grants, caller, scope, action, data=False):
        return None
    return arm_error(
        403,
        "AuthorizationFailed",
        f"The client '{caller}' with object id '{caller}' does not have authorization to perform action "
        f"'{message_action or action}' over scope '{scope}' or the scope is invalid. If access was recently "
        "granted, please refresh your credentials.",
    )


def container_not_found(state: CloudState, request: web.Request, sub: str, rg: str) -> web.Response | None:
    """ARM's 404 for a subscription or resource group (lower-case ids) that does not exist, else None."""
    if sub not in state.topology.subscriptions:
        return arm_error(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
    if (sub, rg) not in state.topology.resource_groups:
        original_rg = request.path.split("/")[4]
        return arm_error(404, "ResourceGroupNotFound", f"Resource group '{original_rg}' could not be found.")
    return None


def resource_not_found(request: web.Request, resource_type: str) -> web.Response:
    """ARM's 404 for a resource (``Microsoft.Web/sites``, …) that its resource group does not hold."""
    original_rg, original_name = request.path.split("/")[4], request.path.split("/")[8]
    return arm_error(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{original_name}' under resource group '{original_rg}' was not "
        "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


async def fault_answer(request: web.Request, faults: list[Fault]) -> web.Response | None:
    """Apply injected latency, then answer a throttle (429 + Retry-After) or unavailable (503) fault,
    or drop the connection; None when no failing fault applies."""
    failing = await apply_latency(faults)
    if not failing:
        return None
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
