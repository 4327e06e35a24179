"""What the engine must remember about an execution between episodes (stored with the instance).

The SDK numbers tasks itself, in the order it meets them during replay; the host keeps the same
counter (``next_id``) so the ids it writes into TaskScheduled/TimerCreated events are the ones the
SDK will look for. Retries consume numbers the SDK allocates internally (a timer after each failed
attempt, then the next attempt), which never appear in the actions list, hence ``retries``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RetryGroup:
    """One call_activity_with_retry / call_sub_orchestrator_with_retry in progress."""

    kind: str  # "activity" or "sub-orchestration"
    name: str
    input: str | None
    max_attempts: int
    interval_ms: int
    attempt: int
    phase: str  # "task": waiting for the attempt's result; "timer": waiting for the retry delay
    child_instance_id: str | None = None
    # A sub-orchestration's explicit version (None: each attempt gets the host's defaultVersion).
    version: str | None = None


@dataclass
class EngineState:
    next_id: int = 0
    leaves: int = 0
    signatures: list[list[Any] | None] = field(default_factory=list)
    retries: dict[str, RetryGroup] = field(default_factory=dict)
    # leaf position -> timer id, for armed timers the orchestrator may still cancel
    timer_leaves: dict[str, int] = field(default_factory=dict)
    guid_counter: int = 0

    def allocate_id(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value

    def to_dict(self) -> dict[str, Any]:
        # Written out instead of dataclasses.asdict: that deep-copies every signature and was a tenth
        # of the host process's time per episode.
        return {
            "next_id": self.next_id,
            "leaves": self.leaves,
            "signatures": [None if item is None else list(item) for item in self.signatures],
            "retries": {key: asdict(group) for key, group in self.retries.items()},
            "timer_leaves": dict(self.timer_leaves),
            "guid_counter": self.guid_counter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineState:
        return cls(
            next_id=int(data.get("next_id", 0)),
            leaves=int(data.get("leaves", 0)),
            signatures=list(data.get("signatures", [])),
            retries={key: RetryGroup(**value) for key, value in (data.get("retries") or {}).items()},
            timer_leaves={key: int(value) for key, value in (data.get("timer_leaves") or {}).items()},
            guid_counter=int(data.get("guid_counter", 0)),
        )
