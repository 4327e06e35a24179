"""The machinery under the rotate_secret protocol: steps with retries, compensations, status.

Everything here runs inside the orchestrator, so it is deterministic: time comes from
``context.current_utc_datetime``, waits are durable timers, and logging is skipped on replay.

Retries are done here rather than with ``call_activity_with_retry`` because the SDK's
RetryOptions cannot tell a transient failure from a permanent one: a refused password or a
failed verification would be retried like a throttled request. Each activity's error message
carries a ``[transient]``/``[permanent]`` marker (rotation.errors); only transient ones are
retried, after a durable timer with exponential back-off.

Promote and the undos outlast outages (``outlast=True``): a Key Vault outage after apply would
otherwise exhaust the few attempts of the other steps, fail the undo in the same outage and
leave the vault with a value the target refuses. They keep retrying for
``policy.outage_retry_hours`` instead, the back-off capped at
``policy.outage_retry_max_interval_seconds``; both travel in the rotation's input, so every
replay takes the same decisions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from rotation.errors import retry_after_of, retry_kind_of, unanswered_of
from rotation.model import Record, RotationPolicy, SecretRef

logger = logging.getLogger(__name__)

# The steps in the order they run; the number in the status is the position here.
# "window": waiting for the secret's rotation window to open before the first change (and again
# after an approval, or before retiring, should the window have closed meanwhile).
STEPS = (
    "plan",
    "window",
    "stage",
    "approval",
    "apply",
    "verify",
    "promote",
    "restart",
    # Done by promote's activity; on its own only where that could not: a rerun of a promoted
    # rotation (after its restarts, as before) or a cleanup half that failed.
    "cleanup",
    "retire",
)

_MARKED = re.compile(r"\[(?:transient|permanent)\] (?P<cls>\w+): (?P<msg>[^\n]*)")
_MAX_MESSAGE = 400
# 2**30 times any first interval is past every budget; the bound keeps the float finite however
# many attempts an outlasting step makes.
_MAX_DOUBLINGS = 30


@dataclass(frozen=True)
class StepError:
    """What the status says about a failure: the error's class and message (never a value)."""

    step: str
    error_class: str
    message: str
    transient: bool
    # How long the service asked to wait before the next attempt (its Retry-After), if it said.
    retry_after_seconds: float | None = None
    # A request went unanswered: what it asked for may still happen (rotation/errors.py).
    unanswered: bool = False

    @classmethod
    def from_exception(cls, step: str, exc: BaseException) -> StepError:
        text = str(exc)
        first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        # Only the first line (the failure's reason) speaks for the error raised: the details
        # after it hold the stack, where the markers of the causes it chains appear too.
        match = _MARKED.search(first_line)
        if match:
            transient = retry_kind_of(match.group(0)) == "transient"
            message = match["msg"].strip()
            return cls(
                step,
                match["cls"],
                message[:_MAX_MESSAGE],
                transient,
                retry_after_of(message),
                unanswered_of(message),
            )
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
    # Reports of undos run ahead of the others (``undo_now``), for the final report.
    undone: list[dict[str, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str, *args: object) -> None:
        if not self.context.is_replaying:
            logger.info("rotation %s: %s", self.context.instance_id, message % args)

    def set_status(self, **fields: Any) -> None:
        self.status.update(fields)
        self.context.set_custom_status(dict(self.status))

    def enter(self, step: str, **extra: Any) -> None:
        started = self.context.current_utc_datetime.isoformat()
        # When each step entered began (at most one entry per step, so the status stays small):
        # operators see how long each took without reading the history.
        step_times = {**self.status.get("stepTimes", {}), step: started}
        self.set_status(
            rotationId=self.context.instance_id,
            vault=self.secret.vault_name,
            secret=self.secret.secret_name,
            step=step,
            stepNumber=STEPS.index(step) + 1,
            stepsTotal=len(STEPS),
            stepStartedAt=started,
            stepTimes=step_times,
            stepsDone=list(self.steps_done),
            **extra,
        )
        self.log("step %s", step)

    def call(
        self, step: str, activity: str, payload: Record, *, outlast: bool = False
    ) -> Generator[Any, Any, dict[str, Any]]:
        """Run one activity, retrying transient failures with durable back-off (for
        ``policy.outage_retry_hours`` when ``outlast``: promote and the undos).

        Raises:
            StepFailed: a permanent failure, or the last attempt of a transient one.
        """

        def retrying(retry: Retry) -> None:
            self.log(
                "step %s attempt %d failed (%s), next attempt at %s",
                step,
                retry.attempt - 1,
                retry.error.error_class,
                retry.next_attempt_at,
            )
            self.set_status(retrying=retry.as_status())

        return (
            yield from call_with_retries(
                self.context, self.policy, step, activity, payload, retrying, outlast=outlast
            )
        )

    def step(
        self, step: str, activity: str, payload: Record, *, outlast: bool = False
    ) -> Generator[Any, Any, dict[str, Any]]:
        """Enter ``step``, run its activity, record it as done."""
        self.enter(step)
        result = yield from self.call(step, activity, payload, outlast=outlast)
        self.status.pop("retrying", None)
        self.steps_done.append(step)
        return result

    def done_within(self, step: str, within: str) -> None:
        """Record ``step`` as done by the activity of step ``within`` (two steps merged into one
        activity save a checkpoint); its time in ``stepTimes`` is that activity's."""
        self.steps_done.append(step)
        times = self.status.get("stepTimes", {})
        self.set_status(stepTimes={**times, step: times.get(within)}, stepsDone=list(self.steps_done))

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
            report.append((yield from self._undo(*self.compensations.pop())))
        self.status.pop("compensating", None)
        return report

    def undo_now(self, undo: str) -> Generator[Any, Any, dict[str, str] | None]:
        """Run the registered undo ``undo`` now, ahead of the others, and drop it from them;
        None when it is not registered. Its report is kept in ``undone``."""
        registered = [c for c in self.compensations if c[0] == undo]
        if not registered:
            return None
        self.compensations.remove(registered[-1])
        entry = yield from self._undo(*registered[-1])
        self.status.pop("compensating", None)
        self.undone.append(entry)
        return entry

    def _undo(self, undo: str, payload: Record, undoes: str) -> Generator[Any, Any, dict[str, str]]:
        self.set_status(compensating=undo)
        try:
            result = yield from self.call(f"undo {undoes}", undo, payload, outlast=True)
            return {"undo": undo, "result": "done", "detail": str(result.get("detail", ""))}
        except StepFailed as failed:
            self.log("undo %s failed: %s", undo, failed.error.error_class)
            return {"undo": undo, "result": "failed", "detail": failed.error.message}


@dataclass(frozen=True)
class Retry:
    """A transient failure about to be retried: what the status shows while the timer waits."""

    step: str
    attempt: int  # the attempt that comes next
    next_attempt_at: str
    error: StepError
    # When an outlasting step stops retrying (None: after retry_max_attempts).
    retry_until: str | None = None

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "step": self.step,
            "attempt": self.attempt,
            "nextAttemptAt": self.next_attempt_at,
            "after": self.error.as_status(),
        }
        if self.retry_until is not None:
            status["retryUntil"] = self.retry_until
        return status


def call_with_retries(
    context: df.DurableOrchestrationContext,
    policy: RotationPolicy,
    step: str,
    activity: str,
    payload: Record,
    retrying: Callable[[Retry], None],
    *,
    outlast: bool = False,
) -> Generator[Any, Any, dict[str, Any]]:
    """Run one activity, retrying transient failures after a durable timer.

    The wait doubles from ``policy.retry_first_interval_seconds`` and is never shorter than the
    service's ``Retry-After`` when the failure carried one, nor than
    ``policy.write_settle_seconds`` after a write that got no answer. ``retrying`` is told
    before each wait (for the log and the status).

    Without ``outlast`` the step gives up after ``policy.retry_max_attempts`` attempts. With it
    (promote and the undos) it also keeps retrying while the next attempt would start within
    ``policy.outage_retry_hours`` of the first, each wait capped at
    ``policy.outage_retry_max_interval_seconds`` (a Retry-After or the settle may be longer).
    The history gains four events and two replays per attempt, so that budget bounds it.

    Raises:
        StepFailed: a permanent failure, or the last attempt of a transient one.
    """
    # A policy from before outage retries (or set to 0) keeps to the attempt count.
    outlasting = outlast and policy.outage_retry_hours > 0
    until = context.current_utc_datetime + timedelta(hours=policy.outage_retry_hours) if outlasting else None
    attempt = 1
    while True:
        try:
            result: dict[str, Any] = yield context.call_activity(activity, payload.to_dict())
            return result
        except Exception as exc:
            error = StepError.from_exception(step, exc)
            if not error.transient:
                raise StepFailed(error) from None
            backoff = policy.retry_first_interval_seconds * 2 ** min(attempt - 1, _MAX_DOUBLINGS)
            if until is not None:
                backoff = min(backoff, policy.outage_retry_max_interval_seconds)
            delay = max(
                backoff,
                error.retry_after_seconds or 0.0,
                # Key Vault has no conditional writes: the next attempt checks what landed only
                # once an unanswered write can no longer land, or it would write a second time.
                policy.write_settle_seconds if error.unanswered else 0.0,
            )
            next_at = context.current_utc_datetime + timedelta(seconds=delay)
            within_attempts = attempt < policy.retry_max_attempts
            within_time = until is not None and next_at <= until
            if not (within_attempts or within_time):
                raise StepFailed(error) from None
            retrying(
                Retry(
                    step,
                    attempt + 1,
                    next_at.isoformat(),
                    error,
                    until.isoformat() if until is not None else None,
                )
            )
            yield context.create_timer(next_at)
            attempt += 1
