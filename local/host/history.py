"""History events in the shape DTFx serialises them (``JArray.FromObject(HistoryEvent)``, PascalCase).

The SDK reads ``EventType``, ``EventId``, ``IsPlayed``, ``Timestamp`` and a few fields per type
(see ../shared/reference/durable-host-contract.md); the rest is kept so the status API's
``showHistory`` looks like the real one. ``IsPlayed`` is not stored: it is true for every event of
earlier episodes and is added when the history is sent to the orchestrator.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class EventType(IntEnum):
    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_CREATED = 7
    SUB_ORCHESTRATION_COMPLETED = 8
    SUB_ORCHESTRATION_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC_EVENT = 17
    HISTORY_STATE = 18
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20


class OrchestrationStatus(IntEnum):
    """DTFx's OrchestrationStatus, as ExecutionCompleted carries it."""

    Running = 0
    Completed = 1
    ContinuedAsNew = 2
    Failed = 3
    Canceled = 4
    Terminated = 5
    Pending = 6
    Suspended = 7


def _event(event_type: EventType, timestamp: str, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": int(event_type), "EventId": event_id, "Timestamp": timestamp, **fields}


def orchestrator_started(timestamp: str) -> dict[str, Any]:
    return _event(EventType.ORCHESTRATOR_STARTED, timestamp)


def orchestrator_completed(timestamp: str) -> dict[str, Any]:
    return _event(EventType.ORCHESTRATOR_COMPLETED, timestamp)


def execution_started(
    timestamp: str,
    *,
    name: str,
    version: str | None,
    input_text: str | None,
    instance_id: str,
    execution_id: str,
    parent: dict[str, Any] | None,
) -> dict[str, Any]:
    parent_instance = None
    if parent:
        parent_instance = {
            "Name": parent.get("name"),
            "Version": parent.get("version"),
            "TaskScheduleId": parent["taskScheduledId"],
            "OrchestrationInstance": {
                "InstanceId": parent["instanceId"],
                "ExecutionId": parent["executionId"],
            },
        }
    return _event(
        EventType.EXECUTION_STARTED,
        timestamp,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent_instance,
        Name=name,
        # The SDK reads Version unconditionally (AttributeError without it), so it is always present.
        Version=version,
        Input=input_text,
        Tags=None,
        Correlation=None,
        ScheduledStartTime=None,
        Generation=0,
    )


def task_scheduled(timestamp: str, event_id: int, *, name: str, input_text: str | None) -> dict[str, Any]:
    return _event(EventType.TASK_SCHEDULED, timestamp, event_id, Name=name, Version="", Input=input_text)


def task_completed(timestamp: str, task_id: int, result: str | None) -> dict[str, Any]:
    return _event(EventType.TASK_COMPLETED, timestamp, TaskScheduledId=task_id, Result=result)


def task_failed(timestamp: str, task_id: int, *, reason: str, details: str | None) -> dict[str, Any]:
    return _event(EventType.TASK_FAILED, timestamp, TaskScheduledId=task_id, Reason=reason, Details=details)


def timer_created(timestamp: str, event_id: int, fire_at: str) -> dict[str, Any]:
    return _event(EventType.TIMER_CREATED, timestamp, event_id, FireAt=fire_at)


def timer_fired(timestamp: str, timer_id: int, fire_at: str) -> dict[str, Any]:
    return _event(EventType.TIMER_FIRED, timestamp, TimerId=timer_id, FireAt=fire_at)


def sub_orchestration_created(
    timestamp: str,
    event_id: int,
    *,
    name: str,
    instance_id: str,
    input_text: str | None,
    version: str | None = None,
) -> dict[str, Any]:
    return _event(
        EventType.SUB_ORCHESTRATION_CREATED,
        timestamp,
        event_id,
        Name=name,
        Version=version,
        InstanceId=instance_id,
        Input=input_text,
    )


def sub_orchestration_completed(timestamp: str, task_id: int, result: str | None) -> dict[str, Any]:
    return _event(EventType.SUB_ORCHESTRATION_COMPLETED, timestamp, TaskScheduledId=task_id, Result=result)


def sub_orchestration_failed(
    timestamp: str, task_id: int, *, reason: str, details: str | None
) -> dict[str, Any]:
    return _event(
        EventType.SUB_ORCHESTRATION_FAILED, timestamp, TaskScheduledId=task_id, Reason=reason, Details=details
    )


def event_raised(timestamp: str, name: str, input_text: str | None) -> dict[str, Any]:
    return _event(EventType.EVENT_RAISED, timestamp, Name=name, Input=input_text)


def execution_completed(
    timestamp: str,
    status: OrchestrationStatus,
    result: str | None,
    failure_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return _event(
        EventType.EXECUTION_COMPLETED,
        timestamp,
        OrchestrationStatus=int(status),
        Result=result,
        FailureDetails=failure_details,
    )


def execution_terminated(timestamp: str, reason: str | None) -> dict[str, Any]:
    return _event(EventType.EXECUTION_TERMINATED, timestamp, Input=reason)


def execution_suspended(timestamp: str, reason: str | None) -> dict[str, Any]:
    return _event(EventType.EXECUTION_SUSPENDED, timestamp, Reason=reason)


def execution_resumed(timestamp: str, reason: str | None) -> dict[str, Any]:
    return _event(EventType.EXECUTION_RESUMED, timestamp, Reason=reason)


def generic_event(timestamp: str, data: str) -> dict[str, Any]:
    return _event(EventType.GENERIC_EVENT, timestamp, Data=data)


def with_is_played(event_text: str, played: bool) -> str:
    """Add IsPlayed to a stored event's JSON text without parsing it (hot path of every episode)."""
    return ('{"IsPlayed":true,' if played else '{"IsPlayed":false,') + event_text[1:]
