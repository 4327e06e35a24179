"""Creating instances and telling a parent that its sub-orchestration ended.

Shared by the client operations (start, restart) and the engine (sub-orchestrations, continue-as-new).
All functions write through the store and must run inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

from local.host import history
from local.host.clock import from_epoch, to_iso
from local.host.engine_state import EngineState
from local.host.store import Instance, Store
from local.host.versioning import normalize

# Statuses in which an instance id cannot be reused (the extension's default
# OverridableExistingInstanceStates.NonRunningStates dedupes exactly these).
RUNNING_STATUSES = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})


def new_execution_id() -> str:
    return uuid.uuid4().hex


def new_instance_id() -> str:
    """DurableClient.StartNewAsync's default: Guid.NewGuid().ToString("N")."""
    return uuid.uuid4().hex


def create_instance(
    store: Store,
    *,
    instance_id: str,
    name: str,
    input_text: str | None,
    now: float,
    parent: dict[str, Any] | None = None,
    version: str | None = None,
) -> Instance:
    """Replace whatever had this id with a Pending instance whose ExecutionStarted waits in the inbox.

    ``version`` is the orchestration version it keeps for good (None: unversioned; stored as '')."""
    store.delete_instance(instance_id)
    execution_id = new_execution_id()
    instance = Instance(
        instance_id=instance_id,
        execution_id=execution_id,
        name=name,
        version=normalize(version) or "",
        status="Pending",
        input=input_text,
        output=None,
        custom_status=None,
        created_at=now,
        updated_at=now,
        parent=parent,
        engine=EngineState().to_dict(),
    )
    store.put_instance(instance)
    store.add_inbox(instance_id, execution_id, _started_event(instance, now))
    return instance


def start_new_execution(store: Store, instance: Instance, *, input_text: str | None, now: float) -> None:
    """Continue-as-new: same id, fresh history, new input; events for the old execution are dropped.

    The version stays (DTFx: the new ExecutionStarted carries the old execution's version)."""
    instance.execution_id = new_execution_id()
    instance.input = input_text
    instance.output = None
    instance.status = "ContinuedAsNew"
    instance.updated_at = now
    instance.engine = EngineState().to_dict()
    store.clear_history(instance.instance_id)
    store.clear_timers(instance.instance_id)
    store.clear_activities(instance.instance_id)
    store.put_instance(instance)
    store.add_inbox(instance.instance_id, instance.execution_id, _started_event(instance, now))


def _started_event(instance: Instance, now: float) -> dict[str, Any]:
    return history.execution_started(
        to_iso(from_epoch(now)),
        name=instance.name,
        # Unversioned is null, as the extension writes it when no version applies.
        version=normalize(instance.version),
        input_text=instance.input,
        instance_id=instance.instance_id,
        execution_id=instance.execution_id,
        parent=instance.parent,
    )


def notify_parent(store: Store, child: Instance, *, timestamp: str, details: str | None = None) -> str | None:
    """Queue the parent's SubOrchestrationInstanceCompleted/Failed; returns the parent id to wake."""
    parent = child.parent
    if not parent:
        return None
    task_id = int(parent["taskScheduledId"])
    if child.status == "Completed":
        event = history.sub_orchestration_completed(timestamp, task_id, child.output)
    else:
        reason = child.output if child.output is not None else f"Orchestration was {child.status.lower()}."
        event = history.sub_orchestration_failed(timestamp, task_id, reason=reason, details=details)
    store.add_inbox(parent["instanceId"], parent["executionId"], event)
    return str(parent["instanceId"])
