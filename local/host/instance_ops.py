"""Client operations on instances: start, raise event, terminate, suspend, resume, rewind, restart, purge.

Each checks what the extension's HttpApiHandler/DurableClient check, in the same order, and
either changes nothing (raising ClientError with the real status code) or commits its change in
one transaction and wakes the engine.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from local.host import history
from local.host.clock import HostClock, parse_iso, to_iso
from local.host.engine_state import EngineState
from local.host.failures import unknown_function_message
from local.host.function_index import FunctionIndex
from local.host.history import EventType
from local.host.lifecycle import RUNNING_STATUSES, create_instance, new_instance_id
from local.host.store import ActivityItem, Instance, InstanceQuery, Store
from local.host.versioning import VersioningSettings

logger = logging.getLogger(__name__)

MAX_INSTANCE_ID_LENGTH = 256
# HttpApiHandler answers 410 Gone for these (terminate, suspend, resume, raise event).
ENDED_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})


class ClientError(Exception):
    """A refused operation: the HTTP status and the message the real host would return."""

    def __init__(self, status: int, message: str, exception_message: str | None = None) -> None:
        super().__init__(exception_message or message)
        self.status = status
        self.message = message
        self.exception_message = exception_message


class EngineHooks(Protocol):
    """What client operations tell the engine after committing (see DurableEngine)."""

    def wake(self, instance_id: str) -> None: ...

    def dispatch_activity(self, item: ActivityItem) -> None: ...

    def timers_changed(self) -> None: ...


@dataclass(frozen=True)
class Page:
    instances: list[Instance]
    continuation: tuple[float, str] | None


def _invalid_id_reason(instance_id: str) -> str | None:
    if instance_id.startswith("@"):
        return "Orchestration instance ids must not start with @."
    if any(char in "/\\?#" or ord(char) < 32 or 127 <= ord(char) < 160 for char in instance_id):
        return "Orchestration instance ids must not contain /, \\, #, ?, or control characters."
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        return f"Instance ID lengths must not exceed {MAX_INSTANCE_ID_LENGTH} characters."
    return None


class InstanceOperations:
    """The task hub's client API, shared by the public webhook routes and the SDK's RPC routes."""

    def __init__(
        self,
        store: Store,
        index: FunctionIndex,
        clock: HostClock,
        engine: EngineHooks,
        *,
        versioning: VersioningSettings | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.clock = clock
        self.engine = engine
        self.wake = engine.wake
        self.versioning = versioning or VersioningSettings()

    def _timestamp(self) -> str:
        return to_iso(self.clock.now())

    def get(self, instance_id: str) -> Instance:
        instance = self.store.get_instance(instance_id)
        if instance is None:
            raise ClientError(404, f"No instance with ID '{instance_id}' found.")
        return instance

    # -- start ---------------------------------------------------------------------------------
    def start(
        self, name: str, instance_id: str | None, input_text: str | None, *, version: str | None = None
    ) -> str:
        """Create an instance; raises ClientError 400 for an unknown orchestrator or a bad id, 500 if running.

        ``version`` (the start route's ``version`` query parameter) wins over host.json's
        defaultVersion; an empty one starts an unversioned instance."""
        if name not in self.index.orchestrators:
            raise ClientError(
                400,
                "One or more of the arguments submitted is incorrect",
                unknown_function_message(name, "orchestrator", sorted(self.index.orchestrators)),
            )
        if instance_id:
            reason = _invalid_id_reason(instance_id)
            if reason:
                raise ClientError(400, "One or more of the arguments submitted is incorrect", reason)
        else:
            instance_id = new_instance_id()
        with self.store.transaction():
            existing = self.store.get_instance(instance_id)
            if existing is not None and existing.status in RUNNING_STATUSES:
                raise ClientError(
                    500,
                    "Something went wrong while processing your request",
                    f"An Orchestration instance with the status {existing.status} already exists.",
                )
            create_instance(
                self.store,
                instance_id=instance_id,
                name=name,
                input_text=input_text,
                now=self.clock.now_epoch(),
                version=self.versioning.version_for(version),
            )
        self.wake(instance_id)
        logger.info("started orchestration %s [%s]", name, instance_id)
        return instance_id

    # -- events and control ------------------------------------------------------------------------
    def raise_event(self, instance_id: str, event_name: str, content_type: str | None, body: bytes) -> None:
        """Queue an external event; 404 unknown, 410 ended, 400 not JSON (checked in that order)."""
        instance = self.get(instance_id)
        if instance.status in ENDED_STATUSES:
            raise ClientError(
                410, f"Instance '{instance_id}' has ended ({instance.status}); it takes no events."
            )
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            raise ClientError(400, "Only application/json request content is supported")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClientError(400, "Invalid JSON content", str(exc)) from exc
        with self.store.transaction():
            self.store.add_inbox(
                instance_id, None, history.event_raised(self._timestamp(), event_name, json.dumps(data))
            )
        self.wake(instance_id)
        logger.info("event %s raised for instance %s", event_name, instance_id)

    def _control(self, instance_id: str, event: dict[str, Any], what: str) -> None:
        instance = self.get(instance_id)
        if instance.status in ENDED_STATUSES:
            raise ClientError(410, f"Instance '{instance_id}' has already ended ({instance.status}).")
        with self.store.transaction():
            self.store.add_inbox(instance_id, None, event)
        self.wake(instance_id)
        logger.info("%s requested for instance %s", what, instance_id)

    def terminate(self, instance_id: str, reason: str | None) -> None:
        self._control(instance_id, history.execution_terminated(self._timestamp(), reason), "terminate")

    def suspend(self, instance_id: str, reason: str | None) -> None:
        self._control(instance_id, history.execution_suspended(self._timestamp(), reason), "suspend")

    def resume(self, instance_id: str, reason: str | None) -> None:
        self._control(instance_id, history.execution_resumed(self._timestamp(), reason), "resume")

    # -- restart ------------------------------------------------------------------------------------
    def restart(self, instance_id: str, with_new_id: bool) -> str:
        """Start the instance's orchestrator again with its original input (DurableClient.RestartAsync).

        It is a new start, so it gets this host's defaultVersion, not the old instance's version."""
        instance = self.store.get_instance(instance_id)
        if instance is None:
            raise ClientError(
                400,
                "InstanceId does not match a valid orchestration instance.",
                f"An orchestrastion with the instanceId {instance_id} was not found.",
            )
        return self.start(instance.name, None if with_new_id else instance_id, instance.input)

    # -- purge --------------------------------------------------------------------------------------
    def purge(self, instance_id: str) -> int:
        """Delete an ended instance's state; 404 when unknown, 0 deleted when it is still running."""
        instance = self.get(instance_id)
        if not instance.is_terminal:
            return 0
        with self.store.transaction():
            self.store.delete_instance(instance_id)
        logger.info("purged instance %s", instance_id)
        return 1

    def purge_matching(self, query: InstanceQuery) -> int:
        """Purge every ended instance matching ``query`` (running ones are never purged)."""
        with self.store.transaction():
            victims = [item for item in self.store.query_instances(query) if item.is_terminal]
            for instance in victims:
                self.store.delete_instance(instance.instance_id)
        logger.info("purged %d instances by filter", len(victims))
        return len(victims)

    # -- queries --------------------------------------------------------------------------------------
    def list_instances(
        self, query: InstanceQuery, *, top: int | None, after: tuple[float, str] | None
    ) -> Page:
        limit = None if not top or top <= 0 else top + 1
        found = self.store.query_instances(query, limit=limit, after=after)
        if limit is not None and len(found) > top:  # type: ignore[operator]
            page = found[:top]
            last = page[-1]
            return Page(page, (last.created_at, last.instance_id))
        return Page(found, None)

    def history_events(self, instance_id: str) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.store.history_texts(instance_id)]

    # -- rewind ---------------------------------------------------------------------------------------
    def rewind(self, instance_id: str, reason: str | None) -> None:
        """Put a Failed instance back to its last checkpoint before the failure and re-run the failed work.

        Raises ClientError: 404 unknown, 410 Completed/Terminated/Canceled, 500 any other non-Failed status.
        """
        instance = self.get(instance_id)
        if instance.status in ("Completed", "Terminated", "Canceled"):
            raise ClientError(
                410, "The rewind operation is only supported on failed orchestration instances."
            )
        if instance.status != "Failed":
            raise ClientError(
                500,
                "Something went wrong while processing your request",
                "The rewind operation is only supported on failed orchestration instances.",
            )
        woken: set[str] = set()
        activities: list[ActivityItem] = []
        with self.store.transaction():
            self._rewind(instance, woken, activities)
        for item in activities:
            self.engine.dispatch_activity(item)
        self.engine.timers_changed()
        for target in woken:
            self.wake(target)
        # The reason as the management call carried it (a caller's escaping mistakes show here).
        logger.info("rewound instance %s (reason %r)", instance_id, reason)

    def _rewind(self, instance: Instance, woken: set[str], activities: list[ActivityItem]) -> None:
        events = self.history_events(instance.instance_id)
        cut, state, failed_event = self._rewind_point(instance, events)
        prefix, suffix = events[:cut], events[cut:]
        prefix_done = {_completion_key(event) for event in prefix if _completion_key(event) is not None}
        # Re-deliver what arrived after the checkpoint for work scheduled before it (and every external event).
        redeliver = []
        for event in suffix:
            key = _completion_key(event)
            always = event.get("EventType") in (EventType.EVENT_RAISED, EventType.EXECUTION_STARTED)
            scheduled_before = key is not None and key[1] < state.next_id and event is not failed_event
            if always or scheduled_before:
                redeliver.append(event)
        done = prefix_done | {_completion_key(event) for event in redeliver if _completion_key(event)}
        self.store.truncate_history(instance.instance_id, cut)
        self.store.clear_inbox(instance.instance_id)
        self.store.clear_timers(instance.instance_id)
        self.store.clear_activities(instance.instance_id)
        for event in redeliver:
            self.store.add_inbox(instance.instance_id, instance.execution_id, event)
        armed = set(state.timer_leaves.values()) | {
            int(key) for key, group in state.retries.items() if group.phase == "timer"
        }
        for event in prefix:
            event_type = event.get("EventType")
            event_id = int(event.get("EventId", -1))
            if event_type == EventType.TASK_SCHEDULED and ("task", event_id) not in done:
                input_text = event.get("Input")
                row = self.store.add_activity(
                    instance.instance_id, instance.execution_id, event_id, event["Name"], input_text
                )
                activities.append(
                    ActivityItem(
                        row, instance.instance_id, instance.execution_id, event_id, event["Name"], input_text
                    )
                )
            elif (
                event_type == EventType.TIMER_CREATED
                and event_id in armed
                and ("timer", event_id) not in done
            ):
                fire_text = event["FireAt"]
                self.store.add_timer(
                    instance.instance_id,
                    instance.execution_id,
                    event_id,
                    parse_iso(fire_text).timestamp(),
                    fire_text,
                )
            elif event_type == EventType.SUB_ORCHESTRATION_CREATED and ("task", event_id) not in done:
                self._revive_child(instance, event, woken, activities)
        instance.status = "Running"
        instance.output = None
        instance.engine = state.to_dict()
        instance.updated_at = self.clock.now_epoch()
        self.store.put_instance(instance)
        woken.add(instance.instance_id)

    def _rewind_point(
        self, instance: Instance, events: list[dict[str, Any]]
    ) -> tuple[int, EngineState, dict[str, Any] | None]:
        """Where to cut: the checkpoint before the first unrecovered failure, else before the last episode."""
        failure = _first_terminal_failure(events, self.store, instance.instance_id)
        if failure is not None:
            target = events.index(failure)
        else:
            starts = [
                i
                for i, event in enumerate(events)
                if event.get("EventType") == EventType.ORCHESTRATOR_STARTED
            ]
            target = starts[-1] if starts else 0
        snapshot = self.store.episode_before(instance.instance_id, target)
        if snapshot is None:
            return 0, EngineState(), failure
        return snapshot[0], EngineState.from_dict(snapshot[1]), failure

    def _revive_child(
        self, parent: Instance, created: dict[str, Any], woken: set[str], activities: list[ActivityItem]
    ) -> None:
        child = self.store.get_instance(created["InstanceId"])
        timestamp = self._timestamp()
        if child is None:
            create_instance(
                self.store,
                instance_id=created["InstanceId"],
                name=created["Name"],
                input_text=json.dumps(created.get("Input")) if created.get("Input") is not None else None,
                now=self.clock.now_epoch(),
                parent={
                    "instanceId": parent.instance_id,
                    "executionId": parent.execution_id,
                    "taskScheduledId": created["EventId"],
                    "name": parent.name,
                    "version": parent.version or None,
                },
                version=created.get("Version"),
            )
            woken.add(created["InstanceId"])
        elif child.status == "Completed":
            event = history.sub_orchestration_completed(timestamp, created["EventId"], child.output)
            self.store.add_inbox(parent.instance_id, parent.execution_id, event)
        elif child.status == "Failed":
            self._rewind(child, woken, activities)
        elif child.is_terminal:
            event = history.sub_orchestration_failed(
                timestamp,
                created["EventId"],
                reason=child.output or f"Orchestration was {child.status}.",
                details=None,
            )
            self.store.add_inbox(parent.instance_id, parent.execution_id, event)
        # A running child will report to the parent by itself.


def _completion_key(event: dict[str, Any]) -> tuple[str, int] | None:
    event_type = event.get("EventType")
    if event_type in (
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.SUB_ORCHESTRATION_COMPLETED,
        EventType.SUB_ORCHESTRATION_FAILED,
    ):
        return ("task", int(event["TaskScheduledId"]))
    if event_type == EventType.TIMER_FIRED:
        return ("timer", int(event["TimerId"]))
    return None


def _first_terminal_failure(
    events: list[dict[str, Any]], store: Store, instance_id: str
) -> dict[str, Any] | None:
    """The first TaskFailed/SubOrchestrationInstanceFailed the orchestrator saw as an error.

    A failed attempt of a retry that still had attempts left is not one: the episode snapshot taken
    before it shows the retry group and its attempt count.
    """
    for position, event in enumerate(events):
        if event.get("EventType") not in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED):
            continue
        snapshot = store.episode_before(instance_id, position)
        if snapshot is not None:
            state = EngineState.from_dict(snapshot[1])
            group = state.retries.get(str(event.get("TaskScheduledId")))
            if group is not None and group.attempt < group.max_attempts:
                continue
        return event
    return None
