"""The admin endpoints: host status, function list, run a non-HTTP function now, and the host clock.

- ``GET /admin/host/status``: 200 ``{"state": "Running", ...}`` once every function is indexed
  (the server only listens after that), like the real host; open even with ``--auth keys`` so
  launchers can poll it.
- ``GET /admin/functions``: the indexed functions and their triggers.
- ``POST /admin/functions/{name}`` with ``{"input": "..."}``: runs a timer function now (or an
  Event Grid function with the event JSON as input); 202, the run happens in the background.
- ``GET /admin/host/clock`` and ``POST /admin/host/clock`` with ``{"advanceSeconds": N}``: read or
  jump the host clock (local-host only; the real host has no such thing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from aiohttp import web
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from local.host.auth import Authorizer, unauthorized
from local.host.clock import HostClock, to_iso
from local.host.function_index import FunctionIndex
from local.host.invoker import Invoker
from local.host.timer_triggers import TimerTriggers

logger = logging.getLogger(__name__)

HOST_VERSION = "4.0.0-local"


def _bad_request(message: str) -> web.Response:
    return web.json_response({"Message": message}, status=400)


async def _json_body(request: web.Request) -> Any:
    """The request's JSON body (None when empty); raises ValueError with a readable reason."""
    body = await request.read()
    if not body.strip():
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the request body is not valid JSON: {exc}") from exc


class AdminApi:
    def __init__(
        self,
        *,
        index: FunctionIndex,
        clock: HostClock,
        timers: TimerTriggers,
        invoker: Invoker,
        authorizer: Authorizer,
        hub_name: str,
    ) -> None:
        self.index = index
        self.clock = clock
        self.timers = timers
        self.invoker = invoker
        self.authorizer = authorizer
        self.hub_name = hub_name
        self.started = time.monotonic()
        self._background: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/host/status", self.host_status),
            web.get("/admin/host/clock", self.get_clock),
            web.post("/admin/host/clock", self.set_clock),
            web.get("/admin/functions", self.list_functions),
            web.post("/admin/functions/{name}", self.run_function),
        ]

    async def host_status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": f"local-{os.getpid()}",
                "state": "Running",
                "version": HOST_VERSION,
                "processUptime": int((time.monotonic() - self.started) * 1000),
                "functions": len(self.index.functions),
                "taskHubName": self.hub_name,
            }
        )

    def _clock_view(self) -> dict[str, Any]:
        return {
            "now": to_iso(self.clock.now()),
            "timeScale": self.clock.time_scale,
            "offsetSeconds": round(self.clock.offset_seconds(), 3),
        }

    async def get_clock(self, request: web.Request) -> web.Response:
        if not self.authorizer.allows(request, "admin"):
            return unauthorized()
        return web.json_response(self._clock_view())

    async def set_clock(self, request: web.Request) -> web.Response:
        if not self.authorizer.allows(request, "admin"):
            return unauthorized()
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return _bad_request(str(exc))
        advance = body.get("advanceSeconds") if isinstance(body, dict) else None
        if isinstance(advance, bool) or not isinstance(advance, int | float):
            return _bad_request('the body must be {"advanceSeconds": <number of seconds, >= 0>}')
        if advance < 0:
            return _bad_request("the host clock only moves forward: advanceSeconds must be >= 0")
        self.clock.advance(float(advance))
        logger.info("host clock advanced by %.3f s", advance)
        return web.json_response(self._clock_view())

    async def list_functions(self, request: web.Request) -> web.Response:
        if not self.authorizer.allows(request, "admin"):
            return unauthorized()
        return web.json_response(
            [
                {"name": entry.name, "trigger": entry.trigger_type, "durableName": entry.durable_name}
                for entry in self.index.functions.values()
            ]
        )

    async def run_function(self, request: web.Request) -> web.Response:
        if not self.authorizer.allows(request, "admin"):
            return unauthorized()
        name = request.match_info["name"]
        entry = self.index.functions.get(name)
        if entry is None:
            return web.json_response({"Message": f"function '{name}' does not exist"}, status=404)
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return _bad_request(str(exc))
        if body is not None and not isinstance(body, dict):
            return _bad_request('the body must be a JSON object such as {"input": "..."}')
        if entry.trigger_type == "timerTrigger":
            self._in_background(self.timers.run(name, past_due=False))
        elif entry.trigger_type == "eventGridTrigger":
            raw = (body or {}).get("input")
            try:
                event = json.loads(raw) if isinstance(raw, str) else raw
                value = EventGridEventInConverter.decode(
                    meta.Datum(type="json", value=json.dumps(event)), trigger_metadata={}
                )
            except (TypeError, AttributeError, json.JSONDecodeError):
                return _bad_request("'input' must be one Event Grid event as JSON")
            self._in_background(self._call(name, value))
        else:
            return _bad_request(
                f"function '{name}' has a {entry.trigger_type}; only timer and Event Grid functions run from here"
            )
        logger.info("admin run of function %s accepted", name)
        return web.Response(status=202)

    async def _call(self, name: str, value: Any) -> None:
        try:
            await self.invoker.call(self.index.functions[name], value)
            logger.info("admin run of function %s succeeded", name)
        except Exception as exc:
            logger.info("admin run of function %s raised %s", name, type(exc).__name__)

    def _in_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
