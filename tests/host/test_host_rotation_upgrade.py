"""A deployment while rotations wait: the rotations of the release before keep its path to the end.

Version 1 is the release of 2026-11-25 (it predates versioning, so its instances carry no
version). Its orchestrator is taken from git as it was released and runs on the local host with
the scripted activities (tests/apps/scripted_rotation) and that release's host.json (no
``defaultVersion``). Rotations start there and wait for their approvals. Then the current code
is deployed over the same task hub with the app's ``defaultVersion`` "2.0": the waiting version-1
rotations replay their version-1 history through today's ``rotate_secret`` and finish the way
version 1 would have (no notifications, the cleanup after the consumers' restarts, the undos and
no roll-forward on a failure), while a rotation started after the deployment takes version 2.0's
path. Without the version-1 branches the first replay meets a ``notify`` call where the history
holds the approval timer and the rotation fails as non-deterministic.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from local.host.process import HostProcess
from rotation.notifications import APPROVAL_WAITING, DECIDED
from tests.unit.test_rotate_secret_orchestrator import (
    APP,
    CONSUMERS,
    TIME_SCALE,
    Hub,
    Rotation,
    fail,
    plan,
)

# Version 1 of rotate_secret: the orchestrator of the 2026-11-25 release, frozen in
# tests/apps/release_1 (its README says from which commit).
RELEASE_1 = Path(__file__).resolve().parents[1] / "apps" / "release_1"
APPROVED = {"approved": True, "approver": "alice", "reason": "change window agreed"}
REJECTED = {"approved": False, "approver": "bob", "reason": "not this week"}


def _release_1_app(base: Path) -> Path:
    """The scripted app with version 1's orchestrator and version 1's host.json (no defaultVersion)."""
    root = base / "release-1"
    shutil.copytree(APP, root, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(RELEASE_1 / "orchestrators", root / "orchestrators", dirs_exist_ok=True)
    host_json = json.loads((APP / "host.json").read_text())
    del host_json["extensions"]["durableTask"]["defaultVersion"]
    (root / "host.json").write_text(json.dumps(host_json))
    return root


def _deploy(hub: Hub, app: Path) -> None:
    """Stop the host and start it on ``app`` over the same task hub store and scripts."""
    hub.process.stop()
    hub.process.script_root = app
    hub.process.start()


def _waiting_for_approval(rotation: Rotation) -> dict[str, object]:
    return rotation.wait_step("approval")


def test_rotations_waiting_at_a_deployment_finish_on_their_own_version(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    process = HostProcess(
        _release_1_app(tmp_path),
        tmp_path / "host",
        env={"SCRIPTED_ROTATION_DIR": str(scripts)},
        time_scale=TIME_SCALE,
    )
    hub = Hub(process, scripts)
    try:
        process.start()
        approval = plan(approval_required=True, consumers=CONSUMERS[:2])
        approved = hub.rotate("v1-approved", {"plan_rotation": [approval]})
        rejected = hub.rotate("v1-rejected", {"plan_rotation": [approval]})
        failing = hub.rotate(
            "v1-failing",
            {
                "plan_rotation": [approval],
                "verify_target": [fail("VerificationFailed", "role r1 refuses it")],
                "revert_target": [fail("UndoImpossible", "the admin login is refused")],
            },
        )
        for rotation in (approved, rejected, failing):
            waiting = _waiting_for_approval(rotation)
            assert "version" not in waiting  # version 1 predates versioning
            assert rotation.activities() == ["plan_rotation", "stage_pending"]

        _deploy(hub, APP)  # today's code, defaultVersion 2.0
        current = hub.rotate("v2-approved", {"plan_rotation": [approval]})
        assert _waiting_for_approval(current)["version"] == "2.0"
        for rotation, decision in (
            (approved, APPROVED),
            (rejected, REJECTED),
            (failing, APPROVED),
            (current, APPROVED),
        ):
            rotation.decide(decision)
        ended = {
            rotation.id: rotation.wait(timeout=60) for rotation in (approved, rejected, failing, current)
        }
    finally:
        try:
            process.stop(timeout=10)
        finally:
            process.kill()

    # Version 1 to the end: the pending value removed after the restarts, no notification.
    done = ended[approved.id]
    assert done["runtimeStatus"] == "Completed", done["output"]
    assert done["output"]["result"] == "rotated"
    assert "version" not in done
    assert approved.activities() == [
        "plan_rotation",
        "stage_pending",
        "apply_target",
        "verify_target",
        "promote_secret",
        "restart_consumer",
        "restart_consumer",
        "discard_pending",
    ]
    assert approved.notifications() == []
    assert ended[approved.id]["customStatus"]["stepsDone"][-1] == "cleanup"

    done = ended[rejected.id]
    assert done["runtimeStatus"] == "Completed", done["output"]
    assert done["output"]["result"] == "rejected"
    assert rejected.activities() == ["plan_rotation", "stage_pending", "discard_pending"]
    assert rejected.notifications() == []

    # Version 1's failure: every undo in turn (the failing revert too), no settle, no roll-forward.
    done = ended[failing.id]
    assert done["runtimeStatus"] == "Failed", done["output"]
    assert "Non-Deterministic" not in done["output"]
    assert failing.activities() == [
        "plan_rotation",
        "stage_pending",
        "apply_target",
        "verify_target",
        "revert_target",
        "discard_pending",
    ]
    assert failing.notifications() == []
    assert [undo["result"] for undo in done["customStatus"]["compensation"]] == ["failed", "done"]

    # Started after the deployment: version 2.0's path, notifications and the cleanup inside promote.
    done = ended[current.id]
    assert (done["runtimeStatus"], done["output"]["result"], done["version"]) == (
        "Completed",
        "rotated",
        "2.0",
    )
    assert current.activities() == [
        "plan_rotation",
        "stage_pending",
        "apply_target",
        "verify_target",
        "promote_secret",
        "restart_consumer",
        "restart_consumer",
    ]
    assert [note["kind"] for note in current.notifications()] == [APPROVAL_WAITING, DECIDED]
