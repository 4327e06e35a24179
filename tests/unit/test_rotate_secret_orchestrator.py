"""The rotate_secret protocol through the real Durable Functions SDK replay, on the local host.

What is real here: the orchestrator (orchestrators/rotate_secret.py and its saga), the
azure-functions-durable SDK replaying it, the durable timers (retry back-off, the approval
deadline), the external events and the local Functions host with its Durable HTTP API.

What is scripted: the activities. tests/apps/scripted_rotation registers the real orchestrator
with stand-ins of the same names that follow a per-rotation script (succeed, fail transiently,
fail permanently, return a given plan) and log every call with its input. The domain steps
themselves are tested elsewhere against real servers; the subject here is the orchestration
logic: which activities run, in which order, with which inputs, and what an operator then sees
in the status, the output, the custom status and the history.

One host serves the module (each test rotates its own secret, so its own instance id); the
restart test has a host of its own.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local.host.process import HostProcess
from rotation.model import ConsumerInput, RotationPolicy, RotationRequest, SecretRef, StepInput

APP = Path(__file__).resolve().parents[1] / "apps" / "scripted_rotation"
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
VAULT = "spoke-kv-01"
VERSION = "0123456789abcdef0123456789abcdef"
# Host time runs 20x faster: the 2 s and 4 s back-off timers take 0.1 s and 0.2 s of wall time,
# while the one-hour approval deadline is still three minutes of wall time away.
TIME_SCALE = 20.0
POLICY = RotationPolicy(
    retry_max_attempts=3,
    retry_first_interval_seconds=2.0,
    approval_timeout_hours=1.0,
    consumer_ready_timeout_seconds=30.0,
)
ENDED = ("Completed", "Failed", "Terminated")
CONSUMERS = [
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/apps/providers/Microsoft.Web/sites/{name}"
    for name in ("orders-api", "billing-api", "reports-job")
]
HAPPY_ORDER = [
    "plan_rotation",
    "stage_pending",
    "apply_target",
    "verify_target",
    "promote_secret",  # disables the pending value too: the cleanup
]


def fail(error: str, message: str = "", **extra: Any) -> dict[str, Any]:
    """A script entry: raise ``error`` (a rotation.errors class, or RuntimeError for no marker)."""
    return {"raise": error, "message": message or f"scripted {error}", **extra}


def plan(**fields: Any) -> dict[str, Any]:
    """A script entry: plan_rotation returns this RotationPlan."""
    return {
        "return": {"target_kind": "postgresql-login", "approval_required": False, "validity_days": 60.0}
        | fields
    }


def wait_until(predicate: Callable[[], bool], timeout: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(0.03)


@dataclass
class Hub:
    """One local host running the scripted app, and the folder the scripted activities read."""

    process: HostProcess
    scripts: Path

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.process.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return status, json.loads(raw) if raw.strip() else None

    def advance_clock(self, seconds: float) -> None:
        status, body = self.call("POST", "/admin/host/clock", {"advanceSeconds": seconds})
        assert status == 200, body

    def rotate(
        self,
        secret_name: str,
        script: dict[str, list[dict[str, Any]]] | None = None,
        *,
        policy: RotationPolicy = POLICY,
    ) -> Rotation:
        """Write the script of this rotation, then start it through the Durable HTTP API."""
        secret = SecretRef(SUBSCRIPTION, VAULT, secret_name)
        request = RotationRequest(secret=secret, version=VERSION, trigger="test", policy=policy)
        rotation = Rotation(self, secret.rotation_id(VERSION), request)
        rotation.folder.mkdir(parents=True)
        (rotation.folder / "script.json").write_text(json.dumps(script or {}), encoding="utf-8")
        status, body = self.call(
            "POST",
            f"/runtime/webhooks/durabletask/orchestrators/rotate_secret/{rotation.id}",
            request.to_dict(),
        )
        assert status == 202, body
        assert body["id"] == rotation.id
        return rotation


@dataclass
class Rotation:
    hub: Hub
    id: str
    request: RotationRequest

    @property
    def folder(self) -> Path:
        return self.hub.scripts / self.id

    @property
    def first_step(self) -> dict[str, Any]:
        """The StepInput every activity starts from (no pending version yet)."""
        return StepInput(rotation_id=self.id, secret=self.request.secret, version=VERSION).to_dict()

    def calls(self) -> list[dict[str, Any]]:
        log = self.folder / "calls.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        return [json.loads(line) for line in lines]

    def activities(self) -> list[str]:
        return [call["activity"] for call in self.calls()]

    def notifications(self) -> list[dict[str, Any]]:
        """The inputs of the ``notify`` calls (the scripted app logs them apart from the steps)."""
        log = self.folder / "notifications.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        return [json.loads(line)["input"] for line in lines]

    def inputs(self, activity: str) -> list[dict[str, Any]]:
        return [call["input"] for call in self.calls() if call["activity"] == activity]

    def status(self, *, history: bool = False) -> dict[str, Any]:
        query = "?showHistory=true&showHistoryOutput=true" if history else ""
        code, body = self.hub.call("GET", f"/runtime/webhooks/durabletask/instances/{self.id}{query}")
        assert code in (200, 202), body
        return dict(body)

    def wait(self, timeout: float = 20.0) -> dict[str, Any]:
        """Poll until the instance has ended; returns its status with the history."""
        last: dict[str, Any] = {}

        def ended() -> bool:
            nonlocal last
            last = self.status(history=True)
            return last["runtimeStatus"] in ENDED

        wait_until(ended, timeout, lambda: f"{self.id} did not end: {last}")
        return last

    def wait_step(self, step: str, timeout: float = 20.0) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal last
            last = self.status()
            return (last.get("customStatus") or {}).get("step") == step

        wait_until(reached, timeout, lambda: f"{self.id} never reached step {step}: {last}")
        assert last["runtimeStatus"] == "Running"
        return last

    def wait_call(self, activity: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: activity in self.activities(),
            timeout,
            lambda: f"{activity} never called: {self.activities()}",
        )

    def decide(self, data: Any) -> None:
        status, body = self.hub.call(
            "POST", f"/runtime/webhooks/durabletask/instances/{self.id}/raiseEvent/RotationDecision", data
        )
        assert status == 202, body

    def open_gate(self, name: str) -> None:
        (self.folder / name).touch()


def events(status: dict[str, Any], *types: str) -> list[dict[str, Any]]:
    return [event for event in status["historyEvents"] if event["EventType"] in types]


def result_of(status: dict[str, Any], activity: str) -> Any:
    """The result of the one completed call of ``activity`` in the history."""
    [completed] = [e for e in events(status, "TaskCompleted") if e["FunctionName"] == activity]
    return completed["Result"]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def start_hub(base: Path) -> Hub:
    scripts = base / "scripts"
    scripts.mkdir(parents=True)
    process = HostProcess(
        script_root=APP,
        data_dir=base / "host",
        env={"SCRIPTED_ROTATION_DIR": str(scripts)},
        time_scale=TIME_SCALE,
    )
    try:
        process.start()
    except BaseException:
        process.kill()
        raise
    return Hub(process, scripts)


def stop_hub(hub: Hub) -> None:
    try:
        hub.process.stop(timeout=10)
    finally:
        hub.process.kill()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(tmp_path_factory.mktemp("scripted-rotation"))
    yield started
    stop_hub(started)


# -- 1. the happy path ----------------------------------------------------------------------------


def test_happy_path_runs_every_step_once_in_order(hub: Hub) -> None:
    tags = {"rotation-target": "postgresql-login", "rotation-login": "app"}
    rotation = hub.rotate("happy-path", {"plan_rotation": [plan(validity_days=30.0, tags=tags, login="app")]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == HAPPY_ORDER
    pending_version = result_of(done, "stage_pending")["pending_version"]
    new_version = result_of(done, "promote_secret")["new_version"]

    # Every activity gets references only (and, after plan, the tags plan read, so no step reads
    # the version again for them), the pending version once it exists.
    planned = rotation.first_step | {"tags": tags}
    with_pending = planned | {"pending_version": pending_version}
    assert rotation.inputs("plan_rotation") == [rotation.first_step]
    assert rotation.inputs("stage_pending") == [
        {
            "step": planned,
            "target_kind": "postgresql-login",
            "pending_ttl_hours": 24.0,
            "validity_days": 30.0,
            "overlap_hours": 0.0,
            "login": "app",
        }
    ]
    assert rotation.inputs("apply_target") == [with_pending]
    assert rotation.inputs("verify_target") == [with_pending]
    assert rotation.inputs("promote_secret") == [
        {"step": with_pending, "validity_days": 30.0, "only_if_landed": False}
    ]
    assert "discard_pending" not in rotation.activities()  # promote_secret did the cleanup

    output = done["output"]
    assert output["result"] == "rotated"
    assert output["new_version"] == new_version
    assert output["previous_version"] == VERSION
    assert output["secret"] == rotation.request.secret.to_dict()
    assert output["steps"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert output["decision"] is None

    custom = done["customStatus"]
    assert custom["step"] == "done"
    assert custom["result"] == "rotated"
    assert custom["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert custom["newVersion"] == new_version
    assert custom["rotationId"] == rotation.id
    assert (custom["vault"], custom["secret"]) == (VAULT, "happy-path")
    assert "retrying" not in custom
    assert "compensating" not in custom
    assert events(done, "TaskFailed", "TimerCreated", "EventRaised") == []
    # The start of every step entered, in the order they ran, within the orchestration's life.
    assert list(custom["stepTimes"]) == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    times = [parse_time(t) for t in custom["stepTimes"].values()]
    assert times == sorted(times)
    # (the host's status times have whole seconds)
    assert parse_time(done["createdTime"]) <= times[0]
    assert times[-1] < parse_time(done["lastUpdatedTime"]) + timedelta(seconds=1)


# -- 2. retries -----------------------------------------------------------------------------------


def test_transient_failures_are_retried_after_durable_backoff_timers(hub: Hub) -> None:
    throttled = fail("TransientError", "spoke-kv-01 answered 429")
    # Four attempts, so that the third wait tells doubling (8 s) from any linear growth (6 s).
    policy = dataclasses.replace(POLICY, retry_max_attempts=4)
    rotation = hub.rotate("retried", {"apply_target": [throttled, throttled, throttled, {}]}, policy=policy)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert rotation.activities() == [
        "plan_rotation",
        "stage_pending",
        *["apply_target"] * 4,
        "verify_target",
        "promote_secret",
    ]
    # The same input at every attempt (the step is idempotent, so it can be re-run as is).
    first, *again = rotation.inputs("apply_target")
    assert again == [first] * 3

    # A durable timer between the attempts, each twice as long as the one before, and the next
    # attempt scheduled only once it fired.
    around_apply = [
        e
        for e in events(done, "TaskFailed", "TaskCompleted", "TimerCreated", "TimerFired")
        if e.get("FunctionName") in (None, "apply_target")
    ]
    assert [e["EventType"] for e in around_apply] == [
        *["TaskFailed", "TimerCreated", "TimerFired"] * 3,
        "TaskCompleted",
    ]
    timers = [e for e in around_apply if e["EventType"] == "TimerCreated"]
    waits = [(parse_time(e["FireAt"]) - parse_time(e["Timestamp"])).total_seconds() for e in timers]
    assert waits == pytest.approx([2.0, 4.0, 8.0], abs=0.01)
    attempts_after = [e for e in around_apply if e["EventType"] in ("TaskFailed", "TaskCompleted")][1:]
    for timer, attempt in zip(timers, attempts_after, strict=True):
        assert parse_time(attempt["ScheduledTime"]) >= parse_time(timer["FireAt"])
    assert "[transient] TransientError: spoke-kv-01 answered 429" in around_apply[0]["Reason"]
    assert "retrying" not in done["customStatus"]


UNANSWERED = fail(
    "TransientError", "secret 'x': Key Vault did not answer (ServiceResponseError) [unanswered]"
)
SETTLE = dataclasses.replace(POLICY, retry_max_attempts=2, write_settle_seconds=30.0)


def timer_waits(done: dict[str, Any]) -> list[float]:
    return [
        (parse_time(e["FireAt"]) - parse_time(e["Timestamp"])).total_seconds()
        for e in events(done, "TimerCreated")
    ]


def test_an_unanswered_promote_is_waited_out_then_found_landed_and_nothing_is_undone(hub: Hub) -> None:
    """Key Vault has no conditional writes: after a write went unanswered, the next attempt waits
    the settle time (not the shorter back-off) so that it sees the write if it landed; when the
    last attempt went unanswered too, the hub waits again and only looks (never writes)."""
    rotation = hub.rotate(
        "unanswered-landed", {"promote_secret": [UNANSWERED, UNANSWERED, {}]}, policy=SETTLE
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed", done
    assert rotation.activities() == [*HAPPY_ORDER[:4], *["promote_secret"] * 3]
    first, second, check = rotation.inputs("promote_secret")
    assert first == second
    assert (first["only_if_landed"], check["only_if_landed"]) == (False, True)
    assert timer_waits(done) == pytest.approx([30.0, 30.0], abs=0.01)  # not the 2 s back-off
    assert done["output"]["result"] == "rotated"
    assert done["output"]["detail"] == "promote's write went unanswered and was found applied"
    custom = done["customStatus"]
    assert custom["landedLate"] is True
    assert custom["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert "settling" not in custom


def test_an_unanswered_promote_that_did_not_land_is_undone_only_after_the_settle(hub: Hub) -> None:
    not_landed = fail("TargetError", "no write of this rotation landed")
    rotation = hub.rotate(
        "unanswered-lost", {"promote_secret": [UNANSWERED, UNANSWERED, not_landed]}, policy=SETTLE
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [
        *HAPPY_ORDER[:4],
        *["promote_secret"] * 3,
        "revert_target",
        "discard_pending",
    ]
    # The revert was scheduled only after the settle timer fired.
    settle = events(done, "TimerFired")[-1]
    revert = next(e for e in events(done, "TaskCompleted") if e.get("FunctionName") == "revert_target")
    assert parse_time(revert["ScheduledTime"]) >= parse_time(settle["FireAt"])
    assert timer_waits(done) == pytest.approx([30.0, 30.0], abs=0.01)
    assert done["customStatus"]["failed"]["step"] == "promote"
    assert "[unanswered]" in done["customStatus"]["failed"]["message"]


def test_transient_failures_stop_after_retry_max_attempts_and_the_step_fails(hub: Hub) -> None:
    rotation = hub.rotate(
        "retries-exhausted", {"verify_target": [fail("TransientError", "connection refused")]}
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [
        "plan_rotation",
        "stage_pending",
        "apply_target",
        *["verify_target"] * POLICY.retry_max_attempts,
        "revert_target",
        "discard_pending",
    ]
    verify_events = [
        e["EventType"]
        for e in events(done, "TaskFailed", "TaskCompleted", "TimerCreated", "TimerFired")
        if e.get("FunctionName") in (None, "verify_target")
    ]
    # No timer after the last attempt: the step fails at once.
    assert verify_events == ["TaskFailed", "TimerCreated", "TimerFired"] * 2 + ["TaskFailed"]
    custom = done["customStatus"]
    assert custom["step"] == "failed"
    assert custom["failed"] == {"step": "verify", "class": "TransientError", "message": "connection refused"}
    assert "promoted" not in custom


# Promote and the undos outlast an outage: a minute of retries (three of host time), each wait
# doubling from 2 s up to 8 s, while the other steps give up after POLICY's three attempts.
OUTAGE = dataclasses.replace(POLICY, outage_retry_hours=60 / 3600, outage_retry_max_interval_seconds=8.0)
OUTAGE_503 = fail("TransientError", "spoke-kv-01 answered 503")


def test_promote_outlasts_an_outage_with_capped_backoff_and_the_status_shows_the_next_attempt(
    hub: Hub,
) -> None:
    gated = {**OUTAGE_503, "wait_for": "go"}
    script = {"promote_secret": [OUTAGE_503] * 4 + [gated, OUTAGE_503, {}]}
    rotation = hub.rotate("outlasted", script, policy=OUTAGE)
    # The fifth attempt waits for the gate: the status meanwhile says which attempt comes, when,
    # and until when promote keeps trying (past POLICY's three attempts already).
    rotation.wait_call("promote_secret")
    wait_until(
        lambda: rotation.activities().count("promote_secret") == 5,
        20,
        lambda: f"the fifth promote never came: {rotation.activities()}",
    )
    waiting = rotation.status()["customStatus"]
    retrying = waiting["retrying"]
    assert (retrying["step"], retrying["attempt"]) == ("promote", 5)
    assert retrying["after"] == {
        "step": "promote",
        "class": "TransientError",
        "message": "spoke-kv-01 answered 503",
    }
    first_promote = parse_time(waiting["stepTimes"]["promote"])
    assert parse_time(retrying["retryUntil"]) == first_promote + timedelta(seconds=60)
    assert parse_time(retrying["nextAttemptAt"]) > first_promote
    rotation.open_gate("go")
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed", done
    assert done["output"]["result"] == "rotated"
    assert rotation.activities() == [*HAPPY_ORDER[:4], *["promote_secret"] * 7]
    # Doubling from 2 s, capped at 8 s: 2 + 4 + 8 + 8 + 8 + 8 = 38 s, within the minute.
    assert timer_waits(done) == pytest.approx([2.0, 4.0, 8.0, 8.0, 8.0, 8.0], abs=0.01)
    assert "retrying" not in done["customStatus"]
    assert done["customStatus"]["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]


def test_promote_gives_up_when_the_outage_outlasts_its_budget_and_the_undos_outlast_it_too(
    hub: Hub,
) -> None:
    script = {
        "promote_secret": [OUTAGE_503],
        # More transient failures than POLICY's three attempts: the undo keeps going.
        "revert_target": [OUTAGE_503] * 4 + [{}],
    }
    rotation = hub.rotate("outage-too-long", script, policy=OUTAGE)
    done = rotation.wait(timeout=30)

    assert done["runtimeStatus"] == "Failed", done
    # Attempts about 0, 2, 6, 14, 22, 30, 38, 46 (and 54) s after the first (each attempt takes a
    # little host time too); promote gives up once the next one would start past the minute,
    # then the undos run.
    promotes = rotation.activities().count("promote_secret")
    assert promotes in (8, 9), rotation.activities()
    assert rotation.activities() == [
        *HAPPY_ORDER[:4],
        *["promote_secret"] * promotes,
        *["revert_target"] * 5,
        "discard_pending",
    ]
    assert timer_waits(done) == pytest.approx(
        [2.0, 4.0] + [8.0] * (promotes - 3) + [2.0, 4.0, 8.0, 8.0], abs=0.01
    )
    promote_failures = [e for e in events(done, "TaskFailed") if e["FunctionName"] == "promote_secret"]
    first_scheduled = parse_time(promote_failures[0]["ScheduledTime"])
    last_failed = parse_time(promote_failures[-1]["Timestamp"])
    assert last_failed + timedelta(seconds=8) > first_scheduled + timedelta(seconds=60)
    custom = done["customStatus"]
    assert custom["failed"] == {
        "step": "promote",
        "class": "TransientError",
        "message": "spoke-kv-01 answered 503",
    }
    assert [(u["undo"], u["result"]) for u in custom["compensation"]] == [
        ("revert_target", "done"),
        ("discard_pending", "done"),
    ]


def test_the_other_steps_keep_their_attempts_under_an_outage_policy(hub: Hub) -> None:
    rotation = hub.rotate("verify-not-outlasted", {"verify_target": [OUTAGE_503]}, policy=OUTAGE)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities().count("verify_target") == OUTAGE.retry_max_attempts


@pytest.mark.parametrize(
    ("secret_name", "activity", "error", "expected_calls"),
    [
        pytest.param(
            "plan-invalid",
            "plan_rotation",
            "InvalidRequest",
            ["plan_rotation"],
            id="plan-InvalidRequest-nothing-to-undo",
        ),
        pytest.param(
            "stage-auth",
            "stage_pending",
            "AuthenticationFailed",
            ["plan_rotation", "stage_pending", "discard_pending"],
            id="stage-AuthenticationFailed-discards-only",
        ),
        pytest.param(
            "apply-auth",
            "apply_target",
            "AuthenticationFailed",
            ["plan_rotation", "stage_pending", "apply_target", "revert_target", "discard_pending"],
            id="apply-AuthenticationFailed",
        ),
        pytest.param(
            "verify-refused",
            "verify_target",
            "VerificationFailed",
            [*HAPPY_ORDER[:4], "revert_target", "discard_pending"],
            id="verify-VerificationFailed",
        ),
        pytest.param(
            "promote-invalid",
            "promote_secret",
            "InvalidRequest",
            [*HAPPY_ORDER[:5], "revert_target", "discard_pending"],
            id="promote-InvalidRequest",
        ),
    ],
)
def test_permanent_failures_are_not_retried_and_undo_what_was_done(
    hub: Hub, secret_name: str, activity: str, error: str, expected_calls: list[str]
) -> None:
    message = f"{activity} refused by the scripted target"
    rotation = hub.rotate(secret_name, {activity: [fail(error, message)]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == expected_calls
    assert rotation.activities().count(activity) == 1
    assert events(done, "TimerCreated") == []
    step = {
        "plan_rotation": "plan",
        "stage_pending": "stage",
        "apply_target": "apply",
        "verify_target": "verify",
        "promote_secret": "promote",
    }[activity]
    custom = done["customStatus"]
    assert custom["step"] == "failed"
    assert custom["failed"] == {"step": step, "class": error, "message": message}
    assert [undo["undo"] for undo in custom["compensation"]] == expected_calls[
        expected_calls.index(activity) + 1 :
    ]
    assert all(undo["result"] == "done" for undo in custom["compensation"])
    assert f"step {step} failed: {error}: {message}" in done["output"]


def test_an_error_without_a_marker_is_not_retried(hub: Hub) -> None:
    rotation = hub.rotate("no-marker", {"verify_target": [fail("RuntimeError", "driver crashed")]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [*HAPPY_ORDER[:4], "revert_target", "discard_pending"]
    assert events(done, "TimerCreated") == []
    failed = done["customStatus"]["failed"]
    assert failed["step"] == "verify"
    assert "RuntimeError: driver crashed" in failed["message"]


@pytest.mark.parametrize(
    ("secret_name", "error", "expected_class"),
    [
        pytest.param("chained-permanent", "VerificationFailed", "VerificationFailed", id="permanent"),
        pytest.param("chained-unmarked", "RuntimeError", None, id="no-marker"),
    ],
)
def test_an_error_raised_from_a_transient_one_is_judged_by_its_own_marker(
    hub: Hub, secret_name: str, error: str, expected_class: str | None
) -> None:
    # The activity gave up (say after its own waits) and chained the transient cause; the
    # failure's details then carry the cause's stack, marker included.
    rotation = hub.rotate(
        secret_name, {"verify_target": [fail(error, "the role refuses the value", cause="TransientError")]}
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [*HAPPY_ORDER[:4], "revert_target", "discard_pending"]
    assert events(done, "TimerCreated") == []
    [verify_failed] = events(done, "TaskFailed")
    assert "[transient] TransientError: scripted cause of verify_target" in verify_failed["Details"]
    failed = done["customStatus"]["failed"]
    assert failed["step"] == "verify"
    if expected_class:
        assert failed["class"] == expected_class
        assert failed["message"] == "the role refuses the value"
    else:
        assert "RuntimeError: the role refuses the value" in failed["message"]


# -- 3. compensation ------------------------------------------------------------------------------


def test_a_failure_after_apply_reverts_then_discards_with_the_registered_inputs(hub: Hub) -> None:
    rotation = hub.rotate(
        "compensated", {"verify_target": [fail("VerificationFailed", "role r1 refuses it")]}
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [*HAPPY_ORDER[:4], "revert_target", "discard_pending"]
    assert "promote_secret" not in rotation.activities()
    # revert_target was registered with the step apply got; discard_pending before stage ran,
    # when no pending version was known (it finds this rotation's pending values by its id).
    assert rotation.inputs("revert_target") == rotation.inputs("apply_target")
    assert rotation.inputs("discard_pending") == [rotation.first_step]

    custom = done["customStatus"]
    assert custom["step"] == "failed"
    assert custom["failed"] == {
        "step": "verify",
        "class": "VerificationFailed",
        "message": "role r1 refuses it",
    }
    assert custom["compensation"] == [
        {"undo": "revert_target", "result": "done", "detail": "revert_target done (scripted)"},
        {"undo": "discard_pending", "result": "done", "detail": "discard_pending done (scripted)"},
    ]
    assert custom["stepsDone"] == ["plan", "stage", "apply"]
    assert "promoted" not in custom
    assert "compensating" not in custom
    assert done["output"].endswith(
        "step verify failed: VerificationFailed: role r1 refuses it; "
        "revert_target: done (revert_target done (scripted)); "
        "discard_pending: done (discard_pending done (scripted))"
    )


def test_one_failing_undo_does_not_stop_the_next(hub: Hub) -> None:
    rotation = hub.rotate(
        "undo-fails",
        {
            "verify_target": [fail("VerificationFailed", "role r1 refuses it")],
            "revert_target": [fail("UndoImpossible", "the previous value no longer logs in")],
            # The new value does not log in either: nothing to roll forward to.
            "roll_forward_secret": [fail("VerificationFailed", "role r1 refuses it")],
            # An undo is a step like the others: its transient failures are retried too.
            "discard_pending": [fail("TransientError", "spoke-kv-01 answered 503"), {}],
        },
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [
        *HAPPY_ORDER[:4],
        "revert_target",
        "roll_forward_secret",
        "discard_pending",
        "discard_pending",
    ]
    custom = done["customStatus"]
    assert custom["failed"] == {
        "step": "verify",
        "class": "VerificationFailed",
        "message": "role r1 refuses it",
    }
    assert custom["compensation"] == [
        {"undo": "revert_target", "result": "failed", "detail": "the previous value no longer logs in"},
        {"undo": "discard_pending", "result": "done", "detail": "discard_pending done (scripted)"},
    ]
    assert "revert_target: failed (the previous value no longer logs in)" in done["output"]
    assert custom["rollForward"] == {"result": "failed", "detail": "role r1 refuses it"}
    assert "promoted" not in custom


def test_a_failed_undo_of_apply_rolls_forward_when_the_new_value_logs_in(hub: Hub) -> None:
    """Verify could not reach the target (its retries ran out), the revert could not restore the
    previous value, but by then the new value logs in: it is promoted, the consumers restart,
    and the rotation ends Completed as rolled_forward, saying why."""
    rotation = hub.rotate(
        "rolled-forward",
        {
            "plan_rotation": [plan(consumers=CONSUMERS[:1])],
            "verify_target": [fail("TransientError", "connection refused")],
            "revert_target": [fail("UndoImpossible", "the admin login is refused")],
        },
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed", done
    assert rotation.activities() == [
        "plan_rotation",
        "stage_pending",
        "apply_target",
        *["verify_target"] * POLICY.retry_max_attempts,
        "revert_target",
        "roll_forward_secret",
        "restart_consumer",
    ]
    pending_version = result_of(done, "stage_pending")["pending_version"]
    step = rotation.first_step | {"pending_version": pending_version}
    assert rotation.inputs("roll_forward_secret") == [
        {"step": step, "validity_days": 60.0, "only_if_landed": False}
    ]
    output = done["output"]
    assert output["result"] == "rolled_forward"
    assert output["new_version"] == result_of(done, "roll_forward_secret")["new_version"]
    assert output["steps"] == ["plan", "stage", "apply", "promote", "cleanup", "restart"]
    assert "verify failed (TransientError: connection refused)" in output["detail"]
    assert "could not be restored (the admin login is refused)" in output["detail"]
    custom = done["customStatus"]
    assert (custom["step"], custom["result"]) == ("done", "rolled_forward")
    assert custom["rolledForward"]["failed"] == {
        "step": "verify",
        "class": "TransientError",
        "message": "connection refused",
    }
    assert custom["rolledForward"]["undo"] == {
        "undo": "revert_target",
        "result": "failed",
        "detail": "the admin login is refused",
    }
    assert "rollingForward" not in custom
    assert "compensating" not in custom
    [notice] = rotation.notifications()
    assert (notice["kind"], notice["step"], notice["promoted"]) == ("rolled-forward", "verify", True)
    assert "the new value, which logs in, was promoted" in notice["detail"]


# -- 4. approval ----------------------------------------------------------------------------------


def approval_rotation(
    hub: Hub, secret_name: str, **script: list[dict[str, Any]]
) -> tuple[Rotation, dict[str, Any]]:
    """Start a rotation whose plan asks for approval; returns it waiting for the decision."""
    rotation = hub.rotate(secret_name, {"plan_rotation": [plan(approval_required=True)], **script})
    waiting = rotation.wait_step("approval")["customStatus"]
    started = parse_time(waiting["stepStartedAt"])
    assert list(waiting["stepTimes"]) == ["plan", "stage", "approval"]
    assert parse_time(waiting["stepTimes"]["approval"]) == started
    assert parse_time(waiting["awaitingDecisionUntil"]) == started + timedelta(
        hours=POLICY.approval_timeout_hours
    )
    assert waiting["stepsDone"] == ["plan", "stage"]
    assert rotation.activities() == ["plan_rotation", "stage_pending"]
    # The pending value must outlive the approval wait.
    [stage_input] = rotation.inputs("stage_pending")
    assert stage_input["pending_ttl_hours"] == 24.0 + POLICY.approval_timeout_hours
    return rotation, waiting


def recorded(decision: dict[str, Any], waiting: dict[str, Any]) -> dict[str, Any]:
    """The decision as recorded, without its time, once that time is checked: the orchestrator's
    own (within the approval step), whatever the event said."""
    decided_at = parse_time(decision["decided_at"])
    assert parse_time(waiting["stepStartedAt"]) <= decided_at <= parse_time(waiting["awaitingDecisionUntil"])
    return {k: v for k, v in decision.items() if k != "decided_at"}


UNVERIFIED = {"approver_id": None, "verified": False, "decision_id": None}


def test_an_approval_continues_the_rotation_and_records_the_approver(hub: Hub) -> None:
    rotation, waiting = approval_rotation(hub, "approved")
    decided = time.monotonic()
    rotation.decide(
        {
            "approved": True,
            "approver": "alice@example.com",
            "approver_id": "3a7c9e21-5b4d-4f6a-8e2c-1d0b9a8f7e61",
            "verified": True,
            "decision_id": "d1",
            "decided_at": "1999-01-01T00:00:00+00:00",  # not the caller's to say
        }
    )
    done = rotation.wait()

    # Promptly: the deadline is three minutes of wall time away, and nothing waits for it.
    assert time.monotonic() - decided < 10
    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == HAPPY_ORDER
    decision = {
        "approved": True,
        "approver": "alice@example.com",
        "reason": "",
        "approver_id": "3a7c9e21-5b4d-4f6a-8e2c-1d0b9a8f7e61",
        "verified": True,
        "decision_id": "d1",
    }
    assert done["output"]["result"] == "rotated"
    assert recorded(done["output"]["decision"], waiting) == decision
    assert done["output"]["steps"] == ["plan", "stage", "approval", "apply", "verify", "promote", "cleanup"]
    assert done["customStatus"]["decision"] == done["output"]["decision"]
    [timer] = events(done, "TimerCreated")
    assert timer["FireAt"].startswith(waiting["awaitingDecisionUntil"][:19])
    assert len(events(done, "EventRaised")) == 1
    assert events(done, "TimerFired") == []


def test_a_decision_sent_as_json_text_is_understood(hub: Hub) -> None:
    # The Python durable client (the hub's approve route) JSON-encodes the data before posting,
    # so the event's payload is the decision's JSON text, not an object.
    # A decision of the old shape (before ids, verification and time were recorded) still counts,
    # as unverified.
    rotation, waiting = approval_rotation(hub, "approved-as-text")
    rotation.decide(json.dumps({"approved": True, "approver": "erin"}))
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    decision = {"approved": True, "approver": "erin", "reason": "", **UNVERIFIED}
    assert recorded(done["output"]["decision"], waiting) == decision
    assert rotation.activities() == HAPPY_ORDER


def test_the_approval_timer_is_cancelled_once_the_decision_arrives(hub: Hub) -> None:
    rotation, _ = approval_rotation(hub, "timer-cancelled", apply_target=[{"wait_for": "release-apply"}])
    rotation.decide({"approved": True, "approver": "bob"})
    rotation.wait_call("apply_target")
    # The rotation is still running (apply is held), and the deadline passes now.
    hub.advance_clock(POLICY.approval_timeout_hours * 3600 + 60)
    time.sleep(0.5)  # a timer still armed would fire on the jump, well within this
    assert events(rotation.status(history=True), "TimerFired") == []
    rotation.open_gate("release-apply")
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert len(events(done, "TimerCreated")) == 1
    assert events(done, "TimerFired") == []


def test_a_rejection_discards_the_pending_value(hub: Hub) -> None:
    rotation, waiting = approval_rotation(hub, "rejected")
    rotation.decide({"approved": False, "approver": "carol", "reason": "not during the freeze"})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ["plan_rotation", "stage_pending", "discard_pending"]
    assert rotation.inputs("discard_pending") == [rotation.first_step]
    output = done["output"]
    assert output["result"] == "rejected"
    assert recorded(output["decision"], waiting) == {
        "approved": False,
        "approver": "carol",
        "reason": "not during the freeze",
        **UNVERIFIED,
    }
    assert output["new_version"] is None
    assert output["detail"] == "discard_pending: done (discard_pending done (scripted))"
    assert done["customStatus"]["step"] == "done"
    assert done["customStatus"]["result"] == "rejected"
    assert events(done, "TimerFired") == []


def test_no_decision_before_the_deadline_times_out(hub: Hub) -> None:
    rotation, waiting = approval_rotation(hub, "timed-out")
    hub.advance_clock(POLICY.approval_timeout_hours * 3600 + 60)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ["plan_rotation", "stage_pending", "discard_pending"]
    output = done["output"]
    assert output["result"] == "timed_out"
    assert output["decision"]["approved"] is False
    assert output["decision"]["approver"] == "timeout"
    # Decided when the timer fired (the orchestrator's time), and the status says so too.
    assert parse_time(output["decision"]["decided_at"]) >= parse_time(waiting["awaitingDecisionUntil"])
    assert done["customStatus"]["decision"] == output["decision"]
    assert done["customStatus"]["result"] == "timed_out"
    assert len(events(done, "TimerFired")) == 1
    assert events(done, "EventRaised") == []


@pytest.mark.parametrize(
    ("secret_name", "payload"),
    [
        pytest.param("malformed-type", {"approved": "yes", "approver": "mallory"}, id="approved-not-a-bool"),
        pytest.param("malformed-missing", {"approved": True}, id="no-approver"),
        pytest.param("malformed-text", "approve it", id="not-an-object"),
    ],
)
def test_a_malformed_decision_rejects(hub: Hub, secret_name: str, payload: Any) -> None:
    rotation, waiting = approval_rotation(hub, secret_name)
    rotation.decide(payload)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ["plan_rotation", "stage_pending", "discard_pending"]
    assert done["output"]["result"] == "rejected"
    assert recorded(done["output"]["decision"], waiting) == {
        "approved": False,
        "approver": "unknown",
        "reason": "malformed decision event",
        **UNVERIFIED,
    }


# -- 5. consumers ---------------------------------------------------------------------------------


def test_consumers_are_restarted_in_order_after_promotion(hub: Hub) -> None:
    rotation = hub.rotate("consumers-ok", {"plan_rotation": [plan(consumers=CONSUMERS)]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == [*HAPPY_ORDER[:5], *["restart_consumer"] * 3]
    assert rotation.inputs("restart_consumer") == [
        ConsumerInput(
            rotation.id, consumer, POLICY.consumer_ready_timeout_seconds, rotation.request.secret
        ).to_dict()
        for consumer in CONSUMERS
    ]
    assert done["output"]["result"] == "rotated"
    # The pending value was disabled by promote's activity, before the restarts.
    assert done["output"]["steps"] == ["plan", "stage", "apply", "verify", "promote", "cleanup", "restart"]
    assert done["customStatus"]["consumers"] == CONSUMERS


def test_a_failing_consumer_does_not_stop_the_others_and_nothing_is_reverted(hub: Hub) -> None:
    rotation = hub.rotate(
        "consumer-fails",
        {
            "plan_rotation": [plan(consumers=CONSUMERS)],
            "restart_consumer": [{}, fail("TargetError", "billing-api did not come back"), {}],
        },
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [*HAPPY_ORDER[:5], *["restart_consumer"] * 3, "discard_pending"]
    assert [call["consumer_id"] for call in rotation.inputs("restart_consumer")] == CONSUMERS
    assert "revert_target" not in rotation.activities()
    custom = done["customStatus"]
    assert custom["step"] == "failed"
    assert custom["promoted"] is True
    assert custom["newVersion"] == result_of(done, "promote_secret")["new_version"]
    assert custom["failed"] == {
        "step": "restart",
        "class": "TargetError",
        "message": "1 consumer(s) not restarted: billing-api did not come back",
    }
    assert custom["compensation"] == [
        {"undo": "discard_pending", "result": "done", "detail": "discard_pending done (scripted)"}
    ]
    assert custom["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]


# -- 6. skipped and resumed rotations -------------------------------------------------------------


def test_a_plan_with_a_skip_reason_ends_skipped_without_other_calls(hub: Hub) -> None:
    reason = f"version {VERSION} is no longer current"
    rotation = hub.rotate(
        "skipped", {"plan_rotation": [{"return": {**plan()["return"], "skip_reason": reason}}]}
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ["plan_rotation"]
    assert done["output"]["result"] == "skipped"
    assert done["output"]["detail"] == reason
    assert done["output"]["steps"] == ["plan"]
    assert done["customStatus"]["result"] == "skipped"


def test_a_restarted_rotation_that_promoted_before_only_restarts_consumers_and_cleans_up(hub: Hub) -> None:
    promoted_version = "fedcba9876543210fedcba9876543210"
    rotation = hub.rotate(
        "promoted-before",
        {"plan_rotation": [plan(consumers=CONSUMERS[:2], promoted_version=promoted_version)]},
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == [
        "plan_rotation",
        "restart_consumer",
        "restart_consumer",
        "discard_pending",
    ]
    assert rotation.inputs("discard_pending") == [rotation.first_step]
    assert done["output"]["result"] == "rotated"
    assert done["output"]["new_version"] == promoted_version
    assert done["output"]["steps"] == ["plan", "restart", "cleanup"]


def test_a_cleanup_that_failed_inside_promote_runs_as_a_step_of_its_own(hub: Hub) -> None:
    """promote_secret promoted but could not disable the pending value: the rotation is promoted
    (nothing is reverted) and the cleanup runs on its own, with the pending version it knows."""
    not_disabled = {"new_version": "0123456789abcdef0123456789abcdef", "changed": True, "cleanup": "not done"}
    rotation = hub.rotate("cleanup-apart", {"promote_secret": [{"return": not_disabled}]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == [*HAPPY_ORDER, "discard_pending"]
    pending_version = result_of(done, "stage_pending")["pending_version"]
    assert rotation.inputs("discard_pending") == [rotation.first_step | {"pending_version": pending_version}]
    assert done["output"]["steps"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert done["output"]["new_version"] == not_disabled["new_version"]


# -- 7. targets that issue their credentials -------------------------------------------------------

ISSUING = {"target_kind": "entra-app-secret", "issues_credentials": True, "overlap_hours": 2.0}
ISSUING_ORDER = [
    "plan_rotation",
    "stage_pending",
    "verify_target",
    "promote_secret",
    "retire_previous",
]


def test_an_issued_credential_needs_no_apply_and_the_previous_one_is_retired_after_the_overlap(
    hub: Hub,
) -> None:
    rotation = hub.rotate("issued-overlap", {"plan_rotation": [plan(**ISSUING)]})
    # The overlap counts from promotion (the promoted version's time; the scripted promote gives
    # none, so the orchestration's own clock at that point): a durable timer waits 2 h, which the
    # status shows, and nothing is retired before the host's clock gets there.
    waiting = rotation.wait_step("retire")
    custom = waiting["customStatus"]
    retire_at = parse_time(custom["retireAt"])
    assert retire_at - parse_time(custom["stepStartedAt"]) == timedelta(hours=2)
    assert custom["stepsDone"] == ["plan", "stage", "verify", "promote", "cleanup"]
    time.sleep(0.5)
    assert "retire_previous" not in rotation.activities()
    hub.advance_clock(2 * 3600 + 60)
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ISSUING_ORDER
    assert rotation.inputs("stage_pending")[0]["overlap_hours"] == 2.0
    pending_version = result_of(done, "stage_pending")["pending_version"]
    assert rotation.inputs("retire_previous") == [rotation.first_step | {"pending_version": pending_version}]
    assert done["output"]["steps"] == ["plan", "stage", "verify", "promote", "cleanup", "retire"]
    custom = done["customStatus"]
    assert custom["retired"] == "removed the previous credential (scripted)"
    assert "retireAt" not in custom
    [timer] = events(done, "TimerCreated")
    assert parse_time(timer["FireAt"]) == retire_at


def test_a_failed_verify_withdraws_the_issued_credential_before_discarding(hub: Hub) -> None:
    rotation = hub.rotate(
        "issued-refused",
        {
            "plan_rotation": [plan(**ISSUING)],
            "verify_target": [fail("VerificationFailed", "application refuses the new secret")],
        },
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [
        "plan_rotation",
        "stage_pending",
        "verify_target",
        "withdraw_credential",
        "discard_pending",
    ]
    assert [u["undo"] for u in done["customStatus"]["compensation"]] == [
        "withdraw_credential",
        "discard_pending",
    ]
    assert "revert_target" not in rotation.activities()


def test_a_previous_credential_the_hub_did_not_issue_is_named_not_removed(hub: Hub) -> None:
    left = ["0f0f0f0f-0000-4000-8000-000000000001 (created by hand)"]
    rotation = hub.rotate(
        "issued-first",
        {
            "plan_rotation": [plan(**(ISSUING | {"overlap_hours": 0.0}))],
            "retire_previous": [
                {"return": {"changed": False, "detail": "not issued by this hub", "not_removed": left}}
            ],
        },
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert done["customStatus"]["notRemoved"] == left
    assert done["customStatus"]["retired"] == "not issued by this hub"
    assert events(done, "TimerCreated") == []  # no overlap: retired at once


IRREVERSIBLE = {
    "target_kind": "storage-account-key",
    "issues_credentials": True,
    "issue_after_approval": True,
    "approval_required": True,
}


def test_an_irreversible_issue_waits_for_the_approval_before_its_stage(hub: Hub) -> None:
    # A regenerated storage key cannot be restored: the approver decides before anything changes.
    rotation = hub.rotate("key-approved", {"plan_rotation": [plan(**IRREVERSIBLE)]})
    waiting = rotation.wait_step("approval")["customStatus"]
    assert waiting["stepsDone"] == ["plan"]
    assert rotation.activities() == ["plan_rotation"]
    rotation.decide({"approved": True, "approver": "alice"})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ISSUING_ORDER
    assert done["output"]["steps"] == ["plan", "approval", "stage", "verify", "promote", "cleanup", "retire"]


def test_a_rejected_irreversible_issue_changes_nothing(hub: Hub) -> None:
    rotation = hub.rotate("key-rejected", {"plan_rotation": [plan(**IRREVERSIBLE)]})
    rotation.wait_step("approval")
    rotation.decide({"approved": False, "approver": "carol", "reason": "freeze"})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.activities() == ["plan_rotation"]
    assert done["output"]["result"] == "rejected"
    assert done["output"]["detail"] == "nothing was changed"


# -- 8. replay across a host restart --------------------------------------------------------------


def test_the_approval_wait_survives_a_host_restart(tmp_path: Path) -> None:
    own = start_hub(tmp_path)
    try:
        rotation, waiting = approval_rotation(own, "survives-restart")
        own.process.stop()
        own.process.start()

        # The new process replays the history and is waiting at the same point.
        still = rotation.status()
        assert still["runtimeStatus"] == "Running"
        assert still["customStatus"] == waiting
        rotation.decide({"approved": True, "approver": "dave"})
        done = rotation.wait()
    finally:
        stop_hub(own)

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert done["output"]["decision"]["approver"] == "dave"
    # Every replay since computed the same deadline: orchestration time comes from the history.
    assert done["customStatus"]["awaitingDecisionUntil"] == waiting["awaitingDecisionUntil"]
    # Nothing before the restart ran again after it.
    assert rotation.activities() == HAPPY_ORDER
    completed = [e["FunctionName"] for e in events(done, "TaskCompleted")]
    assert [name for name in completed if name != "notify"] == HAPPY_ORDER
    # One notification for the wait and one for the decision: the replay sent neither again.
    assert [n["kind"] for n in rotation.notifications()] == ["approval-waiting", "decided"]
    assert len(events(done, "TimerCreated")) == 1


# -- 9. notifications -----------------------------------------------------------------------------


def notify_calls(done: dict[str, Any]) -> int:
    """notify calls in the history (its summary folds TaskScheduled into their outcome)."""
    return sum(1 for e in events(done, "TaskCompleted", "TaskFailed") if e["FunctionName"] == "notify")


def test_the_happy_path_without_approval_sends_no_notification(hub: Hub) -> None:
    rotation = hub.rotate("notify-none", {"plan_rotation": [plan(consumers=CONSUMERS[:1])]})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert rotation.notifications() == []
    assert notify_calls(done) == 0


def test_an_approval_notifies_the_wait_then_the_decision(hub: Hub) -> None:
    rotation, waiting = approval_rotation(hub, "notify-approved")
    wait_until(
        lambda: len(rotation.notifications()) == 1,
        10,
        lambda: f"no waiting notice: {rotation.notifications()}",
    )
    [notice] = rotation.notifications()
    assert notice["kind"] == "approval-waiting"
    assert (notice["vault"], notice["secret"], notice["rotation_id"]) == (
        VAULT,
        "notify-approved",
        rotation.id,
    )
    assert notice["step"] == "approval"
    assert notice["deadline"] == waiting["awaitingDecisionUntil"]
    rotation.decide({"approved": True, "approver": "alice", "reason": "change CHG-7"})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    waiting_notice, decided = rotation.notifications()
    assert waiting_notice == notice
    assert decided["kind"] == "decided"
    assert decided["decision"] == done["output"]["decision"]
    assert decided["detail"] == "approved by alice"
    assert notify_calls(done) == 2


def test_a_rejection_is_notified_as_decided_not_as_a_failure(hub: Hub) -> None:
    rotation, _ = approval_rotation(hub, "notify-rejected")
    rotation.decide({"approved": False, "approver": "carol", "reason": "not during the freeze"})
    done = rotation.wait()

    assert done["output"]["result"] == "rejected"
    assert [n["kind"] for n in rotation.notifications()] == ["approval-waiting", "decided"]
    decided = rotation.notifications()[1]
    assert decided["detail"] == "rejected by carol: not during the freeze"
    recorded = decided["decision"]
    assert (recorded["approved"], recorded["approver"], recorded["reason"]) == (
        False,
        "carol",
        "not during the freeze",
    )


def test_a_timeout_is_notified_as_a_rejection_by_the_deadline(hub: Hub) -> None:
    rotation, _ = approval_rotation(hub, "notify-timeout")
    hub.advance_clock(POLICY.approval_timeout_hours * 3600 + 60)
    done = rotation.wait()

    assert done["output"]["result"] == "timed_out"
    decided = rotation.notifications()[-1]
    assert decided["kind"] == "decided"
    assert decided["detail"] == "no decision before the deadline: rejected"
    assert decided["decision"]["approver"] == "timeout"


def test_a_failure_whose_undos_all_ran_is_notified_as_compensated(hub: Hub) -> None:
    rotation = hub.rotate(
        "notify-compensated", {"verify_target": [fail("VerificationFailed", "role r1 refuses it")]}
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    [notice] = rotation.notifications()
    assert notice["kind"] == "compensated"
    assert notice["step"] == "verify"
    assert notice["detail"] == "VerificationFailed: role r1 refuses it"
    assert notice["compensation"] == done["customStatus"]["compensation"]
    assert notice["promoted"] is False


def test_a_failure_with_nothing_to_undo_is_notified_as_failed(hub: Hub) -> None:
    rotation = hub.rotate(
        "notify-failed", {"plan_rotation": [fail("InvalidRequest", "tag rotation-target is missing")]}
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    [notice] = rotation.notifications()
    assert notice["kind"] == "failed"
    assert (notice["step"], notice["detail"]) == ("plan", "InvalidRequest: tag rotation-target is missing")
    assert notice["compensation"] == []


def test_a_failure_whose_undo_failed_is_notified_as_failed_with_the_undo_results(hub: Hub) -> None:
    rotation = hub.rotate(
        "notify-undo-fails",
        {
            "verify_target": [fail("VerificationFailed", "role r1 refuses it")],
            "revert_target": [fail("UndoImpossible", "the previous value no longer logs in")],
            "roll_forward_secret": [fail("VerificationFailed", "role r1 refuses it")],
        },
    )
    done = rotation.wait()

    [notice] = rotation.notifications()
    assert notice["kind"] == "failed"
    assert notice["compensation"][0] == {
        "undo": "revert_target",
        "result": "failed",
        "detail": "the previous value no longer logs in",
    }
    assert notice["compensation"] == done["customStatus"]["compensation"]


def test_a_failure_after_promotion_says_the_new_value_is_in_force(hub: Hub) -> None:
    rotation = hub.rotate(
        "notify-promoted",
        {
            "plan_rotation": [plan(consumers=CONSUMERS[:1])],
            "restart_consumer": [fail("TargetError", "orders-api did not come back")],
        },
    )
    done = rotation.wait()

    assert done["customStatus"]["promoted"] is True
    [notice] = rotation.notifications()
    assert (notice["kind"], notice["step"], notice["promoted"]) == ("failed", "restart", True)


def test_a_credential_left_behind_by_retire_is_notified(hub: Hub) -> None:
    left = ["0f0f0f0f-0000-4000-8000-000000000002 (created by hand)"]
    rotation = hub.rotate(
        "notify-unmanaged",
        {
            "plan_rotation": [plan(**(ISSUING | {"overlap_hours": 0.0}))],
            "retire_previous": [
                {"return": {"changed": False, "detail": "not issued by this hub", "not_removed": left}}
            ],
        },
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    [notice] = rotation.notifications()
    assert (notice["kind"], notice["step"], notice["not_removed"]) == ("unmanaged-credential", "retire", left)


@pytest.mark.parametrize("error", ["RuntimeError", "TransientError"])
def test_a_failing_notify_changes_nothing_and_is_not_retried(hub: Hub, error: str) -> None:
    rotation, _ = approval_rotation(
        hub, f"notify-broken-{error.lower()}", notify=[fail(error, "topic unreachable")]
    )
    rotation.decide({"approved": True, "approver": "alice"})
    done = rotation.wait()

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert rotation.activities() == HAPPY_ORDER
    assert [n["kind"] for n in rotation.notifications()] == ["approval-waiting", "decided"]
    # Only the approval deadline's timer: a failed notify is not retried, even a transient one.
    assert len(events(done, "TimerCreated")) == 1
    assert [e["FunctionName"] for e in events(done, "TaskFailed")] == ["notify", "notify"]


def test_a_failing_notify_leaves_a_failed_rotation_s_outcome_as_it_was(hub: Hub) -> None:
    rotation = hub.rotate(
        "notify-broken-failure",
        {
            "verify_target": [fail("VerificationFailed", "role r1 refuses it")],
            "notify": [fail("RuntimeError")],
        },
    )
    done = rotation.wait()

    assert done["runtimeStatus"] == "Failed"
    assert rotation.activities() == [*HAPPY_ORDER[:4], "revert_target", "discard_pending"]
    assert done["customStatus"]["failed"]["step"] == "verify"
    assert "step verify failed: VerificationFailed: role r1 refuses it; revert_target: done" in done["output"]
