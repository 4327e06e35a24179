"""Rotation windows in the rotate_secret protocol, through the real Durable Functions SDK replay.

The same set-up as test_rotate_secret_orchestrator.py (the real orchestrator on the local host,
scripted activities, host time 20x faster): the scripted plan returns a ``window`` as the real
plan returns the ``rotation-window`` tag. Windows are written relative to the host's clock when
the test starts, in UTC; the grammar, zones and DST are tested in test_windows.py.

What a user must see: outside its window a rotation changes nothing (no activity after the
plan), says step ``window`` with ``windowOpensAt`` and the window, and waits on one durable
timer (chunked by the SDK when it is days away) that fires at the opening; the host clock
jumped past it, the rotation completes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_rotate_secret_orchestrator import (
    HAPPY_ORDER,
    IRREVERSIBLE,
    ISSUING,
    ISSUING_ORDER,
    POLICY,
    Hub,
    Rotation,
    events,
    parse_time,
    plan,
    start_hub,
    stop_hub,
    wait_until,
)

from rotation.windows import DAY_NAMES, LONGEST_WAIT


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(tmp_path_factory.mktemp("scripted-windows"))
    yield started
    stop_hub(started)


def host_now(hub: Hub) -> datetime:
    status, body = hub.call("GET", "/admin/host/clock")
    assert status == 200, body
    return parse_time(body["now"])


def daily(opens: datetime, length: timedelta) -> str:
    """A daily UTC window opening at ``opens`` (whole minutes), in its canonical text."""
    return f"daily {opens:%H:%M}-{opens + length:%H:%M} UTC"


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def advance_past(hub: Hub, moment: datetime) -> None:
    hub.advance_clock(max(0.0, (moment - host_now(hub)).total_seconds()) + 60)


def waiting_in_window(rotation: Rotation, opens: datetime, window: str) -> dict[str, object]:
    custom = rotation.wait_step("window")["customStatus"]
    assert parse_time(custom["windowOpensAt"]) == opens
    assert custom["window"] == window
    return dict(custom)


def scheduled(status: dict[str, Any], activity: str) -> str:
    [completed] = [e for e in events(status, "TaskCompleted") if e["FunctionName"] == activity]
    return str(completed["ScheduledTime"])


def assert_still_waiting(rotation: Rotation, activities: list[str]) -> None:
    # A rotation that would not wait would run its next activity well within this.
    time.sleep(0.5)
    assert rotation.activities() == activities
    assert rotation.status()["customStatus"]["step"] == "window"


def test_outside_its_window_a_rotation_waits_before_it_changes_anything(hub: Hub) -> None:
    now = host_now(hub)
    opens = minute_of(now + timedelta(hours=2))
    window = daily(opens, timedelta(hours=1))
    rotation = hub.rotate("closed-window", {"plan_rotation": [plan(window=window)]})

    custom = waiting_in_window(rotation, opens, window)
    assert custom["stepsDone"] == ["plan"]
    assert custom["stepNumber"] == 2
    assert_still_waiting(rotation, ["plan_rotation"])
    [timer] = events(rotation.status(history=True), "TimerCreated")
    assert parse_time(timer["FireAt"]) == opens

    advance_past(hub, opens)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == HAPPY_ORDER
    assert done["output"]["result"] == "rotated"
    assert done["output"]["steps"] == ["plan", "window", "stage", "apply", "verify", "promote", "cleanup"]
    # The first change was scheduled once the window had opened.
    assert parse_time(scheduled(done, "stage_pending")) >= opens
    assert "windowOpensAt" not in done["customStatus"]
    assert done["customStatus"]["window"] == window
    assert len(events(done, "TimerFired")) == 1
    # No approval here: the pending value needs no more time than without a window.
    assert rotation.inputs("stage_pending")[0]["pending_ttl_hours"] == 24.0


def test_inside_its_window_a_rotation_runs_at_once(hub: Hub) -> None:
    now = host_now(hub)
    window = daily(minute_of(now - timedelta(minutes=10)), timedelta(hours=2))
    rotation = hub.rotate("open-window", {"plan_rotation": [plan(window=window)]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == HAPPY_ORDER
    assert done["output"]["steps"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert events(done, "TimerCreated") == []
    assert "window" not in done["customStatus"]


def test_a_window_that_closed_during_the_approval_is_waited_for_before_apply(hub: Hub) -> None:
    now = host_now(hub)
    opened = minute_of(now - timedelta(minutes=10))
    window = daily(opened, timedelta(minutes=40))  # closes about 30 minutes from now
    rotation = hub.rotate(
        "closed-after-approval", {"plan_rotation": [plan(approval_required=True, window=window)]}
    )
    rotation.wait_step("approval")
    assert rotation.activities() == ["plan_rotation", "stage_pending"]
    # The pending value must outlive the approval and then the longest wait for the window.
    [stage_input] = rotation.inputs("stage_pending")
    assert stage_input["pending_ttl_hours"] == 24.0 + POLICY.approval_timeout_hours + LONGEST_WAIT.days * 24

    hub.advance_clock(35 * 60)  # the window closes; the approval deadline (1 h) is still ahead
    rotation.decide({"approved": True, "approver": "alice"})
    custom = waiting_in_window(rotation, opened + timedelta(days=1), window)

    assert custom["stepsDone"] == ["plan", "stage", "approval"]
    assert custom["decision"]["approver"] == "alice"
    assert_still_waiting(rotation, ["plan_rotation", "stage_pending"])
    advance_past(hub, opened + timedelta(days=1))
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == HAPPY_ORDER
    assert done["output"]["steps"] == [
        "plan",
        "stage",
        "approval",
        "window",
        "apply",
        "verify",
        "promote",
        "cleanup",
    ]
    # The approval's timer (cancelled when the decision came) and the window's.
    assert len(events(done, "TimerCreated")) == 2
    assert len(events(done, "TimerFired")) == 1


def test_an_approval_still_in_the_window_does_not_wait_again(hub: Hub) -> None:
    now = host_now(hub)
    window = daily(minute_of(now - timedelta(minutes=10)), timedelta(hours=3))
    rotation = hub.rotate(
        "open-after-approval", {"plan_rotation": [plan(approval_required=True, window=window)]}
    )
    rotation.wait_step("approval")
    rotation.decide({"approved": True, "approver": "bob"})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["steps"] == ["plan", "stage", "approval", "apply", "verify", "promote", "cleanup"]
    assert len(events(done, "TimerCreated")) == 1  # the approval's only


def test_an_irreversible_issue_asks_for_approval_at_once_and_issues_in_the_window(hub: Hub) -> None:
    now = host_now(hub)
    opens = minute_of(now + timedelta(hours=2))
    window = daily(opens, timedelta(hours=1))
    rotation = hub.rotate("key-in-window", {"plan_rotation": [plan(**IRREVERSIBLE, window=window)]})
    rotation.wait_step("approval")
    assert rotation.activities() == ["plan_rotation"]
    rotation.decide({"approved": True, "approver": "carol"})

    custom = waiting_in_window(rotation, opens, window)
    assert custom["stepsDone"] == ["plan", "approval"]
    assert_still_waiting(rotation, ["plan_rotation"])  # no key regenerated yet
    advance_past(hub, opens)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ISSUING_ORDER
    assert done["output"]["steps"] == [
        "plan",
        "approval",
        "window",
        "stage",
        "verify",
        "promote",
        "cleanup",
        "retire",
    ]


def test_retiring_the_previous_credential_waits_for_the_window_too(hub: Hub) -> None:
    now = host_now(hub)
    opened = minute_of(now - timedelta(minutes=10))
    window = daily(opened, timedelta(minutes=70))  # open now, closed when the 2 h overlap ends
    rotation = hub.rotate("retire-in-window", {"plan_rotation": [plan(**ISSUING, window=window)]})
    rotation.wait_step("retire")
    advance_past(hub, parse_time(rotation.status()["customStatus"]["retireAt"]))

    custom = waiting_in_window(rotation, opened + timedelta(days=1), window)
    assert custom["stepsDone"] == ["plan", "stage", "verify", "promote", "cleanup"]
    assert_still_waiting(rotation, ISSUING_ORDER[:-1])
    advance_past(hub, opened + timedelta(days=1))
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ISSUING_ORDER
    assert done["output"]["steps"] == ["plan", "stage", "verify", "promote", "cleanup", "window", "retire"]
    assert done["customStatus"]["retired"] == "removed the previous credential (scripted)"
    assert "retireAt" not in done["customStatus"]


def test_a_window_days_away_is_one_durable_wait(hub: Hub) -> None:
    # Longer than the host's maximum short timer (6 days): the SDK chains 3-day timers, as the
    # Durable extension does in Azure, and the rotation still waits for the opening itself.
    now = host_now(hub)
    opens = minute_of(now + timedelta(days=6, hours=12))
    window = f"{DAY_NAMES[opens.weekday()]} {opens:%H:%M}-{opens + timedelta(hours=1):%H:%M} UTC"
    rotation = hub.rotate("window-next-week", {"plan_rotation": [plan(window=window)]})
    waiting_in_window(rotation, opens, window)
    [first] = events(rotation.status(history=True), "TimerCreated")
    assert parse_time(first["FireAt"]) - parse_time(first["Timestamp"]) == timedelta(days=3)

    hub.advance_clock(3 * 86400 + 60)  # the first chunk fires; the next one is armed
    wait_until(
        lambda: len(events(rotation.status(history=True), "TimerCreated")) == 2,
        10,
        lambda: f"no second chunk: {rotation.status(history=True)}",
    )
    assert_still_waiting(rotation, ["plan_rotation"])
    assert parse_time(rotation.status()["customStatus"]["windowOpensAt"]) == opens

    advance_past(hub, opens)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == HAPPY_ORDER
    assert all(parse_time(t["FireAt"]) <= opens for t in events(done, "TimerCreated"))
    assert parse_time(scheduled(done, "stage_pending")) >= opens


def test_a_window_the_orchestrator_cannot_read_fails_before_any_change(hub: Hub) -> None:
    # The plan activity validates the tag, so only a plan from elsewhere (or a zone database
    # that changed in between) gets here; the orchestration must still change nothing.
    rotation = hub.rotate("unreadable-window", {"plan_rotation": [plan(window="Mon-Fry 09:00-17:00")]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == ["plan_rotation"]
    failed = done["customStatus"]["failed"]
    assert failed["step"] == "window"
    assert failed["class"] == "InvalidRequest"
    assert failed["message"].startswith(
        "rotation-window 'Mon-Fry 09:00-17:00' is not a valid window: unknown day 'Fry'"
    )
    assert done["customStatus"]["compensation"] == []


def test_the_window_wait_survives_a_host_restart(tmp_path: Path) -> None:
    own = start_hub(tmp_path)
    try:
        now = host_now(own)
        opens = minute_of(now + timedelta(hours=3))
        window = daily(opens, timedelta(hours=1))
        rotation = own.rotate("window-restart", {"plan_rotation": [plan(window=window)]})
        waiting = waiting_in_window(rotation, opens, window)
        own.process.stop()
        own.process.start()

        # Replayed from the history: the same opening, although the clock moved on.
        still = rotation.status()
        assert still["runtimeStatus"] == "Running"
        assert still["customStatus"] == waiting
        advance_past(own, opens)
        done = rotation.wait()
    finally:
        stop_hub(own)

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == HAPPY_ORDER
    assert [e["FunctionName"] for e in events(done, "TaskCompleted")] == HAPPY_ORDER
    assert len(events(done, "TimerCreated")) == 1
