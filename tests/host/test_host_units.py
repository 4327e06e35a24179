"""In-process tests of the host's pure parts: routes, schedules, clock, settings, history shaping, failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from local.host import history
from local.host.actions import ActionFormatError, ActionType, flatten
from local.host.app_config import ConfigError, load_local_settings, read_host_json, resolve_placeholders
from local.host.auth import Authorizer, load_or_create_keys
from local.host.client_binding import ClientUrls
from local.host.clock import HostClock, parse_iso, to_iso
from local.host.engine_state import EngineState, RetryGroup
from local.host.episode import EpisodeRunner
from local.host.failures import activity_failure, unknown_function_message
from local.host.http_triggers import RouteTemplateError, compile_route
from local.host.status import parse_token, present_history
from local.host.store import InboxItem, Instance
from local.host.timer_triggers import TimerSchedule


def test_route_templates() -> None:
    route = compile_route("orchestrators/{name}/{instance_id?}")
    assert route.match("orchestrators/flow") == {"name": "flow"}
    assert route.match("orchestrators/flow/abc") == {"name": "flow", "instance_id": "abc"}
    assert route.match("orchestrators") is None
    assert compile_route("items/{id:int}").match("items/12") == {"id": "12"}
    assert compile_route("items/{id:int}").match("items/x") is None
    assert compile_route("files/{*path}").match("files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert compile_route("files/{name}.{ext}").match("files/report.pdf") == {"name": "report", "ext": "pdf"}
    assert compile_route("Status/{id}").match("status/7") == {"id": "7"}
    with pytest.raises(RouteTemplateError):
        compile_route("bad/{9name}")
    # Literal segments outrank parameters, parameters outrank catch-alls.
    ordered = sorted(
        [compile_route("{*all}"), compile_route("items/{id}"), compile_route("items/new")],
        key=lambda r: r.precedence,
    )
    assert [r.template for r in ordered] == ["items/new", "items/{id}", "{*all}"]


def test_timer_schedules() -> None:
    start = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert TimerSchedule("0 */5 * * * *").next_after(start) == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    assert TimerSchedule("0 30 9 * * 1-5").next_after(start) == datetime(2024, 1, 1, 9, 30, tzinfo=UTC)
    assert TimerSchedule("00:10:00").next_after(start) == datetime(2024, 1, 1, 0, 10, 1, tzinfo=UTC)
    for bad in ("not a cron", "61 * * * * *", "00:00:00"):
        with pytest.raises(ConfigError):
            TimerSchedule(bad)


def test_host_clock_scales_jumps_and_never_goes_back() -> None:
    clock = HostClock(time_scale=1000)
    first = clock.now_epoch()
    assert clock.now_epoch() >= first
    jumped = clock.advance(3600).timestamp()
    assert jumped - first >= 3600
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    clock.not_before(jumped - 10_000)  # in the past: no effect
    assert clock.now_epoch() >= jumped
    assert clock.wall_seconds_until(clock.now_epoch() + 1000) == pytest.approx(1.0, abs=0.05)


def test_timestamps_round_trip() -> None:
    moment = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert to_iso(moment) == "2024-05-01T10:00:00.123456Z"
    assert parse_iso("2024-05-01T10:00:00.1234567Z") == moment
    assert parse_iso("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_iso("2024-05-01T10:00:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_iso("yesterday")


def test_local_settings_never_override_the_environment(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"Values": {"A": "from-file", "B": "from-file"}})
    )
    environ = {"A": "from-env"}
    assert load_local_settings(tmp_path, environ) == ["B"]
    assert environ == {"A": "from-env", "B": "from-file"}
    (tmp_path / "local.settings.json").write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_local_settings(tmp_path, {})


def test_placeholders_and_host_json(tmp_path: Path) -> None:
    assert resolve_placeholders("%A% and %B%", {"A": "1", "B": "2"}, what="x") == "1 and 2"
    with pytest.raises(ConfigError, match="app setting 'MISSING' is not set"):
        resolve_placeholders("%MISSING%", {}, what="schedule")
    defaults = read_host_json(tmp_path)
    assert defaults.hub_name == "TestHubName"
    assert defaults.route_prefix == "api"
    (tmp_path / "host.json").write_text(
        json.dumps({"extensions": {"durableTask": {"hubName": "Hub1", "maxConcurrentActivityFunctions": 3}}})
    )
    configured = read_host_json(tmp_path)
    assert (configured.hub_name, configured.max_concurrent_activities) == ("Hub1", 3)
    (tmp_path / "host.json").write_text(
        json.dumps({"extensions": {"durableTask": {"maxConcurrentActivityFunctions": 0}}})
    )
    with pytest.raises(ConfigError):
        read_host_json(tmp_path)


def test_activity_failure_text_matches_the_real_host() -> None:
    try:
        raise ValueError("[transient] throttled")
    except ValueError as error:
        reason, details = activity_failure("stage", error)
    assert reason == "Activity function 'stage' failed:  ValueError: [transient] throttled"
    parsed = json.loads(details)
    assert parsed["Message"] == " ValueError: [transient] throttled"
    assert parsed["InnerException"]["RemoteMessage"] == "ValueError: [transient] throttled"
    # The user's frame is there, the host's own frames are not.
    assert "test_activity_failure_text_matches_the_real_host" in parsed["InnerException"]["RemoteStackTrace"]
    assert "local/host/engine.py" not in parsed["InnerException"]["RemoteStackTrace"]
    assert unknown_function_message("x", "activity", []).endswith(
        "No activity functions are currently registered!"
    )


def test_actions_are_flattened_depth_first() -> None:
    actions = [[
        {"actionType": 0, "functionName": "a", "input": "1"},
        {"actionType": 11, "compoundActions": [
            {"actionType": 6, "externalEventName": "Approval", "reason": "ExternalEvent"},
            {"actionType": 5, "fireAt": "2024-01-01T00:00:00.000000Z", "isCanceled": False},
        ]},
        {"actionType": 12, "compoundActions": [{"actionType": 1, "functionName": "b", "retryOptions": {}}]},
    ]]  # fmt: skip
    leaves = flatten(actions)
    assert [leaf.action_type for leaf in leaves] == [
        ActionType.CALL_ACTIVITY, ActionType.WAIT_FOR_EXTERNAL_EVENT, ActionType.CREATE_TIMER,
        ActionType.CALL_ACTIVITY_WITH_RETRY,
    ]  # fmt: skip
    assert [leaf.takes_sequence_number for leaf in leaves] == [True, False, True, True]
    assert leaves[3].signature == ["activity", "b"]
    with pytest.raises(ActionFormatError):
        flatten([[{"actionType": 99}]])
    with pytest.raises(ActionFormatError):
        flatten({"not": "a list"})


def test_history_is_shaped_like_the_status_api() -> None:
    raw = [
        {"EventType": 12, "EventId": -1, "Timestamp": "t0"},
        {"EventType": 0, "EventId": -1, "Timestamp": "t0", "Name": "flow", "Version": "", "Input": "1",
         "OrchestrationInstance": {}, "ParentInstance": None, "Tags": None},
        {"EventType": 4, "EventId": 0, "Timestamp": "t1", "Name": "step", "Version": "", "Input": "\"x\""},
        {"EventType": 13, "EventId": -1, "Timestamp": "t1"},
        {"EventType": 5, "EventId": -1, "Timestamp": "t2", "TaskScheduledId": 0, "Result": "{\"ok\": true}"},
        {"EventType": 1, "EventId": -1, "Timestamp": "t3", "OrchestrationStatus": 1, "Result": "5"},
    ]  # fmt: skip
    shaped = present_history(raw, show_output=True, show_input=True)
    assert [event["EventType"] for event in shaped] == [
        "ExecutionStarted",
        "TaskCompleted",
        "ExecutionCompleted",
    ]
    assert shaped[0]["FunctionName"] == "flow"
    assert shaped[1] == {"EventType": "TaskCompleted", "Timestamp": "t2", "Result": {"ok": True},
                         "ScheduledTime": "t1", "FunctionName": "step", "Input": "\"x\""}  # fmt: skip
    assert shaped[2]["OrchestrationStatus"] == "Completed"
    hidden = present_history(raw, show_output=False, show_input=False)
    assert "Result" not in hidden[1]
    assert "Input" not in hidden[1]
    assert parse_token("not json") == "not json"
    assert parse_token(" [1] ") == [1]


def test_client_binding_json() -> None:
    urls = ClientUrls(origin="http://127.0.0.1:7071", hub_name="Hub", system_key="k1")
    binding = json.loads(urls.binding_json())
    assert binding["rpcBaseUrl"] == "http://127.0.0.1:7071/durabletask/"
    assert binding["requiredQueryStringParameters"] == "code=k1"
    assert binding["managementUrls"]["sendEventPostUri"] == (
        "http://127.0.0.1:7071/runtime/webhooks/durabletask/instances/INSTANCEID/raiseEvent/{eventName}"
        "?taskHub=Hub&connection=Storage&code=k1"
    )
    assert "rewindPostUri" not in urls.check_status_body("i")


def test_keys_file_and_levels(tmp_path: Path) -> None:
    keys = load_or_create_keys(tmp_path)
    assert load_or_create_keys(tmp_path) == keys
    authorizer = Authorizer(keys)

    def allowed(level: str, key: str | None) -> bool:
        path = "/x" + (f"?code={key}" if key else "")
        return authorizer.allows(make_mocked_request("GET", path), level)

    assert allowed("anonymous", None)
    assert not allowed("function", None)
    assert allowed("function", keys.function_default)
    assert allowed("function", keys.master)
    assert not allowed("admin", keys.function_default)
    assert allowed("system:durabletask_extension", keys.durabletask_extension)
    assert not allowed("system:eventgrid_extension", keys.durabletask_extension)
    assert Authorizer(None).allows(make_mocked_request("GET", "/x"), "admin")
    (tmp_path / "host-keys.json").write_text("{}")
    with pytest.raises(ValueError, match="not a host keys file"):
        load_or_create_keys(tmp_path)


def _item(number: int, event: dict) -> InboxItem:
    return InboxItem(number, "i", None, event)


def test_episode_batches_keep_order_and_put_a_retry_trigger_first() -> None:
    runner = EpisodeRunner.__new__(EpisodeRunner)
    retry = RetryGroup("activity", "a", None, max_attempts=3, interval_ms=10, attempt=1, phase="task")
    state = EngineState(retries={"3": retry})
    running = Instance("i", "e", "o", "", "Running", None, None, None, 0.0, 0.0, None)
    completed_1 = history.task_completed("t", 1, "1")
    failed_3 = history.task_failed("t", 3, reason="r", details=None)
    completed_2 = history.task_completed("t", 2, "2")
    # A retry trigger that is not first waits for the next episode, where it is first.
    selection = runner._select(
        [_item(1, completed_1), _item(2, failed_3), _item(3, completed_2)], running, state
    )
    assert selection.batch == [completed_1]
    assert selection.left_behind
    selection = runner._select([_item(2, failed_3), _item(3, completed_2)], running, state)
    assert selection.batch == [failed_3, completed_2]
    # Events skipped while suspended are delivered before later ones once resumed.
    suspended = Instance("i", "e", "o", "", "Suspended", None, None, None, 0.0, 0.0, None)
    first = history.event_raised("t", "A", "1")
    second = history.event_raised("t", "A", "2")
    resumed = history.execution_resumed("t", None)
    selection = runner._select(
        [_item(1, first), _item(2, resumed), _item(3, second)], suspended, EngineState()
    )
    assert selection.batch == []
    assert selection.control == [resumed]
    assert selection.consumed == [2]
    # A new execution's ExecutionStarted goes first even behind older external events.
    started = history.execution_started(
        "t", name="o", version="", input_text=None, instance_id="i", execution_id="e", parent=None
    )
    selection = runner._select([_item(1, first), _item(2, started)], running, EngineState())
    assert selection.batch == [started, first]
