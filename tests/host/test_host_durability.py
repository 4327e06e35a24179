"""SIGKILL at any moment, then a restart: instances continue from their last checkpoint."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from host_helpers import HostFactory, read_lines, wait_until

pytestmark = pytest.mark.slow


def test_killed_mid_orchestration_continues_without_rerunning_completed_activities(
    host_factory: HostFactory,
) -> None:
    host = host_factory()
    host.api.start("slow_chain", "durable-1", {"steps": 6, "seconds": 0.4})
    finished = host.state_dir / "slow_step_finished.log"
    started = host.state_dir / "slow_step_started.log"
    # Kill while step 3 runs: steps 0-1 finished, step 2 started.
    wait_until(lambda: len(read_lines(finished)) >= 2 and len(read_lines(started)) >= 3, 20)
    host.process.kill()
    killed_started = Counter(read_lines(started))
    killed_finished = Counter(read_lines(finished))

    host.process.start()
    done = host.api.wait("durable-1", timeout=30)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == [1, 1, 1, 1, 1, 1]  # every step's result comes from exactly one finished run
    starts = Counter(read_lines(started))
    for key, _count in killed_finished.items():
        assert starts[key] == 1, f"{key} had finished before the kill and ran again"
    in_flight = [key for key in killed_started if key not in killed_finished]
    assert len(in_flight) == 1
    assert starts[in_flight[0]] == 2  # the activity in flight at the kill ran again (at-least-once)
    # ... and every step finished exactly once overall.
    assert Counter(read_lines(finished)) == Counter(f"durable-1:{step}" for step in range(6))


def test_repeated_kills_under_load(host_factory: HostFactory) -> None:
    host = host_factory()
    ids = [host.api.start("chain", f"load-{index}", {"steps": 25}) for index in range(12)]
    for _ in range(3):
        time.sleep(0.4)
        host.process.kill()
        host.process.start()
    for instance_id in ids:
        assert host.api.wait(instance_id, timeout=60)["output"] == 25


def test_timers_survive_a_kill(host_factory: HostFactory) -> None:
    host = host_factory()
    host.api.start("approval_flow", "timer-kill", {"name": "t", "approval": True, "timeout_hours": 72})
    host.api.wait_custom("timer-kill", "stage", "awaiting_approval")
    host.process.kill()
    host.process.start()
    assert host.api.status("timer-kill").json()["runtimeStatus"] == "Running"
    host.api.advance_clock(73 * 3600)
    done = host.api.wait("timer-kill", timeout=15)
    assert done["output"]["outcome"] == "rejected"
