"""rotate_secret: the rotation protocol, one orchestration per secret version.

plan -> stage pending -> [approval] -> apply to target -> verify -> promote -> restart consumers
-> remove the pending value. Each undo is registered before the step it undoes and runs
last-in-first-out on failure. Only references cross this boundary, never a secret value.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators.saga import Saga, StepError, StepFailed
from rotation.errors import InvalidRequest
from rotation.model import (
    ConsumerInput,
    Decision,
    Promoted,
    PromoteInput,
    RotationOutcome,
    RotationPlan,
    RotationRequest,
    Staged,
    StageInput,
    StepInput,
)

bp = df.Blueprint()

DECISION_EVENT = "RotationDecision"
# The pending value only has to outlive the rotation; a day beyond the approval wait is ample.
PENDING_TTL_MARGIN_HOURS = 24.0


class RotationFailed(Exception):
    """Ends the orchestration as Failed; its message is the orchestration's output."""


@bp.orchestration_trigger(context_name="context")
def rotate_secret(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request = RotationRequest.from_dict(context.get_input())
    saga = Saga(context, request.secret, request.policy)
    step = StepInput(rotation_id=context.instance_id, secret=request.secret, version=request.version)

    def outcome(result: str, **fields: Any) -> dict[str, Any]:
        saga.set_status(step="done", result=result, stepsDone=list(saga.steps_done))
        saga.log("ended: %s", result)
        return RotationOutcome(
            result=result,
            secret=request.secret,
            previous_version=request.version,
            steps=tuple(saga.steps_done),
            **fields,
        ).to_dict()

    try:
        plan = RotationPlan.from_dict((yield from saga.step("plan", "plan_rotation", step)))
        if plan.skip_reason:
            return outcome("skipped", detail=plan.skip_reason)
        decision = None
        new_version = plan.promoted_version  # set when a restart finds this rotation promoted
        if new_version is None:
            ttl = PENDING_TTL_MARGIN_HOURS + (
                request.policy.approval_timeout_hours if plan.approval_required else 0
            )
            saga.on_failure("discard_pending", step, undoes="stage")
            staged = Staged.from_dict(
                (yield from saga.step("stage", "stage_pending", StageInput(step, plan.target_kind, ttl)))
            )
            step = replace(step, pending_version=staged.pending_version)

            if plan.approval_required:
                decision, timed_out = yield from _await_decision(saga, request)
                if not decision.approved:
                    compensated = yield from saga.compensate()
                    result = "timed_out" if timed_out else "rejected"
                    return outcome(result, decision=decision, detail=_undo_summary(compensated))

            saga.on_failure("revert_target", step, undoes="apply")
            yield from saga.step("apply", "apply_target", step)
            yield from saga.step("verify", "verify_target", step)
            promoted = Promoted.from_dict(
                (yield from saga.step("promote", "promote_secret", PromoteInput(step, plan.validity_days)))
            )
            # From here the vault serves the new value and the target accepts it: that pair is
            # the truth now, and reverting the target would break it.
            saga.forget("revert_target")
            new_version = promoted.new_version
            saga.set_status(newVersion=new_version)

        if plan.consumers:
            yield from _restart_consumers(saga, request, plan.consumers)
        yield from saga.step("cleanup", "discard_pending", step)
        saga.forget("discard_pending")
        return outcome("rotated", new_version=new_version, decision=decision)
    except StepFailed as failed:
        compensated = yield from saga.compensate()
        saga.set_status(
            step="failed",
            failed=failed.error.as_status(),
            compensation=compensated,
            stepsDone=list(saga.steps_done),
            **({"promoted": True} if "promote" in saga.steps_done else {}),
        )
        saga.log("failed in step %s (%s)", failed.error.step, failed.error.error_class)
        raise RotationFailed(f"{failed}; {_undo_summary(compensated)}") from None


TIMEOUT_APPROVER = "timeout"


def _await_decision(saga: Saga, request: RotationRequest) -> Generator[Any, Any, tuple[Decision, bool]]:
    """Race the RotationDecision event against a durable timer; the timeout rejects.

    Returns the decision and whether it was the timeout's."""
    context = saga.context
    deadline = context.current_utc_datetime + timedelta(hours=request.policy.approval_timeout_hours)
    saga.enter("approval", awaitingDecisionUntil=deadline.isoformat())
    decision_task = context.wait_for_external_event(DECISION_EVENT)
    timer = context.create_timer(deadline)
    winner = yield context.task_any([decision_task, timer])
    if winner != decision_task:
        return Decision(
            approved=False, approver=TIMEOUT_APPROVER, reason="no decision before the deadline"
        ), True
    timer.cancel()
    decision = _parse_decision(decision_task.result)
    saga.steps_done.append("approval")
    saga.set_status(decision=decision.to_dict())
    return decision, False


def _parse_decision(raw: object) -> Decision:
    # The Python durable client JSON-encodes event data before posting it, and the host keeps
    # that string as the event's payload: a dict sent by raise_event arrives as its JSON text.
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            raw = json.loads(raw)
    # Anyone with the system key can raise any payload through the Durable HTTP API: whatever
    # is not a well-formed decision counts as a rejection (fail closed).
    try:
        return Decision.from_dict(raw)
    except InvalidRequest:
        return Decision(approved=False, approver="unknown", reason="malformed decision event")


def _restart_consumers(
    saga: Saga, request: RotationRequest, consumers: tuple[str, ...]
) -> Generator[Any, Any, None]:
    """Restart every consumer; one that fails does not keep the others on the old value."""
    saga.enter("restart", consumers=list(consumers))
    failures: list[StepError] = []
    for consumer in consumers:
        payload = ConsumerInput(
            saga.context.instance_id, consumer, request.policy.consumer_ready_timeout_seconds
        )
        try:
            yield from saga.call("restart", "restart_consumer", payload)
        except StepFailed as failed:
            failures.append(failed.error)
    if failures:
        names = ", ".join(f.message for f in failures)
        raise StepFailed(
            StepError(
                "restart",
                failures[0].error_class,
                f"{len(failures)} consumer(s) not restarted: {names}",
                False,
            )
        )
    saga.steps_done.append("restart")


def _undo_summary(report: list[dict[str, str]]) -> str:
    if not report:
        return "nothing to undo"
    return "; ".join(f"{r['undo']}: {r['result']} ({r['detail']})" for r in report)
