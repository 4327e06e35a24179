"""Bad input: a clear error, the host keeps running, and nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from host_helpers import Api, HostFactory, RunningHost

BASE = "/runtime/webhooks/durabletask"
MAX_BODY = 4096


@pytest.fixture(scope="module")
def host(module_host_factory: HostFactory) -> RunningHost:
    running = module_host_factory(time_scale=20, extra_args=["--max-body-bytes", str(MAX_BODY)])
    running.api.start("wait_forever", "waiting")
    running.api.wait("waiting", ("Running",))
    running.api.start("fan_out", "ended", {"count": 1})
    running.api.wait("ended")
    return running


def _snapshot(api: Api) -> list[tuple[str, str, object]]:
    return [(item["instanceId"], item["runtimeStatus"], item["output"]) for item in api.list()]


@contextmanager
def unchanged(api: Api) -> Iterator[None]:
    """The block must leave every instance as it was, and the host answering."""
    before = _snapshot(api)
    yield
    assert api.alive()
    assert _snapshot(api) == before


def test_unknown_orchestrator(host: RunningHost) -> None:
    with unchanged(host.api):
        reply = host.api.call("POST", BASE + "/orchestrators/no_such_orchestrator", json_body={})
        assert reply.status == 400
        message = reply.json()["ExceptionMessage"]
        assert "The function 'no_such_orchestrator' doesn't exist" in message
        assert "'approval_flow'" in message  # the known orchestrators are listed


def test_unknown_functions_and_routes(host: RunningHost) -> None:
    with unchanged(host.api):
        assert host.api.call("POST", "/admin/functions/no_such_function", json_body={}).status == 404
        assert host.api.call("GET", "/api/no/such/route").status == 404
        assert host.api.call("DELETE", "/api/echo/a").status == 404  # the route exists, the method does not
        reply = host.api.call(
            "POST",
            "/runtime/webhooks/eventgrid?functionName=nope",
            json_body=[],
            headers={"aeg-event-type": "Notification"},
        )
        assert reply.status == 404
        assert "cannot find function: 'nope'" in reply.text


def test_malformed_json(host: RunningHost) -> None:
    api = host.api
    json_header = {"Content-Type": "application/json"}
    with unchanged(api):
        start = api.call(
            "POST", BASE + "/orchestrators/fan_out/bad-json", data=b"{not json", headers=json_header
        )
        assert start.status == 400
        assert start.json()["Message"] == "Invalid JSON content"
        event = api.call(
            "POST", BASE + "/instances/waiting/raiseEvent/Continue", data=b"{oops", headers=json_header
        )
        assert event.status == 400
        assert event.json()["Message"] == "Invalid JSON content"
        clock = api.call("POST", "/admin/host/clock", data=b"{", headers=json_header)
        assert clock.status == 400
        grid = api.call(
            "POST",
            "/runtime/webhooks/eventgrid?functionName=on_secret_event",
            data=b"[{",
            headers={"aeg-event-type": "Notification"},
        )
        assert grid.status == 400
        assert "not valid JSON" in grid.json()["Message"]
    assert api.status("bad-json").status == 404


def test_wrong_content_type_for_raise_event(host: RunningHost) -> None:
    with unchanged(host.api):
        reply = host.api.call(
            "POST",
            BASE + "/instances/waiting/raiseEvent/Continue",
            data=b'{"x": 1}',
            headers={"Content-Type": "text/plain"},
        )
        assert reply.status == 400
        assert reply.json()["Message"] == "Only application/json request content is supported"
    history = host.api.status("waiting", "?showHistory=true").json()["historyEvents"]
    assert "EventRaised" not in [event["EventType"] for event in history]


def test_unknown_instance_ids(host: RunningHost) -> None:
    api = host.api
    with unchanged(api):
        assert api.status("ghost").status == 404
        assert api.raise_event("ghost", "Continue", 1).status == 404
        for operation in ("terminate", "suspend", "resume", "rewind"):
            assert api.call("POST", BASE + f"/instances/ghost/{operation}").status == 404, operation
        assert api.call("DELETE", BASE + "/instances/ghost").status == 404
        restart = api.call("POST", BASE + "/instances/ghost/restart")
        assert restart.status == 400
        assert "ghost" in restart.json()["ExceptionMessage"]


def test_operations_on_an_ended_instance(host: RunningHost) -> None:
    api = host.api
    with unchanged(api):
        assert api.raise_event("ended", "Continue", 1).status == 410
        assert api.call("POST", BASE + "/instances/ended/terminate?reason=late").status == 410
        assert api.call("POST", BASE + "/instances/ended/suspend").status == 410
        assert api.call("POST", BASE + "/instances/ended/rewind").status == 410
        running_rewind = api.call("POST", BASE + "/instances/waiting/rewind")
        assert running_rewind.status == 500
        assert "only supported on failed" in running_rewind.json()["ExceptionMessage"]


def test_bodies_over_the_size_cap(host: RunningHost) -> None:
    big = {"blob": "x" * (MAX_BODY * 2)}
    with unchanged(host.api):
        assert host.api.call("POST", BASE + "/orchestrators/fan_out/too-big", json_body=big).status == 413
        assert host.api.raise_event("waiting", "Continue", big).status == 413
        assert host.api.call("POST", "/api/echo/a", json_body=big).status == 413
    assert host.api.status("too-big").status == 404


def test_bad_instance_ids_and_duplicates(host: RunningHost) -> None:
    api = host.api
    with unchanged(api):
        reply = api.call("POST", BASE + "/orchestrators/fan_out/@entity-like", json_body={"count": 1})
        assert reply.status == 400
        assert "must not start with @" in reply.json()["ExceptionMessage"]
        duplicate = api.call("POST", BASE + "/orchestrators/wait_forever/waiting")
        assert duplicate.status == 500
        assert "already exists" in duplicate.json()["ExceptionMessage"]


def test_bad_query_parameters_and_clock_jumps(host: RunningHost) -> None:
    api = host.api
    with unchanged(api):
        assert api.call("GET", BASE + "/instances/?runtimeStatus=Sleeping").status == 400
        assert api.call("GET", BASE + "/instances/?createdTimeFrom=yesterday").status == 400
        assert api.call("GET", BASE + "/instances/?top=many").status == 400
        assert api.call("DELETE", BASE + "/instances/?runtimeStatus=Completed").status == 400
        before = api.call("GET", "/admin/host/clock").json()["offsetSeconds"]
        assert api.call("POST", "/admin/host/clock", json_body={"advanceSeconds": -5}).status == 400
        assert api.call("POST", "/admin/host/clock", json_body={"advanceSeconds": "soon"}).status == 400
        assert api.call("GET", "/admin/host/clock").json()["offsetSeconds"] - before < 5


@pytest.mark.parametrize(
    ("orchestrator", "expected"),
    [
        ("raises", "Orchestrator function 'raises' failed: the orchestrator broke on purpose"),
        (
            "bad_output",
            "Orchestrator function 'bad_output' failed: Object of type object is not JSON serializable",
        ),
        (
            "nondeterministic",
            "Orchestrator function 'nondeterministic' failed: Non-Deterministic workflow detected",
        ),
        (
            "unknown_activity",
            "Orchestrator function 'unknown_activity' failed: The function 'no_such_activity' doesn't exist, "
            "is disabled, or is not an activity function.",
        ),
    ],
)
def test_orchestrators_that_misbehave_end_failed(host: RunningHost, orchestrator: str, expected: str) -> None:
    instance = host.api.start(orchestrator, f"misbehaving-{orchestrator}")
    done = host.api.wait(instance)
    assert done["runtimeStatus"] == "Failed"
    assert done["output"].startswith(expected), done["output"]
    assert host.api.alive()
    # Other instances were not disturbed.
    assert host.api.status("waiting").json()["runtimeStatus"] == "Running"


def test_nondeterminism_is_caught_before_the_wrong_activity_runs(host: RunningHost) -> None:
    host.api.start("nondeterministic", "nondeterministic-2")
    host.api.wait("nondeterministic-2")
    history = host.api.status("nondeterministic-2", "?showHistory=true").json()["historyEvents"]
    names = [event.get("FunctionName") for event in history if event["EventType"] == "TaskCompleted"]
    assert names == ["echo"]
