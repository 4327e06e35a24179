"""Helpers of the local host's tests: plain HTTP calls, polling, and the real durable client."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from azure.durable_functions import DurableOrchestrationClient
from azure.durable_functions.models.utils import http_utils

from local.host.process import HostProcess

APPS = Path(__file__).resolve().parents[1] / "apps"
DURABLE_APP = APPS / "durable_app"
NEVER = "0 0 0 1 1 *"  # a sweep schedule that does not fire during a test run (1 January, midnight)
ENDED = ("Completed", "Failed", "Terminated")

T = TypeVar("T")


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Api:
    """Plain HTTP against one host, the way any client (curl, Event Grid, a browser) would call it."""

    def __init__(self, base_url: str, *, key: str | None = None) -> None:
        self.base_url = base_url
        self.key = key

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> Reply:
        all_headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if self.key and "x-functions-key" not in {name.lower() for name in all_headers}:
            all_headers["x-functions-key"] = self.key
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.headers, error.read())

    # -- the Durable HTTP API --------------------------------------------------------------------
    def start(self, name: str, instance_id: str = "", payload: Any = None) -> str:
        path = f"/runtime/webhooks/durabletask/orchestrators/{name}"
        if instance_id:
            path += "/" + urllib.parse.quote(instance_id, safe="")
        reply = self.call("POST", path, json_body=payload)
        assert reply.status == 202, reply.text
        return str(reply.json()["id"])

    def status(self, instance_id: str, query: str = "") -> Reply:
        return self.call(
            "GET",
            f"/runtime/webhooks/durabletask/instances/{urllib.parse.quote(instance_id, safe='')}{query}",
        )

    def wait(
        self, instance_id: str, statuses: tuple[str, ...] = ENDED, timeout: float = 30.0, query: str = ""
    ) -> Any:
        """Poll until the runtime status is one of ``statuses``; returns the status body."""
        last: Any = None

        def reached() -> bool:
            nonlocal last
            reply = self.status(instance_id, query)
            last = reply.json() if reply.status in (200, 202) else None
            return bool(last and last["runtimeStatus"] in statuses)

        wait_until(reached, timeout, lambda: f"{instance_id} did not reach {statuses}: {last}")
        return last

    def wait_custom(self, instance_id: str, key: str, value: Any, timeout: float = 30.0) -> Any:
        last: Any = None

        def reached() -> bool:
            nonlocal last
            last = self.status(instance_id).json()
            custom = (last or {}).get("customStatus")
            return isinstance(custom, dict) and custom.get(key) == value

        wait_until(reached, timeout, lambda: f"{instance_id} custom status never had {key}={value}: {last}")
        return last

    def raise_event(self, instance_id: str, event: str, data: Any) -> Reply:
        return self.call(
            "POST",
            f"/runtime/webhooks/durabletask/instances/{instance_id}/raiseEvent/{event}",
            json_body=data,
        )

    def list(self, query: str = "") -> list[dict[str, Any]]:
        reply = self.call("GET", "/runtime/webhooks/durabletask/instances/" + query)
        assert reply.status == 200, reply.text
        return list(reply.json())

    def advance_clock(self, seconds: float) -> Any:
        reply = self.call("POST", "/admin/host/clock", json_body={"advanceSeconds": seconds})
        assert reply.status == 200, reply.text
        return reply.json()

    def alive(self) -> bool:
        return self.call("GET", "/admin/host/status").status == 200


def wait_until(predicate: Callable[[], bool], timeout: float, message: Callable[[], str] | str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message or "condition not reached")
        time.sleep(0.05)


def client_binding(api: Api) -> str:
    """The binding JSON the host gives a function, read back through the sample app's /api/binding."""
    reply = api.call("GET", "/api/binding")
    assert reply.status == 200, reply.text
    return reply.text


def with_client(api: Api, work: Callable[[DurableOrchestrationClient], Awaitable[T]]) -> T:
    """Run ``work`` with the real DurableOrchestrationClient, on a fresh event loop."""
    binding = client_binding(api)

    async def run() -> T:
        try:
            return await work(DurableOrchestrationClient(binding))
        finally:
            # The SDK keeps one module-level session bound to the loop that created it.
            await http_utils._close_session()

    return asyncio.run(run())


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@dataclass
class RunningHost:
    """A local host a test started (stopped at teardown by the fixture that made it)."""

    process: HostProcess
    api: Api
    state_dir: Path

    @property
    def base_url(self) -> str:
        return self.process.base_url


# Kept here, not in conftest.py: test modules import it, and "conftest" names another module in
# every test folder when pytest collects several at once.
HostFactory = Callable[..., RunningHost]
