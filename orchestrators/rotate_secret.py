"""rotate_secret: the rotation protocol, one orchestration per secret version.

plan -> stage pending -> [approval] -> apply to target -> verify -> promote and remove the pending
value -> restart consumers -> [retire the previous credential]. Each undo is registered before
the step it undoes and runs last-in-first-out on failure. Only references cross this boundary,
never a secret value.

Targets come in two families (rotation/targets/base.py). For a database login the hub chooses
the value and applies it (undo: revert). A target that issues its credentials (an Entra
application) issues the value in the stage step, so there is nothing to apply (undo: withdraw
the issued credential); its previous credential stays valid after promotion and is retired
on a durable timer once the overlap is over. When nothing can withdraw what it issued (a
regenerated storage key), a required approval comes before the stage instead of after it.

Orchestration versions (README "Versioning and upgrades"): host.json's ``defaultVersion`` stamps
each instance, and a rotation keeps the action sequence of the version it started under, so a
deployment never changes the path of the rotations waiting in flight. Version 1 is the release
of 2026-11-25, which predates versioning: its instances carry no version (``"1.0"`` names it
explicitly). It had no notifications, no write settle and no roll-forward, and removed the
pending value in a cleanup step after the consumers' restarts; those points branch on
``_version_1``. Version 2.0 is everything else in this module.

A secret tagged ``rotation-window`` changes nothing outside its window: before the first change
(the stage) the orchestration waits on a durable timer until the window opens, and again after
an approval wait (before apply or verify) and before retiring the previous credential, should
the window have closed meanwhile. The opening is computed from the orchestration's own clock,
so every replay computes the same one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators import notify
from orchestrators.saga import Saga, StepError, StepFailed
from rotation import windows
from rotation.errors import InvalidRequest
from rotation.model import (
    REJECTED,
    ROLLED_FORWARD,
    ROTATED,
    SKIPPED,
    TIMED_OUT,
    ConsumerInput,
    Decision,
    Promoted,
    PromoteInput,
    Retired,
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


def _version_1(context: df.DurableOrchestrationContext) -> bool:
    """Whether this rotation started under version 1 (no version: before versioning)."""
    return context.version in (None, "", "1.0")


@bp.orchestration_trigger(context_name="context")
def rotate_secret(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request = RotationRequest.from_dict(context.get_input())
    saga = Saga(context, request.secret, request.policy)
    version_1 = _version_1(context)
    step = StepInput(rotation_id=context.instance_id, secret=request.secret, version=request.version)

    def outcome(result: str, **fields: Any) -> dict[str, Any]:
        saga.status.pop("retrying", None)  # a retry that succeeded outside a step (the roll-forward)
        saga.set_status(step="done", result=result, stepsDone=list(saga.steps_done))
        saga.log("ended: %s", result)
        return RotationOutcome(
            result=result,
            secret=request.secret,
            previous_version=request.version,
            steps=tuple(saga.steps_done),
            **fields,
        ).to_dict()

    plan: RotationPlan | None = None
    decision: Decision | None = None
    window: windows.Window | None = None
    try:
        plan = RotationPlan.from_dict((yield from saga.step("plan", "plan_rotation", step)))
        if plan.skip_reason:
            return outcome(SKIPPED, detail=plan.skip_reason)
        step = replace(step, tags=plan.tags)  # later steps need not read the version for them
        if plan.approval_required and request.approval_waived_by:
            # An incident waived the approval tag: recorded with who waived it and why.
            plan = replace(plan, approval_required=False)
            saga.set_status(
                approvalWaived={"by": request.approval_waived_by, "reason": request.approval_waiver_reason}
            )
        window = _window_of(plan)
        saga.set_status(targetKind=plan.target_kind)  # the approval page shows what would change
        new_version = plan.promoted_version  # set when a restart finds this rotation promoted
        promoted_on = plan.promoted_on
        if new_version is None:
            approve_first = plan.approval_required and plan.issue_after_approval
            if approve_first:
                decision, timed_out = yield from _await_decision(saga, request, version_1)
                if not version_1:
                    yield from notify.decided(saga, decision, timed_out)
                if not decision.approved:
                    result = TIMED_OUT if timed_out else REJECTED
                    return outcome(result, decision=decision, detail="nothing was changed")
            # Nothing has changed yet: the first change waits for the window to open.
            yield from _await_window(saga, window)
            approve_after_stage = plan.approval_required and not approve_first
            ttl = (
                PENDING_TTL_MARGIN_HOURS
                + (request.policy.approval_timeout_hours if plan.approval_required else 0)
                # The window may close during the approval wait; the pending value waits with it.
                + (windows.LONGEST_WAIT.total_seconds() / 3600 if window and approve_after_stage else 0)
            )
            saga.on_failure("discard_pending", step, undoes="stage")
            if plan.issues_credentials:
                saga.on_failure("withdraw_credential", step, undoes="stage")
            stage_input = StageInput(
                step, plan.target_kind, ttl, plan.validity_days, plan.overlap_hours, login=plan.login
            )
            staged = Staged.from_dict((yield from saga.step("stage", "stage_pending", stage_input)))
            step = replace(step, pending_version=staged.pending_version)

            if approve_after_stage:
                decision, timed_out = yield from _await_decision(saga, request, version_1)
                if not version_1:
                    yield from notify.decided(saga, decision, timed_out)
                if not decision.approved:
                    compensated = yield from saga.compensate()
                    result = TIMED_OUT if timed_out else REJECTED
                    return outcome(result, decision=decision, detail=_undo_summary(compensated))
                # The approver may have taken the window's remaining time.
                yield from _await_window(saga, window)

            if not plan.issues_credentials:  # an issued credential is in force from its stage on
                saga.on_failure("revert_target", step, undoes="apply")
                yield from saga.step("apply", "apply_target", step)
            yield from saga.step("verify", "verify_target", step)
            # Past apply the target takes only the new value: promote outlasts an outage of Key
            # Vault rather than fail into undos that would meet the same outage.
            promote = PromoteInput(step, plan.validity_days)
            promoted = Promoted.from_dict(
                (yield from saga.step("promote", "promote_secret", promote, outlast=True))
            )
            new_version, promoted_on = yield from _promoted(saga, step, promoted, version_1)
        yield from _finish(saga, request, plan, step, promoted_on, window)
        return outcome(ROTATED, new_version=new_version, decision=decision)
    except StepFailed as failed:
        found: Promoted | None = None
        result = ROTATED
        if plan is not None and not version_1:  # version 1 went straight to the undos
            found = yield from _settle(saga, step, plan, failed)
            if found is None:
                # The target took the new value and its undo failed: the vault would hold a value
                # the target refuses. Promote the new one instead, if it verifiably logs in.
                found = yield from _roll_forward(saga, step, plan, failed)
                result = ROLLED_FORWARD
        if plan is not None and found is not None:
            try:
                new_version, promoted_on = yield from _promoted(saga, step, found)
                yield from _finish(saga, request, plan, step, promoted_on, window)
                detail = (
                    saga.status["rolledForward"]["why"]
                    if result == ROLLED_FORWARD
                    else "promote's write went unanswered and was found applied"
                )
                return outcome(result, new_version=new_version, decision=decision, detail=detail)
            except StepFailed as failed_after:
                failed = failed_after
        yield from _fail(saga, failed, version_1)
        raise AssertionError("unreachable: _fail raises") from None


def _settle(
    saga: Saga, step: StepInput, plan: RotationPlan, failed: StepFailed
) -> Generator[Any, Any, Promoted | None]:
    """The failed step's last request went unanswered, so what it asked for may still happen:
    wait until it no longer can (``write_settle_seconds``) before anything undoes it. When that
    step was promote, its write may have landed: look (never write), and carry on as promoted if
    it did. Returns what was promoted, or None."""
    if not failed.error.unanswered:
        return None
    context = saga.context
    until = context.current_utc_datetime + timedelta(seconds=saga.policy.write_settle_seconds)
    saga.set_status(settling={"until": until.isoformat(), "after": failed.error.as_status()})
    saga.log("step %s went unanswered; settling until %s", failed.error.step, until.isoformat())
    yield context.create_timer(until)
    saga.status.pop("settling", None)
    if failed.error.step != "promote":
        return None
    check = PromoteInput(step, plan.validity_days, only_if_landed=True)
    try:
        landed = Promoted.from_dict((yield from saga.call("promote", "promote_secret", check, outlast=True)))
    except StepFailed:
        return None
    saga.steps_done.append("promote")
    saga.set_status(landedLate=True)
    return landed


def _promoted(
    saga: Saga, step: StepInput, promoted: Promoted, version_1: bool = False
) -> Generator[Any, Any, tuple[str, str | None]]:
    """After promotion: the undos of the target no longer apply, the status shows the new
    version, and the pending value is disabled (by promote's own activity, unless that half
    failed: then as a step of its own, with its retries; version 1: by the cleanup step that
    ``_finish`` runs after the restarts). Returns the new version and when."""
    # From here the vault serves the new value and the target accepts it: that pair is the
    # truth now, and reverting the target or withdrawing the credential would break it.
    saga.forget("revert_target")
    saga.forget("withdraw_credential")
    saga.set_status(newVersion=promoted.new_version)
    if version_1:
        pass  # its cleanup comes after the restarts (discarding a disabled value is a no-op)
    elif promoted.pending_disabled:
        saga.done_within("cleanup", "promote")
    else:
        yield from saga.step("cleanup", "discard_pending", step, outlast=True)
    return promoted.new_version, promoted.promoted_on


def _finish(
    saga: Saga,
    request: RotationRequest,
    plan: RotationPlan,
    step: StepInput,
    promoted_on: str | None,
    window: windows.Window | None,
) -> Generator[Any, Any, None]:
    """What follows promotion: restart the consumers, make sure no pending value is left, retire
    the previous credential of an issued target."""
    if plan.consumers:
        yield from _restart_consumers(saga, request, plan.consumers)
    if "cleanup" not in saga.steps_done:  # a rerun of a promoted rotation
        yield from saga.step("cleanup", "discard_pending", step, outlast=True)
    # Kept until here: should a restart fail, the undo confirms no pending value is left.
    saga.forget("discard_pending")
    if plan.issues_credentials:
        yield from _retire_previous(saga, step, plan.overlap_hours, promoted_on, window)


def _roll_forward(
    saga: Saga, step: StepInput, plan: RotationPlan, failed: StepFailed
) -> Generator[Any, Any, Promoted | None]:
    """After a step between apply and promote failed: run the target's undo first; if it cannot
    restore the previous value, promote the pending one when it logs in (roll_forward_secret
    verifies, then promotes). Returns what was promoted, or None: nothing to roll forward (the
    undo worked, or there was nothing to undo), or the new value does not log in either (then
    the remaining undos run as usual)."""
    if "apply" not in saga.steps_done or "promote" in saga.steps_done:
        return None
    undone = yield from saga.undo_now("revert_target")
    if undone is None or undone["result"] == "done":
        return None
    why = (
        f"{failed.error.step} failed ({failed.error.error_class}: {failed.error.message}) and the "
        f"previous value could not be restored ({undone['detail']}); the new value logs in, so it was promoted"
    )
    saga.enter("promote", rollingForward=True)
    try:
        promoted = Promoted.from_dict(
            (
                yield from saga.call(
                    "promote", "roll_forward_secret", PromoteInput(step, plan.validity_days), outlast=True
                )
            )
        )
    except StepFailed as not_rolled:
        saga.status.pop("rollingForward", None)
        saga.set_status(rollForward={"result": "failed", "detail": not_rolled.error.message})
        saga.log("roll forward not done (%s)", not_rolled.error.error_class)
        return None
    saga.status.pop("rollingForward", None)
    saga.steps_done.append("promote")
    saga.set_status(
        rolledForward={"why": why, "failed": failed.error.as_status(), "undo": undone},
        stepsDone=list(saga.steps_done),
    )
    saga.log("rolled forward after %s failed", failed.error.step)
    yield from notify.rolled_forward(saga, failed.error, undone)
    return promoted


def _fail(saga: Saga, failed: StepFailed, version_1: bool = False) -> Generator[Any, Any, None]:
    """Undo what can be undone, say so in the status and a notification (not version 1), end Failed."""
    compensated = [*saga.undone, *(yield from saga.compensate())]
    saga.set_status(
        step="failed",
        failed=failed.error.as_status(),
        compensation=compensated,
        stepsDone=list(saga.steps_done),
        **({"promoted": True} if "promote" in saga.steps_done else {}),
    )
    saga.log("failed in step %s (%s)", failed.error.step, failed.error.error_class)
    if not version_1:
        yield from notify.failed(saga, failed.error, compensated, promoted="promote" in saga.steps_done)
    raise RotationFailed(f"{failed}; {_undo_summary(compensated)}") from None


TIMEOUT_APPROVER = "timeout"


def _window_of(plan: RotationPlan) -> windows.Window | None:
    """The plan's window, parsed by the same code that validated the tag.

    Raises:
        StepFailed: the text does not parse (it did in the plan activity, so only a zone
            database that changed in between could do this; nothing has changed yet).
    """
    if plan.window is None:
        return None
    try:
        return windows.parse_window(plan.window)
    except windows.InvalidWindow as exc:
        message = f"rotation-window {plan.window!r} is not a valid window: {exc}"
        raise StepFailed(StepError("window", "InvalidRequest", message, False)) from None


def _await_window(saga: Saga, window: windows.Window | None) -> Generator[Any, Any, bool]:
    """Wait on durable timers until ``window`` is open; returns whether it waited.

    The status says step ``window``, the window and when it opens (``windowOpensAt``). A wait
    of days is one durable timer: the Durable extension splits long timers into chunks itself
    (the SDK's LongTimerTask), and a timer costs nothing while it waits. The loop re-checks after
    the timer fires, so a host that was down past the window's end waits for the next opening."""
    if window is None:
        return False
    context = saga.context
    waited = False
    while (opens_at := windows.next_opening(window, context.current_utc_datetime)) is not None:
        saga.enter("window", window=str(window), windowOpensAt=opens_at.isoformat())
        # The SDK compares the timer with its own clock: keep to that clock's kind of datetime.
        naive = context.current_utc_datetime.tzinfo is None
        yield context.create_timer(opens_at.replace(tzinfo=None) if naive else opens_at)
        waited = True
    if waited:
        saga.steps_done.append("window")
        saga.status.pop("windowOpensAt", None)
    return waited


def _await_decision(
    saga: Saga, request: RotationRequest, version_1: bool = False
) -> Generator[Any, Any, tuple[Decision, bool]]:
    """Race the RotationDecision event against a durable timer; the timeout rejects.

    Returns the decision and whether it was the timeout's."""
    context = saga.context
    deadline = context.current_utc_datetime + timedelta(hours=request.policy.approval_timeout_hours)
    saga.enter("approval", awaitingDecisionUntil=deadline.isoformat())
    if not version_1:
        yield from notify.approval_waiting(saga, deadline)
    decision_task = context.wait_for_external_event(DECISION_EVENT)
    timer = context.create_timer(deadline)
    winner = yield context.task_any([decision_task, timer])
    # The time a decision took effect is the orchestrator's own (deterministic on replay), never
    # a time the caller wrote into the event.
    decided_at = context.current_utc_datetime.isoformat()
    if winner != decision_task:
        timed_out = Decision(
            approved=False,
            approver=TIMEOUT_APPROVER,
            reason="no decision before the deadline",
            decided_at=decided_at,
        )
        saga.set_status(decision=timed_out.to_dict())
        return timed_out, True
    timer.cancel()
    decision = replace(_parse_decision(decision_task.result), decided_at=decided_at)
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
            saga.context.instance_id, consumer, request.policy.consumer_ready_timeout_seconds, request.secret
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


def _retire_previous(
    saga: Saga,
    step: StepInput,
    overlap_hours: float,
    promoted_on: str | None,
    window: windows.Window | None,
) -> Generator[Any, Any, None]:
    """Wait out the overlap on a durable timer, then retire the previous credential: every
    consumer has had the time to move to the new one (App Service caches Key Vault references
    for up to 24 hours). Retiring is a change to the target: it waits for the window too."""
    context = saga.context
    start = datetime.fromisoformat(promoted_on) if promoted_on else context.current_utc_datetime
    retire_at = start + timedelta(hours=overlap_hours)
    saga.enter("retire", retireAt=retire_at.isoformat())
    if context.current_utc_datetime < retire_at:
        yield context.create_timer(retire_at)
    if (yield from _await_window(saga, window)):
        saga.enter("retire")
    retired = Retired.from_dict((yield from saga.call("retire", "retire_previous", step)))
    saga.steps_done.append("retire")
    saga.status.pop("retireAt", None)
    saga.set_status(
        retired=retired.detail, **({"notRemoved": list(retired.not_removed)} if retired.not_removed else {})
    )
    yield from notify.unmanaged_credential(saga, retired.not_removed)


def _undo_summary(report: list[dict[str, str]]) -> str:
    if not report:
        return "nothing to undo"
    return "; ".join(f"{r['undo']}: {r['result']} ({r['detail']})" for r in report)
