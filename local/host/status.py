"""The status API's view of an instance (HttpApiHandler.ConvertFrom + DurableClient's history shaping)."""

from __future__ import annotations

import json
from typing import Any

from local.host.clock import from_epoch, to_status_iso
from local.host.history import EventType, OrchestrationStatus
from local.host.store import Instance
from local.host.versioning import normalize


def parse_token(text: str | None) -> Any:
    """DurableClient.ParseToJToken: JSON when it parses, the raw text otherwise (e.g. a terminate reason)."""
    if text is None:
        return None
    stripped = text.strip()
    if not stripped:
        return ""
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        return stripped


def status_payload(
    instance: Instance, *, show_input: bool = True, history_events: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": instance.name,
        "instanceId": instance.instance_id,
    }
    version = normalize(instance.version)
    if version is not None:
        # Since the extension's PR 3532 (2026): present for a versioned instance, omitted otherwise.
        payload["version"] = version
    payload |= {
        "runtimeStatus": instance.status,
        "input": parse_token(instance.input) if show_input else None,
        "customStatus": parse_token(instance.custom_status),
        "output": parse_token(instance.output),
        "createdTime": to_status_iso(from_epoch(instance.created_at)),
        "lastUpdatedTime": to_status_iso(from_epoch(instance.updated_at)),
    }
    if history_events is not None:
        payload["historyEvents"] = history_events
    return payload


def present_history(
    events: list[dict[str, Any]], *, show_output: bool, show_input: bool
) -> list[dict[str, Any]]:
    """Shape raw history like GetDurableOrchestrationStatusAsync does for showHistory=true.

    Event types become names, OrchestratorStarted/Completed disappear, a TaskScheduled is folded
    into its completion (FunctionName, ScheduledTime, Input), results only with showHistoryOutput.
    """
    shaped: list[dict[str, Any] | None] = []
    scheduled: dict[str, tuple[int, dict[str, Any]]] = {}
    for raw in events:
        item = dict(raw)
        event_type = EventType(item["EventType"])
        item["EventType"] = _event_type_name(event_type)
        position = len(shaped)
        drop = False
        if event_type in (EventType.TASK_SCHEDULED, EventType.SUB_ORCHESTRATION_CREATED):
            scheduled[f"{event_type.name}_{item.get('EventId')}"] = (position, raw)
            item.pop("Version", None)
        elif event_type in (EventType.TASK_COMPLETED, EventType.TASK_FAILED):
            _fold_scheduled(
                item,
                scheduled,
                f"{EventType.TASK_SCHEDULED.name}_{item.get('TaskScheduledId')}",
                shaped,
                show_input,
            )
            item.pop("TaskScheduledId", None)
            _shape_result(
                item,
                show_output and event_type is EventType.TASK_COMPLETED,
                event_type is EventType.TASK_COMPLETED,
            )
        elif event_type in (EventType.SUB_ORCHESTRATION_COMPLETED, EventType.SUB_ORCHESTRATION_FAILED):
            _fold_scheduled(
                item,
                scheduled,
                f"{EventType.SUB_ORCHESTRATION_CREATED.name}_{item.get('TaskScheduledId')}",
                shaped,
                show_input,
            )
            item.pop("TaskScheduledId", None)
            _shape_result(
                item,
                show_output and event_type is EventType.SUB_ORCHESTRATION_COMPLETED,
                event_type is EventType.SUB_ORCHESTRATION_COMPLETED,
            )
        elif event_type is EventType.EXECUTION_STARTED:
            item["FunctionName"] = item.pop("Name", None)
            for key in ("OrchestrationInstance", "ParentInstance", "Version", "Tags"):
                item.pop(key, None)
        elif event_type is EventType.EXECUTION_COMPLETED:
            status = item.get("OrchestrationStatus")
            if isinstance(status, int):
                item["OrchestrationStatus"] = OrchestrationStatus(status).name
            _shape_result(item, show_output, True)
        elif event_type is EventType.TIMER_FIRED:
            item.pop("TimerId", None)
        elif event_type in (EventType.ORCHESTRATOR_STARTED, EventType.ORCHESTRATOR_COMPLETED):
            drop = True
        if not show_input:
            item.pop("Input", None)
        item.pop("EventId", None)
        item.pop("IsPlayed", None)
        shaped.append(None if drop else item)
    return [item for item in shaped if item is not None]


def _fold_scheduled(
    item: dict[str, Any],
    scheduled: dict[str, tuple[int, dict[str, Any]]],
    key: str,
    shaped: list[dict[str, Any] | None],
    show_input: bool,
) -> None:
    found = scheduled.get(key)
    if found is None:
        return
    position, raw = found
    item["ScheduledTime"] = raw.get("Timestamp")
    item["FunctionName"] = raw.get("Name")
    if show_input:
        item["Input"] = raw.get("Input")
    shaped[position] = None


def _shape_result(item: dict[str, Any], show: bool, removable: bool) -> None:
    if not show:
        if removable:
            item.pop("Result", None)
        return
    item["Result"] = parse_token(item.get("Result"))


def _event_type_name(event_type: EventType) -> str:
    names = {
        EventType.SUB_ORCHESTRATION_CREATED: "SubOrchestrationInstanceCreated",
        EventType.SUB_ORCHESTRATION_COMPLETED: "SubOrchestrationInstanceCompleted",
        EventType.SUB_ORCHESTRATION_FAILED: "SubOrchestrationInstanceFailed",
    }
    if event_type in names:
        return names[event_type]
    return "".join(part.capitalize() for part in event_type.name.split("_"))
