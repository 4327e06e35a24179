"""Activities in the worker processes (FUNCTIONS_WORKER_PROCESS_COUNT > 1), as Azure runs them.

What a user sees must not depend on where an activity runs: the same outputs and the same
history (failure reasons and details with their [transient]/[permanent] markers included) as
with the activities in the host process; maxConcurrentActivityFunctions still bounds them over
all workers, PYTHON_THREADPOOL_THREAD_COUNT bounds each worker; a worker SIGKILLed while it runs
activities is replaced and those activities run again (they were never completed), so every
instance completes; app settings from local.settings.json reach the activities in the workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from host_helpers import DURABLE_APP, HostFactory, RunningHost, wait_until

WORKERS_READY = re.compile(r"(\d+) worker processes ready \(pids \[([\d, ]+)\]\)")
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _worker_pids(host: RunningHost) -> list[int]:
    """The worker processes alive now: the host's children running the worker module."""
    pid = host.process.pid
    assert pid is not None
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
                state = Path(f"/proc/{child}/stat").read_text().split(") ")[1][0]
            except OSError:
                continue
            if b"local.host.replay_workers" in command and state != "Z":
                found.append(int(child))
    return sorted(found)


def _without_times(value: Any) -> Any:
    """A history with every timestamp blanked: the only thing two runs may differ in."""
    if isinstance(value, dict):
        return {key: _without_times(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_times(item) for item in value]
    if isinstance(value, str) and ISO_TIME.match(value):
        return "<time>"
    return value


def _peak_overlap(runs: list[list[float]]) -> int:
    moments = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    in_flight = peak = 0
    for _, change in moments:
        in_flight += change
        peak = max(peak, in_flight)
    return peak


# approval_flow: a retried transient failure, an async activity (promote), then a failing
# activity whose marker the orchestrator reads from the exception text.
SCENARIOS: list[tuple[str, str, Any]] = [
    ("approval_flow", "flow-transient", {"name": "a", "fail_times": 1, "fail_mode": "transient"}),
    ("approval_flow", "flow-permanent", {"name": "b", "fail_times": 2, "fail_mode": "permanent"}),
    ("approval_flow", "flow-unmarked", {"name": "c", "fail_times": 0, "fail_mode": "other"}),
    ("retry_in_fan_out", "retry-fan", None),
    ("fan_out", "fan", {"count": 5}),
    ("retry_exhausted", "exhausted", None),
    ("unknown_activity", "unknown", None),
]


CONCURRENT = {"retry-fan", "fan"}


def _run_scenarios(host: RunningHost) -> dict[str, Any]:
    for name, instance_id, payload in SCENARIOS:
        host.api.start(name, instance_id, payload)
    return {
        instance_id: host.api.wait(instance_id, timeout=60, query="?showHistory=true&showHistoryOutput=true")
        for _, instance_id, _ in SCENARIOS
    }


@pytest.mark.slow
def test_activities_in_workers_give_the_outputs_and_histories_of_activities_in_the_host(
    host_factory: HostFactory,
) -> None:
    in_host = _run_scenarios(host_factory())
    in_workers_host = host_factory(workers=2)
    in_workers = _run_scenarios(in_workers_host)

    for instance_id, done in in_workers.items():
        mine, theirs = _without_times(done), _without_times(in_host[instance_id])
        if instance_id in CONCURRENT:
            # Activities running together complete in either order: the same events, maybe reordered.
            mine["historyEvents"] = sorted(json.dumps(event) for event in mine["historyEvents"])
            theirs["historyEvents"] = sorted(json.dumps(event) for event in theirs["historyEvents"])
        assert mine == theirs, instance_id
    # What the orchestrator saw of each failure: the marker in the activity's own message.
    failures = {key: in_workers[key]["output"]["failure"] for key in ("flow-transient", "flow-permanent")}
    assert failures["flow-transient"]["kind"] == "transient"
    assert failures["flow-permanent"]["kind"] == "permanent"
    assert failures["flow-permanent"]["text"].startswith(
        "Activity function 'may_fail' failed:  PermanentError: [permanent] PermanentError: "
        "the target refused the new credential \n "
    )
    assert in_workers["flow-unmarked"]["output"]["failure"]["kind"] == "unknown"
    assert in_workers["flow-transient"]["output"]["promoted"] == "promoted a:v2"  # the async activity
    failed = [
        event for event in in_workers["flow-permanent"]["historyEvents"] if event["EventType"] == "TaskFailed"
    ]
    assert [event["Reason"] for event in failed] == [
        "Activity function 'flaky_stage' failed:  TransientError: [transient] TransientError: "
        f"staging b:v2 throttled (attempt {attempt})"
        for attempt in (1, 2)
    ] + [
        "Activity function 'may_fail' failed:  PermanentError: [permanent] PermanentError: "
        "the target refused the new credential"
    ]
    # The trace the worker sends starts in the user's code, not in the host's or the pool's.
    stack = json.loads(failed[-1]["Details"])["InnerException"]["RemoteStackTrace"]
    assert stack.splitlines()[1].endswith('sample_activities.py", line 51, in may_fail')
    assert in_workers["exhausted"]["output"]["kind"] == "transient"  # after the last of 3 attempts
    assert in_workers["unknown"]["runtimeStatus"] == "Failed"


def test_the_activity_bound_holds_over_all_workers_and_each_worker_has_its_thread_count(
    host_factory: HostFactory,
) -> None:
    bounded = host_factory(workers=2, max_activities=3)
    runs = bounded.api.wait(bounded.api.start("sleepers", "bounded", {"count": 9, "seconds": 0.4}))["output"]
    assert len(runs) == 9
    assert _peak_overlap(runs) == 3

    one_thread_each = host_factory(workers=2, env={"PYTHON_THREADPOOL_THREAD_COUNT": "1"})
    instance = one_thread_each.api.start("sleepers", "threads", {"count": 6, "seconds": 0.4})
    runs = one_thread_each.api.wait(instance)["output"]
    assert len(runs) == 6
    assert _peak_overlap(runs) == 2


@pytest.mark.slow
def test_a_worker_killed_mid_activity_is_replaced_and_its_activities_run_again(
    host_factory: HostFactory,
) -> None:
    host = host_factory(workers=2)
    before = _worker_pids(host)
    assert len(before) == 2
    ids = [
        host.api.start("slow_chain", f"killed-mid-{index}", {"steps": 1, "seconds": 3}) for index in range(4)
    ]
    started = host.state_dir / "slow_step_started.log"
    wait_until(lambda: started.exists() and len(started.read_text().splitlines()) == 4, 20)
    # Each worker holds two of the four (the least busy one gets the next activity).
    victim = before[0]
    os.kill(victim, signal.SIGKILL)

    for instance_id in ids:
        done = host.api.wait(instance_id, timeout=60, query="?showHistory=true")
        assert done["runtimeStatus"] == "Completed", done
        assert done["output"] == [1]  # finished once: the killed run never finished
        kinds = [event["EventType"] for event in done["historyEvents"]]
        assert kinds.count("TaskCompleted") == 1
        assert "TaskFailed" not in kinds
    runs = [line for line in started.read_text().splitlines()]
    assert len(runs) == 6
    assert sorted(runs.count(f"{instance_id}:0") for instance_id in ids) == [1, 1, 2, 2]
    finished = (host.state_dir / "slow_step_finished.log").read_text().splitlines()
    assert sorted(finished) == sorted(f"{instance_id}:0" for instance_id in ids)

    log = host.process.log_path.read_text(encoding="utf-8")
    assert f"worker process {victim} ended; starting another" in log
    assert log.count("lost with its worker process; running it again") == 2
    wait_until(lambda: len(_worker_pids(host)) == 2, 30, "the dead worker was not replaced")
    assert victim not in _worker_pids(host)


def test_app_settings_from_local_settings_reach_activities_in_the_workers(
    host_factory: HostFactory, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    shutil.copytree(DURABLE_APP, app, ignore=shutil.ignore_patterns("__pycache__", "local.settings.json"))
    settings_dir = tmp_path / "from-local-settings"
    (app / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": {"SAMPLE_STATE_DIR": str(settings_dir)}})
    )
    host = host_factory(app=app, workers=2, env={"SAMPLE_STATE_DIR": None})
    done = host.api.wait(host.api.start("slow_chain", "settings", {"steps": 2, "seconds": 0}))
    assert done["output"] == [1, 1]
    assert (settings_dir / "slow_step_finished.log").read_text().splitlines() == ["settings:0", "settings:1"]
