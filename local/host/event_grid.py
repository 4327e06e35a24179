"""The Event Grid webhook: ``POST /runtime/webhooks/eventgrid?functionName=<fn>`` (and ``OPTIONS``).

Behaviour of the Event Grid extension (HttpRequestProcessor and EventGridExtensionConfigProvider):
- ``OPTIONS`` (the CloudEvents 1.0 abuse-protection handshake of a subscription delivering in the
  CloudEvents schema): 200 with ``Webhook-Allowed-Origin`` = the request's ``WebHook-Request-Origin``
  when it is one of Azure's clouds' Event Grid origins, else ``eventgrid.azure.net``. (The extension
  answers 409 only for a .NET function bound to ``EventGridEvent``; a Python function's binding type
  is unknown to it, so both handshakes succeed, as here.)
- ``aeg-event-type: SubscriptionValidation``: 200 ``{"validationResponse": code}``, the code taken
  from ``[0].data.validationCode`` (or from the double-encoded ``data`` of a CloudEvent object);
- ``Notification``: the body is an array (or one object); the function runs once per event, all
  events in parallel; 202 when every call succeeded, 500 with the first error message otherwise,
  so Event Grid delivers the batch again;
- ``Unsubscribe``: 202; any other header value: 400; unknown function: 404.
Each event reaches the function through the SDK's converter, as ``func.EventGridEvent`` or, for a
CloudEvents v1.0 body, ``func.CloudEvent``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from local.host.auth import Authorizer, unauthorized
from local.host.function_index import FunctionEntry
from local.host.invoker import Invoker

logger = logging.getLogger(__name__)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"Message": message}, status=400)


# WebHook-Request-Origin values the extension echoes back; anything else gets the public cloud's.
PUBLIC_CLOUD_ORIGIN = "eventgrid.azure.net"
KNOWN_ORIGINS = frozenset(
    {
        PUBLIC_CLOUD_ORIGIN,
        "eventgrid.azure.us",
        "eventgrid.azure.eaglex.ic.gov",
        "eventgrid.azure.microsoft.scloud",
        "eventgrid.azure.cn",
    }
)


def allowed_origin(request_origin: str | None) -> str:
    """The ``Webhook-Allowed-Origin`` the extension answers an OPTIONS handshake with."""
    return request_origin if request_origin in KNOWN_ORIGINS else PUBLIC_CLOUD_ORIGIN


def validation_code(payload: Any) -> str:
    """The handshake's code; raises ValueError when the body does not carry one."""
    try:
        if isinstance(payload, list):
            return str(payload[0]["data"]["validationCode"])
        if isinstance(payload, dict):
            data = payload["data"]
            # The CloudEvent subscription event carries its data double-encoded.
            if isinstance(data, str):
                data = json.loads(data)
            return str(data["validationCode"])
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError("the validation event has no data.validationCode") from exc
    raise ValueError("the request content should be a JSON object or array")


class EventGridWebhook:
    """Dispatches Event Grid deliveries to eventGridTrigger functions."""

    def __init__(
        self, functions: dict[str, FunctionEntry], *, invoker: Invoker, authorizer: Authorizer
    ) -> None:
        self.functions = functions
        self.invoker = invoker
        self.authorizer = authorizer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.authorizer.allows(request, "system:eventgrid_extension"):
            return unauthorized()
        name = request.query.get("functionName", "")
        entry = self.functions.get(name)
        if entry is None:
            return web.Response(status=404, text=f"cannot find function: '{name}'")
        if request.method == "OPTIONS":
            logger.info("event grid CloudEvents handshake for function %s", name)
            return web.Response(
                status=200,
                headers={
                    "Webhook-Allowed-Origin": allowed_origin(request.headers.get("WebHook-Request-Origin"))
                },
            )
        event_type = (request.headers.get("aeg-event-type") or "").lower()
        body = await request.read()
        if event_type == "subscriptionvalidation":
            try:
                code = validation_code(json.loads(body.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return _bad_request(f"the validation request is not valid JSON: {exc}")
            except ValueError as exc:
                return _bad_request(str(exc))
            logger.info("event grid handshake for function %s", name)
            return web.json_response({"validationResponse": code})
        if event_type == "notification":
            return await self._notify(entry, body)
        if event_type == "unsubscribe":
            return web.Response(status=202)
        return _bad_request(
            "the aeg-event-type header must be SubscriptionValidation, Notification or Unsubscribe"
        )

    async def _notify(self, entry: FunctionEntry, body: bytes) -> web.Response:
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _bad_request(f"the notification is not valid JSON: {exc}")
        events = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(event, dict) for event in events):
            return _bad_request("the request content should be a JSON object or an array of objects")
        results = await asyncio.gather(*(self._deliver(entry, event) for event in events))
        failures = [error for error in results if error is not None]
        if failures:
            return web.Response(status=500, text=failures[0])
        return web.Response(status=202)

    async def _deliver(self, entry: FunctionEntry, event: dict[str, Any]) -> str | None:
        started = time.perf_counter()
        kind = event.get("eventType") or event.get("type")
        try:
            trigger_value = EventGridEventInConverter.decode(
                meta.Datum(type="json", value=json.dumps(event)), trigger_metadata={}
            )
            await self.invoker.call(entry, trigger_value)
        except Exception as exc:
            logger.info(
                "event grid %s event %s (%s) raised %s (%.1f ms)",
                entry.name,
                event.get("id"),
                kind,
                type(exc).__name__,
                (time.perf_counter() - started) * 1000,
            )
            return f"Exception while executing function: Functions.{entry.name}: {type(exc).__name__}: {exc}"
        logger.info(
            "event grid %s event %s (%s) handled (%.1f ms)",
            entry.name,
            event.get("id"),
            kind,
            (time.perf_counter() - started) * 1000,
        )
        return None
