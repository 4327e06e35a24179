"""Event Grid custom topics: ``POST https://<topic>.<region>-1.eventgrid.azure.net/api/events``.

What ``EventGridPublisherClient`` (azure-eventgrid) sends to a topic whose input schema is
CloudEvents 1.0 with local authentication disabled: a bearer token for
``https://eventgrid.azure.net``, ``Content-Type: application/cloudevents-batch+json;
charset=utf-8`` and a JSON array of CloudEvents. Checks in this order: the path and method, the
credential (401 without a valid Entra token; the topic's keys and SAS tokens are refused, local
authentication being disabled), the caller's ``Microsoft.EventGrid/events/send/action`` on the
topic (the EventGrid Data Sender role; without it Azure answers **401** ``Unauthorized`` "The
principal associated with access token presented with the incoming request does not have
permission to send data to <topic id>", as reported in Azure/azure-sdk-for-net#22831), the
injected faults (429, 503, latency, a dropped connection: ``publish_events``), the content
type, the size (1 MB), then every event's CloudEvents attributes. Accepted events are
kept in memory per topic (``state.TopicInbox``, the newest 1000) for the admin API; nothing is delivered onwards.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from aiohttp import web

from local.cloud import rbac
from local.cloud.arm_common import fault_answer
from local.cloud.eventgrid_events import event_time
from local.cloud.requestlog import IDENTITY_KEY
from local.cloud.responses import json_response
from local.cloud.state import STATE, CloudState
from local.cloud.tokens import (
    EVENTGRID_AUDIENCES,
    TokenExpired,
    TokenInvalid,
    bearer_token,
    canonical_audience,
)
from local.cloud.topology import EventGridTopic

MAX_BODY_BYTES = 1024 * 1024  # Event Grid's limit for one request (and for one event)
_BATCH_TYPE = "application/cloudevents-batch+json"
_SINGLE_TYPE = "application/cloudevents+json"
# CloudEvents 1.0 context attributes: required, and the optional ones a string must hold.
_REQUIRED = ("id", "source", "specversion", "type")
_OPTIONAL_STRINGS = ("subject", "datacontenttype", "dataschema", "time", "data_base64")


def _report_suffix() -> str:
    # Event Grid ends its error messages with a tracking id and time to quote to support.
    now = dt.datetime.now(dt.UTC).strftime("%m/%d/%Y %I:%M:%S %p")
    return f" Report '{uuid.uuid4()}:0:{now} (UTC)' to our forums for assistance or raise a support ticket."


def _error(status: int, code: str, message: str, detail_code: str | None = None) -> web.Response:
    text = message + _report_suffix()
    error: dict[str, Any] = {"code": code, "message": text}
    if detail_code is not None:
        error["details"] = [{"code": detail_code, "message": text}]
    return json_response(status, {"error": error}, {"x-ms-request-id": str(uuid.uuid4())})


def _unauthorized(message: str) -> web.Response:
    return _error(401, "Unauthorized", message)


def _authenticate(
    request: web.Request, state: CloudState, topic: EventGridTopic
) -> tuple[str, web.Response | None]:
    """The caller's object id, or Event Grid's 401."""
    if "aeg-sas-key" in request.headers or "aeg-sas-token" in request.headers:
        return "", _unauthorized(
            f"The request to {topic.arm_id} uses a shared access key or token, but local authentication "
            "is disabled for this topic: use a Microsoft Entra ID token."
        )
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return "", _unauthorized("The request authorization header is missing or malformed.")
    try:
        claims = state.issuer.verify(token)
    except TokenExpired:
        return "", _unauthorized("The access token presented with the incoming request has expired.")
    except TokenInvalid:
        return "", _unauthorized("The access token presented with the incoming request is invalid.")
    if (
        canonical_audience(claims.audience) not in EVENTGRID_AUDIENCES
        or claims.tenant_id != state.topology.tenant_id
    ):
        return "", _unauthorized(
            f"The access token presented with the incoming request has the audience '{claims.audience}'; "
            "expected 'https://eventgrid.azure.net'."
        )
    request[IDENTITY_KEY] = state.identity_name(claims.object_id)
    return claims.object_id, None


def _check_event(event: Any, index: int) -> str | None:
    """Why ``event`` is not a CloudEvent 1.0, or None."""
    where = f"events[{index}]"
    if not isinstance(event, dict):
        return f"{where} is not a JSON object."
    for name in _REQUIRED:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return f"Required property '{name}' was not set or is not a non-empty string in {where}."
    if event["specversion"] != "1.0":
        return f"{where} has specversion '{event['specversion']}'; this topic accepts CloudEvents 1.0."
    for name in _OPTIONAL_STRINGS:
        if name in event and event[name] is not None and not isinstance(event[name], str):
            return f"Property '{name}' of {where} must be a string."
    if "data" in event and "data_base64" in event:
        return f"{where} sets both 'data' and 'data_base64'."
    if isinstance(event.get("time"), str):
        try:
            dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        except ValueError:
            return f"Property 'time' of {where} is not an RFC 3339 timestamp."
    for name in event:
        # CloudEvents attribute names: lower-case letters and digits (data_base64 aside).
        if name != "data_base64" and not (
            (name.isascii() and name.isalnum() and name.islower()) or name.isdigit()
        ):
            return f"Attribute name '{name}' of {where} is not a valid CloudEvents attribute name."
    return None


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    topic = state.topology.topic_by_host(request.host.split(":")[0])
    assert topic is not None  # the dispatcher sends only topic hosts here
    if request.path.rstrip("/").lower() != "/api/events":
        return _error(404, "NotFound", f"The path {request.path} is not served by topic {topic.name}.")
    if request.method != "POST":
        return _error(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}.")
    caller, refusal = _authenticate(request, state, topic)
    if refusal is not None:
        return refusal
    if not rbac.is_allowed(state.grants, caller, topic.arm_id, rbac.EVENTGRID_SEND, data=True):
        return _unauthorized(
            "The principal associated with access token presented with the incoming request does not have "
            f"permission to send data to {topic.arm_id}."
        )
    # Injected faults (target: the topic, operation publish_events) meet authorised calls only.
    answer = await fault_answer(request, state.faults.take(topic.name, "publish_events"))
    if answer is not None:
        return answer
    content_type = request.content_type.lower()
    if content_type not in (_BATCH_TYPE, _SINGLE_TYPE):
        return _error(
            400,
            "BadRequest",
            f"Content-Type '{request.headers.get('Content-Type', '')}' is not accepted: topic {topic.name} takes "
            f"CloudEvents ({_BATCH_TYPE} or {_SINGLE_TYPE}).",
            "InputJsonInvalid",
        )
    try:
        body = await request.read()  # the listener's own limit is the same megabyte
    except web.HTTPRequestEntityTooLarge:
        body = b""
        too_large = True
    else:
        too_large = len(body) > MAX_BODY_BYTES
    if too_large:
        return _error(413, "PayloadTooLarge", f"The maximum size ({MAX_BODY_BYTES}) has been exceeded.")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "BadRequest", "The request body is not valid JSON.", "InputJsonInvalid")
    events = doc if content_type == _BATCH_TYPE else [doc]
    if not isinstance(events, list) or not events:
        return _error(
            400,
            "BadRequest",
            "The request body must be a non-empty array of CloudEvents.",
            "InputJsonInvalid",
        )
    for index, event in enumerate(events):
        problem = _check_event(event, index)
        if problem is not None:
            return _error(400, "BadRequest", problem, "InputJsonInvalid")
    received_at = event_time()
    for event in events:
        state.topic_inbox.add(
            topic.name,
            {"received_at": received_at, "identity": request.get(IDENTITY_KEY, ""), "event": event},
        )
    return web.Response(status=200)
