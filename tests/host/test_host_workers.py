"""Several worker processes (FUNCTIONS_WORKER_PROCESS_COUNT): many instances replayed in parallel.

What a user sees must not change with the worker count: every instance completes with its output
and a well-formed history; a SIGKILL of the host leaves no worker behind and the restarted host
finishes everything; a bad count refuses to start.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from typing import Any

import pytest
from host_helpers import HostFactory, RunningHost, wait_until

from local.host.process import HostStartError

WORKERS_READY = re.compile(r"(\d+) worker processes ready \(pids \[([\d, ]+)\]\)")


def _worker_pids(host: RunningHost) -> list[int]:
    """The pids of the host's worker processes, from its last start's log line."""
    matches = WORKERS_READY.findall(host.process.log_path.read_text(encoding="utf-8"))
    assert matches, "the host did not log its worker processes"
    return [int(pid) for pid in matches[-1][1].split(", ")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped) is gone as far as work goes.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _assert_well_formed(done: dict[str, Any], activity: str, calls: int) -> None:
    """A completed instance's history: one execution, each activity call completed exactly once."""
    kinds = [event["EventType"] for event in done["historyEvents"]]
    assert kinds[0] == "ExecutionStarted"
    assert kinds[-1] == "ExecutionCompleted"
    assert kinds.count("ExecutionStarted") == 1
    assert kinds.count("ExecutionCompleted") == 1
    assert "TaskFailed" not in kinds
    # The status API folds each TaskScheduled into its completion (FunctionName, ScheduledTime).
    completed = [event for event in done["historyEvents"] if event["EventType"] == "TaskCompleted"]
    assert len(completed) == calls
    assert {event["FunctionName"] for event in completed} == {activity}
    assert all(event["ScheduledTime"] <= event["Timestamp"] for event in completed)


@pytest.mark.slow
def test_many_instances_with_several_workers_complete_with_their_outputs_and_histories(
    host_factory: HostFactory,
) -> None:
    host = host_factory(env={"FUNCTIONS_WORKER_PROCESS_COUNT": "2"})
    pids = _worker_pids(host)
    assert len(pids) == 2
    assert all(_alive(pid) for pid in pids)

    # instance id -> (output, activity, activity calls)
    expected: dict[str, tuple[Any, str, int]] = {}
    for index in range(60):
        steps = 1 + index % 7
        expected[host.api.start("chain", f"workers-chain-{index:02d}", {"steps": steps})] = (
            steps,
            "add_one",
            steps,
        )
    for index in range(60):
        expected[host.api.start("noop_six", f"workers-noop-{index:02d}")] = (6, "noop", 6)
    for index in range(20):
        count = 2 + index % 5
        expected[host.api.start("fan_out", f"workers-fan-{index:02d}", {"count": count})] = (
            sum(range(count)),
            "echo",
            count,
        )
    for instance_id, (output, activity, calls) in expected.items():
        done = host.api.wait(instance_id, timeout=120, query="?showHistory=true")
        assert done["runtimeStatus"] == "Completed", (instance_id, done.get("output"))
        assert done["output"] == output, instance_id
        _assert_well_formed(done, activity, calls)
    statuses = Counter(item["runtimeStatus"] for item in host.api.list("?instanceIdPrefix=workers-"))
    assert statuses == Counter({"Completed": len(expected)})
    # Still the same two workers: none died along the way.
    assert _worker_pids(host) == pids
    assert all(_alive(pid) for pid in pids)


@pytest.mark.slow
def test_a_killed_host_leaves_no_worker_and_its_restart_finishes_every_instance(
    host_factory: HostFactory,
) -> None:
    host = host_factory(workers=2)
    ids = [host.api.start("chain", f"kill-workers-{index}", {"steps": 25}) for index in range(12)]
    for _ in range(3):
        wait_until(lambda: any(item["runtimeStatus"] == "Running" for item in host.api.list()), 20)
        pids = _worker_pids(host)
        host.process.kill()
        wait_until(lambda pids=pids: not any(_alive(pid) for pid in pids), 10, "workers outlived the host")
        host.process.start()
    for instance_id in ids:
        done = host.api.wait(instance_id, timeout=90, query="?showHistory=true")
        assert done["output"] == 25
        _assert_well_formed(done, "add_one", 25)
    pids = _worker_pids(host)
    host.process.stop()
    wait_until(lambda: not any(_alive(pid) for pid in pids), 10, "workers outlived a stopped host")


@pytest.mark.parametrize("value", ["0", "11", "two"])
def test_a_bad_worker_count_refuses_to_start(host_factory: HostFactory, value: str) -> None:
    host = host_factory(env={"FUNCTIONS_WORKER_PROCESS_COUNT": value}, start=False)
    with pytest.raises(
        HostStartError, match="FUNCTIONS_WORKER_PROCESS_COUNT must be an integer from 1 to 10"
    ):
        host.process.start()


@pytest.mark.slow
def test_a_worker_killed_under_load_is_replaced_and_every_instance_completes(
    host_factory: HostFactory,
) -> None:
    host = host_factory(workers=2)
    ids = [host.api.start("chain", f"worker-kill-{index}", {"steps": 25}) for index in range(20)]
    wait_until(lambda: any(item["runtimeStatus"] == "Running" for item in host.api.list()), 20)
    victim = _worker_pids(host)[0]
    os.kill(victim, signal.SIGKILL)
    for instance_id in ids:
        done = host.api.wait(instance_id, timeout=90, query="?showHistory=true")
        assert done["output"] == 25
        _assert_well_formed(done, "add_one", 25)
    log = host.process.log_path.read_text(encoding="utf-8")
    assert f"worker process {victim} ended; starting another" in log
