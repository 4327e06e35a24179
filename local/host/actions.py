"""The orchestrator's answer: its ``actions`` flattened into leaves the engine schedules in order.

Under schema V2/V3 the SDK returns ``[[every action since the start]]`` with WhenAll/WhenAny as
compound actions; the list is append-only, so the engine remembers how many leaves it already
handled. A leaf's position in the depth-first order is also the order in which the SDK numbered
the tasks (``_sequence_number``), except WaitForExternalEvent, which takes no number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ActionType(IntEnum):
    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CALL_SUB_ORCHESTRATOR = 2
    CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WAIT_FOR_EXTERNAL_EVENT = 6
    CALL_ENTITY = 7
    CALL_HTTP = 8
    SIGNAL_ENTITY = 9
    SCHEDULED_SIGNAL_ENTITY = 10
    WHEN_ANY = 11
    WHEN_ALL = 12


COMPOUND = frozenset({ActionType.WHEN_ANY, ActionType.WHEN_ALL})
ACTIVITY_CALLS = frozenset({ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY})
SUB_ORCHESTRATOR_CALLS = frozenset(
    {ActionType.CALL_SUB_ORCHESTRATOR, ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY}
)
UNSUPPORTED = {
    ActionType.CALL_ENTITY: "durable entities (call_entity)",
    ActionType.SIGNAL_ENTITY: "durable entities (signal_entity)",
    ActionType.SCHEDULED_SIGNAL_ENTITY: "durable entities (signal_entity)",
    ActionType.CALL_HTTP: "durable HTTP (call_http)",
}


class ActionFormatError(Exception):
    """The orchestrator's output does not have the shape the SDK produces."""


@dataclass(frozen=True)
class Leaf:
    """One non-compound action, in the order the SDK numbered it."""

    action_type: ActionType
    data: dict[str, Any]

    @property
    def takes_sequence_number(self) -> bool:
        return self.action_type is not ActionType.WAIT_FOR_EXTERNAL_EVENT

    @property
    def signature(self) -> list[Any] | None:
        """What replay must reproduce at this position (DTFx compares kind and name; waits are not recorded)."""
        if self.action_type in ACTIVITY_CALLS:
            return ["activity", self.data.get("functionName")]
        if self.action_type in SUB_ORCHESTRATOR_CALLS:
            return ["sub-orchestration", self.data.get("functionName")]
        if self.action_type is ActionType.CREATE_TIMER:
            return ["timer", None]
        if self.action_type is ActionType.CONTINUE_AS_NEW:
            return ["continue-as-new", None]
        if self.action_type is ActionType.WAIT_FOR_EXTERNAL_EVENT:
            return None
        return [self.action_type.name.lower(), None]


def flatten(actions: Any) -> list[Leaf]:
    """Depth-first leaves of ``actions`` (V1: one list per yield; V2/V3: one list of everything).

    Raises ActionFormatError for anything the SDK would not produce.
    """
    if not isinstance(actions, list):
        raise ActionFormatError("'actions' must be a list")
    leaves: list[Leaf] = []
    for group in actions:
        if not isinstance(group, list):
            raise ActionFormatError("'actions' must be a list of lists")
        for action in group:
            _collect(action, leaves)
    return leaves


def _collect(action: Any, leaves: list[Leaf]) -> None:
    if not isinstance(action, dict) or "actionType" not in action:
        raise ActionFormatError(f"an action must be an object with actionType, got {type(action).__name__}")
    try:
        action_type = ActionType(int(action["actionType"]))
    except (TypeError, ValueError) as exc:
        raise ActionFormatError(f"unknown actionType {action.get('actionType')!r}") from exc
    if action_type in COMPOUND:
        for child in action.get("compoundActions") or []:
            _collect(child, leaves)
        return
    leaves.append(Leaf(action_type, action))
