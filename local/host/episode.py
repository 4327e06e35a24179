"""One orchestration episode: deliver inbox events, replay the orchestrator, apply its actions, commit.

An episode is what DTFx calls an orchestration work item. It appends, in one transaction:
OrchestratorStarted, the delivered events, the events for what the orchestrator scheduled
(TaskScheduled, TimerCreated, SubOrchestrationInstanceCreated), ExecutionCompleted when it
ended, and OrchestratorCompleted; together with the new work items, timers, child instances and
the instance's status. Nothing it does is visible until that commit.

Batching rule (why an episode may leave events in the inbox): the SDK gives retry timers and
re-attempts their sequence numbers while it processes the failure/timer event, before it resumes
user code. The host can only mirror that numbering if such a "retry trigger" event is the first
event of its episode, so an episode holds at most one, always first.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from local.host import history
from local.host.actions import (
    ACTIVITY_CALLS,
    SUB_ORCHESTRATOR_CALLS,
    UNSUPPORTED,
    ActionFormatError,
    ActionType,
    Leaf,
    flatten,
)
from local.host.clock import HostClock, from_epoch, parse_iso, to_iso
from local.host.engine_state import EngineState, RetryGroup
from local.host.failures import orchestration_failure, unknown_function_message
from local.host.function_index import FunctionIndex
from local.host.history import EventType, OrchestrationStatus
from local.host.lifecycle import RUNNING_STATUSES, create_instance, notify_parent, start_new_execution
from local.host.orchestrator_call import OrchestratorAnswer, build_context_json, call_orchestrator
from local.host.store import ActivityItem, InboxItem, Instance, Store, encode_engine, encode_event
from local.host.versioning import (
    MISMATCH_ERROR_TYPE,
    MISMATCH_MESSAGE,
    Verdict,
    VersioningSettings,
    normalize,
)

logger = logging.getLogger(__name__)


class HostRejection(Exception):
    """Something the orchestrator asked for that the host refuses; the instance fails with this message."""


@dataclass
class EpisodeResult:
    """What the engine must do after the commit, and what to log."""

    instance_id: str
    name: str
    status: str
    delivered: int = 0
    scheduled: int = 0
    activities: list[ActivityItem] = field(default_factory=list)
    wake: set[str] = field(default_factory=set)
    timers_changed: bool = False
    more: bool = False
    ran_orchestrator: bool = False
    # Why nothing ran: the instance's version is not one this host runs (versionFailureStrategy Reject).
    rejected: str | None = None


@dataclass
class _Selection:
    consumed: list[int] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    batch: list[dict[str, Any]] = field(default_factory=list)
    terminate: dict[str, Any] | None = None
    suspended: bool = False
    left_behind: bool = False


@dataclass
class _Plan:
    """Everything the episode will write, collected before the single commit."""

    host_events: list[dict[str, Any]] = field(default_factory=list)
    activities: list[tuple[int, str, str | None]] = field(default_factory=list)
    timers: list[tuple[int, float, str]] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)
    # (instance id, orchestrator, input, task id, version)
    children: list[tuple[str, str, str | None, int, str | None]] = field(default_factory=list)


@dataclass
class PendingReplay:
    """An episode between ``prepare`` and ``finish``: everything but the orchestrator's answer."""

    instance: Instance
    state: EngineState
    selection: _Selection
    now_epoch: float
    timestamp: str  # now_epoch as history events carry it
    # OrchestratorStarted + the delivered events, encoded once for the orchestrator and the history.
    new_event_texts: list[str]
    context_json: str  # empty when the orchestrator is unknown (the episode fails it)
    version: tuple[str, str, float]  # the instance row as read; finish() commits only if unchanged

    @property
    def name(self) -> str:
        return self.instance.name


def _is_retry_trigger(event: dict[str, Any], state: EngineState) -> bool:
    event_type = event.get("EventType")
    if event_type in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED):
        group = state.retries.get(str(event.get("TaskScheduledId")))
        return group is not None and group.phase == "task"
    if event_type == EventType.TIMER_FIRED:
        group = state.retries.get(str(event.get("TimerId")))
        return group is not None and group.phase == "timer"
    return False


class EpisodeRunner:
    """Runs episodes against the store; the engine decides when and for which instance."""

    def __init__(
        self,
        store: Store,
        index: FunctionIndex,
        clock: HostClock,
        *,
        versioning: VersioningSettings | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.clock = clock
        self.versioning = versioning or VersioningSettings()

    # -- selection ------------------------------------------------------------------------
    def _select(self, items: list[InboxItem], instance: Instance, state: EngineState) -> _Selection:
        selection = _Selection(suspended=instance.status == "Suspended")
        for item in items:
            event = item.event
            event_type = event.get("EventType")
            if event_type == EventType.EXECUTION_TERMINATED:
                selection.terminate = event
                selection.consumed = [entry.id for entry in items]
                return selection
            if event_type == EventType.EXECUTION_SUSPENDED:
                selection.consumed.append(item.id)
                if not selection.suspended:
                    selection.suspended = True
                    selection.control.append(event)
                continue
            if event_type == EventType.EXECUTION_RESUMED:
                selection.consumed.append(item.id)
                if selection.suspended:
                    selection.suspended = False
                    selection.control.append(event)
                    if selection.left_behind:
                        # Events skipped while suspended are older: deliver them first, next episode.
                        break
                continue
            if selection.suspended:
                # A suspended instance keeps its events until it is resumed (DTFx buffers them).
                selection.left_behind = True
                continue
            if _is_retry_trigger(event, state) and selection.batch:
                selection.left_behind = True
                break
            selection.consumed.append(item.id)
            selection.batch.append(event)
        # A new execution's ExecutionStarted must come first (the SDK reads it at history[1]), even
        # when external events raised during continue-as-new are older in the inbox.
        started = [
            event for event in selection.batch if event.get("EventType") == EventType.EXECUTION_STARTED
        ]
        if started:
            others = [
                event for event in selection.batch if event.get("EventType") != EventType.EXECUTION_STARTED
            ]
            selection.batch = started[:1] + others
        return selection

    # -- entry points -----------------------------------------------------------------------
    def run(self, instance_id: str) -> EpisodeResult | None:
        """Run one episode if the instance has deliverable events; None when there was nothing to do."""
        step = self.prepare(instance_id)
        if not isinstance(step, PendingReplay):
            return step
        entry = self.index.orchestrators.get(step.name)
        answer = None if entry is None else call_orchestrator(entry, step.context_json)
        return self.finish(step, answer)

    def prepare(self, instance_id: str) -> EpisodeResult | PendingReplay | None:
        """Read and select the instance's events; steps without replay (terminate, suspend) are done.

        A ``PendingReplay`` needs the orchestrator's answer (in this process or in a worker), then
        ``finish``; the engine never prepares an instance whose previous step is not finished."""
        items = self.store.inbox_for(instance_id)
        if not items:
            return None
        instance = self.store.get_instance(instance_id)
        if instance is None or instance.is_terminal:
            # Events for a purged or ended instance are dropped, as the real host drops them.
            with self.store.transaction():
                self.store.delete_inbox(item.id for item in items)
            return None
        stale = [
            item.id for item in items if item.execution_id and item.execution_id != instance.execution_id
        ]
        live = [
            item for item in items if not (item.execution_id and item.execution_id != instance.execution_id)
        ]
        verdict = self.versioning.verdict(instance.version)
        if verdict is Verdict.REJECT:
            # DTFx abandons the work item: every event stays queued, nothing is written, and the
            # instance runs when a host whose version admits it (a newer deployment) picks it up.
            return EpisodeResult(
                instance.instance_id,
                instance.name,
                instance.status,
                rejected=f"version {normalize(instance.version) or '(none)'} is not run by this host "
                f"({self.versioning.describe()})",
            )
        now_epoch = self.clock.now_epoch()
        if verdict is Verdict.FAIL:
            return self._version_mismatch(instance, live, stale, now_epoch)
        state = EngineState.from_dict(instance.engine)
        selection = self._select(live, instance, state)
        selection.consumed.extend(stale)
        if selection.terminate is not None:
            return self._terminate(instance, selection, now_epoch)
        if not selection.batch:
            return self._control_only(instance, selection, now_epoch)
        return self._prepare_replay(instance, state, selection, now_epoch)

    # -- the three kinds of step ----------------------------------------------------------------
    def _control_only(self, instance: Instance, selection: _Selection, now_epoch: float) -> EpisodeResult:
        """Suspend/resume (or only stale events): no orchestrator call, the events go to history."""
        with self.store.transaction():
            self.store.delete_inbox(selection.consumed)
            if selection.control:
                length = self.store.history_length(instance.instance_id)
                self.store.append_history(instance.instance_id, length, selection.control)
                if instance.status in RUNNING_STATUSES:
                    started = length > 0
                    instance.status = (
                        "Suspended" if selection.suspended else ("Running" if started else "Pending")
                    )
                instance.updated_at = now_epoch
                self.store.put_instance(instance)
        return EpisodeResult(
            instance.instance_id,
            instance.name,
            instance.status,
            delivered=len(selection.control),
            more=selection.left_behind and not selection.suspended,
        )

    def _terminate(self, instance: Instance, selection: _Selection, now_epoch: float) -> EpisodeResult:
        assert selection.terminate is not None
        timestamp = to_iso(from_epoch(now_epoch))
        reason = selection.terminate.get("Input")
        events = [
            history.orchestrator_started(timestamp),
            selection.terminate,
            history.execution_completed(timestamp, OrchestrationStatus.Terminated, reason),
            history.orchestrator_completed(timestamp),
        ]
        result = EpisodeResult(instance.instance_id, instance.name, "Terminated", delivered=1)
        return self._end(instance, result, selection.consumed, events, reason, now_epoch, timestamp)

    def _end(
        self,
        instance: Instance,
        result: EpisodeResult,
        consumed: list[int],
        events: list[dict[str, Any]],
        output: Any,
        now_epoch: float,
        timestamp: str,
    ) -> EpisodeResult:
        """End ``instance`` without running its orchestrator (terminated, or refused by its
        version): its final events go to history, its timers and activities are dropped, and a
        parent learns of it, in one transaction."""
        with self.store.transaction():
            self.store.delete_inbox(consumed)
            length = self.store.history_length(instance.instance_id)
            self.store.append_history(instance.instance_id, length, events)
            instance.status = result.status
            instance.output = output
            instance.updated_at = now_epoch
            self.store.put_instance(instance)
            self.store.clear_timers(instance.instance_id)
            self.store.clear_activities(instance.instance_id)
            parent = notify_parent(self.store, instance, timestamp=timestamp)
            if parent:
                result.wake.add(parent)
        result.timers_changed = True
        return result

    def _version_mismatch(
        self, instance: Instance, live: list[InboxItem], stale: list[int], now_epoch: float
    ) -> EpisodeResult:
        """versionFailureStrategy Fail: the episode's events go to history and the instance fails
        with DTFx's VersionMismatch failure, without running the orchestrator."""
        timestamp = to_iso(from_epoch(now_epoch))
        delivered = [item.event for item in live]
        # ExecutionStarted first, as in every episode of a new execution.
        delivered.sort(key=lambda event: event.get("EventType") != EventType.EXECUTION_STARTED)
        failure = {"ErrorType": MISMATCH_ERROR_TYPE, "ErrorMessage": MISMATCH_MESSAGE, "IsNonRetriable": True}
        events = [
            history.orchestrator_started(timestamp),
            *delivered,
            history.execution_completed(timestamp, OrchestrationStatus.Failed, MISMATCH_MESSAGE, failure),
            history.orchestrator_completed(timestamp),
        ]
        result = EpisodeResult(instance.instance_id, instance.name, "Failed", delivered=len(delivered))
        consumed = [item.id for item in live] + stale
        return self._end(instance, result, consumed, events, MISMATCH_MESSAGE, now_epoch, timestamp)

    def _prepare_replay(
        self, instance: Instance, state: EngineState, selection: _Selection, now_epoch: float
    ) -> PendingReplay:
        timestamp = to_iso(from_epoch(now_epoch))
        new_events = [history.orchestrator_started(timestamp), *selection.control, *selection.batch]
        new_event_texts = [encode_event(event) for event in new_events]
        context_json = ""
        if instance.name in self.index.orchestrators:
            context_json = build_context_json(
                instance_id=instance.instance_id,
                parent_instance_id=(instance.parent or {}).get("instanceId"),
                input_text=instance.input,
                past_events=self.store.history_texts(instance.instance_id),
                new_events=new_event_texts,
            )
        return PendingReplay(
            instance=instance,
            state=state,
            selection=selection,
            now_epoch=now_epoch,
            timestamp=timestamp,
            new_event_texts=new_event_texts,
            context_json=context_json,
            version=(instance.execution_id, instance.status, instance.updated_at),
        )

    def finish(self, pending: PendingReplay, answer: OrchestratorAnswer | None) -> EpisodeResult:
        """Apply the orchestrator's answer (None: the orchestrator is unknown) and commit the episode.

        When the instance row changed since ``prepare`` nothing is written and the result asks for
        another episode (``more``): the events are still in the inbox."""
        instance, state, selection = pending.instance, pending.state, pending.selection
        now_epoch = pending.now_epoch
        now = from_epoch(now_epoch)
        timestamp = pending.timestamp
        plan = _Plan()
        result = EpisodeResult(
            instance.instance_id,
            instance.name,
            instance.status,
            delivered=len(selection.batch),
            ran_orchestrator=True,
        )
        error: str | None = None
        state_json: dict[str, Any] | None = None
        if answer is None:
            error = unknown_function_message(instance.name, "orchestrator", sorted(self.index.orchestrators))
        else:
            state_json = answer.state
            error = answer.error

        continue_input: str | None = None
        continue_as_new = False
        leaves: list[Leaf] = []
        if state_json is not None:
            try:
                leaves = flatten(state_json.get("actions", []))
                nondeterminism = self._check_replay(leaves, state)
                if nondeterminism:
                    error = nondeterminism
            except ActionFormatError as exc:
                error = f"the orchestrator returned malformed actions: {exc}"
        done = bool(state_json and state_json.get("isDone")) and error is None

        if error is None:
            try:
                self._apply_delivered(selection.batch, state, plan, now)
                continue_as_new, continue_input = self._schedule_new_leaves(
                    instance, leaves, state, plan, now, schedule=not done
                )
            except HostRejection as exc:
                error = str(exc)
                plan = _Plan()
        custom_status = None
        if state_json is not None and state_json.get("customStatus") is not None:
            custom_status = json.dumps(state_json["customStatus"])

        completion: list[dict[str, Any]] = []
        failure_details: str | None = None
        if error is not None:
            output_text, failure_details = orchestration_failure(instance.name, error)
            instance.status = "Failed"
            instance.output = output_text
            completion.append(
                history.execution_completed(
                    timestamp,
                    OrchestrationStatus.Failed,
                    output_text,
                    {"ErrorType": "OrchestrationFailureException", "ErrorMessage": output_text},
                )
            )
            plan = _Plan()
        elif done and not continue_as_new:
            output = state_json.get("output") if state_json else None
            instance.status = "Completed"
            instance.output = None if output is None else json.dumps(output)
            completion.append(
                history.execution_completed(timestamp, OrchestrationStatus.Completed, instance.output)
            )
        elif continue_as_new:
            pass  # the new execution starts with a fresh history (written below)
        else:
            instance.status = "Suspended" if selection.suspended else "Running"
        instance.custom_status = custom_status
        instance.updated_at = now_epoch

        event_texts = pending.new_event_texts + [
            encode_event(event)
            for event in [*plan.host_events, *completion, history.orchestrator_completed(timestamp)]
        ]
        with self.store.transaction():
            current = self.store.instance_version(instance.instance_id)
            if current != pending.version:
                # Another step (an instance operation) changed the instance while it replayed: commit
                # nothing; the events are still in the inbox and the next episode starts afresh.
                result.status = current[1] if current else "purged"
                result.delivered, result.more = 0, True
                return result
            self.store.delete_inbox(selection.consumed)
            length = self.store.history_length(instance.instance_id)
            self._write_work(instance, plan, result, now_epoch, timestamp)
            if continue_as_new:
                # The old execution's history is replaced, as Azure Storage replaces it.
                start_new_execution(self.store, instance, input_text=continue_input, now=now_epoch)
                instance.custom_status = custom_status
                self.store.put_instance(instance)
                result.wake.add(instance.instance_id)
            else:
                new_length = self.store.append_history_texts(instance.instance_id, length, event_texts)
                instance.engine = state.to_dict()
                engine_text = encode_engine(instance.engine)
                self.store.update_instance(instance, engine_text=engine_text)
                if instance.is_terminal:
                    self.store.clear_timers(instance.instance_id)
                    self.store.clear_activities(instance.instance_id)
                    result.timers_changed = True
                    parent = notify_parent(self.store, instance, timestamp=timestamp, details=failure_details)
                    if parent:
                        result.wake.add(parent)
                else:
                    self.store.save_episode(instance.instance_id, new_length, engine_text)
        result.status = instance.status
        result.scheduled = len(plan.activities) + len(plan.timers) + len(plan.children)
        result.more = (
            selection.left_behind and instance.status not in ("Suspended",) and not instance.is_terminal
        )
        return result

    # -- helpers ------------------------------------------------------------------------------
    def _check_replay(self, leaves: list[Leaf], state: EngineState) -> str | None:
        """DTFx's non-determinism check: replay must schedule the same kind and name at each position."""
        for position in range(min(len(leaves), state.leaves)):
            expected = state.signatures[position]
            actual = leaves[position].signature
            if expected != actual:
                return (
                    "Non-Deterministic workflow detected: a previous execution of this orchestration scheduled "
                    f"{_describe(expected)} at position {position}, but the current replay execution "
                    f"scheduled {_describe(actual)}. Was a change made to the orchestrator code after this "
                    "instance had already started running, or does it depend on non-deterministic values?"
                )
        return None

    def _apply_delivered(
        self, batch: list[dict[str, Any]], state: EngineState, plan: _Plan, now: Any
    ) -> None:
        """Update retry and timer bookkeeping for the delivered events (the retry trigger comes first)."""
        for position, event in enumerate(batch):
            event_type = event.get("EventType")
            if position == 0 and _is_retry_trigger(event, state):
                self._advance_retry(event, state, plan, now)
                continue
            if event_type in (EventType.TASK_COMPLETED, EventType.SUB_ORCHESTRATION_COMPLETED):
                state.retries.pop(str(event.get("TaskScheduledId")), None)
            elif event_type == EventType.TIMER_FIRED:
                fired = event.get("TimerId")
                for key, timer_id in list(state.timer_leaves.items()):
                    if timer_id == fired:
                        del state.timer_leaves[key]

    def _advance_retry(self, event: dict[str, Any], state: EngineState, plan: _Plan, now: Any) -> None:
        event_type = event.get("EventType")
        timestamp = to_iso(now)
        if event_type in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED):
            group = state.retries.pop(str(event["TaskScheduledId"]))
            timer_id = state.allocate_id()
            # DTFx's RetryInterceptor: the delay is firstRetryInterval (backoff coefficient 1), and a
            # timer follows every failed attempt, the last one included (the SDK waits for it).
            fire_at = now + timedelta(milliseconds=group.interval_ms)
            fire_text = to_iso(fire_at)
            plan.host_events.append(history.timer_created(timestamp, timer_id, fire_text))
            plan.timers.append((timer_id, fire_at.timestamp(), fire_text))
            group.phase = "timer"
            state.retries[str(timer_id)] = group
            return
        group = state.retries.pop(str(event["TimerId"]))
        if group.attempt >= group.max_attempts:
            return  # the SDK now fails the task with the last error
        task_id = state.allocate_id()
        group.attempt += 1
        group.phase = "task"
        state.retries[str(task_id)] = group
        if group.kind == "activity":
            plan.host_events.append(
                history.task_scheduled(timestamp, task_id, name=group.name, input_text=group.input)
            )
            plan.activities.append((task_id, group.name, group.input))
        else:
            child_id = group.child_instance_id or ""
            version = self.versioning.version_for(group.version)
            plan.host_events.append(
                history.sub_orchestration_created(
                    timestamp,
                    task_id,
                    name=group.name,
                    instance_id=child_id,
                    input_text=group.input,
                    version=version,
                )
            )
            plan.children.append((child_id, group.name, group.input, task_id, version))

    def _schedule_new_leaves(
        self,
        instance: Instance,
        leaves: list[Leaf],
        state: EngineState,
        plan: _Plan,
        now: Any,
        *,
        schedule: bool,
    ) -> tuple[bool, str | None]:
        """Assign ids to the leaves not seen before and plan their work; returns (continue-as-new, input)."""
        timestamp = to_iso(now)
        continue_as_new = False
        continue_input: str | None = None
        # Cancelled timers: the SDK re-emits the CreateTimer action with isCanceled=true.
        for position in range(min(state.leaves, len(leaves))):
            leaf = leaves[position]
            if leaf.action_type is ActionType.CREATE_TIMER and leaf.data.get("isCanceled"):
                timer_id = state.timer_leaves.pop(str(position), None)
                if timer_id is not None:
                    plan.cancelled_timers.append(timer_id)
        for position in range(state.leaves, len(leaves)):
            leaf = leaves[position]
            state.signatures.append(leaf.signature)
            if not leaf.takes_sequence_number:
                continue
            task_id = state.allocate_id()
            action_type = leaf.action_type
            if action_type is ActionType.CONTINUE_AS_NEW:
                continue_as_new = True
                continue_input = _as_json_string(leaf.data.get("input"))
                continue
            if not schedule:
                continue
            if action_type in UNSUPPORTED:
                raise HostRejection(f"the local host does not support {UNSUPPORTED[action_type]}")
            if action_type in ACTIVITY_CALLS:
                self._schedule_activity(leaf, task_id, state, plan, timestamp)
            elif action_type in SUB_ORCHESTRATOR_CALLS:
                self._schedule_sub_orchestration(instance, leaf, task_id, state, plan, timestamp, now)
            elif action_type is ActionType.CREATE_TIMER:
                fire_text = str(leaf.data.get("fireAt"))
                try:
                    fire_at = parse_iso(fire_text)
                except ValueError as exc:
                    raise HostRejection(f"a durable timer has an invalid fireAt {fire_text!r}") from exc
                plan.host_events.append(history.timer_created(timestamp, task_id, fire_text))
                if not leaf.data.get("isCanceled"):
                    plan.timers.append((task_id, fire_at.timestamp(), fire_text))
                    state.timer_leaves[str(position)] = task_id
            else:
                raise HostRejection(f"the local host does not support action type {action_type.name}")
        state.leaves = len(leaves)
        return continue_as_new, continue_input

    def _schedule_activity(
        self, leaf: Leaf, task_id: int, state: EngineState, plan: _Plan, timestamp: str
    ) -> None:
        name = str(leaf.data.get("functionName"))
        if name not in self.index.activities:
            raise HostRejection(unknown_function_message(name, "activity", sorted(self.index.activities)))
        input_text = leaf.data.get("input")
        plan.host_events.append(history.task_scheduled(timestamp, task_id, name=name, input_text=input_text))
        plan.activities.append((task_id, name, input_text))
        if leaf.action_type is ActionType.CALL_ACTIVITY_WITH_RETRY:
            state.retries[str(task_id)] = _retry_group("activity", name, input_text, leaf.data)

    def _schedule_sub_orchestration(
        self,
        instance: Instance,
        leaf: Leaf,
        task_id: int,
        state: EngineState,
        plan: _Plan,
        timestamp: str,
        now: Any,
    ) -> None:
        name = str(leaf.data.get("functionName"))
        if name not in self.index.orchestrators:
            raise HostRejection(
                unknown_function_message(name, "orchestrator", sorted(self.index.orchestrators))
            )
        child_id = leaf.data.get("instanceId") or self._deterministic_guid(instance, state, now)
        parent_id = (instance.parent or {}).get("instanceId")
        if child_id in (instance.instance_id, parent_id):
            raise HostRejection(
                "The instance ID of a sub-orchestration must be different than the instance ID of a parent "
                "orchestration."
            )
        input_text = leaf.data.get("input")
        # call_sub_orchestrator(..., version=...) wins; without one the child gets this host's
        # defaultVersion (not the parent's version), as the extension's shim resolves it.
        explicit = leaf.data.get("version")
        if explicit is not None and not isinstance(explicit, str):
            raise HostRejection(f"a sub-orchestration's version must be a string, got {explicit!r}")
        version = self.versioning.version_for(explicit)
        plan.host_events.append(
            history.sub_orchestration_created(
                timestamp, task_id, name=name, instance_id=child_id, input_text=input_text, version=version
            )
        )
        plan.children.append((child_id, name, input_text, task_id, version))
        if leaf.action_type is ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY:
            group = _retry_group("sub-orchestration", name, input_text, leaf.data)
            group.child_instance_id = child_id
            group.version = explicit
            state.retries[str(task_id)] = group

    def _deterministic_guid(self, instance: Instance, state: EngineState, now: Any) -> str:
        # The extension's NewGuid(): a name-based GUID of instance id, orchestration time and a counter.
        name = f"{instance.instance_id}_{to_iso(now)}_{state.guid_counter}"
        state.guid_counter += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, name))

    def _write_work(
        self, instance: Instance, plan: _Plan, result: EpisodeResult, now_epoch: float, timestamp: str
    ) -> None:
        """Insert the planned work items; runs inside the episode's transaction."""
        for task_id, name, input_text in plan.activities:
            row_id = self.store.add_activity(
                instance.instance_id, instance.execution_id, task_id, name, input_text
            )
            result.activities.append(
                ActivityItem(row_id, instance.instance_id, instance.execution_id, task_id, name, input_text)
            )
        for timer_id, fire_at, fire_text in plan.timers:
            self.store.add_timer(instance.instance_id, instance.execution_id, timer_id, fire_at, fire_text)
            result.timers_changed = True
        for timer_id in plan.cancelled_timers:
            self.store.cancel_timer(instance.instance_id, instance.execution_id, timer_id)
            result.timers_changed = True
        for child_id, name, input_text, task_id, version in plan.children:
            existing = self.store.get_instance(child_id)
            if existing is not None and existing.status in RUNNING_STATUSES:
                reason = (
                    f"An orchestration with instance ID '{child_id}' already exists and is {existing.status}."
                )
                self.store.add_inbox(
                    instance.instance_id,
                    instance.execution_id,
                    history.sub_orchestration_failed(timestamp, task_id, reason=reason, details=None),
                )
                result.wake.add(instance.instance_id)
                continue
            create_instance(
                self.store,
                instance_id=child_id,
                name=name,
                # The action's input is already JSON text; the extension passes it on as a string.
                input_text=_as_json_string(input_text),
                now=now_epoch,
                parent={
                    "instanceId": instance.instance_id,
                    "executionId": instance.execution_id,
                    "taskScheduledId": task_id,
                    "name": instance.name,
                    "version": normalize(instance.version),
                },
                version=version,
            )
            result.wake.add(child_id)


def _retry_group(kind: str, name: str, input_text: str | None, data: dict[str, Any]) -> RetryGroup:
    options = data.get("retryOptions") or {}
    try:
        interval = int(options.get("firstRetryIntervalInMilliseconds", 0))
        attempts = int(options.get("maxNumberOfAttempts", 1))
    except (TypeError, ValueError) as exc:
        raise HostRejection(f"invalid retryOptions {options!r}") from exc
    return RetryGroup(
        kind=kind,
        name=name,
        input=input_text,
        max_attempts=max(1, attempts),
        interval_ms=max(0, interval),
        attempt=1,
        phase="task",
    )


def _as_json_string(action_input: Any) -> str | None:
    """An action's ``input`` (JSON text) as the extension stores it: serialised again as a string."""
    if action_input is None:
        return None
    return json.dumps(action_input)


def _describe(signature: list[Any] | None) -> str:
    if signature is None:
        return "a wait for an external event"
    kind, name = signature[0], signature[1]
    return f"{kind} '{name}'" if name else str(kind)
