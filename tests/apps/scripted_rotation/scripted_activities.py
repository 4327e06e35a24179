"""Scripted stand-ins for the rotation's activities: same names, same records in and out.

They touch no vault, database or web app. Each call reads what to do from a script and leaves a
line in a calls log, both in ``$SCRIPTED_ROTATION_DIR/<rotation id>/``, so one host serves many
rotations and a test sees exactly the calls of its own:

- ``script.json``: ``{"<activity>": [<call 1>, <call 2>, ...]}``; the n-th call of that activity
  in this rotation follows the n-th entry and calls past the end follow the last one. An entry
  may hold ``"wait_for": "<file>"`` (block until that file exists in the rotation's folder),
  ``"raise": "<class>"`` with ``"message"`` (and ``"cause"``: a class to chain it from), or
  ``"return": {...}`` (the result record; a plausible default when absent or when the activity
  is not in the script at all).
- ``calls.jsonl``: one ``{"activity", "call", "input"}`` line per call, written when it starts;
  ``notify`` calls go to ``notifications.jsonl`` instead, so the step sequences stay as they were.

Failures are raised the way the real activities raise them: ``rotation.errors`` classes, whose
messages carry the ``[transient]``/``[permanent]`` marker the orchestrator reads. ``RuntimeError``
and ``ValueError`` stand for an error without a marker.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import azure.durable_functions as df

from rotation import errors
from rotation.model import (
    Changed,
    ConsumerInput,
    ConsumerRestarted,
    Promoted,
    PromoteInput,
    Record,
    Retired,
    RotationPlan,
    Staged,
    StageInput,
    StepInput,
)
from rotation.notifications import Notification
from rotation.notify_delivery import Delivery

bp = df.Blueprint()

DIR_SETTING = "SCRIPTED_ROTATION_DIR"
GATE_TIMEOUT_SECONDS = 60.0

_INPUTS: dict[str, type[Record]] = {
    "plan_rotation": StepInput,
    "stage_pending": StageInput,
    "discard_pending": StepInput,
    "apply_target": StepInput,
    "verify_target": StepInput,
    "revert_target": StepInput,
    "promote_secret": PromoteInput,
    "roll_forward_secret": PromoteInput,
    "restart_consumer": ConsumerInput,
    "withdraw_credential": StepInput,
    "retire_previous": StepInput,
    "notify": Notification,
}
_LOGS = {"notify": "notifications.jsonl"}
_UNMARKED: dict[str, type[Exception]] = {"RuntimeError": RuntimeError, "ValueError": ValueError}
_log_lock = threading.Lock()


def _rotation_id(record: Record) -> str:
    if isinstance(record, StageInput | PromoteInput):
        return record.step.rotation_id
    if isinstance(record, Notification):
        return record.rotation_id
    assert isinstance(record, StepInput | ConsumerInput)
    return record.rotation_id


def _version_for(rotation_id: str, what: str) -> str:
    """A Key Vault-shaped version id (32 hex digits), stable per rotation."""
    return hashlib.sha256(f"{rotation_id}/{what}".encode()).hexdigest()[:32]


def _default_result(activity: str, record: Record, rotation_id: str) -> Record:
    if activity == "plan_rotation":
        return RotationPlan(target_kind="postgresql-login", approval_required=False, validity_days=60.0)
    if activity == "stage_pending":
        return Staged(pending_version=_version_for(rotation_id, "pending"), reused=False)
    if activity in ("promote_secret", "roll_forward_secret"):
        # As the real activity: the pending value disabled in the same call (the cleanup).
        return Promoted(new_version=_version_for(rotation_id, "new"), changed=True, pending_disabled=True)
    if activity == "retire_previous":
        return Retired(changed=True, detail="removed the previous credential (scripted)")
    if activity == "restart_consumer":
        assert isinstance(record, ConsumerInput)
        return ConsumerRestarted(consumer_id=record.consumer_id, state="Running")
    if activity == "notify":
        return Delivery(topic="sent", webhook="off")
    return Changed(changed=True, detail=f"{activity} done (scripted)")


def _error(entry: dict[str, Any]) -> Exception:
    name = entry["raise"]
    message = str(entry.get("message", f"scripted {name}"))
    if name in _UNMARKED:
        return _UNMARKED[name](message)
    cls = getattr(errors, name)
    if not (isinstance(cls, type) and issubclass(cls, errors.RotationError)):
        raise TypeError(f"{name} is not a rotation error")
    return cls(message)


def _record_call(folder: Path, activity: str, payload: dict[str, Any]) -> int:
    """Append this call to the log; returns its number among this rotation's calls of ``activity``."""
    log = folder / _LOGS.get(activity, "calls.jsonl")
    with _log_lock:
        earlier = (
            [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
            if log.exists()
            else []
        )
        number = 1 + sum(1 for call in earlier if call["activity"] == activity)
        with log.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"activity": activity, "call": number, "input": payload}) + "\n")
    return number


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"scripted gate {path.name} never opened")
        time.sleep(0.02)


def run(activity: str, payload: dict[str, Any]) -> dict[str, Any]:
    record = _INPUTS[activity].from_dict(payload)  # the real activities parse the same record
    rotation_id = _rotation_id(record)
    folder = Path(os.environ[DIR_SETTING]) / rotation_id
    folder.mkdir(parents=True, exist_ok=True)
    number = _record_call(folder, activity, payload)
    script_file = folder / "script.json"
    script = json.loads(script_file.read_text(encoding="utf-8")) if script_file.exists() else {}
    entries: list[dict[str, Any]] = script.get(activity) or [{}]
    entry = entries[min(number, len(entries)) - 1]
    if "wait_for" in entry:
        _wait_for(folder / entry["wait_for"])
    if "raise" in entry:
        error = _error(entry)
        if "cause" in entry:
            raise error from _error({"raise": entry["cause"], "message": f"scripted cause of {activity}"})
        raise error
    if "return" in entry:
        return dict(entry["return"])
    return _default_result(activity, record, rotation_id).to_dict()


@bp.activity_trigger(input_name="payload")
def plan_rotation(payload: dict[str, Any]) -> dict[str, Any]:
    return run("plan_rotation", payload)


@bp.activity_trigger(input_name="payload")
def stage_pending(payload: dict[str, Any]) -> dict[str, Any]:
    return run("stage_pending", payload)


@bp.activity_trigger(input_name="payload")
def discard_pending(payload: dict[str, Any]) -> dict[str, Any]:
    return run("discard_pending", payload)


@bp.activity_trigger(input_name="payload")
def apply_target(payload: dict[str, Any]) -> dict[str, Any]:
    return run("apply_target", payload)


@bp.activity_trigger(input_name="payload")
def verify_target(payload: dict[str, Any]) -> dict[str, Any]:
    return run("verify_target", payload)


@bp.activity_trigger(input_name="payload")
def revert_target(payload: dict[str, Any]) -> dict[str, Any]:
    return run("revert_target", payload)


@bp.activity_trigger(input_name="payload")
def promote_secret(payload: dict[str, Any]) -> dict[str, Any]:
    return run("promote_secret", payload)


@bp.activity_trigger(input_name="payload")
def roll_forward_secret(payload: dict[str, Any]) -> dict[str, Any]:
    return run("roll_forward_secret", payload)


@bp.activity_trigger(input_name="payload")
def restart_consumer(payload: dict[str, Any]) -> dict[str, Any]:
    return run("restart_consumer", payload)


@bp.activity_trigger(input_name="payload")
def withdraw_credential(payload: dict[str, Any]) -> dict[str, Any]:
    return run("withdraw_credential", payload)


@bp.activity_trigger(input_name="payload")
def notify(payload: dict[str, Any]) -> dict[str, Any]:
    return run("notify", payload)


@bp.activity_trigger(input_name="payload")
def retire_previous(payload: dict[str, Any]) -> dict[str, Any]:
    return run("retire_previous", payload)
