"""Orchestrations driven over plain HTTP: the app's own routes and the public durabletask routes."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest
from host_helpers import HostFactory, RunningHost, read_lines, wait_until


@pytest.fixture(scope="module")
def host(module_host_factory: HostFactory) -> RunningHost:
    # Time runs 20x faster: the sample's 1-second retry intervals take 50 ms.
    return module_host_factory(time_scale=20)


def _event_types(status: dict, wanted: set[str]) -> list[str]:
    return [event["EventType"] for event in status["historyEvents"] if event["EventType"] in wanted]


def test_approval_flow_approved_through_the_apps_routes(host: RunningHost) -> None:
    api = host.api
    reply = api.call(
        "POST", "/api/orchestrators/approval_flow/approve-1", json_body={"name": "db", "approval": True}
    )
    assert reply.status == 202
    links = reply.json()
    assert links["id"] == "approve-1"
    assert reply.headers["Location"] == links["statusQueryGetUri"]
    assert links["statusQueryGetUri"].startswith(
        host.base_url + "/runtime/webhooks/durabletask/instances/approve-1?"
    )
    assert "taskHub=LocalTestHub" in links["statusQueryGetUri"]

    waiting = api.wait_custom("approve-1", "stage", "awaiting_approval")
    assert waiting["runtimeStatus"] == "Running"
    assert waiting["customStatus"]["ref"] == {"name": "db", "version": "v2"}

    assert api.call("POST", "/api/approve/approve-1", json_body={"by": "alice"}).status == 202
    done = api.wait("approve-1", query="?showHistory=true&showHistoryOutput=true")
    assert done["runtimeStatus"] == "Completed"
    output = done["output"]
    assert output["decision"] == {"by": "alice"}
    assert output["staged"] == {"staged": "db:v2", "attempts": 2}
    assert output["promoted"] == "promoted db:v2"
    assert done["customStatus"] == {"stage": "done", "ref": {"name": "db", "version": "v2"}}
    # The failed first attempt, the retry timer, the second attempt, then the approval race.
    assert _event_types(done, {"TaskFailed", "TimerCreated", "TimerFired", "EventRaised"}) == [
        "TaskFailed",
        "TimerCreated",
        "TimerFired",
        "TimerCreated",
        "EventRaised",
    ]
    completed = [e for e in done["historyEvents"] if e["EventType"] == "TaskCompleted"]
    assert [e["FunctionName"] for e in completed] == ["generate", "flaky_stage", "promote"]
    assert completed[0]["Result"] == {"name": "db", "version": "v2"}


def test_approval_times_out_when_the_clock_jumps_72_hours(host: RunningHost) -> None:
    api = host.api
    api.start("approval_flow", "timeout-1", {"name": "kv", "approval": True, "timeout_hours": 72})
    waiting = api.wait_custom("timeout-1", "stage", "awaiting_approval")
    started = time.monotonic()
    api.advance_clock(72 * 3600 + 60)
    done = api.wait("timeout-1", timeout=10)
    assert time.monotonic() - started < 10
    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["outcome"] == "rejected"
    assert done["output"]["reason"] == "approval timed out"
    created = datetime.fromisoformat(waiting["createdTime"].replace("Z", "+00:00"))
    rejected_at = datetime.fromisoformat(done["output"]["at"])
    assert rejected_at - created >= timedelta(hours=72)
    assert done["customStatus"]["stage"] == "rejected"


@pytest.mark.parametrize(
    ("mode", "kind", "exception"),
    [
        ("transient", "transient", "TransientError"),
        ("permanent", "permanent", "PermanentError"),
        ("none", "unknown", "RuntimeError"),
    ],
)
def test_activity_exception_text_reaches_the_orchestrator(
    host: RunningHost, mode: str, kind: str, exception: str
) -> None:
    instance = host.api.start("approval_flow", f"fail-{mode}", {"name": f"n-{mode}", "fail_mode": mode})
    done = host.api.wait(instance)
    assert done["runtimeStatus"] == "Completed"
    failure = done["output"]["failure"]
    assert failure["kind"] == kind
    # What the real host writes: Reason "Activity function '<name>' failed: <Type>: <message>", then Details.
    assert failure["text"].startswith(f"Activity function 'may_fail' failed:  {exception}: ")


def test_retries_end_after_max_attempts_with_a_timer_after_each_failure(host: RunningHost) -> None:
    instance = host.api.start("retry_exhausted", "retry-1")
    done = host.api.wait(instance, query="?showHistory=true")
    assert done["output"]["kind"] == "transient"
    assert (
        "Activity function 'always_fails' failed:  TransientError: [transient] TransientError: attempt 3 failed"
        in (done["output"]["text"])
    )
    assert read_lines(host.state_dir / "always_fails.log") == ["x", "x", "x"]
    assert _event_types(done, {"TaskFailed", "TimerCreated", "TimerFired"}) == [
        "TaskFailed", "TimerCreated", "TimerFired"] * 3  # fmt: skip


def test_retries_inside_a_fan_out_keep_the_sdks_task_numbering(host: RunningHost) -> None:
    instance = host.api.start("retry_in_fan_out", "fan-retry-1")
    done = host.api.wait(instance)
    assert done["runtimeStatus"] == "Completed", done
    assert done["output"] == {"attempts": [3, 2], "others": [0.05, "plain"], "after": "after"}


def test_sub_orchestrations_with_and_without_retry(host: RunningHost) -> None:
    instance = host.api.start("parent", "parent-1", {"value": 4, "with_failing_child": True})
    done = host.api.wait(instance)
    assert done["runtimeStatus"] == "Completed", done
    output = done["output"]
    assert output["first"] == {"child": "parent-1-child", "parent": "parent-1", "doubled": 8}
    second_id = output["second"]["child"]
    assert output["second"]["parent"] == "parent-1"
    assert output["second"]["doubled"] == 20
    assert "Orchestrator function 'failing_child' failed: [permanent] the child gave up" in output["retried"]
    child = host.api.status(second_id).json()
    assert child["runtimeStatus"] == "Completed"
    assert child["name"] == "child"


def test_continue_as_new_starts_fresh_executions(host: RunningHost) -> None:
    # Through the app's route: the Python client sends the input as JSON text, which get_input decodes.
    # (A bare number posted to the public route reaches get_input as an int, which the SDK cannot decode.)
    assert host.api.call("POST", "/api/orchestrators/counter/counter-1", json_body=0).status == 202
    done = host.api.wait("counter-1", query="?showHistory=true")
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == 3
    started = [e for e in done["historyEvents"] if e["EventType"] == "ExecutionStarted"]
    assert len(started) == 1  # only the last execution's history is kept


def test_event_raised_before_the_wait_is_buffered(host: RunningHost) -> None:
    instance = host.api.start("buffered_events", "buffered-1")
    assert host.api.raise_event(instance, "Go", {"n": 1}).status == 202
    done = host.api.wait(instance)
    assert done["output"] == {"n": 1}


def test_plain_http_event_data_arrives_as_the_json_object(host: RunningHost) -> None:
    host.api.start("wait_forever", "plain-event")
    host.api.wait("plain-event", ("Running",))
    assert host.api.raise_event("plain-event", "Continue", {"k": 1}).status == 202
    assert host.api.wait("plain-event")["output"] == {"event": {"k": 1}, "type": "dict", "after": "resumed"}


def test_fan_out_and_fan_in(host: RunningHost) -> None:
    instance = host.api.start("fan_out", "fan-1", {"count": 5})
    assert host.api.wait(instance)["output"] == 0 + 1 + 2 + 3 + 4


def test_nothing_the_app_exchanges_reaches_the_log(host: RunningHost) -> None:
    marker = "S3CRET-VALUE-7f3a"
    instance = host.api.start(
        "approval_flow", "no-leak", {"name": marker, "approval": True, "fail_mode": "transient"}
    )
    host.api.wait_custom(instance, "stage", "awaiting_approval")
    assert host.api.raise_event(instance, "Approval", {"by": marker}).status == 202
    done = host.api.wait(instance)
    assert marker in json.dumps(done["output"])  # it went through inputs, outputs, events and status
    assert host.api.call("POST", f"/api/echo/{'x'}?q={marker}", data=marker.encode()).status == 201
    assert marker not in host.process.log_path.read_text()


def test_activities_run_within_the_configured_bound(host_factory: HostFactory) -> None:
    bounded = host_factory(max_activities=2)
    instance = bounded.api.start("sleepers", "bounded", {"count": 6, "seconds": 0.3})
    runs = bounded.api.wait(instance)["output"]
    assert len(runs) == 6
    moments = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    in_flight = peak = 0
    for _, change in moments:
        in_flight += change
        peak = max(peak, in_flight)
    assert peak == 2


def test_events_raised_across_continue_as_new_are_all_delivered(host: RunningHost) -> None:
    host.api.start("collect_events", "collector")
    for number in range(3):
        host.api.wait_custom("collector", "count", number)
        assert host.api.raise_event("collector", "Item", number).status == 202
    done = host.api.wait("collector")
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == [0, 1, 2]


def test_a_ten_day_timeout_runs_as_chained_long_timers(host: RunningHost) -> None:
    """Beyond 6 days the SDK (schema V3) splits a timer into 3-day chunks, created as each one fires."""
    api = host.api
    api.start(
        "approval_flow", "long-timer", {"name": "lt", "approval": True, "timeout_hours": 240, "fail_times": 0}
    )
    api.wait_custom("long-timer", "stage", "awaiting_approval")
    api.advance_clock(4 * 24 * 3600)

    def chunks() -> int:
        history = api.status("long-timer", "?showHistory=true").json()["historyEvents"]
        return [event["EventType"] for event in history].count("TimerCreated")

    wait_until(lambda: chunks() == 2, 10, "the second 3-day chunk was not created")
    assert api.status("long-timer").json()["runtimeStatus"] == "Running"
    api.advance_clock(7 * 24 * 3600)
    done = api.wait("long-timer", timeout=10)
    assert done["output"]["outcome"] == "rejected"
