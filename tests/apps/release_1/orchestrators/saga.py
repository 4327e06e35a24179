"""The machinery under the rotate_secret protocol: steps with retries, compensations, status.

Everything here runs inside the orchestrator, so it is deterministic: time comes from
``context.current_utc_datetime``, waits are durable timers, and logging is skipped on replay.

Retries are done here rather than with ``call_activity_with_retry`` because the SDK's
RetryOptions cannot tell a transient failure from a permanent one: a refused password or a
failed verification would be retried like a throttled request. Each activity's error message
carries a ``[transient]``/``[permanent]`` marker (rotation.errors); only transient ones are
retried, after a durable timer with exponential back-off.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from rotation.errors import retry_kind_of
from rotation.model import Record, RotationPolicy, SecretRef

logger = logging.getLogger(__name__)

# The steps in the order they run; the number in the status is the position here.
STEPS = ("plan", "stage", "approval", "apply", "verify", "promote", "restart", "cleanup")

_MARKED = re.compile(r"\[(?:transient|permanent)\] (?P<cls>\w+): (?P<msg>[^\n]*)")
_MAX_MESSAGE = 400


@dataclass(frozen=True)
class StepError:
    """What the status says about a failure: the error's class and message (never a value)."""

    step: str
    error_class: str
    message: str
    transient: bool

    @classmethod
    def from_exception(cls, step: str, exc: BaseException) -> StepError:
        text = str(exc)
        first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        # Only the first line (the failure's reason) speaks for the error raised: the details
        # after it hold the stack, where the markers of the causes it chains appear too.
        match = _MARKED.search(first_line)
        if match:
            transient = retry_kind_of(match.group(0)) == "transient"
            return cls(step, match["cls"], match["msg"].strip()[:_MAX_MESSAGE], transient)
        # Not one of ours (the activity adapter wraps everything, so this is the host or the SDK).
        return cls(step, type(exc).__name__, first_line[:_MAX_MESSAGE], False)

    def as_status(self) -> dict[str, str]:
        return {"step": self.step, "class": self.error_class, "message": self.message}


class StepFailed(Exception):
    """A step failed for good (after its retries); carries what the status should say."""

    def __init__(self, error: StepError) -> None:
        super().__init__(f"step {error.step} failed: {error.error_class}: {error.message}")
        self.error = error


@dataclass
class Saga:
    """One rotation's progress: the current step, the steps done, the compensations registered."""

    context: df.DurableOrchestrationContext
    secret: SecretRef
    policy: RotationPolicy
    steps_done: list[str] = field(default_factory=list)
    # (undo activity, its input, the step it undoes), run last-in-first-out.
    compensations: list[tuple[str, Record, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str, *args: object) -> None:
        if not self.context.is_replaying:
            logger.info("rotation %s: %s", self.context.instance_id, message % args)

    def set_status(self, **fields: Any) -> None:
        self.status.update(fields)
        self.context.set_custom_status(dict(self.status))

    def enter(self, step: str, **extra: Any) -> None:
        self.set_status(
            rotationId=self.context.instance_id,
            vault=self.secret.vault_name,
            secret=self.secret.secret_name,
            step=step,
            stepNumber=STEPS.index(step) + 1,
            stepsTotal=len(STEPS),
            stepStartedAt=self.context.current_utc_datetime.isoformat(),
            stepsDone=list(self.steps_done),
            **extra,
        )
        self.log("step %s", step)

    def call(self, step: str, activity: str, payload: Record) -> Generator[Any, Any, dict[str, Any]]:
        """Run one activity, retrying transient failures with durable back-off.

        Raises:
            StepFailed: a permanent failure, or the last attempt of a transient one.
        """
        attempt = 1
        while True:
            try:
                result: dict[str, Any] = yield self.context.call_activity(activity, payload.to_dict())
                return result
            except Exception as exc:
                error = StepError.from_exception(step, exc)
                if not error.transient or attempt >= self.policy.retry_max_attempts:
                    raise StepFailed(error) from None
                delay = self.policy.retry_first_interval_seconds * 2 ** (attempt - 1)
                self.log(
                    "step %s attempt %d failed (%s), retrying in %gs", step, attempt, error.error_class, delay
                )
                self.set_status(retrying={"attempt": attempt + 1, "after": error.as_status()})
                yield self.context.create_timer(self.context.current_utc_datetime + timedelta(seconds=delay))
                attempt += 1

    def step(self, step: str, activity: str, payload: Record) -> Generator[Any, Any, dict[str, Any]]:
        """Enter ``step``, run its activity, record it as done."""
        self.enter(step)
        result = yield from self.call(step, activity, payload)
        self.status.pop("retrying", None)
        self.steps_done.append(step)
        return result

    def on_failure(self, undo: str, payload: Record, undoes: str) -> None:
        """Register an undo before the step it undoes runs (the step may fail half-way)."""
        self.compensations.append((undo, payload, undoes))

    def forget(self, undo: str) -> None:
        """Drop an undo that no longer applies (past the point of no return)."""
        self.compensations = [c for c in self.compensations if c[0] != undo]

    def compensate(self) -> Generator[Any, Any, list[dict[str, str]]]:
        """Run the registered undos last-in-first-out; one failing does not stop the others."""
        report: list[dict[str, str]] = []
        while self.compensations:
            undo, payload, undoes = self.compensations.pop()
            self.set_status(compensating=undo)
            try:
                result = yield from self.call(f"undo {undoes}", undo, payload)
                report.append({"undo": undo, "result": "done", "detail": str(result.get("detail", ""))})
            except StepFailed as failed:
                report.append({"undo": undo, "result": "failed", "detail": failed.error.message})
                self.log("undo %s failed: %s", undo, failed.error.error_class)
        self.status.pop("compensating", None)
        return report
