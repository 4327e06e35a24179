"""The Durable Functions HTTP API: ``/runtime/webhooks/durabletask/...`` and the SDK's RPC ``/durabletask/...``.

Both prefixes are served by one handler, as the extension's HttpApiHandler serves the public
webhook and the local RPC listener. Routes, status codes and bodies follow HttpApiHandler:
202 + Location + Retry-After while an instance runs, 200 once it ended (Failed too, unless
``returnInternalServerErrorOnFailure=true``), 404 unknown, 410 for operations on ended instances,
400 for bad input. Error bodies use ASP.NET's HttpError shape (``Message``/``ExceptionMessage``),
which is what the Python client reads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

from aiohttp import web

from local.host.auth import Authorizer, unauthorized
from local.host.client_binding import ClientUrls
from local.host.clock import HostClock, parse_iso
from local.host.instance_ops import ClientError, InstanceOperations
from local.host.status import present_history, status_payload
from local.host.store import InstanceQuery

logger = logging.getLogger(__name__)

RUNTIME_STATUSES = frozenset(
    {"Running", "Completed", "ContinuedAsNew", "Failed", "Canceled", "Terminated", "Pending", "Suspended"}
)
RUNNING_VIEW = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})


def _error(error: ClientError) -> web.Response:
    body: dict[str, Any] = {"Message": error.message}
    if error.exception_message:
        body["ExceptionMessage"] = error.exception_message
    return web.json_response(body, status=error.status)


def _bool_param(request: web.Request, name: str, default: bool) -> bool:
    """.NET bool.TryParse: 'true'/'false' in any case; anything else keeps the default."""
    value = request.query.get(name)
    if value is None:
        return default
    if value.strip().lower() == "true":
        return True
    if value.strip().lower() == "false":
        return False
    return default


def _time_param(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_iso(value).timestamp()
    except ValueError as exc:
        raise ClientError(400, f"'{name}' is not a valid date and time: {value!r}") from exc


def _status_filter(request: web.Request) -> frozenset[str] | None:
    values = [part.strip() for item in request.query.getall("runtimeStatus", []) for part in item.split(",")]
    values = [value for value in values if value]
    if not values:
        return None
    unknown = [value for value in values if value not in RUNTIME_STATUSES]
    if unknown:
        raise ClientError(400, f"unknown runtimeStatus {unknown}; use {sorted(RUNTIME_STATUSES)}")
    return frozenset(values)


def _encode_token(position: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode()


def _decode_token(token: str) -> tuple[float, str]:
    try:
        created, instance_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(created), str(instance_id)
    except (ValueError, TypeError) as exc:
        raise ClientError(400, "x-ms-continuation-token is not a token this host issued") from exc


class DurableHttpApi:
    """Handles both the public webhook routes and the RPC routes of the Python durable client."""

    def __init__(
        self, operations: InstanceOperations, urls: ClientUrls, clock: HostClock, authorizer: Authorizer
    ) -> None:
        self.ops = operations
        self.urls = urls
        self.clock = clock
        self.authorizer = authorizer

    async def handle_webhook(self, request: web.Request) -> web.StreamResponse:
        if not self.authorizer.allows(request, "system:durabletask_extension"):
            return unauthorized()
        return await self._dispatch(request)

    async def handle_rpc(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [part for part in request.match_info.get("tail", "").split("/")]
        while parts and parts[-1] == "":
            parts.pop()
        method = request.method
        try:
            if parts and parts[0] == "orchestrators" and len(parts) in (2, 3):
                if method != "POST":
                    return web.Response(status=404)
                return await self._start(request, parts[1], parts[2] if len(parts) == 3 else None)
            if parts and parts[0] == "instances":
                return await self._instances(request, parts[1:])
            if parts and parts[0] == "entities":
                raise ClientError(404, "durable entities are not supported by the local host")
            return web.Response(status=404)
        except ClientError as error:
            return _error(error)

    async def _instances(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        method = request.method
        if not rest:
            if method == "GET":
                return self._list(request)
            if method == "DELETE":
                return self._purge_matching(request)
            return web.Response(status=404)
        instance_id = rest[0]
        if len(rest) == 1:
            if method == "GET":
                return self._status(request, instance_id)
            if method == "DELETE":
                deleted = self.ops.purge(instance_id)
                return web.json_response({"instancesDeleted": deleted})
            return web.Response(status=404)
        if method != "POST":
            return web.Response(status=404)
        operation = rest[1].lower()
        if operation == "raiseevent" and len(rest) == 3:
            body = await request.read()
            self.ops.raise_event(instance_id, rest[2], request.headers.get("Content-Type"), body)
            return web.Response(status=202)
        if len(rest) != 2:
            return web.Response(status=404)
        reason = request.query.get("reason")
        if operation == "terminate":
            self.ops.terminate(instance_id, reason)
        elif operation == "suspend":
            self.ops.suspend(instance_id, reason)
        elif operation == "resume":
            self.ops.resume(instance_id, reason)
        elif operation == "rewind":
            self.ops.rewind(instance_id, reason)
        elif operation == "restart":
            new_id = self.ops.restart(instance_id, _bool_param(request, "restartWithNewInstanceId", True))
            return await self._created(request, new_id)
        else:
            return web.Response(status=404)
        return web.Response(status=202)

    async def _start(self, request: web.Request, name: str, instance_id: str | None) -> web.StreamResponse:
        body = await request.read()
        input_text = None
        if body:
            try:
                input_text = json.dumps(json.loads(body.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ClientError(400, "Invalid JSON content", str(exc)) from exc
        # DurableOrchestrationClient.start_new(..., version=...) sends ?version= (HttpApiHandler).
        new_id = self.ops.start(name, instance_id or None, input_text, version=request.query.get("version"))
        return await self._created(request, new_id)

    async def _created(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        """CreateCheckStatusResponse, or wait first when ``timeout`` and ``pollingInterval`` are given."""
        timeout = _seconds_param(request, "timeout")
        interval = _seconds_param(request, "pollingInterval")
        if timeout is not None and interval is not None:
            waited = 0.0
            while waited < timeout:
                instance = self.ops.store.get_instance(instance_id)
                if instance is not None and instance.is_terminal:
                    if instance.status == "Completed":
                        return web.json_response(status_payload(instance)["output"])
                    return web.json_response(status_payload(instance))
                step = min(interval, timeout - waited)
                await asyncio.sleep(step)
                waited += step
        origin = f"{request.scheme}://{request.host}"
        body = self.urls.check_status_body(instance_id, origin=origin)
        return web.json_response(
            body, status=202, headers={"Location": body["statusQueryGetUri"], "Retry-After": "10"}
        )

    def _status(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        instance = self.ops.get(instance_id)
        show_history = _bool_param(request, "showHistory", False)
        show_output = _bool_param(request, "showHistoryOutput", False)
        show_input = _bool_param(request, "showInput", True)
        history_events = None
        if show_history and instance.status != "Pending":
            history_events = present_history(
                self.ops.history_events(instance_id), show_output=show_output, show_input=show_input
            )
        payload = status_payload(instance, show_input=show_input, history_events=history_events)
        if instance.status in RUNNING_VIEW:
            return web.json_response(
                payload, status=202, headers={"Location": str(request.url), "Retry-After": "5"}
            )
        status = 200
        if instance.status == "Failed" and _bool_param(request, "returnInternalServerErrorOnFailure", False):
            status = 500
        return web.json_response(payload, status=status)

    def _query(self, request: web.Request) -> InstanceQuery:
        return InstanceQuery(
            created_from=_time_param(request, "createdTimeFrom"),
            created_to=_time_param(request, "createdTimeTo"),
            statuses=_status_filter(request),
            id_prefix=request.query.get("instanceIdPrefix") or None,
        )

    def _list(self, request: web.Request) -> web.StreamResponse:
        query = self._query(request)
        show_input = _bool_param(request, "showInput", True)
        top_text = request.query.get("top")
        top = None
        if top_text:
            try:
                top = int(top_text)
            except ValueError as exc:
                raise ClientError(400, f"'top' must be an integer, got {top_text!r}") from exc
        continuation = request.headers.get("x-ms-continuation-token")
        after = _decode_token(continuation) if continuation and continuation != "null" else None
        page = self.ops.list_instances(query, top=top, after=after)
        headers = {}
        if page.continuation is not None:
            headers["x-ms-continuation-token"] = _encode_token(page.continuation)
        return web.json_response(
            [status_payload(instance, show_input=show_input) for instance in page.instances], headers=headers
        )

    def _purge_matching(self, request: web.Request) -> web.StreamResponse:
        query = self._query(request)
        if query.created_from is None:
            raise ClientError(400, "Please provide value for 'createdTimeFrom' parameter.")
        if query.created_to is None:
            query = InstanceQuery(query.created_from, self.clock.now_epoch(), query.statuses, query.id_prefix)
        deleted = self.ops.purge_matching(query)
        if deleted == 0:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": deleted})


def _seconds_param(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
