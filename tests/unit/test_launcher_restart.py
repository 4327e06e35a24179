"""Which ended rotations of a version the launcher starts again (starters/launcher.py), read from
the orchestration status the durable client returns; the restart itself runs end to end in
tests/e2e/test_restart_ended.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from starters.launcher import ended_unfinished


def status(runtime: str, output: Any = None) -> DurableOrchestrationStatus:
    return DurableOrchestrationStatus(instanceId="rotate_kv_s_v", runtimeStatus=runtime, output=output)


@pytest.mark.parametrize(
    ("runtime", "output", "why"),
    [
        ("Failed", "step promote failed: TransientError: ...", "its last run ended Failed"),
        ("Terminated", "terminated by an operator", "its last run ended Terminated"),
        ("Completed", {"result": "rejected"}, "its last run ended rejected"),
        ("Completed", {"result": "timed_out"}, "its last run ended timed_out"),
        ("Completed", json.dumps({"result": "timed_out"}), "its last run ended timed_out"),
    ],
)
def test_a_rotation_that_ended_without_rotating_starts_again(runtime: str, output: Any, why: str) -> None:
    assert ended_unfinished(status(runtime, output)) == why


@pytest.mark.parametrize(
    ("runtime", "output"),
    [
        ("Completed", {"result": "rotated"}),
        ("Completed", {"result": "rolled_forward"}),
        ("Completed", {"result": "skipped"}),
        ("Completed", None),  # nothing to read: kept, never run twice blindly
        ("Completed", "not json"),
        ("Running", None),
        ("Pending", None),
        ("Suspended", None),
        ("ContinuedAsNew", None),
    ],
)
def test_a_rotation_that_rotated_or_still_runs_is_a_duplicate(runtime: str, output: Any) -> None:
    assert ended_unfinished(status(runtime, output)) is None
