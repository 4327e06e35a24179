"""A real HTTP webhook for the Event Grid tests: records every request and answers as told.

It runs an aiohttp server on 127.0.0.1 in a thread of the test process. Each path behaves on its
own: answer the validation handshake (or not), answer the CloudEvents OPTIONS handshake (or not),
fail the next N notifications with a status.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    method: str = "POST"


@dataclass
class Behaviour:
    handshake: str = "echo"  # "echo" the code, "refuse" with 403, or "silent" (200 without the code)
    failures: list[int] = field(default_factory=list)  # statuses for the next notifications
    # The OPTIONS handshake: "echo" the WebHook-Request-Origin, "star", "other" (another origin) or "refuse"
    allowed_origin: str = "echo"


class Webhook:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Webhook:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def behave(self, path: str, behaviour: Behaviour) -> None:
        with self._lock:
            self.behaviours[path] = behaviour

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        app.router.add_route("OPTIONS", "/{tail:.*}", self._options)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        with self._lock:
            self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
            behaviour = self.behaviours.setdefault(request.path, Behaviour())
            kind = request.headers.get("aeg-event-type")
            if kind == "SubscriptionValidation":
                if behaviour.handshake == "refuse":
                    return web.Response(status=403)
                if behaviour.handshake == "silent":
                    return web.json_response({})
                return web.json_response({"validationResponse": body[0]["data"]["validationCode"]})
            if behaviour.failures:
                return web.Response(status=behaviour.failures.pop(0))
        return web.Response(status=200)

    async def _options(self, request: web.Request) -> web.Response:
        with self._lock:
            self.received.append(
                Received(request.path, dict(request.headers), None, time.monotonic(), "OPTIONS")
            )
            behaviour = self.behaviours.setdefault(request.path, Behaviour())
        origin = request.headers.get("WebHook-Request-Origin", "")
        if behaviour.allowed_origin == "refuse":
            return web.Response(status=403)
        allowed = {"echo": origin, "star": "*", "other": "example.com"}[behaviour.allowed_origin]
        return web.Response(status=200, headers={"WebHook-Allowed-Origin": allowed})

    def options(self, path: str) -> list[Received]:
        """The CloudEvents abuse-protection handshakes received on ``path``."""
        with self._lock:
            return [r for r in self.received if r.path == path and r.method == "OPTIONS"]

    def notifications(self, path: str) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.received
                if r.path == path and r.headers.get("aeg-event-type") == "Notification"
            ]

    def validations(self, path: str) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.received
                if r.path == path and r.headers.get("aeg-event-type") == "SubscriptionValidation"
            ]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
