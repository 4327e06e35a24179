"""Instance operations over the public HTTP routes, with the real host's status codes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from host_helpers import Api, HostFactory, RunningHost

BASE = "/runtime/webhooks/durabletask"


@pytest.fixture(scope="module")
def host(module_host_factory: HostFactory) -> RunningHost:
    return module_host_factory(time_scale=20)


def _post(api: Api, path: str) -> int:
    return api.call("POST", BASE + path).status


def test_status_codes_follow_the_runtime_status(host: RunningHost) -> None:
    api = host.api
    api.start("wait_forever", "codes-running")
    api.wait("codes-running", ("Running",))
    running = api.status("codes-running")
    assert running.status == 202
    assert running.headers["Location"].endswith("/instances/codes-running")
    assert running.headers["Retry-After"] == "5"
    assert running.json()["customStatus"] == "waiting"

    api.start("raises", "codes-failed")
    failed = api.wait("codes-failed")
    assert failed["runtimeStatus"] == "Failed"
    assert api.status("codes-failed").status == 200
    assert api.status("codes-failed", "?returnInternalServerErrorOnFailure=true").status == 500

    no_input = api.status("codes-running", "?showInput=false").json()
    assert no_input["input"] is None


def test_start_can_wait_for_the_result(host: RunningHost) -> None:
    reply = host.api.call(
        "POST", BASE + "/orchestrators/fan_out/wait-1?timeout=10&pollingInterval=0.1", json_body={"count": 3}
    )
    assert reply.status == 200
    assert reply.json() == 3


def test_terminate_records_the_reason(host: RunningHost) -> None:
    api = host.api
    api.start("wait_forever", "terminate-1")
    api.wait("terminate-1", ("Running",))
    assert _post(api, "/instances/terminate-1/terminate?reason=operator%20said%20stop") == 202
    done = api.wait("terminate-1", query="?showHistory=true")
    assert done["runtimeStatus"] == "Terminated"
    assert done["output"] == "operator said stop"
    kinds = [event["EventType"] for event in done["historyEvents"]]
    assert kinds[-2:] == ["ExecutionTerminated", "ExecutionCompleted"]
    assert done["historyEvents"][-1]["OrchestrationStatus"] == "Terminated"


def test_suspended_instances_keep_their_events_until_resumed(host: RunningHost) -> None:
    api = host.api
    api.start("wait_forever", "suspend-1")
    api.wait("suspend-1", ("Running",))
    assert _post(api, "/instances/suspend-1/suspend?reason=hold") == 202
    api.wait("suspend-1", ("Suspended",))
    assert api.raise_event("suspend-1", "Continue", {"x": 1}).status == 202
    assert api.status("suspend-1").json()["runtimeStatus"] == "Suspended"
    assert _post(api, "/instances/suspend-1/resume?reason=go") == 202
    done = api.wait("suspend-1")
    assert done["output"] == {"event": {"x": 1}, "type": "dict", "after": "resumed"}


def test_rewind_over_http(host: RunningHost) -> None:
    api = host.api
    api.start("needs_fix", "rewind-1")
    assert api.wait("rewind-1")["runtimeStatus"] == "Failed"
    assert _post(api, "/instances/rewind-1/rewind?reason=retry") == 202  # still failing: the flag is missing
    assert api.wait("rewind-1")["runtimeStatus"] == "Failed"
    (host.state_dir / "fix-flag").write_text("x")
    assert _post(api, "/instances/rewind-1/rewind?reason=fixed") == 202
    done = api.wait("rewind-1")
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == {"before": "before", "fixed": "fixed after 3 runs"}
    assert _post(api, "/instances/rewind-1/rewind") == 410


def test_restart_with_a_new_id_and_with_the_same_id(host: RunningHost) -> None:
    api = host.api
    api.start("fan_out", "restart-1", {"count": 2})
    api.wait("restart-1")
    reply = api.call("POST", BASE + "/instances/restart-1/restart")
    assert reply.status == 202
    new_id = reply.json()["id"]
    assert new_id != "restart-1"
    assert reply.headers["Location"] == reply.json()["statusQueryGetUri"]
    assert api.wait(new_id)["output"] == 1
    same = api.call("POST", BASE + "/instances/restart-1/restart?restartWithNewInstanceId=false")
    assert same.json()["id"] == "restart-1"
    assert api.wait("restart-1")["output"] == 1


def test_a_start_with_the_id_of_an_ended_instance_replaces_it_as_azure_does(host: RunningHost) -> None:
    """Durable Functions' default ``overridableExistingInstanceStates`` (NonRunningStates): an
    instance that ended (Failed, Terminated, Completed) is replaced by a start with its id, with a
    history of its own; the launcher restarts unfinished rotations this way."""
    api = host.api
    api.start("raises", "replace-failed")
    assert api.wait("replace-failed")["runtimeStatus"] == "Failed"
    api.start("wait_forever", "replace-terminated")
    api.wait("replace-terminated", ("Running",))
    assert _post(api, "/instances/replace-terminated/terminate?reason=test") == 202
    assert api.wait("replace-terminated")["runtimeStatus"] == "Terminated"

    for instance_id in ("replace-failed", "replace-terminated"):
        api.start("fan_out", instance_id, {"count": 2})
        done = api.wait(instance_id, query="?showHistory=true")
        assert (done["runtimeStatus"], done["output"]) == ("Completed", 1)
        assert done["input"] == {"count": 2}
        started = [e for e in done["historyEvents"] if e["EventType"] == "ExecutionStarted"]
        assert len(started) == 1, "the replaced instance's history is gone"
        assert started[0]["FunctionName"] == "fan_out"


def test_list_filters_and_pages(host: RunningHost) -> None:
    api = host.api
    for index in range(5):
        api.start("fan_out", f"page-{index}", {"count": 1})
    for index in range(5):
        api.wait(f"page-{index}")
    assert [item["instanceId"] for item in api.list("?instanceIdPrefix=page-")] == [
        f"page-{i}" for i in range(5)
    ]
    assert api.list("?instanceIdPrefix=page-&runtimeStatus=Running") == []
    since = (datetime.now(UTC) + timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert api.list(f"?instanceIdPrefix=page-&createdTimeFrom={since}") == []

    seen: list[str] = []
    token = None
    while True:
        headers = {"x-ms-continuation-token": token} if token else {}
        reply = api.call("GET", BASE + "/instances/?instanceIdPrefix=page-&top=2", headers=headers)
        assert reply.status == 200
        seen += [item["instanceId"] for item in reply.json()]
        token = reply.headers.get("x-ms-continuation-token")
        if not token:
            break
        base64.urlsafe_b64decode(token)  # opaque, but well-formed
    assert seen == [f"page-{i}" for i in range(5)]


def test_purge_one_and_by_filter(host: RunningHost) -> None:
    api = host.api
    for name in ("purge-a", "purge-b", "purge-c"):
        api.start("fan_out", name, {"count": 1})
        api.wait(name)
    api.start("wait_forever", "purge-running")
    api.wait("purge-running", ("Running",))

    reply = api.call("DELETE", BASE + "/instances/purge-a")
    assert reply.status == 200
    assert reply.json() == {"instancesDeleted": 1}
    assert api.status("purge-a").status == 404
    running = api.call("DELETE", BASE + "/instances/purge-running")
    assert running.json() == {"instancesDeleted": 0}
    assert api.status("purge-running").status == 202

    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reply = api.call("DELETE", BASE + f"/instances/?createdTimeFrom={since}&runtimeStatus=Completed")
    assert reply.status == 200
    assert reply.json()["instancesDeleted"] >= 2
    assert api.status("purge-b").status == 404
    assert api.status("purge-running").status == 202
    again = api.call("DELETE", BASE + f"/instances/?createdTimeFrom={since}&runtimeStatus=Completed")
    assert again.status == 404
