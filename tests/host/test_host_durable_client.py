"""The real DurableOrchestrationClient, built from the binding the host hands to functions, against the host."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from azure.durable_functions import DurableOrchestrationClient, OrchestrationRuntimeStatus
from host_helpers import HostFactory, RunningHost, client_binding, with_client


@pytest.fixture(scope="module")
def host(module_host_factory: HostFactory) -> RunningHost:
    return module_host_factory(time_scale=20)


async def _wait(client: DurableOrchestrationClient, instance_id: str, *statuses: OrchestrationRuntimeStatus):
    wanted = statuses or (
        OrchestrationRuntimeStatus.Completed,
        OrchestrationRuntimeStatus.Failed,
        OrchestrationRuntimeStatus.Terminated,
    )
    for _ in range(400):
        status = await client.get_status(instance_id)
        if status and status.runtime_status in wanted:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id} never reached {wanted}")


def test_the_binding_points_the_client_at_this_host(host: RunningHost) -> None:
    binding = json.loads(client_binding(host.api))
    assert binding["taskHubName"] == "LocalTestHub"
    assert binding["rpcBaseUrl"] == host.base_url + "/durabletask/"
    assert binding["managementUrls"]["id"] == "INSTANCEID"
    assert binding["managementUrls"]["statusQueryGetUri"] == (
        host.base_url
        + "/runtime/webhooks/durabletask/instances/INSTANCEID?taskHub=LocalTestHub&connection=Storage"
    )
    assert binding["creationUrls"]["createNewInstancePostUri"].startswith(
        host.base_url + "/runtime/webhooks/durabletask/orchestrators/{functionName}"
    )


def test_start_status_history_and_raise_event(host: RunningHost) -> None:
    async def work(client: DurableOrchestrationClient) -> None:
        instance_id = await client.start_new("wait_forever", "client-1", {"a": 1})
        assert instance_id == "client-1"
        running = await _wait(client, instance_id, OrchestrationRuntimeStatus.Running)
        assert running.custom_status == "waiting"
        # The Python client sends inputs as JSON text; the status shows that text (as on Azure).
        assert json.loads(running.input_) == {"a": 1}
        await client.raise_event(instance_id, "Continue", {"k": 1})
        done = await _wait(client, instance_id)
        assert done.runtime_status is OrchestrationRuntimeStatus.Completed
        # The client double-encodes event data, so the orchestrator gets JSON text, as on Azure.
        assert done.output == {"event": '{"k": 1}', "type": "str", "after": "resumed"}
        detailed = await client.get_status(instance_id, show_history=True, show_history_output=True)
        kinds = [event["EventType"] for event in detailed.historyEvents]
        assert kinds[0] == "ExecutionStarted"
        assert kinds[-1] == "ExecutionCompleted"
        assert "EventRaised" in kinds

    with_client(host.api, work)


def test_unknown_and_ended_instances(host: RunningHost) -> None:
    async def work(client: DurableOrchestrationClient) -> None:
        assert not await client.get_status("does-not-exist")
        with pytest.raises(Exception, match="No instance with ID does-not-exist found"):
            await client.raise_event("does-not-exist", "Continue", 1)
        instance_id = await client.start_new("fan_out", "client-ended", 2)
        await _wait(client, instance_id)
        with pytest.raises(Exception, match="is gone"):
            await client.raise_event(instance_id, "Continue", 1)
        with pytest.raises(Exception, match="doesn't exist, is disabled, or is not an orchestrator function"):
            await client.start_new("no_such_orchestrator")

    with_client(host.api, work)


def test_terminate_suspend_resume(host: RunningHost) -> None:
    async def work(client: DurableOrchestrationClient) -> None:
        await client.start_new("wait_forever", "client-suspend")
        await _wait(client, "client-suspend", OrchestrationRuntimeStatus.Running)
        await client.suspend("client-suspend", "maintenance")
        await _wait(client, "client-suspend", OrchestrationRuntimeStatus.Suspended)
        await client.raise_event("client-suspend", "Continue", 5)
        await asyncio.sleep(0.3)
        assert (
            await client.get_status("client-suspend")
        ).runtime_status is OrchestrationRuntimeStatus.Suspended
        await client.resume("client-suspend", "done")
        done = await _wait(client, "client-suspend")
        assert done.output["event"] == "5"

        await client.start_new("wait_forever", "client-terminate")
        await _wait(client, "client-terminate", OrchestrationRuntimeStatus.Running)
        await client.terminate("client-terminate", "no longer needed")
        terminated = await _wait(client, "client-terminate")
        assert terminated.runtime_status is OrchestrationRuntimeStatus.Terminated
        assert terminated.output == "no longer needed"
        await client.terminate("client-terminate", "again")  # 410: the client ignores it

    with_client(host.api, work)


def test_rewind_reruns_the_failed_activity_only(host: RunningHost) -> None:
    async def work(client: DurableOrchestrationClient) -> None:
        await client.start_new("needs_fix", "client-rewind")
        failed = await _wait(client, "client-rewind")
        assert failed.runtime_status is OrchestrationRuntimeStatus.Failed
        assert failed.output.startswith("Orchestrator function 'needs_fix' failed: Activity function ")
        (host.state_dir / "fix-flag").write_text("fixed")
        await client.rewind("client-rewind", "flag created")
        done = await _wait(client, "client-rewind")
        assert done.runtime_status is OrchestrationRuntimeStatus.Completed
        assert done.output == {"before": "before", "fixed": "fixed after 2 runs"}

    with_client(host.api, work)
    # The activity that had succeeded before the failure did not run again.
    assert (host.state_dir / "fail_unless_fixed.log").read_text().splitlines() == ["fix-flag", "fix-flag"]


def test_restart_purge_and_queries(host: RunningHost) -> None:
    async def work(client: DurableOrchestrationClient) -> None:
        since = datetime.now(UTC) - timedelta(minutes=1)
        await client.start_new("fan_out", "query-a", 3)
        await _wait(client, "query-a")
        restarted = await client.restart("query-a")
        # The client returns the host's body as is: a dict with the new id.
        assert isinstance(restarted, dict)
        assert restarted["id"] != "query-a"
        same = await client.restart("query-a", restart_with_new_instance_id=False)
        assert same["id"] == "query-a"
        await _wait(client, "query-a")
        await _wait(client, restarted["id"])

        by_prefix = await client.get_status_by(instance_id_prefix="query-")
        assert [status.instance_id for status in by_prefix] == ["query-a"]
        completed = await client.get_status_by(
            created_time_from=since, runtime_status=[OrchestrationRuntimeStatus.Completed]
        )
        assert {"query-a", restarted["id"]} <= {status.instance_id for status in completed}
        assert len(await client.get_status_all()) >= 2

        assert (await client.purge_instance_history("query-a")).instances_deleted == 1
        assert not await client.get_status("query-a")
        assert (await client.purge_instance_history("query-a")).instances_deleted == 0
        purged = await client.purge_instance_history_by(
            created_time_from=since, runtime_status=[OrchestrationRuntimeStatus.Completed]
        )
        assert purged.instances_deleted >= 1
        assert not await client.get_status(restarted["id"])

    with_client(host.api, work)


def test_check_status_responses(host: RunningHost) -> None:
    async def work(client: DurableOrchestrationClient) -> None:
        request = func.HttpRequest("POST", "http://localhost:9999/api/start", body=b"")
        instance_id = await client.start_new("fan_out", None, 2)
        response = client.create_check_status_response(request, instance_id)
        assert response.status_code == 202
        links = json.loads(response.get_body())
        assert links["statusQueryGetUri"].startswith(
            f"http://localhost:9999/runtime/webhooks/durabletask/instances/{instance_id}"
        )
        waited = await client.wait_for_completion_or_create_check_status_response(
            request, instance_id, timeout_in_milliseconds=10000, retry_interval_in_milliseconds=100
        )
        assert waited.status_code == 200
        assert json.loads(waited.get_body()) == 1

    with_client(host.api, work)
