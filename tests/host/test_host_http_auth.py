"""HTTP triggers with the real HttpRequest/HttpResponse, and function keys with ``--auth keys``."""

from __future__ import annotations

import json
import stat

import pytest
from host_helpers import Api, HostFactory, RunningHost, with_client

BASE = "/runtime/webhooks/durabletask"


@pytest.fixture(scope="module")
def open_host(module_host_factory: HostFactory) -> RunningHost:
    return module_host_factory()


@pytest.fixture(scope="module")
def keyed_host(module_host_factory: HostFactory) -> RunningHost:
    return module_host_factory(auth_keys=True)


def test_route_parameters_query_headers_and_body(open_host: RunningHost) -> None:
    reply = open_host.api.call(
        "POST",
        "/api/echo/first-part/42?color=blue&size=2",
        data=b"raw body",
        headers={"X-Sample-Header": "hello"},
    )
    assert reply.status == 201
    assert reply.headers["Content-Type"].startswith("application/json")
    seen = reply.json()
    assert seen == {
        "method": "POST",
        "url": open_host.base_url + "/api/echo/first-part/42?color=blue&size=2",
        "route": {"first": "first-part", "second": "42"},
        "query": {"color": "blue", "size": "2"},
        "header": "hello",
        "body": "raw body",
    }


def test_optional_and_constrained_route_parameters(open_host: RunningHost) -> None:
    assert open_host.api.call("GET", "/api/echo/only").json()["route"] == {"first": "only"}
    assert open_host.api.call("GET", "/api/ECHO/case").status == 201  # literals are case-insensitive
    assert open_host.api.call("GET", "/api/echo/a/not-a-number").status == 404  # {second:int}


def test_a_function_that_raises_gives_500_and_the_host_keeps_serving(open_host: RunningHost) -> None:
    assert open_host.api.call("GET", "/api/explode").status == 500
    assert open_host.api.call("GET", "/api/echo/after").status == 201


def test_keys_are_not_enforced_by_default(open_host: RunningHost) -> None:
    assert open_host.api.call("GET", "/api/admin-only").status == 200
    assert open_host.api.call("GET", "/api/binding").status == 200
    assert not (open_host.process.data_dir / "host-keys.json").exists()


def test_function_and_admin_levels_with_keys(keyed_host: RunningHost) -> None:
    keys = keyed_host.process.keys()
    mode = stat.S_IMODE((keyed_host.process.data_dir / "host-keys.json").stat().st_mode)
    assert mode == 0o600
    function_key = keys["functionKeys"]["default"]
    master = keys["masterKey"]
    api = keyed_host.api
    assert api.call("GET", "/api/binding").status == 401
    assert api.call("GET", "/api/binding", headers={"x-functions-key": "wrong"}).status == 401
    assert api.call("GET", f"/api/binding?code={function_key}").status == 200
    assert api.call("GET", "/api/binding", headers={"x-functions-key": function_key}).status == 200
    assert api.call("GET", "/api/echo/anonymous").status == 201
    assert api.call("GET", f"/api/admin-only?code={function_key}").status == 401
    assert api.call("GET", f"/api/admin-only?code={master}").status == 200
    assert api.call("GET", "/admin/functions").status == 401
    assert api.call("GET", "/admin/functions", headers={"x-functions-key": master}).status == 200
    assert api.call("GET", "/admin/host/status").status == 200  # open: launchers poll it


def test_system_keys_guard_the_webhooks_and_reach_the_client(keyed_host: RunningHost) -> None:
    keys = keyed_host.process.keys()
    durable_key = keys["systemKeys"]["durabletask_extension"]
    grid_key = keys["systemKeys"]["eventgrid_extension"]
    api = keyed_host.api
    assert api.call("GET", BASE + "/instances/").status == 401
    assert api.call("GET", BASE + f"/instances/?code={keys['functionKeys']['default']}").status == 401
    assert api.call("GET", BASE + f"/instances/?code={durable_key}").status == 200
    grid = "/runtime/webhooks/eventgrid?functionName=on_secret_event"
    headers = {"aeg-event-type": "Unsubscribe"}
    assert api.call("POST", grid, json_body=[], headers=headers).status == 401
    assert api.call("POST", grid + f"&code={grid_key}", json_body=[], headers=headers).status == 202
    # The CloudEvents OPTIONS handshake is guarded by the same key (Event Grid sends it to the same URL).
    assert api.call("OPTIONS", grid).status == 401
    assert api.call("OPTIONS", grid + f"&code={grid_key}").status == 200

    keyed = Api(keyed_host.base_url, key=keys["functionKeys"]["default"])
    links = keyed.call("POST", "/api/orchestrators/fan_out/keyed-1", json_body={"count": 2}).json()
    assert links["statusQueryGetUri"].endswith(f"&code={durable_key}")
    assert Api(keyed_host.base_url).call(
        "GET", links["statusQueryGetUri"][len(keyed_host.base_url) :]
    ).status in (200, 202)

    async def status(client):  # the SDK talks to the RPC routes, which need no key
        return (await client.get_status("keyed-1")).instance_id

    assert with_client(keyed, status) == "keyed-1"


def test_keys_survive_a_restart(host_factory: HostFactory) -> None:
    running = host_factory(auth_keys=True)
    first = running.process.keys()
    running.process.stop()
    running.process.start()
    assert running.process.keys() == first
    key = first["functionKeys"]["default"]
    assert running.api.call("GET", f"/api/binding?code={key}").status == 200
    assert (
        json.loads(running.api.call("GET", f"/api/binding?code={key}").text)["taskHubName"] == "LocalTestHub"
    )
