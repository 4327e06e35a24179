"""A 100-step orchestration and 200 concurrent instances."""

from __future__ import annotations

import time

import pytest
from host_helpers import HostFactory, RunningHost

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host(module_host_factory: HostFactory) -> RunningHost:
    return module_host_factory()


def test_a_100_step_orchestration(host: RunningHost) -> None:
    host.api.start("chain", "hundred", {"steps": 100})
    done = host.api.wait("hundred", timeout=120, query="?showHistory=true")
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == 100
    completed = [event for event in done["historyEvents"] if event["EventType"] == "TaskCompleted"]
    assert len(completed) == 100


def test_200_concurrent_instances(host: RunningHost) -> None:
    started = time.monotonic()
    ids = [host.api.start("noop_six", f"many-{index:03d}") for index in range(200)]
    for instance_id in ids:
        done = host.api.wait(instance_id, timeout=120)
        assert done["runtimeStatus"] == "Completed"
        assert done["output"] == 6
    statuses = {item["runtimeStatus"] for item in host.api.list("?instanceIdPrefix=many-")}
    assert statuses == {"Completed"}
    assert len(host.api.list("?instanceIdPrefix=many-")) == 200
    assert time.monotonic() - started < 120
